// Shared rate limits (message `check-rate`): what a worker hands to the Redis thread.
//
// A check-rate NOTIFY is deferred (spop::ticket): the worker copies the key out of the NOTIFY
// (its views die with the receive buffer), packs ticket + key + limit + window into a request
// and pushes it onto its own ring towards the Redis thread (limiter.hpp), which counts the key
// in Redis and completes the ticket from its thread.
//
// Threads and memory:
//   - One single-producer/single-consumer ring per worker, allocated at start with room for
//     every ticket the worker can have open (options::max_deferred), so a push cannot fail while
//     tickets bound the requests. The worker's push is a few stores and one release store of
//     the tail; no lock, no allocation, no syscall in the common case.
//   - Waking the Redis thread: it announces that it is about to sleep (`sleeping`, seq_cst),
//     re-checks every ring and then blocks in poll() on an eventfd. A producer that sees the
//     flag after its push clears it and writes the eventfd once. Under load the thread rarely
//     sleeps, so workers rarely pay for the write. The poll has a timeout too (100 ms), so even
//     a lost wake-up would only delay, never strand, a request.
//   - Counters: each worker writes its own block (worker_counters); the Redis thread writes
//     its own (thread_counters); /metrics sums.
//
// A gateway exists whether or not --rate-redis is set: without it `enabled()` is false, no
// ring is allocated and check-rate is answered at once with the fail value (rate_service.hpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <iterator>
#include <memory>
#include <string_view>
#include <sys/eventfd.h>
#include <unistd.h>
#include <vector>

#include <spop/server/stats.hpp>
#include <spop/ticket.hpp>
#include <spop/writer.hpp>

namespace agent::ratelimit {

/// The longest key counted. A longer key is refused without being sent to Redis: the answer
/// is the fail value, counted as reason="key_too_long". 256 bytes hold any IP address, API
/// key, user name or cookie value worth counting; Redis keys are prefixed (limiter.hpp).
inline constexpr std::size_t max_key_bytes = 256;

/// Limits accepted from a message or the command line.
inline constexpr std::uint32_t max_limit = 1000000000;
inline constexpr std::uint32_t max_window_s = 7 * 86400;

enum class fail_policy : std::uint8_t { open, closed };

/// Why an answer is the fail value instead of a count.
enum class fail_reason : std::uint8_t {
    unconfigured, ///< no --rate-redis
    key_too_long, ///< key over max_key_bytes: never sent
    no_ticket,    ///< the worker had no ticket free (should not happen: back-pressure first)
    queue_full,   ///< the ring was full (should not happen: sized for every ticket)
    down,         ///< Redis unreachable (between reconnects)
    timeout,      ///< no reply within the budget: the connection is dropped and retried
    error,        ///< an error reply, or a reply of the wrong shape
    stopping,     ///< the agent stops with requests in flight
    count_,
};
inline constexpr const char* fail_reason_names[] = {"unconfigured", "key_too_long", "no_ticket",
                                                    "queue_full",   "down",         "timeout",
                                                    "error",        "stopping"};
static_assert(std::size(fail_reason_names) == static_cast<std::size_t>(fail_reason::count_));

/// The answer's variables (scope txn; HAProxy shows them as txn.<var-prefix>.<name>).
struct answer_vars {
    std::string_view rate = "rate";             ///< the count in the sliding window (UINT32)
    std::string_view over_limit = "over_limit"; ///< 1 when rate > limit, else 0 (UINT32)
    spop::var_scope scope = spop::var_scope::txn;
};

struct config {
    bool enabled = false;        ///< --rate-redis given (and supported by this build)
    std::uint32_t limit = 100;   ///< --rate-limit: requests per window
    std::uint32_t window_s = 60; ///< --rate-window
    fail_policy fail = fail_policy::open;
    answer_vars vars{};
};

/// CLOCK_MONOTONIC in ns: requests' push times, read by the Redis thread.
[[nodiscard]] inline std::uint64_t now_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

/// The answer when the count is unknown: over_limit = 1 (closed) or 0 (open), no rate.
inline void write_fail(spop::ack_writer& ack, const config& c) noexcept {
    ack.set_var(c.vars.scope, c.vars.over_limit,
                spop::value::from_uint32(c.fail == fail_policy::closed ? 1 : 0));
}

/// The most a check-rate answer takes (write_count(); write_fail() takes less), for
/// ack_writer::reserve().
[[nodiscard]] inline std::size_t max_answer_size(const answer_vars& v) noexcept {
    const spop::value u32 = spop::value::from_uint32(0xFFFFFFFFu);
    return spop::set_var_size(v.rate, u32) + spop::set_var_size(v.over_limit, u32);
}

/// A counted answer.
inline void write_count(spop::ack_writer& ack, const answer_vars& v, std::uint64_t rate,
                        bool over) noexcept {
    ack.set_var(v.scope, v.rate,
                spop::value::from_uint32(rate > 0xFFFFFFFFu ? 0xFFFFFFFFu
                                                            : static_cast<std::uint32_t>(rate)));
    ack.set_var(v.scope, v.over_limit, spop::value::from_uint32(over ? 1 : 0));
}

/// One check-rate on its way to Redis.
struct request {
    spop::ticket t;
    std::uint64_t enqueued_ns = 0; ///< CLOCK_MONOTONIC
    std::uint32_t limit = 0;
    std::uint32_t window_ms = 0;
    std::uint32_t key_len = 0;
    char key[max_key_bytes];
};

using spop::server::counter;

/// A worker's counters (its own block).
struct alignas(64) worker_counters {
    counter messages; ///< check-rate messages seen
    counter deferred; ///< sent to the Redis thread
    counter no_key;   ///< no usable key: answered with no variable
    counter bad_args; ///< a limit or window out of range or of the wrong type: default used
    counter fails[static_cast<int>(fail_reason::count_)];
};

/// The Redis thread's counters (its own block; gauges are written by it only too).
struct alignas(64) thread_counters {
    counter answered; ///< answers with a count
    counter over;     ///< of which over the limit
    counter fails[static_cast<int>(fail_reason::count_)];
    counter batches;          ///< writes to Redis carrying at least one command
    counter commands;         ///< EVALSHA / EVAL sent
    counter max_batch;        ///< gauge: the most commands one write carried
    counter noscript;         ///< EVAL resent after NOSCRIPT
    counter bad_replies;      ///< replies of the wrong shape or error replies
    counter late_replies;     ///< replies to requests already answered (budget ran out)
    counter connects;         ///< connections established (script loaded)
    counter connect_failures; ///< attempts that failed
    counter disconnects;      ///< connections dropped (I/O error, timeout, protocol error)
    counter up;               ///< gauge: 1 while connected
    counter inflight;         ///< gauge: commands sent, reply pending
    counter latency[spop::server::latency_slots]; ///< worker push -> ticket completed
    counter latency_sum_ns;
    counter latency_count;

