// spop::server worker core: everything a worker does that does not depend on how bytes move.
// One instance per worker thread, a CRTP base of each backend (uring.hpp, epoll.hpp), which only
// moves bytes: accepts, receives, sends, and wakes up. The core owns the connection table (slots
// with generations, so a late completion never reaches a reused slot), admission and hand-off,
// feeding and send accounting, the closing decision, timers, and the lame-duck stop.
//
// What a backend provides (called by the core):
//   void kick(std::uint32_t idx)               the connection has new output or a new state:
//                                              send / update interest now or at end of turn
//   void kill(std::uint32_t idx, const char*)  close the socket now (RST-free close after an
//                                              end of stream, or an error / timeout)
//   void stop_listening()                      leave the accept groups (begin of a stop)
//   void on_new(slot&)                         a slot was just adopted: start receiving
// and uses: adopt(), feed(), sent(), closing_step(), begin_stop(), tick(), finished(),
// turn_end() once per loop turn (after its reads, before its sends), and for deferred answers
// tickets_.event_fd() (written: tickets_turn(); the backend never needs to reset it), the
// deadline that tickets_turn() arms (call it again then), and tickets_.worker_sleep() /
// worker_awake() around its blocking wait (poll instead when answers already wait, or when
// notified_after_turn_end(): NOTIFYs its sends let in after turn_end() need the next one).
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <sys/socket.h>
#include <vector>

#include "engine.hpp"
#include "tickets.hpp"

namespace spop::server {

/// A service's per-connection state (service.hpp: `using connection_state = T;`), or nothing.
template <class S>
struct connection_state_of {
    struct type {};
};
template <class S>
requires requires {
    typename S::connection_state;
}
struct connection_state_of<S> {
    using type = typename S::connection_state;
};

/// One connection: the sans-IO core plus what the worker knows about its socket. `Io` is the
/// backend's own part (armed requests, held input...).
template <class Service, class Io>
struct conn_slot {
    conn_slot(Service& svc, spop::buffer_pool& pool, const spop::connection_config& cfg)
        : c(svc, pool, cfg) {}
    spop::connection<Service> c;
    int fd = -1;
    std::uint32_t idx = 0; ///< slot in the table
    std::uint32_t gen = 0; ///< generation: packed with idx into every request's user data
    std::uint32_t created = 0;
    std::uint64_t last_active_ms = 0;   ///< last time bytes arrived (or were held), coarse ms
    std::uint64_t last_progress_ms = 0; ///< last time a send wrote something, coarse ms
    std::uint32_t drain_deadline = 0;
    bool draining = false; ///< our write side is shut; reading until EOF, bounded
    bool eof = false;      ///< the peer shut its write side: answer, flush, close
    conn_book book;
    std::string peer;
    Io io;
    typename connection_state_of<Service>::type state{};
};

template <class Derived, class Service, class Io>
class worker_core {
  public:
    using slot = conn_slot<Service, Io>;

  protected:
    /// After our last frame the socket is read until EOF for at most this long, so that unread
    /// input cannot turn the final frame into an RST.
    static constexpr std::uint32_t drain_seconds = 2;

    template <class Factory>
    worker_core(worker_env& env, Factory& make)
        : env_(env), pool_(spop::buffer_size_for(env.conn_cfg.limits.max_frame_size), 1024),
          tickets_(*env.tickets),
          fallback_size_(std::max<std::uint32_t>(
              128, env.opt != nullptr ? env.opt->deferred_ack_bytes : 1024)),
          fallback_buf_(new std::uint8_t[fallback_size_]), svc_(make(env.id)) {
        tickets_.worker_attach(); // constructed on the worker's thread (server::start)
    }

    static constexpr std::uint64_t tag_of(std::uint32_t idx, std::uint32_t gen) noexcept {
        return std::uint64_t{idx} | (std::uint64_t{gen & 0xFFFFFF} << 32);
    }
    slot* find_tag(std::uint64_t tag) noexcept {
        return find(static_cast<std::uint32_t>(tag), static_cast<std::uint32_t>(tag >> 32));
    }

    Derived& self() noexcept { return static_cast<Derived&>(*this); }

