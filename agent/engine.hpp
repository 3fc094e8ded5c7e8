// What every I/O engine shares: the worker's environment, the connection type, and how a
// connection's end is logged and counted. Engines differ only in how bytes move.
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>
#include <string>
#include <sys/socket.h>
#include <vector>

#include <spop/connection.hpp>

#include "iprep_service.hpp"
#include "log.hpp"
#include "options.hpp"
#include "stats.hpp"

namespace agent {

using conn_t = spop::connection<iprep_service>;

struct worker_env {
    int id = 0;
    const options* opt = nullptr;
    std::vector<int> listen_fds;     ///< listeners this worker accepts on
    std::vector<bool> listen_is_tcp; ///< TCP_NODELAY applies to accepted sockets
    spop::connection_config conn_cfg{};
    iprep_config svc_cfg{};
    const reputation_source* rep = nullptr;
    worker_stats* stats = nullptr;
    int wake_fd = -1;            ///< eventfd: main writes 1 to ask for a graceful stop
    std::uint32_t max_conns = 0; ///< --max-connections: a total over every worker
    /// Connections open across all workers (admitted, not closed yet). Touched at accept and
    /// close only, never per frame.
    std::atomic<std::uint32_t>* live_total = nullptr;
    std::uint64_t seed = 0;
    /// Connection hand-off (see hand_off()): accepted fds arrive on this pipe as ints.
    int handoff_rfd = -1;
    int handoff_wfd = -1;
    /// Connections handed to this worker and not adopted yet.
    std::atomic<int> pending_handoffs{0};
    /// Every worker, this one included (read-only after start).
    const std::vector<worker_env*>* peers = nullptr;
};

/// SO_REUSEPORT spreads connections by hash, which is uneven for HAProxy's few long-lived
/// connections (measured: 4 connections on 5 workers typically land 2-2-0-0-0 or 3-1-0-0-0).
/// So after accepting, a worker hands the connection to the least-loaded worker when that one
/// has fewer connections than itself. Accept time only: never on the per-frame path.
/// Returns true if `fd` now belongs to another worker.
bool hand_off(worker_env& env, int fd);

/// Takes the connections handed to this worker: calls adopt(fd) for each int in `bytes`.
template <class F>
void adopt_handed_off(worker_env& env, const void* bytes, std::size_t n, F&& adopt) {
    const auto* fds = static_cast<const int*>(bytes);
    for (std::size_t i = 0; i < n / sizeof(int); ++i) {
        env.pending_handoffs.fetch_sub(1, std::memory_order_relaxed);
        adopt(fds[i]);
    }
}

/// Runs an epoll event loop until a graceful stop completes. Returns 0, or 1 on a fatal error.
int run_epoll_worker(worker_env& env);
/// Runs an io_uring event loop. Returns 0, or 1 on a fatal error.
int run_uring_worker(worker_env& env);

/// Checks that this kernel and process can run the io_uring engine (ring setup flags, multishot
/// accept and recv, provided-buffer rings). On failure `why` names the cause.
bool uring_usable(std::string& why);

[[nodiscard]] inline std::uint64_t mono_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}
[[nodiscard]] inline std::uint32_t mono_s() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::uint32_t>(ts.tv_sec);
}

/// Formats a peer address for logs.
std::string peer_name(const sockaddr_storage& ss, socklen_t len);

/// Logs and counts the end of a connection. Abrupt closes (HAProxy 3.x rarely says goodbye)
/// and normal goodbyes are debug-level; protocol errors are warnings, rate-limited per worker.
void note_close(worker_env& env, const conn_t& c, const char* peer, const char* how,
                rate_limiter& errors_rl);

/// What a connection's timers decide, checked once a second by every engine.
enum class timer_verdict {
    none,
    timeout, ///< close with AGENT-DISCONNECT 2 (no HELLO in time, or idle past --idle-timeout)
    drop,    ///< the peer stopped reading: close without waiting for the last bytes to go out
};

/// `last_progress`: the last time a send wrote something.
[[nodiscard]] inline timer_verdict check_timers(const options& o, const conn_t& c,
                                                std::uint32_t now, std::uint32_t created,
                                                std::uint32_t last_active,
                                                std::uint32_t last_progress) noexcept {
    constexpr std::uint32_t write_stall_s = 30;
    const auto st = c.state();
    if (st == spop::conn_state::awaiting_hello && now - created >= o.hello_timeout_s)
        return timer_verdict::timeout;
    if (st == spop::conn_state::established && o.idle_timeout_s != 0 &&
        now - last_active >= o.idle_timeout_s && c.output().empty())
        return timer_verdict::timeout;
    // Our final frame, or ACKs of a back-pressured connection, unread for 30 s.
    const std::uint32_t seen = last_active > last_progress ? last_active : last_progress;
    if (st == spop::conn_state::closing && now - last_active >= write_stall_s)
        return timer_verdict::drop;
    if (!c.wants_input() && !c.output().empty() && now - seen >= write_stall_s)
        return timer_verdict::drop;
    return timer_verdict::none;
}

/// Lame-duck stop: after SIGTERM the listeners close at once (HAProxy's checks then mark the
/// agent DOWN and it stops sending), but a connection keeps being served until it has been idle
/// for --drain-idle, so NOTIFYs still on the wire are answered. It gets AGENT-DISCONNECT 0 then,
/// or when the last second of --shutdown-timeout begins, whichever comes first.
[[nodiscard]] inline bool stop_connection_now(const options& o, std::uint32_t now,
                                              std::uint32_t stop_deadline,
                                              std::uint32_t last_active) noexcept {
    const std::uint32_t flush_time = o.shutdown_timeout_s > 0 ? 1 : 0;
    return now - last_active >= o.drain_idle_s || now + flush_time >= stop_deadline;
}

/// Keeps the worker's queued-ACK gauge in step with one connection. `reported` is that
/// connection's share already in the gauge; pass 0 as `now` when the connection goes away.
inline void track_queued(worker_env& env, std::uint32_t& reported, std::uint32_t now) noexcept {
    if (now > reported)
        env.stats->acks_queued.add(now - reported);
    else if (now < reported)
        env.stats->acks_queued.sub(reported - now);
    reported = now;
}

/// Counter bookkeeping per connection, the same for every engine.
struct conn_book {
    bool hello_seen = false;
    bool counted_close = false;
    std::uint32_t queued_reported = 0; ///< this connection's share of stats.acks_queued

    /// After feed() or consume_output(): frames, ACKs, batch latency, HELLO, queued ACKs.
    void after_io(worker_env& env, const conn_t& c, const spop::feed_result& fr,
                  std::uint64_t t0) noexcept;
    /// Once the connection is closing: its AGENT-DISCONNECT (or health check), counted once.
    void after_state(worker_env& env, const conn_t& c) noexcept;
    /// The connection is gone: take its share out of the gauges.
    void gone(worker_env& env) noexcept { track_queued(env, queued_reported, 0); }
};

/// Decides what happens to a freshly accepted fd: refused (closed) when --max-connections
/// are open across all workers, handed to a less loaded worker, or kept (true). Sets
/// TCP_NODELAY on TCP sockets. An admitted fd takes a slot until close_admitted().
bool admit(worker_env& env, int fd, bool is_tcp, rate_limiter& rl, std::uint32_t now);

/// Closes an admitted connection's fd and gives its --max-connections slot back.
void close_admitted(worker_env& env, int fd);

/// Counts one AGENT-DISCONNECT if the connection queued one (called when it enters closing).
void count_disconnect(worker_env& env, const conn_t& c);

} // namespace agent
