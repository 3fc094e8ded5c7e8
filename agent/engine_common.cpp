#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine.hpp"

namespace agent {

std::string peer_name(const sockaddr_storage& ss, socklen_t len) {
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

bool hand_off(worker_env& env, int fd) {
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

void conn_book::after_state(worker_env& env, const conn_t& c) noexcept {
    if (counted_close || c.state() < spop::conn_state::closing) return;
    counted_close = true;
    count_disconnect(env, c);
    if (c.is_healthcheck()) env.stats->healthchecks.add();
}

bool admit(worker_env& env, int fd, bool is_tcp, rate_limiter& rl, std::uint32_t now) {
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

void close_admitted(worker_env& env, int fd) {
    ::close(fd);
    env.live_total->fetch_sub(1, std::memory_order_relaxed);
}

void count_disconnect(worker_env& env, const conn_t& c) {
    const spop::errc e = c.error();
    if (e == spop::errc::peer_disconnect) env.stats->disconnect_frames.add();
    if (e == spop::errc::ok) return; // health-check close: no DISCONNECT
    const std::uint32_t code = e == spop::errc::peer_disconnect
                                   ? c.peer_status()
                                   : static_cast<std::uint32_t>(spop::to_status(e));
    env.stats->disconnects_sent[status_slot(code)].add();
}

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

} // namespace agent
