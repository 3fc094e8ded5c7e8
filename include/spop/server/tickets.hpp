// spop::server deferred answers: a worker's pool of tickets (spop::deferral, ticket.hpp).
//
// Threads: open(), available() and everything named worker_* run on the worker's thread only.
// A ticket's holder (any thread) writes its ACK through writer(id) and hands it back with
// finish(id): a lock-free push onto a list the worker takes whole (one exchange), and at most
// one eventfd write per batch to wake the worker, none while it is awake (worker_sleep()). The
// worker is the only one that reads a finished ticket's buffer, after taking it from that list
// (release/acquire on the list head).
//
// Lifecycle of a slot: free -> open (the holder has it) -> finished (pushed) -> delivered and
// free. A deadline (options::deferred_timeout_ms, the same for every ticket, so the open
// tickets expire in creation order: a FIFO) can move an open ticket to expired: the worker
// answers with the fallback (the no-op ACK) at once, and the slot waits for its holder's late
// finish() (or drop), which is then counted and discarded. Nothing is allocated after start.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <ctime>
#include <memory>
#include <sys/eventfd.h>
#include <unistd.h>
#include <vector>

#include "../ticket.hpp"
#include "../writer.hpp"
#include "stats.hpp"

namespace spop::server {

class ticket_pool final : public spop::deferral {
  public:
    enum state : int { st_free = 0, st_open, st_finished, st_expired, st_late };

    struct slot {
        std::unique_ptr<std::uint8_t[]> buf;
        spop::ack_writer w;
        std::uint64_t conn_tag = 0; ///< the connection's (index | generation << 32)
        std::uint64_t sid = 0, fid = 0;
        std::uint32_t mfs = 0;
        std::uint32_t gen = 0;         ///< bumped at every open: FIFO entries of old uses skip
        std::uint64_t deadline_ms = 0; ///< monotonic
        std::uint64_t opened_ns = 0;
        bool abandoned = false;
        std::atomic<int> st{st_free};
        std::atomic<std::uint32_t> next{no_slot}; ///< the finished list
    };
    static constexpr std::uint32_t no_slot = 0xFFFFFFFF;

    /// `count` tickets of `ack_bytes` each (an ACK frame: actions past it are dropped, see
    /// ack_writer). Allocates everything now.
    ticket_pool(std::uint32_t count, std::size_t ack_bytes, std::uint32_t timeout_ms,
                worker_stats& stats)
        : slots_(count), ack_bytes_(ack_bytes), timeout_ms_(timeout_ms), stats_(stats),
          fifo_(count) {
        free_.reserve(count);
        for (std::uint32_t i = count; i-- > 0;) {
            slots_[i].buf.reset(new std::uint8_t[ack_bytes]);
            free_.push_back(i);
        }
        efd_ = count != 0 ? ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
    }
    ticket_pool(const ticket_pool&) = delete;
    ticket_pool& operator=(const ticket_pool&) = delete;
    ~ticket_pool() {
        if (efd_ >= 0) ::close(efd_);
    }

    /// Readable when finished tickets wait for the worker (its backend polls it).
    [[nodiscard]] int event_fd() const noexcept { return efd_; }

    // spop::deferral (open/available: worker thread; writer/finish: the holder) -------------
    spop::ticket open(std::uint64_t conn_tag, std::uint64_t sid, std::uint64_t fid,
                      std::uint32_t mfs) noexcept override {
        if (free_.empty()) return {};
        const std::uint32_t id = free_.back();
        free_.pop_back();
        slot& s = slots_[id];
        s.conn_tag = conn_tag;
        s.sid = sid;
        s.fid = fid;
        s.mfs = mfs;
        ++s.gen;
        // The worker set the clock just before the read that runs this on_notify (io_clock()).
        s.opened_ns = now_ns_;
        s.deadline_ms = now_ms_ + timeout_ms_;
        s.abandoned = false;
        s.w = spop::ack_writer({s.buf.get(), ack_bytes_}, sid, fid, mfs);
        s.next.store(no_slot, std::memory_order_relaxed);
        s.st.store(st_open, std::memory_order_relaxed);
        fifo_push(id, s.gen);
        stats_.deferred_inflight.add();
        return spop::ticket(this, id);
    }
    [[nodiscard]] bool available() const noexcept override {
        if (free_.empty()) refused_ = true;
        return !free_.empty();
    }
    spop::ack_writer& writer(std::uint32_t id) noexcept override { return slots_[id].w; }
    void finish(std::uint32_t id, bool abandoned) noexcept override {
        slot& s = slots_[id];
        s.abandoned = abandoned;
        int expect = st_open;
        if (!s.st.compare_exchange_strong(expect, st_finished, std::memory_order_acq_rel))
            s.st.store(st_late, std::memory_order_release); // expired meanwhile
        std::uint32_t head = head_.load(std::memory_order_relaxed);
        do {
            s.next.store(head, std::memory_order_relaxed);
            // seq_cst: with worker_sleep()'s, the two sides of a Dekker check (see wake()).
        } while (!head_.compare_exchange_weak(head, id, std::memory_order_seq_cst,
                                              std::memory_order_relaxed));
        wake();
    }
    void note_misuse() noexcept override {
        misuse_.fetch_add(1, std::memory_order_relaxed);
        wake(true); // the worker moves it into its counters
    }

