// A minimal in-process SPOA for `spop-loadgen --self-serve`: epoll, level-triggered, one
// listener on loopback, N worker threads, spop::connection over the agent's IP-reputation
// service (agent/iprep/service.hpp) with no reputation tables and a fixed score. It lets the
// load generator be smoke-tested (and the library measured over real sockets) without the agent
// binary. Not the agent's engine: no timeouts, no metrics, no io_uring.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <spop/spop.hpp>

#include "iprep/service.hpp"

namespace spop_bench {

class mini_agent {
  public:
    mini_agent() = default;
    mini_agent(const mini_agent&) = delete;
    mini_agent& operator=(const mini_agent&) = delete;
    ~mini_agent() { stop(); }

    /// The score every address gets (as `agent --default-score 50` with no lists).
    static constexpr int score = 50;

    /// Listens on 127.0.0.1 (or ::1) on an ephemeral port and starts `workers` threads.
    /// Returns the port, or 0 on failure.
    int start(bool ipv6, int workers) {
        listen_fd_ =
            ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (listen_fd_ < 0) return 0;
        const int one = 1;
        ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (ipv6) {
            auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
            a->sin6_family = AF_INET6;
            a->sin6_addr = in6addr_loopback;
            len = sizeof *a;
        } else {
            auto* a = reinterpret_cast<sockaddr_in*>(&ss);
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            len = sizeof *a;
        }
        if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
            ::listen(listen_fd_, 4096) != 0 ||
            ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
            return 0;
        stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (stop_fd_ < 0) return 0;
        svc_cfg_.default_score = score;
        for (int i = 0; i < workers; ++i)
            threads_.emplace_back([this, i] { run(static_cast<std::uint64_t>(i) + 1); });
        const std::uint16_t port = ipv6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port;
        return ntohs(port);
    }

    void stop() {
        if (stop_fd_ >= 0) {
            const std::uint64_t one = 1;
            (void)!::write(stop_fd_, &one, sizeof one);
        }
        for (auto& t : threads_) t.join();
        threads_.clear();
        if (listen_fd_ >= 0) ::close(listen_fd_);
        if (stop_fd_ >= 0) ::close(stop_fd_);
        listen_fd_ = stop_fd_ = -1;
    }

  private:
    struct peer {
        int fd;
        std::uint32_t events;
        spop::connection<agent::iprep::service> conn;
        std::vector<std::uint8_t> held; ///< received bytes the connection did not take yet
        /// Feeds `in`; keeps what the connection did not take (back-pressure).
        void take(std::span<const std::uint8_t> in) {
            const std::size_t took = conn.feed(in).consumed;
            held.assign(in.begin() + static_cast<std::ptrdiff_t>(took), in.end());
        }
        peer(int f, agent::iprep::service& s, spop::buffer_pool& p,
             const spop::connection_config& c)
            : fd(f), events(EPOLLIN), conn(s, p, c) {}
    };

    void run(std::uint64_t seed) {
        agent::iprep::service_stats stats; // this worker's; nothing reads them
        agent::iprep::service svc(svc_cfg_, rep_, stats, seed);
        const spop::connection_config cfg;
        spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
        std::vector<std::unique_ptr<peer>> peers; // indexed by fd
        const int ep = ::epoll_create1(EPOLL_CLOEXEC);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLEXCLUSIVE;
        ev.data.fd = listen_fd_;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd_, &ev);
        ev.events = EPOLLIN;
        ev.data.fd = stop_fd_;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, stop_fd_, &ev);
        std::vector<std::uint8_t> buf(64 * 1024);
        epoll_event evs[128];

        auto drop = [&](peer& p) {
            ::epoll_ctl(ep, EPOLL_CTL_DEL, p.fd, nullptr);
            ::close(p.fd);
            peers[static_cast<std::size_t>(p.fd)].reset();
        };
        // Sends what the connection has, re-arms the socket, closes when the core says so.
        auto flush = [&](peer& p) {
            for (auto out = p.conn.output(); !out.empty(); out = p.conn.output()) {
                const ssize_t n = ::send(p.fd, out.data(), out.size(), MSG_NOSIGNAL);
                if (n < 0) {
                    if (errno == EAGAIN) break;
                    p.conn.on_peer_closed();
                    break;
                }
                (void)p.conn.consume_output(static_cast<std::size_t>(n));
                if (!p.held.empty() && p.conn.takes_input()) {
                    const std::vector<std::uint8_t> again = std::move(p.held);
                    p.take(again);
                }
            }
            if (p.conn.should_close()) return drop(p);
            const bool reading = p.conn.wants_input() && p.held.empty();
            const std::uint32_t want =
                (reading ? EPOLLIN : 0u) | (p.conn.output().empty() ? 0u : EPOLLOUT);
            if (want != p.events) {
                p.events = want;
                epoll_event e{};
                e.events = want;
                e.data.fd = p.fd;
                ::epoll_ctl(ep, EPOLL_CTL_MOD, p.fd, &e);
            }
        };

        for (bool running = true; running;) {
            const int n = ::epoll_wait(ep, evs, 128, 1000);
            for (int i = 0; i < n; ++i) {
                const int fd = evs[i].data.fd;
                if (fd == stop_fd_) {
                    running = false;
                    continue;
                }
                if (fd == listen_fd_) {
                    for (;;) {
                        const int c =
                            ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                        if (c < 0) break;
                        const int one = 1;
                        ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                        if (peers.size() <= static_cast<std::size_t>(c))
                            peers.resize(static_cast<std::size_t>(c) + 64);
                        peers[static_cast<std::size_t>(c)] =
                            std::make_unique<peer>(c, svc, pool, cfg);
                        epoll_event e{};
                        e.events = EPOLLIN;
                        e.data.fd = c;
                        ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                    }
                    continue;
                }
                peer* p = static_cast<std::size_t>(fd) < peers.size()
                              ? peers[static_cast<std::size_t>(fd)].get()
                              : nullptr;
                if (p == nullptr) continue;
                if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && p->conn.wants_input() &&
                    p->held.empty()) {
                    // 64 KiB at a time: feed() takes what it can answer, whatever the size.
                    const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
                    if (r > 0) {
                        p->take({buf.data(), static_cast<std::size_t>(r)});
                    } else if (r == 0) {
                        p->conn.on_peer_eof();
                    } else if (errno != EAGAIN) {
                        p->conn.on_peer_closed();
                    }
                }
                flush(*p);
            }
        }
        for (auto& p : peers)
            if (p) ::close(p->fd);
        ::close(ep);
    }

    agent::iprep::service_config svc_cfg_;
    agent::iprep::reputation_source rep_; ///< empty: every address gets `score`
    int listen_fd_ = -1;
    int stop_fd_ = -1;
    std::vector<std::thread> threads_;
};

} // namespace spop_bench
