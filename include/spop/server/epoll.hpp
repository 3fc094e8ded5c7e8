// spop::server epoll backend: the fallback when io_uring is unavailable (containers often
// block it).
// Level-triggered; one recv batch per readable connection, one send per connection per batch.
//
// Loop rules:
// - a connection that does not want input (back-pressure, closing) is not polled for EPOLLIN;
//   the bytes of the last read that it did not take are kept (at most one read) and fed again,
//   first, when it takes input again: TCP pushes back on the peer, nothing is dropped;
// - end of stream (recv 0) is a half-close: every frame before it is answered and sent, then
//   the socket is closed;
// - output is written right after the batch that produced it; EPOLLOUT only while it is stuck;
// - after the last frame, the write side is shut and the socket drained until EOF (bounded),
//   so unread input cannot turn our final frame into an RST.
#pragma once

#include <algorithm>
#include <cerrno>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.hpp"

namespace spop::server {
namespace epoll_detail {

inline constexpr std::uint32_t drain_seconds = 2;
inline constexpr std::size_t read_chunk = spop::default_feed_chunk;

template <class Service>
struct econn {
    econn(Service& svc, spop::buffer_pool& pool, const spop::connection_config& cfg)
        : c(svc, pool, cfg) {}
    spop::connection<Service> c;
    int fd = -1;
    std::uint32_t gen = 0;
    std::uint32_t created = 0;
    std::uint32_t last_active = 0;
    std::uint32_t drain_deadline = 0;
    std::uint32_t last_progress = 0; ///< last time a send wrote something
    std::uint32_t events = 0;
    bool draining = false;
    bool eof = false; ///< the peer shut its write side: answer, flush, close
    conn_book book;
    /// What the connection did not take of the last read (back-pressure): at most one read.
    std::vector<std::uint8_t> held;
    std::size_t held_off = 0;
    [[nodiscard]] bool holds() const noexcept { return held_off < held.size(); }
    std::string peer;
};

enum : std::uint64_t { tag_conn = 0, tag_listener = 1, tag_wake = 2, tag_handoff = 3 };

inline std::uint64_t pack(std::uint64_t tag, std::uint32_t idx, std::uint32_t gen) {
    return tag | (static_cast<std::uint64_t>(idx) << 8) |
           (static_cast<std::uint64_t>(gen & 0xFFFFFF) << 40);
}

/// One worker thread's epoll event loop, serving `Service`.
template <class Service>
class epoll_worker {
    using econn = epoll_detail::econn<Service>;

  public:
    template <class Factory>
    epoll_worker(worker_env& env, Factory& make)
        : env_(env), pool_(spop::buffer_size_for(env.conn_cfg.limits.max_frame_size), 1024),
          svc_(make(env.id)), rbuf_(new std::uint8_t[read_chunk]) {}

    int run() {
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        if (ep_ < 0) {
            log(level::error, "event=fatal worker=%d what=epoll_create1 errno=%d", env_.id, errno);
            return 1;
        }
        for (std::uint32_t i = 0; i < env_.listen_fds.size(); ++i) {
            epoll_event ev{EPOLLIN, {.u64 = pack(tag_listener, i, 0)}};
            epoll_ctl(ep_, EPOLL_CTL_ADD, env_.listen_fds[i], &ev);
        }
        epoll_event wev{EPOLLIN, {.u64 = pack(tag_wake, 0, 0)}};
        epoll_ctl(ep_, EPOLL_CTL_ADD, env_.wake_fd, &wev);
        if (env_.handoff_rfd >= 0) {
            epoll_event hev{EPOLLIN, {.u64 = pack(tag_handoff, 0, 0)}};
            epoll_ctl(ep_, EPOLL_CTL_ADD, env_.handoff_rfd, &hev);
        }

        epoll_event evs[256];
        std::uint32_t last_tick = mono_s();
        while (true) {
            const int n = epoll_wait(ep_, evs, 256, 250);
            if (n < 0 && errno != EINTR) {
                log(level::error, "event=fatal worker=%d what=epoll_wait errno=%d", env_.id, errno);
                break;
            }
            now_ = mono_s();
            for (int i = 0; i < n; ++i) dispatch(evs[i]);
            if (now_ != last_tick) {
                last_tick = now_;
                tick();
            }
            if (stopping_ && (live_ == 0 || now_ >= stop_deadline_)) break;
        }
        for (std::uint32_t i = 0; i < conns_.size(); ++i)
            if (conns_[i] && conns_[i]->fd >= 0) destroy(i, "shutdown_timeout");
        take_handoffs(); // closes what arrived during the stop
        ::close(ep_);
        return 0;
    }

