// Safe reclamation of retired snapshots: a small read-copy-update scheme.
//
// Readers (workers, inside reputation_source::lookup) mark the few nanoseconds they hold a
// snapshot pointer by making their own per-thread sequence number odd, then even again. The
// slot is a cache line of its own that only its thread writes: a plain store, no locked
// instruction, nothing shared with the other workers.
//
// The writer (the reloader) publishes the new snapshot with an atomic exchange, then waits
// until every slot that was odd has changed, and only then frees the old snapshot. For this to
// be sound, a reader's "odd" store must be visible before it loads the snapshot pointer (the
// store-load order a plain fence gives). The writer pays for that instead of the readers: it
// calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which runs a full barrier on every CPU
// running one of our threads, so readers need only a compiler barrier. When membarrier is not
// available (old kernel, seccomp), readers fall back to a real fence (one mfence per lookup).
//
// Why it is safe: take a read section that loaded the old pointer. The barrier membarrier()
// forced on that reader's CPU cannot come before the load (the load would then see the
// exchange), so it comes after the odd store, which is therefore visible when the writer scans
// the slots after membarrier() returns. The writer then waits for that value to change, and the
// end-of-section store is a release, so everything the section read happens before the free.
//
// A thread gets its slot on its first lookup (a CAS on a free slot, once) and gives it back
// when it exits. If all slots are taken, the thread uses a shared counter instead (correct, but
// an atomic RMW per lookup: only with more than max_slots lookup threads).
#pragma once

#include <atomic>
#include <cstdint>

namespace agent::iprep::rcu {

inline constexpr unsigned max_slots = 1024;

struct alignas(64) slot {
    std::atomic<std::uint64_t> seq{0}; ///< odd while the owner is inside a read section
    std::atomic<bool> used{false};
};

/// True when membarrier() is registered for this process (set once, before any synchronize()).
extern std::atomic<bool> g_asymmetric;
/// Readers that found no free slot.
extern std::atomic<std::uint64_t> g_overflow_readers;

inline thread_local slot* t_slot = nullptr;
inline thread_local bool t_overflow = false;

/// Claims a slot for the calling thread (or marks it as overflow). Called once per thread.
void register_thread() noexcept;

/// Registers membarrier if possible. Idempotent; call before starting reader threads.
void init() noexcept;

class read_guard {
  public:
    read_guard() noexcept {
        if (t_slot == nullptr && !t_overflow) [[unlikely]]
            register_thread();
        if (t_slot != nullptr) [[likely]] {
            // Release (a plain store on x86): whichever later value of this slot the writer
            // reads, it then also sees the end of every earlier section of this thread.
            seq_ = t_slot->seq.load(std::memory_order_relaxed) + 1;
            t_slot->seq.store(seq_, std::memory_order_release);
        } else {
            g_overflow_readers.fetch_add(1, std::memory_order_relaxed);
        }
        if (g_asymmetric.load(std::memory_order_relaxed))
            std::atomic_signal_fence(std::memory_order_seq_cst);
        else
            std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    ~read_guard() {
        if (t_slot != nullptr) [[likely]]
            t_slot->seq.store(seq_ + 1, std::memory_order_release);
        else
            g_overflow_readers.fetch_sub(1, std::memory_order_release);
    }
    read_guard(const read_guard&) = delete;
    read_guard& operator=(const read_guard&) = delete;

  private:
    std::uint64_t seq_ = 0;
};

/// Waits until every read section that may have seen a pointer replaced before this call has
/// ended. Returns false if that took longer than `timeout_ms` (the caller then keeps the old
/// data and tries again later). Never call from inside a read section.
bool synchronize(unsigned timeout_ms = 10000) noexcept;

} // namespace agent::iprep::rcu
