// Prometheus metrics (--metrics ADDR:PORT): a tiny HTTP/1.x server on its own thread that
// answers GET /metrics with the text exposition format. It only reads: the workers' counters
// (each worker writes its own block; the scrape sums them) and the reloader's statistics.
// docs/operations.md lists every metric.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <vector>

#include "iprep/reloader.hpp"
#include "stats.hpp"

namespace agent {

struct metrics_sources {
    std::vector<const worker_stats*> workers;
    const iprep::reload_stats* reload = nullptr;
    std::int64_t start_unix_ms = 0;
    std::string engine;  ///< "io_uring" or "epoll"
    std::string version; ///< agent version
};

/// The body of /metrics.
std::string render_metrics(const metrics_sources& src);

/// Parses "ADDR:PORT", "[V6ADDR]:PORT" or ":PORT" (all addresses). Names are resolved.
bool parse_metrics_address(const std::string& spec, sockaddr_storage& ss, socklen_t& len,
                           std::string& err);

class metrics_server {
  public:
    metrics_server() = default;
    ~metrics_server();
    metrics_server(const metrics_server&) = delete;
    metrics_server& operator=(const metrics_server&) = delete;

    /// Binds and listens (call before dropping privileges). False with `err`.
    bool open(const std::string& spec, std::string& err);
    /// The bound address, for logs ("127.0.0.1:9100").
    [[nodiscard]] const std::string& address() const noexcept { return desc_; }
    /// Starts serving on its own thread.
    bool start(metrics_sources src, std::string& err);
    void stop();

  private:
    void run();
    void serve(int fd);

    int listen_fd_ = -1;
    int wake_fd_ = -1;
    std::string desc_;
    metrics_sources src_;
    std::thread thread_;
};

} // namespace agent