  private:
    void dispatch(const epoll_event& ev) {
        const std::uint64_t tag = ev.data.u64 & 0xFF;
        const auto idx = static_cast<std::uint32_t>((ev.data.u64 >> 8) & 0xFFFFFFFF);
        const auto gen = static_cast<std::uint32_t>(ev.data.u64 >> 40);
        if (tag == tag_listener) return accept_all(idx);
        if (tag == tag_handoff) return take_handoffs();
        if (tag == tag_wake) {
            std::uint64_t v;
            ssize_t r = ::read(env_.wake_fd, &v, sizeof v);
            (void)r;
            return begin_stop();
        }
        if (idx >= conns_.size() || !conns_[idx] || (conns_[idx]->gen & 0xFFFFFF) != gen) return;
        if (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
            if (!on_readable(idx, ev.events)) return;
        }
        if (conns_[idx] && (ev.events & EPOLLOUT)) flush(idx);
    }

    void accept_all(std::uint32_t li) {
        if (stopping_) return;
        const int lfd = env_.listen_fds[li];
        for (int k = 0; k < 256; ++k) {
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            const int fd =
                accept4(lfd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
                unsigned sup = 0;
                if (accept_rl_.allow(now_, sup))
                    log(level::error,
                        "event=accept_failed worker=%d errno=%d error=\"%s\" suppressed=%u",
                        env_.id, errno, std::strerror(errno), sup);
                // EMFILE and friends leave the listener readable: stop polling it until the
                // next tick instead of spinning on it.
                epoll_ctl(ep_, EPOLL_CTL_DEL, lfd, nullptr);
                paused_listeners_.push_back(li);
                return;
            }
            if (!admit(env_, fd, env_.listen_is_tcp[li], accept_rl_, now_)) continue;
            add_conn(fd, peer_name(ss, len));
        }
    }

    void take_handoffs() {
        if (env_.handoff_rfd < 0) return;
        int fds[64];
        while (true) {
            const ssize_t r = ::read(env_.handoff_rfd, fds, sizeof fds);
            if (r <= 0) return;
            adopt_handed_off(env_, fds, static_cast<std::size_t>(r), [this](int fd) {
                if (stopping_) {
                    close_admitted(env_, fd);
                    return;
                }
                sockaddr_storage ss{};
                socklen_t len = sizeof ss;
                getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len);
                add_conn(fd, peer_name(ss, len));
            });
        }
    }

    void add_conn(int fd, std::string peer) {
        std::uint32_t idx;
        if (!free_.empty()) {
            idx = free_.back();
            free_.pop_back();
        } else {
            idx = static_cast<std::uint32_t>(conns_.size());
            conns_.emplace_back();
        }
        auto e = std::make_unique<econn>(svc_, pool_, env_.conn_cfg);
        e->fd = fd;
        e->gen = ++gen_;
        e->created = e->last_active = now_;
        e->peer = std::move(peer);
        e->events = EPOLLIN | EPOLLRDHUP;
        epoll_event ev{e->events, {.u64 = pack(tag_conn, idx, e->gen)}};
        epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
        conns_[idx] = std::move(e);
        ++live_;
        env_.stats->conns_current.add();
        env_.stats->conns_total.add();
        log(level::debug, "event=accept worker=%d peer=%s fd=%d", env_.id,
            conns_[idx]->peer.c_str(), fd);
    }

