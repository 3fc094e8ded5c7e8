// Redis endpoints for the agent's Redis features (live decisions, shared rate limits): parsing
// `redis://[:PASSWORD@]HOST[:PORT][/DB]` and `unix:///PATH[?db=N]`, and a blocking connect that
// applies AUTH and SELECT. Used only on the agent's own Redis threads, never on a worker: a
// NOTIFY never waits on Redis.
#pragma once

#include <hiredis/hiredis.h>

#include <charconv>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace agent::redis {

struct endpoint {
    std::string host; ///< empty for a Unix socket
    std::uint16_t port = 6379;
    std::string unix_path; ///< set for unix://
    std::string password;  ///< empty: no AUTH
    int db = 0;

    /// For logs and metrics: never shows the password.
    [[nodiscard]] std::string describe() const {
        std::string s = unix_path.empty() ? "redis://" + host + ":" + std::to_string(port)
                                          : "unix://" + unix_path;
        return s + (unix_path.empty() ? "/" : "?db=") + std::to_string(db);
    }
};

namespace detail {
inline bool parse_uint(std::string_view s, unsigned long max, unsigned long& out) {
    if (s.empty()) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size() && out <= max;
}
} // namespace detail

/// Parses a Redis URL. On failure returns false and sets `error` to a short reason (for the
/// agent's one-line "agent: --decisions: <reason>" error).
inline bool parse_url(std::string_view url, endpoint& out, std::string& error) {
    out = endpoint{};
    unsigned long n = 0;
    if (url.starts_with("unix://")) {
        std::string_view rest = url.substr(7);
        if (auto q = rest.find('?'); q != std::string_view::npos) {
            std::string_view query = rest.substr(q + 1);
            rest = rest.substr(0, q);
            if (!query.starts_with("db=") || !detail::parse_uint(query.substr(3), 1 << 20, n)) {
                error = "expected unix:///PATH[?db=N]";
                return false;
            }
            out.db = static_cast<int>(n);
        }
        if (rest.empty() || rest.front() != '/') {
            error = "expected an absolute socket path: unix:///PATH";
            return false;
        }
        out.unix_path = std::string(rest);
        return true;
    }
    if (!url.starts_with("redis://")) {
        error = "expected redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH";
        return false;
    }
    std::string_view rest = url.substr(8);
    if (auto at = rest.rfind('@'); at != std::string_view::npos) {
        std::string_view auth = rest.substr(0, at);
        rest = rest.substr(at + 1);
        if (auth.starts_with(':'))
            auth.remove_prefix(1); // redis://:pass@ (no user)
        else if (auto c = auth.find(':'); c != std::string_view::npos)
            auth = auth.substr(c + 1);
        out.password = std::string(auth);
    }
    if (auto slash = rest.find('/'); slash != std::string_view::npos) {
        std::string_view db = rest.substr(slash + 1);
        rest = rest.substr(0, slash);
        if (!db.empty()) {
            if (!detail::parse_uint(db, 1 << 20, n)) {
                error = "invalid database number";
                return false;
            }
            out.db = static_cast<int>(n);
        }
    }
    std::string_view host = rest;
    if (host.starts_with('[')) { // [::1]:6379
        auto close = host.find(']');
        if (close == std::string_view::npos) {
            error = "unterminated [IPv6 address]";
            return false;
        }
        std::string_view after = host.substr(close + 1);
        host = host.substr(1, close - 1);
        if (!after.empty()) {
            if (!after.starts_with(':') || !detail::parse_uint(after.substr(1), 65535, n) ||
                n == 0) {
                error = "invalid port";
                return false;
            }
            out.port = static_cast<std::uint16_t>(n);
        }
    } else if (auto c = host.rfind(':'); c != std::string_view::npos) {
        if (!detail::parse_uint(host.substr(c + 1), 65535, n) || n == 0) {
            error = "invalid port";
            return false;
        }
        out.port = static_cast<std::uint16_t>(n);
        host = host.substr(0, c);
    }
    if (host.empty()) {
        error = "missing host";
        return false;
    }
    out.host = std::string(host);
    return true;
}

struct reply_deleter {
    void operator()(redisReply* r) const noexcept {
        if (r != nullptr) freeReplyObject(r);
    }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

/// The next reply of a pipeline (blocking, bounded by the context's timeout); null on an I/O or
/// protocol error (c->errstr says which).
inline reply_ptr get_reply(redisContext* c) {
    void* r = nullptr;
    if (redisGetReply(c, &r) != REDIS_OK) return nullptr;
    return reply_ptr(static_cast<redisReply*>(r));
}

struct context_deleter {
    void operator()(redisContext* c) const noexcept { redisFree(c); }
};
using context_ptr = std::unique_ptr<redisContext, context_deleter>;

/// Connects (bounded by `timeout`), then AUTH and SELECT when the endpoint asks for them, and
/// sets `timeout` as the read/write timeout of every later command. Returns null with `error`
/// set on any failure. Blocking: call it on a Redis thread only.
inline context_ptr connect(const endpoint& ep, timeval timeout, std::string& error) {
    context_ptr c(ep.unix_path.empty()
                      ? redisConnectWithTimeout(ep.host.c_str(), ep.port, timeout)
                      : redisConnectUnixWithTimeout(ep.unix_path.c_str(), timeout));
    if (!c) {
        error = "out of memory";
        return nullptr;
    }
    if (c->err != 0) {
        error = c->errstr;
        return nullptr;
    }
    if (redisSetTimeout(c.get(), timeout) != REDIS_OK) {
        error = "cannot set the socket timeout";
        return nullptr;
    }
    auto ok_reply = [&](redisReply* r, const char* what) {
        bool ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
        if (!ok)
            error = std::string(what) + ": " +
                    (r == nullptr                   ? std::string(c->errstr)
                     : r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len)
                                                    : std::string("unexpected reply"));
        if (r != nullptr) freeReplyObject(r);
        return ok;
    };
    if (!ep.password.empty() &&
        !ok_reply(static_cast<redisReply*>(
                      redisCommand(c.get(), "AUTH %b", ep.password.data(), ep.password.size())),
                  "AUTH"))
        return nullptr;
    if (ep.db != 0 &&
        !ok_reply(static_cast<redisReply*>(redisCommand(c.get(), "SELECT %d", ep.db)), "SELECT"))
        return nullptr;
    return c;
}

} // namespace agent::redis
