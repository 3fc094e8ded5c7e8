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
#include <cstring>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker.hpp"

namespace spop::server {
namespace epoll_detail {

inline constexpr std::size_t read_chunk = spop::default_feed_chunk;

/// The epoll backend's part of a connection.
struct econn_io {
    std::uint32_t events = 0; ///< the interest set registered now
    /// What the connection did not take of the last read (back-pressure): at most one read.
    std::vector<std::uint8_t> held;
    std::size_t held_off = 0;
    bool dirty = false; ///< kicked: flushed once at the end of this loop turn
    [[nodiscard]] bool holds() const noexcept { return held_off < held.size(); }
};

enum : std::uint64_t {
    tag_conn = 0,
    tag_listener = 1,
    tag_wake = 2,
    tag_handoff = 3,
    tag_tickets = 4,
};

inline std::uint64_t pack(std::uint64_t tag, std::uint32_t idx, std::uint32_t gen) {
    return tag | (static_cast<std::uint64_t>(idx) << 8) |
           (static_cast<std::uint64_t>(gen & 0xFFFFFF) << 40);
}

/// One worker thread's epoll event loop, serving `Service`.
template <class Service>
class epoll_worker : public worker_core<epoll_worker<Service>, Service, econn_io> {
    using core = worker_core<epoll_worker<Service>, Service, econn_io>;
    using slot = typename core::slot;
    using step = typename core::step;
    friend core;
    using core::conns_;
    using core::env_;
    using core::now_;
    using core::stopping_;

  public:
    template <class Factory>
    epoll_worker(worker_env& env, Factory& make)
        : core(env, make), rbuf_(new std::uint8_t[read_chunk]) {}

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

        if (this->tickets_.event_fd() >= 0) {
            // Edge-triggered and never read: see ticket_pool::worker_take().
            epoll_event tev{EPOLLIN | EPOLLET, {.u64 = pack(tag_tickets, 0, 0)}};
            epoll_ctl(ep_, EPOLL_CTL_ADD, this->tickets_.event_fd(), &tev);
        }
        epoll_event evs[256];
        this->clock_turn();
        std::uint32_t last_tick = now_;
        std::uint64_t last_drain_ms = 0;
        while (true) {
            // Tickets finished by other threads during the last turn, or NOTIFYs processed
            // after its turn_end(): poll, do not sleep.
            const bool sleep = !this->notified_after_turn_end() && this->tickets_.worker_sleep();
            const int n = epoll_wait(ep_, evs, 256, sleep ? wait_ms() : 0);
            this->tickets_.worker_awake();
            if (n < 0 && errno != EINTR) {
                log(level::error, "event=fatal worker=%d what=epoll_wait errno=%d", env_.id, errno);
                break;
            }
            this->clock_turn();
            for (int i = 0; i < n; ++i) dispatch(evs[i]);
            if (!sleep) this->tickets_turn();
            // Deferred answers: a deadline due, or tickets opened without one armed. With none
            // open, the deadline armed for answered ones is stale: kept, it would make every
            // later wait a zero timeout (a spinning worker).
            if (this->tickets_.open_count() == 0) {
                deadline_ms_ = 0;
            } else if (deadline_ms_ == 0 || mono_ns() / 1000000 >= deadline_ms_) {
                deadline_ms_ = 0;
                this->tickets_turn();
            }
            if (now_ != last_tick) {
                last_tick = now_;
                if (!stopping_) resume_listeners();
                this->tick();
            }
            if (stopping_ && this->now_ms_ - last_drain_ms >= this->drain_check_ms) {
                last_drain_ms = this->now_ms_;
                this->drain_step();
            }
            this->turn_end();
            flush_kicked();
            if (this->finished()) break;
        }
        for (std::uint32_t i = 0; i < conns_.size(); ++i)
            if (conns_[i]) kill(i, "shutdown_timeout");
        take_handoffs(); // closes what arrived during the stop
        ::close(ep_);
        return 0;
    }

