#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

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

void count_disconnect(worker_env& env, const conn_t& c) {
    const spop::errc e = c.error();
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
                static_cast<int>(spop::message(e).size()), spop::message(e).data(), how, suppressed);
        }
        return;
    }
    if (!log_enabled(level::debug)) return;
    if (e == spop::errc::peer_disconnect) {
        log(level::debug, "event=close worker=%d peer=%s reason=haproxy_disconnect status=%u close=%s",
            env.id, peer, c.peer_status(), how);
    } else {
        const spop::status st = spop::to_status(e);
        log(level::debug, "event=close worker=%d peer=%s reason=\"%.*s\" healthcheck=%d close=%s",
            env.id, peer,
            static_cast<int>(e == spop::errc::ok ? 4 : spop::message(e).size()),
            e == spop::errc::ok ? "peer" : spop::message(e).data(), c.is_healthcheck() ? 1 : 0, how);
        (void)st;
    }
}

} // namespace agent