    [[nodiscard]] static std::uint64_t clock_ns() noexcept {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
               static_cast<std::uint64_t>(ts.tv_nsec);
    }

    // The worker's side ------------------------------------------------------------------------
    void worker_clock(std::uint64_t now_ns) noexcept {
        now_ns_ = now_ns;
        now_ms_ = now_ns / 1000000;
    }

    /// The worker's thread calls this once, before its loop: tickets finished on that thread
    /// (in on_notify or on_turn_end) then skip the eventfd; the worker takes them at the end of
    /// its turn (worker_local_finished()).
    void worker_attach() noexcept { owner_here_ = this; }

    /// Just before the worker blocks for events: false when finished tickets already wait (take
    /// them, and poll instead of sleeping). Once this returned true, a holder that finishes a
    /// ticket writes the eventfd; while the worker is awake, finish() costs no system call,
    /// since the worker looks at the list here before it sleeps again.
    [[nodiscard]] bool worker_sleep() noexcept {
        if (efd_ < 0) return true; // a service that never defers
        sleeping_.store(true, std::memory_order_seq_cst);
        if (head_.load(std::memory_order_seq_cst) == no_slot) return true;
        sleeping_.store(false, std::memory_order_relaxed);
        return false;
    }
    /// The worker's wait returned.
    void worker_awake() noexcept { sleeping_.store(false, std::memory_order_relaxed); }

    /// True once after tickets were finished on the worker's own thread since the last call.
    [[nodiscard]] bool worker_local_finished() noexcept {
        const bool r = local_finished_;
        local_finished_ = false;
        return r;
    }

    /// Takes every finished ticket, oldest first: `on(slot&, id)` for each. A late one (its
    /// deadline passed, the fallback went out) is counted and freed without a call.
    /// The eventfd is not read here: the io_uring backend's own read of it completed, and the
    /// epoll backend polls it edge-triggered (every write is an edge; the counter is never
    /// reset, and 2^64 writes are out of reach), which saves a read() per batch.
    template <class F>
    void worker_take(F&& on) {
        wake_pending_.store(false, std::memory_order_release);
        std::uint32_t id = head_.exchange(no_slot, std::memory_order_acquire);
        // The list is newest first: reverse it so answers keep completion order.
        std::uint32_t prev = no_slot;
        while (id != no_slot) {
            const std::uint32_t nxt = slots_[id].next.load(std::memory_order_relaxed);
            slots_[id].next.store(prev, std::memory_order_relaxed);
            prev = id;
            id = nxt;
        }
        for (id = prev; id != no_slot;) {
            const std::uint32_t nxt = slots_[id].next.load(std::memory_order_relaxed);
            slot& s = slots_[id];
            if (s.st.load(std::memory_order_acquire) == st_late) {
                stats_.deferred_late.add();
                release(id);
            } else {
                on(s, id);
            }
            id = nxt;
        }
        const std::uint64_t m = misuse_.exchange(0, std::memory_order_relaxed);
        if (m != 0) stats_.deferred_misuse.add(m);
    }

    /// Expires the open tickets whose deadline passed (or all of them with `all`):
    /// `on(slot&)` sends the fallback. Returns the next deadline in ms, 0 if none.
    template <class F>
    std::uint64_t worker_expire(bool all, F&& on) {
        while (fifo_n_ != 0) {
            const fifo_entry e = fifo_[fifo_head_];
            slot& s = slots_[e.id];
            if (s.gen == e.gen && s.st.load(std::memory_order_acquire) == st_open) {
                if (!all && s.deadline_ms > now_ms_) return s.deadline_ms;
                int expect = st_open;
                if (s.st.compare_exchange_strong(expect, st_expired, std::memory_order_acq_rel)) {
                    stats_.deferred_expired.add();
                    stats_.deferred_inflight.sub();
                    on(s);
                }
            }
            fifo_head_ = (fifo_head_ + 1) % static_cast<std::uint32_t>(fifo_.size());
            --fifo_n_;
        }
        return 0;
    }