    // The core's hooks ------------------------------------------------------------------------
    void on_new(slot& e) {
        e.io.events = EPOLLIN | EPOLLRDHUP;
        epoll_event ev{e.io.events, {.u64 = pack(tag_conn, e.idx, e.gen)}};
        epoll_ctl(ep_, EPOLL_CTL_ADD, e.fd, &ev);
    }
    /// Output produced outside a read (deferred answers, the core's timers and stop) is sent
    /// once per connection at the end of the turn: a batch of completed tickets for one
    /// connection is one send, not one per ACK.
    void kick(std::uint32_t idx) {
        slot& e = *conns_[idx];
        if (e.io.dirty) return;
        e.io.dirty = true;
        kicked_.push_back(idx);
    }
    void kill(std::uint32_t idx, const char* how) {
        slot& e = *conns_[idx];
        this->note_end(e, how);
        epoll_ctl(ep_, EPOLL_CTL_DEL, e.fd, nullptr);
        this->free_slot(idx);
    }
    [[nodiscard]] static bool alive(const slot&) noexcept { return true; }
    /// The core's hook: wake up at `ms` (monotonic) to expire deferred answers.
    void arm_deadline(std::uint64_t ms) {
        if (deadline_ms_ == 0 || ms < deadline_ms_) deadline_ms_ = ms;
    }
    void stop_listening() {
        for (int fd : env_.listen_fds) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
            ::shutdown(fd, SHUT_RDWR); // leave the SO_REUSEPORT group now
        }
        close_tcp_listeners(env_);
    }

  private:
    void dispatch(const epoll_event& ev) {
        const std::uint64_t tag = ev.data.u64 & 0xFF;
        const auto idx = static_cast<std::uint32_t>((ev.data.u64 >> 8) & 0xFFFFFFFF);
        const auto gen = static_cast<std::uint32_t>(ev.data.u64 >> 40);
        if (tag == tag_listener) return accept_all(idx);
        if (tag == tag_handoff) return take_handoffs();
        if (tag == tag_tickets) return this->tickets_turn();
        if (tag == tag_wake) {
            std::uint64_t v;
            const ssize_t r = ::read(env_.wake_fd, &v, sizeof v);
            (void)r;
            return this->begin_stop();
        }
        if (this->find(idx, gen) == nullptr) return;
        if (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
            if (!on_readable(idx, ev.events)) return;
        }
        if (conns_[idx] && (ev.events & EPOLLOUT)) flush(idx);
    }

