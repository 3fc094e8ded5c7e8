// spop::server listeners. TCP listeners are opened once per worker with SO_REUSEPORT, so the
// kernel spreads new connections over the workers and no accept is shared; a Unix socket is
// opened once and shared.
#pragma once

#include <arpa/inet.h>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

#include "options.hpp"

namespace spop::server {

struct listen_spec {
    sockaddr_storage addr{};
    socklen_t len = 0;
    std::string desc; ///< "127.0.0.1:12345", "[::]:12345", "unix:/run/agent.sock"
    bool v6only = false;
    bool is_unix = false;
};

/// Turns addresses/port/unix_path into socket addresses. false + `err` on a bad address.
/// Fails with "address already in use" in check_port_free() even when the other listener uses
/// SO_REUSEPORT (which would otherwise let two agents silently share a port).

inline bool resolve_listen_specs(const options& o, std::vector<listen_spec>& out,
                                 std::string& err) {
    std::vector<std::string> addrs = o.addresses;
    if (addrs.empty() && o.unix_path.empty()) addrs.emplace_back("0.0.0.0");
    bool have_v4 = false;
    for (const auto& a : addrs) {
        in_addr v4{};
        if (inet_pton(AF_INET, a.c_str(), &v4) == 1) have_v4 = true;
    }
    for (const auto& a0 : addrs) {
        std::string a = a0;
        if (a.size() > 2 && a.front() == '[' && a.back() == ']') a = a.substr(1, a.size() - 2);
        listen_spec s;
        in_addr v4{};
        in6_addr v6{};
        if (inet_pton(AF_INET, a.c_str(), &v4) == 1) {
            auto* sin = reinterpret_cast<sockaddr_in*>(&s.addr);
            sin->sin_family = AF_INET;
            sin->sin_port = htons(static_cast<uint16_t>(o.port));
            sin->sin_addr = v4;
            s.len = sizeof(sockaddr_in);
            s.desc = a + ":" + std::to_string(o.port);
        } else if (inet_pton(AF_INET6, a.c_str(), &v6) == 1) {
            auto* sin6 = reinterpret_cast<sockaddr_in6*>(&s.addr);
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(static_cast<uint16_t>(o.port));
            sin6->sin6_addr = v6;
            s.len = sizeof(sockaddr_in6);
            s.desc = "[" + a + "]:" + std::to_string(o.port);
            // `::` alone serves both families; next to an IPv4 address it must not overlap.
            s.v6only = have_v4 || !IN6_IS_ADDR_UNSPECIFIED(&v6);
        } else {
            err = "invalid --address '" + a0 + "' (expected an IPv4 or IPv6 address)";
            return false;
        }
        out.push_back(s);
    }
    if (!o.unix_path.empty()) {
        listen_spec s;
        auto* sun = reinterpret_cast<sockaddr_un*>(&s.addr);
        if (o.unix_path.size() >= sizeof(sun->sun_path)) {
            err = "unix socket path too long: " + o.unix_path;
            return false;
        }
        sun->sun_family = AF_UNIX;
        std::memcpy(sun->sun_path, o.unix_path.c_str(), o.unix_path.size() + 1);
        s.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + o.unix_path.size() + 1);
        s.desc = "unix:" + o.unix_path;
        s.is_unix = true;
        out.push_back(s);
    }
    return true;
}

inline std::string bind_error(const listen_spec& s, int e) {
    if (e == EADDRINUSE) return "cannot listen on " + s.desc + ": address already in use";
    if (e == EACCES) return "cannot listen on " + s.desc + ": permission denied";
    if (e == EADDRNOTAVAIL)
        return "cannot listen on " + s.desc + ": address not available on this host";
    return "cannot listen on " + s.desc + ": " + std::strerror(e);
}

inline bool check_port_free(const listen_spec& s, std::string& err) {
    if (s.is_unix) return true;
    const int fd = ::socket(s.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = "socket(): " + std::string(std::strerror(errno));
        return false;
    }
    const int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s.addr.ss_family == AF_INET6) {
        const int v6only = s.v6only ? 1 : 0;
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    }
    const bool ok = ::bind(fd, reinterpret_cast<const sockaddr*>(&s.addr), s.len) == 0;
    if (!ok) err = bind_error(s, errno);
    ::close(fd);
    return ok;
}

/// True when a process accepts connections on the Unix socket at `s` (so its file is not a
/// stale one left by a process that is gone).
inline bool unix_socket_live(const listen_spec& s) {
    // Non-blocking: a live listener with a full backlog answers EAGAIN instead of blocking.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return false;
    const bool live = ::connect(fd, reinterpret_cast<const sockaddr*>(&s.addr), s.len) == 0 ||
                      errno == EAGAIN; // a full backlog: alive, just busy
    ::close(fd);
    return live;
}

/// `mode`/`gid` (-1: leave alone) apply to a Unix socket's file, after bind.
inline int open_listener(const listen_spec& s, int backlog, bool reuseport, std::string& err,
                         int mode = -1, int gid = -1) {
    if (s.is_unix) {
        const auto* sun = reinterpret_cast<const sockaddr_un*>(&s.addr);
        struct stat st {};
        // Replace a stale socket file, never a regular file, nor the socket of a running
        // process (a second agent started on the same path would take its traffic silently).
        if (::stat(sun->sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            if (unix_socket_live(s)) {
                err = "cannot listen on " + s.desc +
                      ": address already in use (another process accepts connections there)";
                return -1;
            }
            ::unlink(sun->sun_path);
        }
    }
    const int fd = ::socket(s.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        err = "socket(): " + std::string(std::strerror(errno));
        return -1;
    }
    const int one = 1;
    if (!s.is_unix) {
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            err = "SO_REUSEPORT: " + std::string(std::strerror(errno));
            ::close(fd);
            return -1;
        }
        if (s.addr.ss_family == AF_INET6) {
            const int v6only = s.v6only ? 1 : 0;
            (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
        }
    }
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&s.addr), s.len) != 0) {
        err = bind_error(s, errno);
        ::close(fd);
        return -1;
    }
    if (s.is_unix && (mode >= 0 || gid >= 0)) {
        const char* path = reinterpret_cast<const sockaddr_un*>(&s.addr)->sun_path;
        const char* what = nullptr;
        if (gid >= 0 && ::chown(path, static_cast<uid_t>(-1), static_cast<gid_t>(gid)) != 0)
            what = "chown";
        else if (mode >= 0 && ::chmod(path, static_cast<mode_t>(mode)) != 0)
            what = "chmod";
        if (what != nullptr) {
            err = std::string(what) + "(" + s.desc + "): " + std::strerror(errno);
            ::unlink(path);
            ::close(fd);
            return -1;
        }
    }
    if (::listen(fd, backlog) != 0) {
        err = "listen(" + s.desc + "): " + std::strerror(errno);
        ::close(fd);
        return -1;
    }
    return fd;
}

} // namespace spop::server
