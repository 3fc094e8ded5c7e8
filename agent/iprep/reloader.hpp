// Hot reload: one thread that rebuilds the tables when asked (SIGHUP, through request()) or
// when a source file changes (inotify on the files' directories), validates them, and
// publishes them to every worker at once. Building happens on this thread only; the workers
// keep answering from the previous snapshot until the swap, and never wait for it.
//
// A file that fails to parse leaves the current tables in place and logs one error line that
// names the file and the line. Changes are debounced (250 ms of quiet, 2 s at most) so a file
// being written is read once, after its writer closes it or renames it into place.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include <spop/server/prometheus.hpp>

#include "reputation.hpp"
#include "table.hpp"

namespace agent::iprep {

/// Written by the reloader (and the initial load) only; read by the metrics server.
struct reload_stats {
    std::atomic<std::uint64_t> reloads_ok{0};
    std::atomic<std::uint64_t> reloads_failed{0};
    std::atomic<std::int64_t> loaded_unix_ms{0}; ///< wall clock of the last successful load
    std::atomic<std::int64_t> failed_unix_ms{0}; ///< wall clock of the last failed load
    std::atomic<std::int64_t> newest_mtime{0};   ///< newest source file mtime (Unix seconds)
    std::atomic<std::uint64_t> prefixes_v4{0};
    std::atomic<std::uint64_t> prefixes_v6{0};
    std::atomic<std::uint64_t> list_entries{0};
    std::atomic<std::uint64_t> allow_entries{0};
    std::atomic<std::uint64_t> csv_entries{0};
    std::atomic<std::uint64_t> mmdb_networks{0};
    std::atomic<std::uint64_t> table_bytes{0};
    std::atomic<std::uint64_t> build_ns{0};
    std::atomic<bool> configured{false};
};

/// The reputation data's families (reloads_total, reputation_*): process-wide, not per worker,
/// so a program adds them through the `extra` callback of spop::server::prometheus::render().
void render_metrics(spop::server::prometheus::writer& w, const reload_stats& r);

class reloader {
  public:
    reloader(reputation_source& rep, sources_config cfg, reload_stats& st);
    ~reloader();
    reloader(const reloader&) = delete;
    reloader& operator=(const reloader&) = delete;

    /// Loads and publishes synchronously (at start). False with `err` on a bad file.
    bool load(parse_error& err, const char* trigger = "start");

    /// Starts the reload thread and the file watcher. False with `err` if a system call fails.
    bool start(std::string& err);

    /// Asks the thread for a reload (async-signal-safe: one write to an eventfd).
    void request() noexcept;

    /// Stops and joins the thread.
    void stop();

  private:
    void run();
    bool watch(std::string& err);
    bool handle_inotify();

    reputation_source& rep_;
    sources_config cfg_;
    reload_stats& st_;
    int wake_fd_ = -1;
    int inotify_fd_ = -1;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    struct watched_dir {
        int wd;
        std::string dir;
    };
    std::vector<watched_dir> dirs_;
    std::vector<std::pair<std::string, std::string>> files_; ///< (dir, basename)
};

} // namespace agent::iprep