    /// epoll_wait's timeout: the 250 ms tick, or sooner for a deferred answer's deadline.
    int wait_ms() const {
        const std::uint64_t cap = stopping_ ? this->drain_check_ms : 250;
        if (deadline_ms_ == 0) return static_cast<int>(cap);
        const std::uint64_t now = mono_ns() / 1000000;
        const std::uint64_t d = deadline_ms_ > now ? deadline_ms_ - now : 0;
        return static_cast<int>(d < cap ? d : cap);
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
                if (this->accept_rl_.allow(now_, sup))
                    log(level::error,
                        "event=accept_failed worker=%d errno=%d error=\"%s\" suppressed=%u",
                        env_.id, errno, std::strerror(errno), sup);
                // EMFILE and friends leave the listener readable: stop polling it until the
                // next tick instead of spinning on it.
                epoll_ctl(ep_, EPOLL_CTL_DEL, lfd, nullptr);
                paused_listeners_.push_back(li);
                return;
            }
            if (!admit(env_, fd, env_.listen_is_tcp[li], this->accept_rl_, now_)) continue;
            this->adopt(fd, peer_name(ss, len));
        }
    }

    void resume_listeners() {
        for (std::uint32_t li : paused_listeners_) {
            epoll_event ev{EPOLLIN, {.u64 = pack(tag_listener, li, 0)}};
            epoll_ctl(ep_, EPOLL_CTL_ADD, env_.listen_fds[li], &ev);
        }
        paused_listeners_.clear();
    }

    void take_handoffs() {
        if (env_.handoff_rfd < 0) return;
        int fds[64];
        for (ssize_t r; (r = ::read(env_.handoff_rfd, fds, sizeof fds)) > 0;)
            this->adopt_handed(fds, static_cast<std::size_t>(r));
    }

    /// Returns false if the connection was closed.
    bool on_readable(std::uint32_t idx, std::uint32_t events) {
        slot& e = *conns_[idx];
        if (!e.draining && !e.c.wants_input()) {
            // Not reading (back-pressure, end of stream): only a dead socket is news here.
            if (events & EPOLLERR) {
                kill(idx, "rst");
                return false;
            }
            if (!flush(idx)) return false;
            if (events & EPOLLHUP) {
                kill(idx, "hup"); // both directions are gone: nothing to deliver
                return false;
            }
            return true;
        }
        for (int k = 0; k < 16; ++k) {
            const ssize_t r = ::recv(e.fd, rbuf_.get(), read_chunk, 0);
            if (r > 0) {
                env_.stats->bytes_in.add(static_cast<std::uint64_t>(r));
                if (e.draining) continue; // discarding until EOF
                e.last_active_ms = this->now_ms_;
                const auto n = static_cast<std::size_t>(r);
                const std::size_t took = this->feed(e, rbuf_.get(), n);
                if (took < n) {
                    e.io.held.assign(rbuf_.get() + took, rbuf_.get() + n);
                    e.io.held_off = 0;
                }
                if (!e.c.wants_input()) {
                    if (e.c.state() == spop::conn_state::established) this->note_backpressure(e);
                    break;
                }
                if (n < read_chunk) break;
                continue;
            }
            if (r == 0) {
                if (e.draining) {
                    kill(idx, "eof");
                    return false;
                }
                // A half-close: what was received is still answered and flushed.
                e.eof = true;
                e.c.on_peer_eof();
                break;
            }
            if (errno == EAGAIN || errno == EINTR) break;
            kill(idx, errno == ECONNRESET ? "rst" : "error");
            return false;
        }
        return flush(idx);
    }

    /// Feeds what the connection refused earlier, once it takes input again.
    void feed_held(slot& e) {
        if (!e.io.holds() || !e.c.takes_input()) return;
        e.io.held_off +=
            this->feed(e, e.io.held.data() + e.io.held_off, e.io.held.size() - e.io.held_off);
        if (!e.io.holds()) {
            e.io.held.clear();
            e.io.held_off = 0;
        }
    }

    void flush_kicked() {
        // flush() may close a connection and a later kick() may reuse its slot: the flag lives
        // in the slot's own record, so a reused slot is flushed at most once and harmlessly.
        for (std::size_t i = 0; i < kicked_.size(); ++i) {
            const std::uint32_t idx = kicked_[i];
            if (!conns_[idx] || !conns_[idx]->io.dirty) continue;
            (void)flush(idx);
        }
        kicked_.clear();
    }

    /// Writes pending output; updates interest; starts draining when done. False if closed.
    bool flush(std::uint32_t idx) {
        slot& e = *conns_[idx];
        e.io.dirty = false;
        feed_held(e);
        for (int k = 0; k < 8; ++k) {
            const auto out = e.c.output();
            if (out.empty()) break;
            const ssize_t w = ::send(e.fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) break;
                kill(idx, errno == EPIPE || errno == ECONNRESET ? "rst" : "error");
                return false;
            }
            this->sent(e, static_cast<std::size_t>(w));
            feed_held(e);
        }
        if (this->closing_step(idx) == step::killed) return false;
        // Level-triggered: while not reading (back-pressure, end of stream, closing) neither
        // EPOLLIN nor EPOLLRDHUP may stay in the set, or a pending FIN makes it spin.
        const bool reading = e.draining || (e.c.wants_input() && !e.io.holds());
        std::uint32_t want = reading ? std::uint32_t{EPOLLIN | EPOLLRDHUP} : 0u;
        if (!e.c.output().empty()) want |= EPOLLOUT;
        if (want != e.io.events) {
            e.io.events = want;
            epoll_event ev{want, {.u64 = pack(tag_conn, idx, e.gen)}};
            epoll_ctl(ep_, EPOLL_CTL_MOD, e.fd, &ev);
        }
        return true;
    }

    std::unique_ptr<std::uint8_t[]> rbuf_;
    std::vector<std::uint32_t> paused_listeners_;
    std::vector<std::uint32_t> kicked_; ///< connections kick()ed this turn, flushed at its end
    int ep_ = -1;
    std::uint64_t deadline_ms_ = 0; ///< the next deferred deadline, 0 = none
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
