// spop::server: what both I/O backends share: the worker's environment, admission, hand-off,
// timers, the lame-duck stop policy, and how a connection's end is logged and counted. The
// backends (uring.hpp, epoll.hpp) differ only in how bytes move.
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>
#include <string>
#include <sys/socket.h>
#include <vector>

#include <arpa/inet.h>
#include <cstdio>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string_view>
#include <sys/un.h>
#include <unistd.h>

#include "../connection.hpp"
#include "log.hpp"
#include "options.hpp"
#include "stats.hpp"

namespace spop::server {

/// What a service's factory is told about the worker it builds the service for. Called on that
/// worker's thread, once, before the worker serves anything.
template <class Stats>
struct worker_info {
    int id;       ///< 0..workers-1
    Stats& stats; ///< this worker's counters (the service may add its own in a derived Stats)
};

struct worker_env {
    int id = 0;
    const options* opt = nullptr;
    std::vector<int> listen_fds;     ///< listeners this worker accepts on
    std::vector<bool> listen_is_tcp; ///< TCP_NODELAY applies to accepted sockets
    spop::connection_config conn_cfg{};
    worker_stats* stats = nullptr;
    int wake_fd = -1; ///< eventfd: main writes 1 to ask for a graceful stop
    /// This worker's deferred-answer tickets. Owned by the server, not the worker: a ticket may
    /// be completed (harmlessly) after its worker stopped, as long as the server exists.
    class ticket_pool* tickets = nullptr;
    std::uint32_t max_conns = 0; ///< --max-connections: a total over every worker
    /// Connections open across all workers (admitted, not closed yet). Touched at accept and
    /// close only, never per frame.
    std::atomic<std::uint32_t>* live_total = nullptr;
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
inline bool hand_off(worker_env& env, int fd) {
    if (env.peers == nullptr || env.peers->size() < 2) return false;
    const auto load = [](const worker_env* w) {
        return static_cast<long>(w->stats->conns_current.get()) +
               w->pending_handoffs.load(std::memory_order_relaxed);
    };
    const long mine = load(&env);
    worker_env* best = nullptr;
    long best_load = mine;
    for (worker_env* w : *env.peers) {
        if (w == &env) continue;
        const long l = load(w);
        if (l < best_load) {
            best = w;
            best_load = l;
        }
    }
    if (best == nullptr) return false;
    best->pending_handoffs.fetch_add(1, std::memory_order_relaxed);
    if (::write(best->handoff_wfd, &fd, sizeof fd) != static_cast<ssize_t>(sizeof fd)) {
        best->pending_handoffs.fetch_sub(1, std::memory_order_relaxed);
        return false; // pipe full or gone: keep it here
    }
    return true;
}

/// At a stop, after the backend stopped accepting: closes this worker's TCP listeners, so that
/// the port is free at once for a replacement agent while this one drains its connections (a
/// listener merely shut down keeps the port bound until exit). The shared Unix listener is
/// closed by the server once every worker is done.
inline void close_tcp_listeners(worker_env& env) noexcept {
    for (std::size_t i = 0; i < env.listen_fds.size(); ++i) {
        if (!env.listen_is_tcp[i] || env.listen_fds[i] < 0) continue;
        ::close(env.listen_fds[i]);
        env.listen_fds[i] = -1;
    }
}

/// Takes the connections handed to this worker: calls adopt(fd) for each int in `bytes`.
template <class F>
void adopt_handed_off(worker_env& env, const void* bytes, std::size_t n, F&& adopt) {
    const auto* fds = static_cast<const int*>(bytes);
    for (std::size_t i = 0; i < n / sizeof(int); ++i) {
        env.pending_handoffs.fetch_sub(1, std::memory_order_relaxed);
        adopt(fds[i]);
    }
}

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

/// The same coarse clock (a few ms of resolution, no syscall) in milliseconds.
[[nodiscard]] inline std::uint64_t mono_coarse_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 +
           static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

/// Formats a peer address for logs.
inline std::string peer_name(const sockaddr_storage& ss, socklen_t len) {
    char buf[INET6_ADDRSTRLEN + 16] = "?";
    if (ss.ss_family == AF_INET) {
        const auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &s->sin_addr, a, sizeof a);
        std::snprintf(buf, sizeof buf, "%s:%u", a, ntohs(s->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
        char a[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof a);
        std::snprintf(buf, sizeof buf, "[%s]:%u", a, ntohs(s->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        (void)len;
        std::snprintf(buf, sizeof buf, "unix");
    }
    return buf;
}

/// Logs and counts the end of a connection. Abrupt closes (HAProxy 3.x rarely says goodbye)
/// and normal goodbyes are debug-level; protocol errors are warnings, rate-limited per worker.
template <class conn_t>
void note_close(worker_env& env, const conn_t& c, const char* peer, const char* how,
                rate_limiter& errors_rl) {
    const spop::errc e = c.error();
    const bool protocol_error = e != spop::errc::ok && e != spop::errc::peer_disconnect &&
                                e != spop::errc::shutdown && e != spop::errc::timeout;
    if (protocol_error) {
        unsigned suppressed = 0;
        if (errors_rl.allow(mono_s(), suppressed)) {
            log(level::warn,
                "event=protocol_error worker=%d peer=%s status=%u reason=\"%.*s\" close=%s "
                "suppressed=%u",
                env.id, peer, static_cast<unsigned>(spop::to_status(e)),
                static_cast<int>(spop::message(e).size()), spop::message(e).data(), how,
                suppressed);
        }
        return;
    }
    if (!log_enabled(level::debug)) return;
    if (e == spop::errc::peer_disconnect) {
        log(level::debug,
            "event=close worker=%d peer=%s reason=haproxy_disconnect status=%u close=%s", env.id,
            peer, c.peer_status(), how);
    } else {
        // ok: the peer simply closed, which HAProxy 3.x does instead of a DISCONNECT.
        const std::string_view reason = e != spop::errc::ok  ? spop::message(e)
                                        : c.is_healthcheck() ? std::string_view("health check done")
                                                             : std::string_view("peer closed");
        log(level::debug, "event=close worker=%d peer=%s reason=\"%.*s\" healthcheck=%d close=%s",
            env.id, peer, static_cast<int>(reason.size()), reason.data(),
            c.is_healthcheck() ? 1 : 0, how);
    }
}

/// What a connection's timers decide, checked once a second by every engine.
enum class timer_verdict {
    none,
    timeout, ///< close with AGENT-DISCONNECT 2 (no HELLO in time, or idle past --idle-timeout)
    drop,    ///< the peer stopped reading: close without waiting for the last bytes to go out
};

/// `last_progress`: the last time a send wrote something.
template <class conn_t>
[[nodiscard]] inline timer_verdict
check_timers(const options& o, const conn_t& c, std::uint32_t now, std::uint32_t created,
             std::uint32_t last_active, std::uint32_t last_progress) noexcept {
    constexpr std::uint32_t write_stall_s = 30;
    const auto st = c.state();
    // Whole seconds: `>` so that a timeout never fires early (between N and N+1 s, not N-1).
    if (st == spop::conn_state::awaiting_hello && now - created > o.hello_timeout_s)
        return timer_verdict::timeout;
    const std::uint32_t seen = last_active > last_progress ? last_active : last_progress;
    // Idle: nothing read or sent for that long, and nothing owed to the peer. A connection
    // waiting for a deferred answer is not idle: closing it would discard the NOTIFYs the
    // peer keeps sending meanwhile.
    if (st == spop::conn_state::established && o.idle_timeout_s != 0 &&
        now - seen > o.idle_timeout_s && c.output().empty() && c.deferred_count() == 0 &&
        !c.input_held())
        return timer_verdict::timeout;
    // Our final frame, or ACKs of a back-pressured connection, unread for 30 s.
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
/// A connection with ACKs unsent, input held or answers deferred is not idle, whatever the time
/// of its last read. `last_active_ms`: its last read or send, whichever came later (a peer that
/// just read the last of a back-pressured backlog has unread NOTIFYs on the wire, and the
/// worker reads them at its next turn).
template <class C>
[[nodiscard]] bool stop_connection_now(const options& o, std::uint64_t now_ms,
                                       std::uint64_t stop_deadline_ms, std::uint64_t last_active_ms,
                                       const C& c) noexcept {
    const std::uint64_t flush_ms = o.shutdown_timeout_s > 0 ? 1000 : 0;
    if (now_ms + flush_ms >= stop_deadline_ms) return true;
    const bool busy =
        !c.output().empty() || c.input_held() || !c.takes_input() || c.deferred_count() != 0;
    // Milliseconds: in whole seconds a connection read from 10 ms ago looked idle for 1 s once
    // the second turned, and got AGENT-DISCONNECT while HAProxy still had it in use.
    return !busy && now_ms - last_active_ms >= std::uint64_t{o.drain_idle_s} * 1000;
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
    template <class conn_t>
    void after_io(worker_env& env, const conn_t& c, const spop::feed_result& fr,
                  std::uint64_t t0) noexcept;
    /// Once the connection is closing: its AGENT-DISCONNECT (or health check), counted once.
    template <class conn_t>
    void after_state(worker_env& env, const conn_t& c) noexcept;
    /// The connection is gone: take its share out of the gauges.
    void gone(worker_env& env) noexcept { track_queued(env, queued_reported, 0); }
};

/// Decides what happens to a freshly accepted fd: refused (closed) when --max-connections
/// are open across all workers, handed to a less loaded worker, or kept (true). Sets
/// TCP_NODELAY on TCP sockets. An admitted fd takes a slot until close_admitted().
inline bool admit(worker_env& env, int fd, bool is_tcp, rate_limiter& rl, std::uint32_t now) {
    if (env.live_total->fetch_add(1, std::memory_order_relaxed) >= env.max_conns) {
        env.live_total->fetch_sub(1, std::memory_order_relaxed);
        env.stats->conns_rejected.add();
        unsigned sup = 0;
        if (rl.allow(now, sup))
            log(level::warn,
                "event=limit_reached worker=%d limit=max-connections value=%u suppressed=%u",
                env.id, env.max_conns, sup);
        ::close(fd);
        return false;
    }
    if (is_tcp) {
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return !hand_off(env, fd);
}

/// Closes an admitted connection's fd and gives its --max-connections slot back.
inline void close_admitted(worker_env& env, int fd) {
    ::close(fd);
    env.live_total->fetch_sub(1, std::memory_order_relaxed);
}

/// Counts one AGENT-DISCONNECT if the connection queued one (called when it enters closing).
template <class conn_t>
void count_disconnect(worker_env& env, const conn_t& c) {
    const spop::errc e = c.error();
    if (e == spop::errc::peer_disconnect) env.stats->disconnect_frames.add();
    if (e == spop::errc::ok) return; // health-check close: no DISCONNECT
    const std::uint32_t code = e == spop::errc::peer_disconnect
                                   ? c.peer_status()
                                   : static_cast<std::uint32_t>(spop::to_status(e));
    env.stats->disconnects_sent[status_slot(code)].add();
}

template <class conn_t>
void conn_book::after_io(worker_env& env, const conn_t& c, const spop::feed_result& fr,
                         std::uint64_t t0) noexcept {
    track_queued(env, queued_reported, c.queued_acks());
    if (fr.frames) env.stats->frames_in.add(fr.frames);
    if (fr.notifies) {
        env.stats->notify_frames.add(fr.notifies);
        env.stats->acks.add(fr.notifies);
        env.stats->observe_latency_ns(mono_ns() - t0);
    }
    if (!hello_seen && (c.state() == spop::conn_state::established || c.is_healthcheck())) {
        hello_seen = true;
        env.stats->hello_frames.add();
    }
}

template <class conn_t>
void conn_book::after_state(worker_env& env, const conn_t& c) noexcept {
    if (counted_close || c.state() < spop::conn_state::closing) return;
    counted_close = true;
    count_disconnect(env, c);
    if (c.is_healthcheck()) env.stats->healthchecks.add();
}

} // namespace spop::server
