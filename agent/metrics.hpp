// Prometheus metrics and health endpoints (--metrics ADDR:PORT), served by civetweb (Debian's
// libcivetweb) on threads of its own:
//   /metrics  the text exposition format (docs/operations.md lists every metric): the engine's
//             families from spop::server::prometheus, the reputation service's through its
//             Stats hook (iprep/stats.hpp), the reload statistics (iprep::render_metrics)
//   /healthz  200 "ok" while the process runs
//   /readyz   200 once the SPOP listeners are up and the reputation data is loaded, else 503
//             with a one-line reason
// It only reads: the workers' counters (each worker writes its own block; the scrape sums
// them), the reloader's statistics and the readiness flags below. civetweb serves one
// connection per thread; the limits below bound what slow or hostile HTTP clients can hold.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <sys/socket.h>
#include <vector>

#include "decisions/stats.hpp"
#include "iprep/reloader.hpp"
#include "ratelimit/gateway.hpp"
#include "stats.hpp"

struct mg_context;
struct mg_connection;

namespace agent {

struct metrics_sources {
    std::vector<const worker_stats*> workers;
    const iprep::reload_stats* reload = nullptr;
    const decisions::follower_stats* decisions = nullptr; ///< --decisions; null = off
    const ratelimit::gateway* rate = nullptr; ///< check-rate families (null: none)
    std::int64_t start_unix_ms = 0;
    std::string engine;  ///< "io_uring" or "epoll"
    std::string version; ///< agent version
};

/// The body of /metrics.
std::string render_metrics(const metrics_sources& src);

/// Parses "ADDR:PORT", "[V6ADDR]:PORT" or ":PORT" (all addresses). Names are resolved.
bool parse_metrics_address(const std::string& spec, sockaddr_storage& ss, socklen_t& len,
                           std::string& err);

/// What /readyz reports. main.cpp sets the flags (any thread may, in any order); the HTTP
/// threads read them. Flags only go one way, so relaxed atomics are enough.
struct readiness_state {
    std::atomic<bool> listening{false};   ///< SPOP listeners bound and the workers started
    std::atomic<bool> data_loaded{false}; ///< first reputation load succeeded (or none is set)
    std::atomic<bool> stopping{false};    ///< SIGTERM/SIGINT: draining, take us out of rotation

    void set_listening() noexcept { listening.store(true, std::memory_order_relaxed); }
    void set_data_loaded() noexcept { data_loaded.store(true, std::memory_order_relaxed); }
    void set_stopping() noexcept { stopping.store(true, std::memory_order_relaxed); }
};

/// The process's readiness, the one /readyz reports.
readiness_state& readiness() noexcept;

/// Null when ready; otherwise the reason /readyz gives with its 503 (one line, no newline).
const char* not_ready_reason(const readiness_state& r) noexcept;

/// Limits of the HTTP server. civetweb gives each connection a thread from a fixed pool, so the
/// pool is sized for many idle or slow clients at once, and each is dropped after
/// `request_timeout_ms`. See docs/operations.md, "Metrics".
struct metrics_limits {
    static constexpr int threads = 128;             ///< connections served at once
    static constexpr int connection_queue = 32;     ///< accepted, waiting for a thread
    static constexpr int listen_backlog = 64;       ///< not accepted yet (kernel queue)
    static constexpr int max_request_bytes = 8192;  ///< request line + headers; 400 beyond
    static constexpr int request_timeout_ms = 2000; ///< to send the request; to take the reply
};

class metrics_server {
  public:
    metrics_server() = default;
    ~metrics_server();
    metrics_server(const metrics_server&) = delete;
    metrics_server& operator=(const metrics_server&) = delete;

    /// Binds and starts serving (call before dropping privileges): /healthz and /readyz answer
    /// from now on; /metrics answers 503 until start(). False with `err` (one line).
    /// `state` defaults to readiness().
    bool open(const std::string& spec, std::string& err, const readiness_state* state = nullptr);
    /// The bound address, for logs ("127.0.0.1:9100").
    [[nodiscard]] const std::string& address() const noexcept { return desc_; }
    /// Publishes the counters: /metrics answers from now on.
    bool start(metrics_sources src, std::string& err);
    /// Stops serving; waits for the HTTP threads (each is bounded by request_timeout_ms).
    void stop();

  private:
    static int handle(mg_connection* conn, void* self);
    static int log_message(const mg_connection* conn, const char* msg);

    mg_context* ctx_ = nullptr;
    std::string desc_;
    sockaddr_storage addr_{};
    socklen_t addr_len_ = 0;
    std::atomic<bool> starting_{false};
    std::mutex start_mu_;
    std::string start_error_; ///< civetweb's last complaint while starting (start_mu_)
    const readiness_state* state_ = nullptr;
    metrics_sources src_;
    std::atomic<bool> published_{false}; ///< src_ is set and immutable
};

} // namespace agent