    void observe_ns(std::uint64_t ns) noexcept {
        const std::uint64_t us = ns / 1000;
        int i = 0;
        while (i < spop::server::latency_slots - 1 && us > spop::server::latency_bounds_us[i]) ++i;
        latency[i].add();
        latency_sum_ns.add(ns);
        latency_count.add();
    }
};

/// Single producer (one worker), single consumer (the Redis thread). Capacity: a power of two.
class ring {
  public:
    explicit ring(std::uint32_t capacity) {
        std::uint32_t n = 1;
        while (n < capacity) n <<= 1;
        slots_.reset(new request[n]);
        mask_ = n - 1;
    }
    ring(const ring&) = delete;
    ring& operator=(const ring&) = delete;

    /// Producer: moves `t` in (only on success) with a copy of the key.
    bool push(spop::ticket& t, std::string_view key, std::uint32_t limit, std::uint32_t window_ms,
              std::uint64_t now_ns) noexcept {
        const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
        if (tail - head_cache_ > mask_) {
            head_cache_ = head_.load(std::memory_order_acquire);
            if (tail - head_cache_ > mask_) return false;
        }
        request& r = slots_[tail & mask_];
        r.t = std::move(t);
        r.enqueued_ns = now_ns;
        r.limit = limit;
        r.window_ms = window_ms;
        r.key_len = static_cast<std::uint32_t>(key.size());
        std::memcpy(r.key, key.data(), key.size());
        // seq_cst: ordered before the producer's load of `sleeping` (see the header comment).
        tail_.store(tail + 1, std::memory_order_seq_cst);
        return true;
    }

    /// Consumer: `f(request&)` for each waiting request, oldest first; `f` takes the ticket.
    template <class F>
    std::size_t drain(F&& f, std::size_t max) {
        const std::uint64_t tail = tail_.load(std::memory_order_acquire);
        std::uint64_t head = head_.load(std::memory_order_relaxed);
        std::size_t n = 0;
        while (head != tail && n < max) {
            f(slots_[head & mask_]);
            ++head;
            ++n;
        }
        head_.store(head, std::memory_order_release);
        return n;
    }