    /// The slot at idx if it is still generation gen.
    slot* find(std::uint32_t idx, std::uint32_t gen) noexcept {
        if (idx >= conns_.size() || !conns_[idx]) return nullptr;
        slot* e = conns_[idx].get();
        return (e->gen & 0xFFFFFF) == gen ? e : nullptr;
    }

    /// Takes an admitted fd (accepted here or handed over): a new slot, counted and logged.
    slot& adopt(int fd, std::string peer) {
        std::uint32_t idx;
        if (!free_.empty()) {
            idx = free_.back();
            free_.pop_back();
        } else {
            idx = static_cast<std::uint32_t>(conns_.size());
            conns_.emplace_back();
        }
        auto e = std::make_unique<slot>(svc_, pool_, env_.conn_cfg);
        e->fd = fd;
        e->idx = idx;
        e->gen = ++gen_;
        e->created = now_;
        e->last_active_ms = now_ms_;
        e->peer = std::move(peer);
        conns_[idx] = std::move(e);
        ++live_;
        env_.stats->conns_current.add();
        env_.stats->conns_total.add();
        slot& s = *conns_[idx];
        s.c.set_context(s.gen, s.peer, &s.state);
        if (env_.opt->max_deferred != 0) s.c.set_deferral(&tickets_, tag_of(idx, s.gen));
        log(level::debug, "event=accept worker=%d peer=%s fd=%d", env_.id, s.peer.c_str(), fd);
        if constexpr (requires(Service & v, const connection_event& ev) { v.on_connect(ev); })
            svc_.on_connect(s.c.event());
        self().on_new(s);
        return s;
    }

    /// Adopts the fds handed to this worker (closes them during a stop).
    void adopt_handed(const void* bytes, std::size_t n) {
        adopt_handed_off(env_, bytes, n, [this](int fd) {
            if (stopping_) return close_admitted(env_, fd);
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            std::string peer = "?";
            if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
                peer = peer_name(ss, len);
            adopt(fd, std::move(peer));
        });
    }

    /// Logs how the connection ended (unless its end was logged when it started draining).
    void note_end(slot& e, const char* how) {
        if (!e.draining) note_close(env_, e.c, e.peer.c_str(), how, errors_rl_);
    }

    /// The socket is closed: the slot goes back, with its --max-connections share.
    void free_slot(std::uint32_t idx) {
        slot& e = *conns_[idx];
        if constexpr (requires(Service & v, const connection_event& ev) { v.on_close(ev); })
            svc_.on_close(e.c.event());
        e.book.gone(env_);
        close_admitted(env_, e.fd);
        conns_[idx].reset();
        free_.push_back(idx);
        --live_;
        env_.stats->conns_current.sub();
    }

    /// The turn's clock (coarse, no syscall): backends call it once per wakeup.
    void clock_turn() noexcept {
        now_ms_ = mono_coarse_ms();
        now_ = static_cast<std::uint32_t>(now_ms_ / 1000);
    }

    /// While stopping, how often the backends run drain_step(), so that --drain-idle is kept
    /// to about this much rather than to the once-a-second tick.
    static constexpr std::uint32_t drain_check_ms = 100;

    /// The clock before a call that may run on_notify: also the ticket pool's, so that a
    /// ticket opened in it takes its deadline from a time read once per read, not per NOTIFY.
    /// Every path into on_notify (feed, consume_output, retry_input) goes through here.
    std::uint64_t io_clock() noexcept {
        const std::uint64_t t = mono_ns();
        tickets_.worker_clock(t);
        return t;
    }

    /// Feeds received bytes; returns how many the connection took. `more`: the backend holds
    /// further bytes after these.
    std::size_t feed(slot& e, const std::uint8_t* p, std::size_t n, bool more = false) {
        const std::uint64_t t0 = io_clock();
        const spop::feed_result fr = e.c.feed({p, n}, more);
        after_io(e, fr, t0);
        return fr.consumed;
    }

