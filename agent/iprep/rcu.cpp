#include "rcu.hpp"

#include <ctime>
#include <linux/membarrier.h>
#include <mutex>
#include <sys/syscall.h>
#include <unistd.h>

namespace agent::iprep::rcu {

std::atomic<bool> g_asymmetric{false};
std::atomic<std::uint64_t> g_overflow_readers{0};

namespace {

slot g_slots[max_slots];

long membarrier(int cmd) noexcept {
    return ::syscall(__NR_membarrier, cmd, 0u, 0);
}

struct slot_release {
    ~slot_release() {
        if (t_slot != nullptr) {
            t_slot->used.store(false, std::memory_order_release);
            t_slot = nullptr;
        }
    }
};

std::uint64_t now_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000u +
           static_cast<std::uint64_t>(ts.tv_nsec) / 1000000u;
}

} // namespace

void init() noexcept {
    static std::once_flag once;
    std::call_once(once, [] {
        const long q = membarrier(MEMBARRIER_CMD_QUERY);
        if (q < 0 || !(q & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return;
        if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) return;
        if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) return;
        g_asymmetric.store(true, std::memory_order_seq_cst);
    });
}

void register_thread() noexcept {
    thread_local slot_release releaser;
    (void)releaser;
    for (auto& s : g_slots) {
        bool expected = false;
        if (!s.used.load(std::memory_order_relaxed) &&
            s.used.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
            // Even: a previous owner always left it even.
            t_slot = &s;
            return;
        }
    }
    t_overflow = true;
}

bool synchronize(unsigned timeout_ms) noexcept {
    if (g_asymmetric.load(std::memory_order_relaxed)) {
        if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0)
            std::atomic_thread_fence(std::memory_order_seq_cst); // cannot happen once registered
    } else {
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    const std::uint64_t deadline = now_ms() + timeout_ms;
    std::uint64_t odd[max_slots];
    for (unsigned i = 0; i < max_slots; ++i)
        odd[i] = g_slots[i].seq.load(std::memory_order_acquire);
    for (unsigned i = 0; i < max_slots; ++i) {
        if (!(odd[i] & 1)) continue;
        unsigned spins = 0;
        while (g_slots[i].seq.load(std::memory_order_acquire) == odd[i]) {
            if (++spins < 64) continue;
            if (now_ms() > deadline) return false;
            timespec ts{0, 50000};
            nanosleep(&ts, nullptr);
        }
    }
    while (g_overflow_readers.load(std::memory_order_acquire) != 0) {
        if (now_ms() > deadline) return false;
        timespec ts{0, 50000};
        nanosleep(&ts, nullptr);
    }
    return true;
}

} // namespace agent::iprep::rcu