    [[nodiscard]] std::size_t capacity() const noexcept { return mask_ + 1; }

    /// Consumer: true when a request waits (seq_cst: see the header comment).
    [[nodiscard]] bool nonempty() const noexcept {
        return tail_.load(std::memory_order_seq_cst) != head_.load(std::memory_order_relaxed);
    }

  private:
    std::unique_ptr<request[]> slots_;
    std::uint64_t mask_ = 0;
    alignas(64) std::atomic<std::uint64_t> tail_{0}; ///< written by the producer
    std::uint64_t head_cache_ = 0;                   ///< the producer's view of head_
    alignas(64) std::atomic<std::uint64_t> head_{0}; ///< written by the consumer
};

/// A worker's end: its ring and counters.
struct alignas(64) port {
    worker_counters c;
    std::unique_ptr<ring> r; ///< null when disabled
};

class gateway {
  public:
    /// `workers` ports; rings of `capacity` requests each when `cfg.enabled`.
    gateway(int workers, std::uint32_t capacity, const config& cfg) : cfg_(cfg), ports_(workers) {
        if (cfg_.enabled) {
            for (auto& p : ports_) p.r = std::make_unique<ring>(capacity);
            efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        }
    }
    gateway(const gateway&) = delete;
    gateway& operator=(const gateway&) = delete;
    ~gateway() {
        if (efd_ >= 0) ::close(efd_);
    }

    [[nodiscard]] const config& cfg() const noexcept { return cfg_; }
    [[nodiscard]] bool enabled() const noexcept { return cfg_.enabled; }
    [[nodiscard]] port& at(int worker) noexcept { return ports_[static_cast<std::size_t>(worker)]; }
    [[nodiscard]] const std::vector<port>& ports() const noexcept { return ports_; }
    [[nodiscard]] std::vector<port>& ports_mut() noexcept { return ports_; }
    /// True for the first caller only (one warning per process, whichever worker sees it).
    [[nodiscard]] bool warn_unconfigured_once() noexcept {
        return !warned_.load(std::memory_order_relaxed) &&
               !warned_.exchange(true, std::memory_order_relaxed);
    }
    /// The Redis thread's counters (written by it only).
    [[nodiscard]] thread_counters& redis_counters() noexcept { return tc_; }
    [[nodiscard]] const thread_counters& redis_counters() const noexcept { return tc_; }

    /// Worker `p`: queue a request and wake the Redis thread if it sleeps. False when the ring
    /// is full (the ticket stays with the caller).
    bool submit(port& p, spop::ticket& t, std::string_view key, std::uint32_t limit,
                std::uint32_t window_ms, std::uint64_t now_ns) noexcept {
        if (!p.r->push(t, key, limit, window_ms, now_ns)) return false;
        if (sleeping_.load(std::memory_order_seq_cst) &&
            sleeping_.exchange(false, std::memory_order_seq_cst)) {
            const std::uint64_t one = 1;
            const ssize_t w = ::write(efd_, &one, sizeof one);
            (void)w;
        }
        return true;
    }

    // The Redis thread's side -------------------------------------------------------------------
    [[nodiscard]] int event_fd() const noexcept { return efd_; }

    /// Before blocking: announce it, then look once more. True when the thread may sleep.
    bool prepare_sleep() noexcept {
        sleeping_.store(true, std::memory_order_seq_cst);
        for (auto& p : ports_)
            if (p.r->nonempty()) {
                sleeping_.store(false, std::memory_order_relaxed);
                return false;
            }
        return true;
    }
    /// Wakes the thread whatever it does (stop).
    void wake() noexcept {
        const std::uint64_t one = 1;
        const ssize_t w = ::write(efd_, &one, sizeof one);
        (void)w;
    }
    /// After waking: clears the eventfd and the flag.
    void woke() noexcept {
        std::uint64_t v;
        const ssize_t r = ::read(efd_, &v, sizeof v);
        (void)r;
        sleeping_.store(false, std::memory_order_relaxed);
    }

  private:
    config cfg_;
    std::vector<port> ports_;
    thread_counters tc_;
    int efd_ = -1;
    alignas(64) std::atomic<bool> sleeping_{false};
    std::atomic<bool> warned_{false};
};

} // namespace agent::ratelimit