    /// `n` bytes of output left (a send completed).
    void sent(slot& e, std::size_t n) {
        env_.stats->bytes_out.add(n);
        e.last_progress_ms = now_ms_;
        const std::uint64_t t0 = io_clock();
        const spop::feed_result fr = e.c.consume_output(n);
        after_io(e, fr, t0);
        if (!waiting_.empty()) retry_waiting();
    }

    /// The connection's counters after feed(), consume_output() or retry_input(), and whether
    /// the end of the turn still has work: NOTIFYs processed after this turn's turn_end() (a
    /// back-pressured connection resumed while its output was sent, or held input fed) must not
    /// wait for a wakeup that may be long in coming (see notified_after_turn_end()).
    void after_io(slot& e, const spop::feed_result& fr, std::uint64_t t0) {
        e.book.after_io(env_, e.c, fr, t0);
        if (fr.deferred != 0) notified_ = true; // a ticket: completed on this thread, or batched
        if constexpr (requires(Service & v) { v.on_turn_end(); })
            if (fr.notifies != 0) notified_ = true;
    }

    /// NOTIFYs were processed since the last turn_end(): the backend polls instead of blocking,
    /// so that the next turn's turn_end() comes at once. Otherwise what the service collected
    /// for on_turn_end(), or tickets it completed on this thread, waited for the next event
    /// (the 250 ms or 1 s timer, or the deadline, which then answered with the fallback).
    [[nodiscard]] bool notified_after_turn_end() const noexcept { return notified_; }

    // Deferred answers -------------------------------------------------------------------------

    /// Takes finished tickets, expires overdue ones (all of them in the last second of a stop),
    /// and hands the answers to their connections. Returns the next deadline (monotonic ms), 0
    /// when no ticket is open.
    std::uint64_t run_tickets() {
        tickets_.worker_clock(mono_ns());
        tickets_.worker_take([this](ticket_pool::slot& t, std::uint32_t id) {
            slot* e = find_tag(t.conn_tag);
            if (e == nullptr || !self().alive(*e)) {
                env_.stats->deferred_after_close.add();
                return tickets_.worker_done(id);
            }
            if (!deliver_ticket(*e, t)) return waiting_.push_back({t.conn_tag, id});
            tickets_.worker_done(id);
            self().kick(e->idx);
        });
        const bool all = stopping_ && now_ms_ + 1000 >= stop_deadline_ms_;
        const spop::fallback_reason why =
            all ? spop::fallback_reason::stopping : spop::fallback_reason::expired;
        const std::uint64_t next = tickets_.worker_expire(all, [this, why](ticket_pool::slot& t) {
            fallback(t.conn_tag, t.sid, t.fid, t.mfs, why);
        });
        resume_refused();
        return next;
    }

    /// Once tickets are free again after a connection was refused one: the paused connections
    /// take their held input now, not at the next ticket event (up to the 1 s tick).
    void resume_refused() {
        if (!tickets_.worker_should_retry()) return;
        for (std::uint32_t i = 0; i < conns_.size(); ++i) {
            slot* e = conns_[i].get();
            if (e == nullptr || !self().alive(*e) || e->c.takes_input()) continue;
            const std::uint64_t t0 = io_clock();
            after_io(*e, e->c.retry_input(), t0);
            self().kick(i);
        }
    }

    /// The service's optional on_turn_end(): the backends call it once per loop turn, after
    /// the turn's reads and before they send and sleep.
    void turn_end() {
        notified_ = false;
        if constexpr (requires(Service & v) { v.on_turn_end(); }) svc_.on_turn_end();
        if (tickets_.worker_local_finished()) tickets_turn(); // answered on this thread
    }

    /// run_tickets(), then the backend's deadline timer for the next expiry (arm_deadline(ms)).
    void tickets_turn() {
        const std::uint64_t next = run_tickets();
        if (next != 0) self().arm_deadline(next);
    }