    /// Returns false if the connection was destroyed.
    bool on_readable(std::uint32_t idx, std::uint32_t events) {
        econn& e = *conns_[idx];
        if (!e.draining && !e.c.wants_input()) {
            // Not reading (back-pressure, end of stream): only a dead socket is news here.
            if (events & EPOLLERR) {
                e.c.on_peer_closed();
                destroy(idx, "rst");
                return false;
            }
            if (!flush(idx)) return false;
            if (events & EPOLLHUP) {
                conns_[idx]->c.on_peer_closed(); // both directions are gone: nothing to deliver
                destroy(idx, "hup");
                return false;
            }
            return true;
        }
        for (int k = 0; k < 16; ++k) {
            const ssize_t r = ::recv(e.fd, rbuf_.get(), read_chunk, 0);
            if (r > 0) {
                env_.stats->bytes_in.add(static_cast<std::uint64_t>(r));
                if (e.draining) continue; // discarding until EOF
                e.last_active = now_;
                const auto n = static_cast<std::size_t>(r);
                const std::size_t took = feed_bytes(e, rbuf_.get(), n);
                if (took < n) {
                    e.held.assign(rbuf_.get() + took, rbuf_.get() + n);
                    e.held_off = 0;
                }
                if (!e.c.wants_input()) {
                    unsigned sup = 0;
                    if (e.c.state() == spop::conn_state::established && log_enabled(level::debug) &&
                        bp_rl_.allow(now_, sup))
                        log(level::debug,
                            "event=backpressure worker=%d peer=%s pending_bytes=%zu suppressed=%u",
                            env_.id, e.peer.c_str(), e.c.output().size(), sup);
                    break;
                }
                if (n < read_chunk) break;
                continue;
            }
            if (r == 0) {
                if (e.draining) {
                    destroy(idx, "eof");
                    return false;
                }
                // A half-close: what was received is still answered and flushed.
                e.eof = true;
                e.c.on_peer_eof();
                break;
            }
            if (errno == EAGAIN || errno == EINTR) break;
            e.c.on_peer_closed();
            destroy(idx, errno == ECONNRESET ? "rst" : "error");
            return false;
        }
        return flush(idx);
    }

    /// Feeds what the connection refused earlier, once it takes input again.
    void feed_held(econn& e) {
        if (!e.holds() || !e.c.takes_input()) return;
        e.held_off += feed_bytes(e, e.held.data() + e.held_off, e.held.size() - e.held_off);
        if (!e.holds()) {
            e.held.clear();
            e.held_off = 0;
        }
    }

    /// Feeds bytes to the connection; returns how many it took.
    std::size_t feed_bytes(econn& e, const std::uint8_t* p, std::size_t n) {
        const std::uint64_t t0 = mono_ns();
        const spop::feed_result fr = e.c.feed({p, n});
        e.book.after_io(env_, e.c, fr, t0);
        return fr.consumed;
    }

    /// Writes pending output; updates interest; starts draining when done. False if destroyed.
    bool flush(std::uint32_t idx) {
        econn& e = *conns_[idx];
        feed_held(e);
        for (int k = 0; k < 8; ++k) {
            const auto out = e.c.output();
            if (out.empty()) break;
            const ssize_t w = ::send(e.fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) break;
                e.c.on_peer_closed();
                destroy(idx, errno == EPIPE || errno == ECONNRESET ? "rst" : "error");
                return false;
            }
            env_.stats->bytes_out.add(static_cast<std::uint64_t>(w));
            e.last_progress = now_;
            const std::uint64_t t0 = mono_ns();
            const spop::feed_result fr = e.c.consume_output(static_cast<std::size_t>(w));
            e.book.after_io(env_, e.c, fr, t0);
            feed_held(e);
        }
        e.book.after_state(env_, e.c);
        if (!e.draining && e.c.should_close()) {
            if (e.c.state() == spop::conn_state::closed) {
                destroy(idx, "closed");
                return false;
            }
            if (e.eof) {
                // Every byte was read and answered: close; the kernel still sends, then FIN.
                destroy(idx, "eof");
                return false;
            }
            note_close(env_, e.c, e.peer.c_str(), "agent", errors_rl_);
            ::shutdown(e.fd, SHUT_WR);
            e.draining = true;
            e.drain_deadline = now_ + drain_seconds;
        }
        // Level-triggered: while not reading (back-pressure, end of stream, closing) neither
        // EPOLLIN nor EPOLLRDHUP may stay in the set, or a pending FIN makes it spin.
        const bool reading = e.draining || (e.c.wants_input() && !e.holds());
        std::uint32_t want = reading ? std::uint32_t{EPOLLIN | EPOLLRDHUP} : 0u;
        if (!e.c.output().empty()) want |= EPOLLOUT;
        if (want != e.events) {
            e.events = want;
            epoll_event ev{want, {.u64 = pack(tag_conn, idx, e.gen)}};
            epoll_ctl(ep_, EPOLL_CTL_MOD, e.fd, &ev);
        }
        return true;
    }

