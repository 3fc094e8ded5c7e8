// The decisions follower's counters (written by its thread only, read by /metrics) and their
// Prometheus families. Header-only and free of hiredis, so /metrics renders them in every build.
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>

#include <spop/server/prometheus.hpp>

namespace agent::decisions {

struct follower_stats {
    std::atomic<bool> configured{false};
    std::atomic<bool> connected{false};           ///< connected and synchronised
    std::atomic<std::uint64_t> decisions{0};      ///< live decisions in the published overlay
    std::atomic<std::uint64_t> malformed{0};      ///< hash or stream entries skipped
    std::atomic<std::uint64_t> refused{0};        ///< over --decisions-max, not applied
    std::atomic<std::uint64_t> syncs{0};          ///< full loads from the hash
    std::atomic<std::uint64_t> events{0};         ///< stream entries applied
    std::atomic<std::uint64_t> disconnects{0};    ///< lost connections and failed attempts
    std::atomic<std::uint64_t> publishes{0};      ///< overlays published
    std::atomic<std::int64_t> last_contact_ms{0}; ///< wall clock of Redis's last good reply
    std::atomic<std::int64_t> last_event_ms{0};   ///< time part of the last applied stream id
    std::atomic<std::int64_t> last_applied_ms{0}; ///< wall clock when that entry was applied
};

[[nodiscard]] inline std::int64_t wall_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

inline void render_metrics(spop::server::prometheus::writer& w, const follower_stats& s) {
    if (!s.configured.load(std::memory_order_relaxed)) return;
    const std::int64_t now = wall_ms();
    const std::int64_t contact = s.last_contact_ms.load(std::memory_order_relaxed);
    const std::int64_t ev = s.last_event_ms.load(std::memory_order_relaxed);
    const std::int64_t applied = s.last_applied_ms.load(std::memory_order_relaxed);
    w.one("decisions_connected", "gauge",
          "1 while the decisions follower is connected to Redis and synchronised.",
          s.connected.load(std::memory_order_relaxed) ? 1 : 0);
    w.one("decisions", "gauge", "Live decisions served (not expired).",
          s.decisions.load(std::memory_order_relaxed));
    w.one_f("decisions_lag_seconds", "gauge",
            "Seconds since Redis last answered the follower (it polls at least every 0.5 s; "
            "-1 before the first answer).",
            contact == 0 ? -1.0 : static_cast<double>(now - contact) / 1000.0);
    w.one_f("decisions_apply_delay_seconds", "gauge",
            "For the last stream entry applied: its application time minus the time in its id "
            "(writer to agent delay).",
            ev == 0 ? 0.0 : static_cast<double>(applied - ev) / 1000.0);
    w.one("decisions_malformed_total", "counter",
          "Hash or stream entries skipped as malformed (each logged).",
          s.malformed.load(std::memory_order_relaxed));
    w.one("decisions_refused_total", "counter",
          "Decisions not applied because --decisions-max was reached.",
          s.refused.load(std::memory_order_relaxed));
    w.one("decisions_syncs_total", "counter", "Full loads of the decision hash.",
          s.syncs.load(std::memory_order_relaxed));
    w.one("decisions_events_total", "counter", "Stream entries applied.",
          s.events.load(std::memory_order_relaxed));
    w.one("decisions_disconnects_total", "counter",
          "Connections to Redis lost or failed (each followed by a backoff).",
          s.disconnects.load(std::memory_order_relaxed));
}

} // namespace agent::decisions