    /// The engine's answer in a ticket holder's place, in fallback_buf_: what the service's
    /// on_fallback() writes, else nothing (deliver() then adds the no-op). Rebuilt for every
    /// attempt, since the buffer is shared by every fallback of this worker.
    spop::ack_writer fallback_ack(slot& e, std::uint64_t sid, std::uint64_t fid, std::uint32_t mfs,
                                  spop::fallback_reason why) {
        spop::ack_writer w({fallback_buf_.get(), fallback_size_}, sid, fid, mfs);
        if constexpr (requires(Service & v, const spop::fallback_event& ev, spop::ack_writer& a) {
                          v.on_fallback(ev, a);
                      }) {
            svc_.on_fallback(spop::fallback_event{sid, fid, why, &e.state}, w);
        }
        return w;
    }
    std::span<const std::uint8_t> fallback_span() const noexcept {
        return {fallback_buf_.get(), fallback_size_};
    }

    /// A finished ticket's answer to its connection: the holder's ACK, or for a ticket dropped
    /// unanswered the fallback (rebuilt on every attempt). False: no room yet (retry later).
    bool deliver_ticket(slot& e, ticket_pool::slot& t) {
        if (t.abandoned) {
            t.w = fallback_ack(e, t.sid, t.fid, t.mfs, spop::fallback_reason::dropped);
            return e.c.deliver(t.w, fallback_span());
        }
        return e.c.deliver(t.w, {t.buf.get(), t.w.size()});
    }

    /// The fallback for a NOTIFY whose ticket expired (its holder keeps the ticket).
    void fallback(std::uint64_t tag, std::uint64_t sid, std::uint64_t fid, std::uint32_t mfs,
                  spop::fallback_reason why) {
        slot* e = find_tag(tag);
        if (e == nullptr || !self().alive(*e)) return;
        spop::ack_writer w = fallback_ack(*e, sid, fid, mfs, why);
        if (!e->c.deliver(w, fallback_span())) {
            waiting_.push_back({tag, ticket_pool::no_slot, sid, fid, mfs, why});
            return;
        }
        self().kick(e->idx);
    }

    /// Answers that found no room in their connection's output: again, after a send.
    void retry_waiting() {
        // waiting_again_ keeps its capacity between calls: no allocation per send completion.
        std::vector<waiting>& again = waiting_again_;
        again.swap(waiting_);
        for (const waiting& w : again) {
            if (w.ticket == ticket_pool::no_slot) {
                fallback(w.tag, w.sid, w.fid, w.mfs, w.why);
                continue;
            }
            ticket_pool::slot& t = tickets_.at(w.ticket);
            slot* e = find_tag(w.tag);
            if (e == nullptr || !self().alive(*e)) {
                env_.stats->deferred_after_close.add();
                tickets_.worker_done(w.ticket);
                continue;
            }
            if (!deliver_ticket(*e, t)) {
                waiting_.push_back(w);
                continue;
            }
            tickets_.worker_done(w.ticket);
            self().kick(e->idx);
        }
        again.clear();
        resume_refused(); // tickets freed here may be what a paused connection waits for
    }

    enum class step { keep, killed, draining };

    /// Call when nothing is being sent for the connection: decides whether it ends now. Closed
    /// (the peer went away): killed. End of stream and all answered: killed (our FIN follows
    /// what the kernel still sends). Our last frame sent: the write side is shut and the socket
    /// drained until EOF (bounded), so unread input cannot turn it into an RST.
    step closing_step(std::uint32_t idx) {
        slot& e = *conns_[idx];
        e.book.after_state(env_, e.c);
        if (e.draining || !e.c.should_close()) return step::keep;
        if (e.c.state() == spop::conn_state::closed) {
            self().kill(idx, "closed");
            return step::killed;
        }
        if (e.eof) {
            self().kill(idx, "eof");
            return step::killed;
        }
        note_close(env_, e.c, e.peer.c_str(), "agent", errors_rl_);
        ::shutdown(e.fd, SHUT_WR);
        e.draining = true;
        e.drain_deadline = now_ + drain_seconds;
        return step::draining;
    }

    void note_backpressure(const slot& e) {
        unsigned sup = 0;
        if (log_enabled(level::debug) && bp_rl_.allow(now_, sup))
            log(level::debug,
                "event=backpressure worker=%d peer=%s pending_bytes=%zu suppressed=%u", env_.id,
                e.peer.c_str(), e.c.output().size(), sup);
    }

