// The reputation service's per-worker counters, and their Prometheus families.
//
// A program's per-worker Stats block derives from spop::server::worker_stats (the engine's
// counters) and from service_stats; render_metrics() below is the hook that
// spop::server::prometheus::render() finds on such a block (see prometheus.hpp), so the
// program's /metrics gets these families without naming them. Each worker is the only writer
// of its own block.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <spop/server/prometheus.hpp>
#include <spop/server/stats.hpp>

namespace agent::iprep {

struct service_stats {
    spop::server::counter lookups_listed;      // a list, CSV or MMDB entry matched
    spop::server::counter lookups_allowed;     // an allow-list entry matched
    spop::server::counter lookups_default;     // unlisted: --default-score (random by default)
    spop::server::counter lookups_decided;     // a live decision (--decisions) matched
    spop::server::counter ack_actions_dropped; // SET-VAR actions left out of a full ACK

    /// Totals, then per worker. `Self` is the program's Stats block, derived from this one.
    template <class Self>
    static void render_metrics(spop::server::prometheus::writer& w,
                               std::span<const Self* const> workers) {
        struct row {
            std::uint64_t listed, allowed, deflt, decided;
        };
        std::uint64_t listed = 0, allowed = 0, deflt = 0, decided = 0, dropped = 0;
        std::vector<row> per(workers.size());
        for (std::size_t i = 0; i < workers.size(); ++i) {
            const service_stats& s = *workers[i];
            per[i] = {s.lookups_listed.get(), s.lookups_allowed.get(), s.lookups_default.get(),
                      s.lookups_decided.get()};
            listed += per[i].listed;
            allowed += per[i].allowed;
            deflt += per[i].deflt;
            decided += per[i].decided;
            dropped += s.ack_actions_dropped.get();
        }
        w.header("lookups_total", "counter",
                 "Reputation lookups by outcome: listed (a list, CSV or MMDB entry), allowed "
                 "(allow-list), decision (a live decision, --decisions), default (unlisted: "
                 "--default-score).");
        w.sample("lookups_total", "outcome=\"listed\"", listed);
        w.sample("lookups_total", "outcome=\"allowed\"", allowed);
        w.sample("lookups_total", "outcome=\"decision\"", decided);
        w.sample("lookups_total", "outcome=\"default\"", deflt);
        w.one("ack_actions_dropped_total", "counter",
              "SET-VAR actions left out of ACKs that could not hold them all (scores go first).",
              dropped);
        w.header("worker_lookups_total", "counter", "Lookups by outcome, per worker.");
        for (std::size_t i = 0; i < per.size(); ++i) {
            w.worker_sample("worker_lookups_total", i, "outcome=\"listed\"", per[i].listed);
            w.worker_sample("worker_lookups_total", i, "outcome=\"allowed\"", per[i].allowed);
            w.worker_sample("worker_lookups_total", i, "outcome=\"decision\"", per[i].decided);
            w.worker_sample("worker_lookups_total", i, "outcome=\"default\"", per[i].deflt);
        }
    }
};

} // namespace agent::iprep
