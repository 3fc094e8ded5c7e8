// A complete SPOP agent in one file, on nothing but the spop headers and POSIX sockets: one
// thread per connection, blocking I/O. It proves the sans-IO core embeds into any server.
//
//   blocking_agent [port] [service]     service: iprep (default; random_service.hpp) or bot
//
// HAProxy connections are few and long-lived, so a thread each is fine at small scale; the
// `agent` binary is the io_uring/epoll version of the same loop.
#include <arpa/inet.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string_view>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <spop/spop.hpp>

#include "bot_service.hpp"
#include "random_service.hpp"

namespace {

template <spop::service S>
void serve(int fd) {
    S svc;
    const spop::connection_config cfg{};
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size), 2);
    spop::connection<S> conn(svc, pool, cfg);
    std::uint8_t buf[16384];
    std::size_t have = 0; // received bytes the connection has not taken yet (back-pressure)
    while (!conn.should_close()) {
        // Write everything queued, whole frames, before reading more.
        for (auto out = conn.output(); !out.empty(); out = conn.output()) {
            const ssize_t w = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
            if (w <= 0) {
                conn.on_peer_closed();
                break;
            }
            (void)conn.consume_output(static_cast<std::size_t>(w));
        }
        if (conn.should_close()) break;
        if (have != 0 && conn.takes_input()) {
            // feed() takes only what it can answer; the rest stays ours until it can.
            const std::size_t took = conn.feed({buf, have}).consumed;
            std::memmove(buf, buf + took, have - took);
            have -= took;
            continue;
        }
        if (!conn.wants_input()) continue; // the sends above make room
        const ssize_t r = ::recv(fd, buf + have, sizeof buf - have, 0);
        if (r == 0) {
            conn.on_peer_eof(); // answer and flush what arrived, then close
            continue;
        }
        if (r < 0) {
            conn.on_peer_closed();
            break;
        }
        have += static_cast<std::size_t>(r);
        const std::size_t took = conn.feed({buf, have}).consumed;
        std::memmove(buf, buf + took, have - took);
        have -= took;
    }
    if (conn.error() != spop::errc::ok && conn.error() != spop::errc::peer_disconnect)
        std::fprintf(stderr, "connection closed: %s\n", spop::message(conn.error()).data());
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
}

} // namespace

int main(int argc, char** argv) {
    const int port = argc > 1 ? std::atoi(argv[1]) : 12345;
    const std::string_view which = argc > 2 ? argv[2] : "iprep";
    if (port <= 0 || port > 65535 || (which != "iprep" && which != "bot")) {
        std::fprintf(stderr, "usage: %s [port] [iprep|bot]\n", argv[0]);
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);
    const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(lfd, 1024) != 0) {
        std::fprintf(stderr, "cannot listen on port %d: %s\n", port, std::strerror(errno));
        return 1;
    }
    std::fprintf(stderr, "listening on port %d, service %.*s\n", port,
                 static_cast<int>(which.size()), which.data());
    while (true) {
        const int fd = ::accept(lfd, nullptr, nullptr);
        if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (which == "bot")
            std::thread(serve<example::bot_service>, fd).detach();
        else
            std::thread(serve<example::random_service>, fd).detach();
    }
}