    /// SIGTERM: leave the accept groups, then the lame-duck drain (drain_step()).
    void begin_stop() {
        if (stopping_) return;
        stopping_ = true;
        stop_deadline_ms_ = now_ms_ + std::uint64_t{env_.opt->shutdown_timeout_s} * 1000;
        self().stop_listening();
        drain_step();
    }

    /// During a stop: AGENT-DISCONNECT to the connections whose drain is over.
    void drain_step() {
        // The stop's last second: deferred answers still open get the fallback first, so that
        // it goes out before the AGENT-DISCONNECT below.
        if (tickets_.open_count() != 0 && now_ms_ + 1000 >= stop_deadline_ms_) tickets_turn();
        for (std::uint32_t i = 0; i < conns_.size(); ++i) {
            slot* e = conns_[i].get();
            if (e == nullptr || e->draining || !self().alive(*e)) continue;
            if (!stop_connection_now(*env_.opt, now_ms_, stop_deadline_ms_,
                                     std::max(e->last_active_ms, e->last_progress_ms), e->c))
                continue;
            e->c.shutdown();
            self().kick(i);
        }
    }

    /// Once a second: answers waiting for room, open tickets, the stop's drain, idle/hello/
    /// write-stall timers, drain deadlines.
    void tick() {
        // Answers that waited for room are retried after a send; those of a connection that
        // went away meanwhile (no send follows) are dropped here, and their tickets freed.
        if (!waiting_.empty()) retry_waiting();
        if (tickets_.open_count() != 0) tickets_turn();
        if (stopping_) drain_step();
        const options& o = *env_.opt;
        for (std::uint32_t i = 0; i < conns_.size(); ++i) {
            slot* e = conns_[i].get();
            if (e == nullptr || !self().alive(*e)) continue;
            if (e->draining) {
                if (now_ >= e->drain_deadline) self().kill(i, "drain_timeout");
                continue;
            }
            const auto last_active = static_cast<std::uint32_t>(e->last_active_ms / 1000);
            const auto last_progress = static_cast<std::uint32_t>(e->last_progress_ms / 1000);
            switch (check_timers(o, e->c, now_, e->created, last_active, last_progress)) {
            case timer_verdict::none:
                break;
            case timer_verdict::timeout:
                e->c.close_with(spop::errc::timeout);
                self().kick(i);
                break;
            case timer_verdict::drop:
                self().kill(i, "write_timeout"); // the peer stopped reading
                break;
            }
        }
    }

    /// The event loop ends: stopped and every connection gone, or the stop timed out.
    [[nodiscard]] bool finished() const noexcept {
        return stopping_ && (live_ == 0 || now_ms_ >= stop_deadline_ms_);
    }

    struct waiting {
        std::uint64_t tag;
        std::uint32_t ticket; ///< no_slot: an expired ticket's fallback
        std::uint64_t sid = 0, fid = 0;
        std::uint32_t mfs = 0;
        spop::fallback_reason why = spop::fallback_reason::expired;
    };

    worker_env& env_;
    spop::buffer_pool pool_;
    ticket_pool& tickets_;
    std::vector<waiting> waiting_;
    std::vector<waiting> waiting_again_; ///< retry_waiting()'s other half (capacity kept)
    /// The engine's own answers (fallbacks), one at a time: options::deferred_ack_bytes, as a
    /// ticket's answer gets; allocated once per worker.
    std::uint32_t fallback_size_;
    std::unique_ptr<std::uint8_t[]> fallback_buf_;
    Service svc_;
    std::vector<std::unique_ptr<slot>> conns_;
    std::vector<std::uint32_t> free_;
    rate_limiter errors_rl_{10};
    rate_limiter accept_rl_{5};
    rate_limiter bp_rl_{5};
    std::uint32_t now_ = 0;    ///< whole seconds, read once per turn (clock_turn())
    std::uint64_t now_ms_ = 0; ///< the same reading in ms (last_active_ms, the stop's drain)
    std::uint32_t gen_ = 0;
    std::uint32_t live_ = 0;
    bool stopping_ = false;
    bool notified_ = false; ///< NOTIFYs processed since the last turn_end()
    std::uint64_t stop_deadline_ms_ = 0;
};

} // namespace spop::server
