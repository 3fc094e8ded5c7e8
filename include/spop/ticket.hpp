// Deferred answers: a NOTIFY answered later, from any thread.
//
// A service that must ask something else first (Redis, an auth service, a WAF on another
// thread) calls req.defer() inside on_notify(), keeps the ticket it gets, copies what it needs
// out of the NOTIFY (its views die when on_notify() returns), and returns. Later, on any thread,
// it writes the ACK's actions with ticket.ack() and calls ticket.complete(). The engine sends
// the ACK on the connection that carried the NOTIFY, with its ids echoed.
//
// The contract, for services:
//   - A ticket is move-only and answers once. complete() empties it, and so does a move (the
//     moved-from ticket is empty). complete() on an empty ticket does nothing (the engine
//     counts it as a misuse when it can). ack() on an empty ticket is counted the same and
//     gives a writer that refuses every action, never the ACK of the NOTIFY the ticket once
//     answered: that slot may serve another NOTIFY by then.
//   - Dropping a ticket without complete() is an answer too: the engine sends the fallback,
//     so no NOTIFY is ever left unanswered. So does the deadline (spop::server:
//     options::deferred_timeout_ms). The fallback is what the service's optional
//     on_fallback() writes (service.hpp; spop::server calls it on the connection's thread),
//     else the no-op ACK (connection_config::noop_var).
//   - A ticket may be completed after its connection closed, or after its deadline passed (the
//     engine then already answered with the fallback): both are safe, do nothing on the wire,
//     and are counted.
//   - ack() and complete() may be called from any one thread at a time (the holder's); the
//     ticket must not be used from two threads at once.
//   - Every ticket must be completed or dropped before its embedder (the deferral) is
//     destroyed: for spop::server, before the server object. A ticket destroyed later touches
//     freed memory, so a queue of tickets must be declared after the server, or emptied first.
//   - req.defer() returns an empty ticket when the embedder does not support deferral or has
//     no ticket free; answer synchronously then (engines back-pressure before that happens).
//
// The contract, for embedders: implement `deferral` (spop::server does). The connection core
// counts deferred NOTIFYs against its in-flight limit and takes the finished ACK frames back
// through connection::deliver().
#pragma once

#include <cstdint>
#include <utility>

#include "writer.hpp"

namespace spop {

class ticket;

/// Where tickets come from and where their answers go. Implemented by an engine.
class deferral {
  public:
    /// A ticket for (stream-id, frame-id) of the connection tagged `conn_tag`, whose ACK may not
    /// exceed `max_frame_size`; an empty ticket when none is available. Called on the
    /// connection's thread, inside on_notify().
    virtual ticket open(std::uint64_t conn_tag, std::uint64_t stream_id, std::uint64_t frame_id,
                        std::uint32_t max_frame_size) noexcept = 0;
    /// True when open() would succeed; the connection stops taking input otherwise.
    [[nodiscard]] virtual bool available() const noexcept = 0;
    /// The writer of ticket `id`, for its holder.
    virtual ack_writer& writer(std::uint32_t id) noexcept = 0;
    /// The holder is done with ticket `id`: answered (abandoned = false) or dropped unanswered.
    /// Called on the holder's thread; the engine hands the answer to the connection's thread.
    virtual void finish(std::uint32_t id, bool abandoned) noexcept = 0;
    /// complete() or ack() on an empty ticket.
    virtual void note_misuse() noexcept {}

  protected:
    ~deferral() = default;
};

class ticket {
  public:
    ticket() noexcept = default;
    ticket(deferral* d, std::uint32_t id) noexcept : d_(d), id_(id), live_(d != nullptr) {}
    ticket(const ticket&) = delete;
    ticket& operator=(const ticket&) = delete;
    ticket(ticket&& o) noexcept : d_(o.d_), id_(o.id_), live_(std::exchange(o.live_, false)) {}
    ticket& operator=(ticket&& o) noexcept {
        if (this != &o) {
            drop();
            d_ = o.d_;
            id_ = o.id_;
            live_ = std::exchange(o.live_, false);
        }
        return *this;
    }
    ~ticket() { drop(); }

    /// True until complete() (or a move).
    [[nodiscard]] explicit operator bool() const noexcept { return live_; }

    /// The ACK under construction (set_var/unset_var). Actions that do not fit the negotiated
    /// max-frame-size are dropped (see ack_writer). On an empty ticket (default-constructed,
    /// completed or moved from), a writer that refuses every action: the slot it had may
    /// already hold another NOTIFY's answer, which must not receive this holder's actions.
    [[nodiscard]] ack_writer& ack() noexcept {
        if (live_) return d_->writer(id_);
        if (d_ != nullptr) d_->note_misuse();
        // Per thread: refused writes do not touch it, but reserve() would.
        static thread_local ack_writer refused;
        return refused;
    }

    /// Sends the ACK with what ack() holds (no action: the connection's no-op policy applies).
    void complete() noexcept {
        if (!live_) {
            if (d_ != nullptr) d_->note_misuse();
            return;
        }
        live_ = false;
        d_->finish(id_, false);
    }

    /// Writes the actions with `f(ack_writer&)`, then completes.
    template <class F>
    void complete(F&& f) noexcept {
        if (!live_) {
            if (d_ != nullptr) d_->note_misuse();
            return;
        }
        f(ack());
        complete();
    }

    [[nodiscard]] std::uint32_t id() const noexcept { return id_; }

  private:
    void drop() noexcept {
        if (live_) {
            live_ = false;
            d_->finish(id_, true);
        }
    }

    deferral* d_ = nullptr;
    std::uint32_t id_ = 0;
    bool live_ = false;
};

} // namespace spop