    void destroy(std::uint32_t idx, const char* how) {
        econn& e = *conns_[idx];
        e.book.gone(env_);
        if (!e.draining) note_close(env_, e.c, e.peer.c_str(), how, errors_rl_);
        epoll_ctl(ep_, EPOLL_CTL_DEL, e.fd, nullptr);
        close_admitted(env_, e.fd);
        conns_[idx].reset();
        free_.push_back(idx);
        --live_;
        env_.stats->conns_current.sub();
    }

    void begin_stop() {
        if (stopping_) return;
        stopping_ = true;
        stop_deadline_ = now_ + env_.opt->shutdown_timeout_s;
        for (int fd : env_.listen_fds) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
            ::shutdown(fd, SHUT_RDWR); // leave the SO_REUSEPORT group now, not at close
        }
        drain_step();
    }

    /// During a stop: AGENT-DISCONNECT to the connections whose drain is over.
    void drain_step() {
        for (std::uint32_t i = 0; i < conns_.size(); ++i) {
            if (!conns_[i] || conns_[i]->draining) continue;
            econn& e = *conns_[i];
            if (!stop_connection_now(*env_.opt, now_, stop_deadline_, e.last_active, e.c)) continue;
            e.c.shutdown();
            flush(i);
        }
    }

    void tick() {
        if (!stopping_) {
            for (std::uint32_t li : paused_listeners_) {
                epoll_event ev{EPOLLIN, {.u64 = pack(tag_listener, li, 0)}};
                epoll_ctl(ep_, EPOLL_CTL_ADD, env_.listen_fds[li], &ev);
            }
        }
        paused_listeners_.clear();
        if (stopping_) drain_step();
        const options& o = *env_.opt;
        for (std::uint32_t i = 0; i < conns_.size(); ++i) {
            if (!conns_[i]) continue;
            econn& e = *conns_[i];
            if (e.draining) {
                if (now_ >= e.drain_deadline) destroy(i, "drain_timeout");
                continue;
            }
            switch (check_timers(o, e.c, now_, e.created, e.last_active, e.last_progress)) {
            case timer_verdict::none:
                break;
            case timer_verdict::timeout:
                e.c.close_with(spop::errc::timeout);
                flush(i);
                break;
            case timer_verdict::drop:
                e.c.on_peer_closed();
                destroy(i, "write_timeout");
                break;
            }
        }
    }

    worker_env& env_;
    spop::buffer_pool pool_;
    Service svc_;
    std::unique_ptr<std::uint8_t[]> rbuf_;
    std::vector<std::unique_ptr<econn>> conns_;
    std::vector<std::uint32_t> free_;
    std::vector<std::uint32_t> paused_listeners_;
    rate_limiter errors_rl_{10};
    rate_limiter accept_rl_{5};
    rate_limiter bp_rl_{5};
    int ep_ = -1;
    std::uint32_t now_ = 0;
    std::uint32_t gen_ = 0;
    std::uint32_t live_ = 0;
    bool stopping_ = false;
    std::uint32_t stop_deadline_ = 0;
};

} // namespace epoll_detail

using epoll_detail::epoll_worker;

/// Runs an epoll worker until a graceful stop completes. Returns 0, or 1 on a fatal error.
template <class Service, class Factory>
int run_epoll_worker(worker_env& env, Factory& make) {
    epoll_worker<Service> w(env, make);
    return w.run();
}

} // namespace spop::server
