// The shared rate limits' families on /metrics (docs/rate-limits.md lists them). Sums of the
// workers' blocks and the Redis thread's block, read with relaxed loads while they change.
#pragma once

#include <cstdint>
#include <cstdio>

#include <spop/server/prometheus.hpp>

#include "gateway.hpp"

namespace agent::ratelimit {

inline void render_metrics(spop::server::prometheus::writer& w, const gateway& g) {
    namespace prom = spop::server::prometheus;
    constexpr int nreasons = static_cast<int>(fail_reason::count_);
    std::uint64_t messages = 0, deferred = 0, no_key = 0, bad_args = 0;
    std::uint64_t fails[nreasons]{};
    for (const port& p : g.ports()) {
        messages += p.c.messages.get();
        deferred += p.c.deferred.get();
        no_key += p.c.no_key.get();
        bad_args += p.c.bad_args.get();
        for (int i = 0; i < nreasons; ++i) fails[i] += p.c.fails[i].get();
    }
    const thread_counters& t = g.redis_counters();
    for (int i = 0; i < nreasons; ++i) fails[i] += t.fails[i].get();

    w.one("rate_messages_total", "counter", "check-rate messages received.", messages);
    w.one("rate_deferred_total", "counter", "check-rate NOTIFYs deferred to the Redis thread.",
          deferred);
    w.one("rate_no_key_total", "counter",
          "check-rate messages without a usable key (answered with no variable).", no_key);
    w.one("rate_bad_args_total", "counter",
          "check-rate limits or windows out of range or not numbers (the default applied).",
          bad_args);
    const std::uint64_t answered = t.answered.get(), over = t.over.get();
    w.header("rate_answers_total", "counter",
             "check-rate answers counted in Redis, by result (over: rate > limit).");
    w.sample("rate_answers_total", "result=\"under\"",
             answered - (over < answered ? over : answered));
    w.sample("rate_answers_total", "result=\"over\"", over);
    const char* policy = g.cfg().fail == fail_policy::closed ? "closed" : "open";
    w.header("rate_fail_answers_total", "counter",
             "check-rate answers with the --rate-fail value (over_limit 0 when open, 1 when "
             "closed) instead of a count, by reason.");
    char labels[96];
    for (int i = 0; i < nreasons; ++i) {
        std::snprintf(labels, sizeof labels, "reason=\"%s\",policy=\"%s\"", fail_reason_names[i],
                      policy);
        w.sample("rate_fail_answers_total", labels, fails[i]);
    }
    w.one("rate_redis_up", "gauge", "1 while the connection to Redis is up (--rate-redis).",
          prom::gauge_value(t.up.get()));
    w.one("rate_redis_connects_total", "counter", "Connections to Redis established.",
          t.connects.get());
    w.one("rate_redis_connect_failures_total", "counter", "Connection attempts that failed.",
          t.connect_failures.get());
    w.one("rate_redis_disconnects_total", "counter",
          "Connections dropped (I/O error, no reply within the budget, protocol error).",
          t.disconnects.get());
    w.one("rate_redis_batches_total", "counter",
          "Writes to Redis carrying commands (round trips shared by pipelined requests).",
          t.batches.get());
    w.one("rate_redis_commands_total", "counter",
          "Script calls sent (EVALSHA, EVAL); / batches = mean pipelined batch size.",
          t.commands.get());
    w.one("rate_redis_max_batch", "gauge", "The most script calls one write carried.",
          t.max_batch.get());
    w.one("rate_redis_inflight", "gauge", "Script calls sent, reply pending.",
          prom::gauge_value(t.inflight.get()));
    w.one("rate_redis_noscript_total", "counter",
          "Script calls sent again as EVAL after a NOSCRIPT reply.", t.noscript.get());
    w.one("rate_redis_bad_replies_total", "counter",
          "Error replies and replies of the wrong shape (answered with the fail value).",
          t.bad_replies.get());
    w.one("rate_redis_late_replies_total", "counter",
          "Replies that came after their request was answered with the fail value (past the "
          "budget); dropped.",
          t.late_replies.get());
    std::uint64_t lat[spop::server::latency_slots];
    for (int k = 0; k < spop::server::latency_slots; ++k) lat[k] = t.latency[k].get();
    w.header("rate_latency_seconds", "histogram",
             "check-rate latency on the agent's side: deferred by a worker to ticket completed.");
    prom::latency_samples(w, "rate_latency_seconds", lat, t.latency_sum_ns.get());
}

} // namespace agent::ratelimit