    /// A finished ticket was delivered (or dropped): its slot is free again.
    void worker_done(std::uint32_t id) noexcept {
        const slot& s = slots_[id];
        stats_.deferred_completed.add();
        stats_.deferred_inflight.sub();
        stats_.observe_deferred_ns(now_ns_ - s.opened_ns);
        release(id);
    }

    /// True once, after a connection was refused a ticket and one is free again: the worker
    /// should let paused connections retry (connection::retry_input()).
    [[nodiscard]] bool worker_should_retry() noexcept {
        if (!refused_ || free_.empty()) return false;
        refused_ = false;
        return true;
    }

    [[nodiscard]] slot& at(std::uint32_t id) noexcept { return slots_[id]; }

    [[nodiscard]] std::uint32_t open_count() const noexcept {
        return static_cast<std::uint32_t>(slots_.size() - free_.size());
    }

  private:
    /// An eventfd write only when the worker sleeps (or is about to), and one per batch: the
    /// worker clears wake_pending_ before taking the list. Dekker: the worker stores sleeping_
    /// then loads head_ (worker_sleep()); a holder pushes onto head_ then loads sleeping_, all
    /// seq_cst, so at least one of them sees the other: either the worker finds the ticket
    /// before it sleeps, or the holder sees it asleep and writes.
    void wake(bool always = false) noexcept {
        if (owner_here_ == this) { // the worker itself, inside its turn: no syscall
            local_finished_ = true;
            return;
        }
        if (!always && !sleeping_.load(std::memory_order_seq_cst)) return;
        if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) {
            const std::uint64_t one = 1;
            const ssize_t w = ::write(efd_, &one, sizeof one);
            (void)w;
        }
    }

    struct fifo_entry {
        std::uint32_t id;
        std::uint32_t gen;
    };
    void fifo_push(std::uint32_t id, std::uint32_t gen) noexcept {
        // Capacity = slot count: an open ticket has one entry at most; stale entries of freed
        // slots are dropped when reached. The front entry may be a live one (a ticket held
        // longer than the ones after it), so a full queue is compacted instead: the new
        // ticket's slot is open already, so at least one entry is stale.
        if (fifo_n_ == fifo_.size()) fifo_compact();
        fifo_[(fifo_head_ + fifo_n_) % fifo_.size()] = {id, gen};
        ++fifo_n_;
    }
    /// Keeps the entries of open tickets (in order), drops the others.
    void fifo_compact() noexcept {
        const auto cap = static_cast<std::uint32_t>(fifo_.size());
        std::uint32_t kept = 0;
        for (std::uint32_t k = 0; k < fifo_n_; ++k) {
            const fifo_entry e = fifo_[(fifo_head_ + k) % cap];
            const slot& s = slots_[e.id];
            if (s.gen == e.gen && s.st.load(std::memory_order_acquire) == st_open)
                fifo_[(fifo_head_ + kept++) % cap] = e;
        }
        fifo_n_ = kept;
    }
    void release(std::uint32_t id) noexcept {
        slots_[id].st.store(st_free, std::memory_order_relaxed);
        free_.push_back(id);
    }

    std::vector<slot> slots_;
    std::vector<std::uint32_t> free_;
    std::size_t ack_bytes_;
    std::uint64_t timeout_ms_;
    worker_stats& stats_;
    std::vector<fifo_entry> fifo_;
    std::uint32_t fifo_head_ = 0;
    std::uint32_t fifo_n_ = 0;
    std::atomic<std::uint32_t> head_{no_slot};
    std::atomic<bool> wake_pending_{false};
    std::atomic<bool> sleeping_{true}; ///< the worker blocks (or may) in its wait: see wake()
    bool local_finished_ = false;      ///< the worker's thread only
    static inline thread_local const ticket_pool* owner_here_ = nullptr;
    std::atomic<std::uint64_t> misuse_{0};
    mutable bool refused_ = false;
    std::uint64_t now_ns_ = 0;
    std::uint64_t now_ms_ = 0;
    int efd_ = -1;
};

} // namespace spop::server
