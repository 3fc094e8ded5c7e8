// spop::server per-worker counters (the engine's; a service may derive and add its own). Each
// worker is the only writer of its own block, so an increment is a relaxed load+store (no locked
// instruction); a metrics scrape reads every block and sums.
#pragma once

#include <atomic>
#include <cstdint>

namespace spop::server {

struct counter {
    std::atomic<std::uint64_t> v{0};
    void add(std::uint64_t n = 1) noexcept {
        v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void sub(std::uint64_t n = 1) noexcept {
        v.store(v.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t get() const noexcept { return v.load(std::memory_order_relaxed); }
};

/// Status codes 0..13 get their own slot; everything else lands in the last one (99).
inline constexpr int status_slots = 15;
inline int status_slot(std::uint32_t code) noexcept {
    return code <= 13 ? static_cast<int>(code) : 14;
}

/// NOTIFY handling latency buckets, in microseconds (upper bounds; the last is +Inf).
inline constexpr std::uint64_t latency_bounds_us[] = {1, 5, 10, 50, 100, 500, 1000, 5000, 10000};
inline constexpr int latency_slots = sizeof(latency_bounds_us) / sizeof(latency_bounds_us[0]) + 1;

struct alignas(64) worker_stats {
    counter frames_in;         // every complete frame received
    counter hello_frames;      // HAPROXY-HELLO
    counter notify_frames;     // NOTIFY
    counter disconnect_frames; // HAPROXY-DISCONNECT received
    counter acks;              // ACK frames sent
    counter acks_queued;       // gauge: ACKs written, not yet all sent (answered, not delivered)
    counter healthchecks;      // health-check handshakes
    counter conns_current;
    counter conns_total;
    counter conns_rejected; // over --max-connections
    counter bytes_in;
    counter bytes_out;
    counter disconnects_sent[status_slots]; // AGENT-DISCONNECT by status code
    counter batch_latency[latency_slots];   // time from a receive completion to its ACKs queued
    counter batch_latency_sum_ns;
    counter batch_latency_count;
    // Deferred answers (tickets.hpp).
    counter deferred_inflight;    // gauge: tickets open (not completed, not expired)
    counter deferred_completed;   // answered by their holder (or dropped: fallback)
    counter deferred_expired;     // answered with the fallback at the deadline
    counter deferred_late;        // completed after the deadline: discarded
    counter deferred_after_close; // completed after their connection went away: discarded
    counter deferred_misuse;      // complete() or ack() on an empty ticket
    counter deferred_latency[latency_slots]; // open -> completed
    counter deferred_latency_sum_ns;
    counter deferred_latency_count;

    void observe_latency_ns(std::uint64_t ns) noexcept {
        observe(batch_latency, batch_latency_sum_ns, batch_latency_count, ns);
    }
    void observe_deferred_ns(std::uint64_t ns) noexcept {
        observe(deferred_latency, deferred_latency_sum_ns, deferred_latency_count, ns);
    }

  private:
    static void observe(counter* buckets, counter& sum, counter& count, std::uint64_t ns) noexcept {
        const std::uint64_t us = ns / 1000;
        int i = 0;
        while (i < latency_slots - 1 && us > latency_bounds_us[i]) ++i;
        buckets[i].add();
        sum.add(ns);
        count.add();
    }
};

} // namespace spop::server
