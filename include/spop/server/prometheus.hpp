// spop::server's metrics page: the engine's per-worker counters (worker_stats) in Prometheus's
// text exposition format (version 0.0.4), plus whatever families the service adds. There is no
// HTTP server here: a program serves the string with the one it already has (the agent uses
// civetweb, agent/metrics.cpp), so the library depends on nothing for it.
//
//   namespace prom = spop::server::prometheus;
//   const prom::process_info info{prom::unix_ms(), srv.uses_uring() ? "io_uring" : "epoll", "1"};
//   const std::string body = prom::render(srv.stats(), info); // per scrape, on any thread
//
// Names: every family is <prefix><name>, the prefix "spop_agent_" unless the caller gives
// another; writer methods take the name without it. docs/operations.md lists the engine's.
//
// A service's own families. Its counters live in the per-worker Stats block (a struct derived
// from worker_stats), not in the service object: the service belongs to its worker thread, the
// block is what another thread may read. The block type declares
//
//   template <class Self>
//   static void render_metrics(prometheus::writer& w, std::span<const Self* const> workers);
//
// (or the same with its own type instead of a template), and render() calls it after the
// engine's families. A template lets a base struct of counters (iprep::service_stats) serve any
// Stats derived from it; a Stats with two such bases declares its own render_metrics that calls
// both. Process-wide families (a reload thread's statistics, not per worker) go through the
// `extra` callback of render().
//
// Consistency: a scrape reads counters that workers keep writing (relaxed loads); each counter is
// read once, sums and per-worker samples come from that one copy, but two families may be a few
// increments apart. Gauges (connections, in flight) can be read between a worker's add and sub,
// so they are clamped at 0.
#pragma once

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stats.hpp"

namespace spop::server::prometheus {

inline constexpr std::string_view default_prefix = "spop_agent_";

/// Appends families and samples to a string. Names are given without the prefix.
class writer {
  public:
    explicit writer(std::string& out, std::string_view prefix = default_prefix)
        : out_(out), prefix_(prefix) {}

    /// `# HELP` and `# TYPE` lines; `type` is counter, gauge or histogram.
    void header(std::string_view name, std::string_view type, std::string_view help) {
        out_ += "# HELP ";
        name_(name);
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        name_(name);
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }
    /// `name{labels} v`; `labels` is the text between the braces, empty for none. Label values
    /// that come from outside the program go through escape() first.
    void sample(std::string_view name, std::string_view labels, std::uint64_t v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, " %llu\n", static_cast<unsigned long long>(v));
        labels_(name, labels);
        out_ += buf;
    }
    void sample_f(std::string_view name, std::string_view labels, double v) {
        char buf[40];
        std::snprintf(buf, sizeof buf, " %.9g\n", v);
        labels_(name, labels);
        out_ += buf;
    }
    /// One worker's sample: `name{worker="i"} v`, or `name{worker="i",more} v`.
    void worker_sample(std::string_view name, std::size_t worker, std::string_view more,
                       std::uint64_t v) {
        char lb[32];
        std::snprintf(lb, sizeof lb, "worker=\"%zu\"", worker);
        name_(name);
        out_ += '{';
        out_ += lb;
        if (!more.empty()) {
            out_ += ',';
            out_ += more;
        }
        char buf[32];
        std::snprintf(buf, sizeof buf, "} %llu\n", static_cast<unsigned long long>(v));
        out_ += buf;
    }
    /// A family of one unlabelled sample.
    void one(std::string_view name, std::string_view type, std::string_view help, std::uint64_t v) {
        header(name, type, help);
        sample(name, {}, v);
    }
    void one_f(std::string_view name, std::string_view type, std::string_view help, double v) {
        header(name, type, help);
        sample_f(name, {}, v);
    }

    /// A label value as the format wants it inside double quotes (\\, \" and \n escaped).
    [[nodiscard]] static std::string escape(std::string_view v) {
        std::string s;
        s.reserve(v.size());
        for (const char c : v) {
            if (c == '\\' || c == '"') s += '\\';
            if (c == '\n') {
                s += "\\n";
                continue;
            }
            s += c;
        }
        return s;
    }
    [[nodiscard]] std::string_view prefix() const noexcept { return prefix_; }

  private:
    void name_(std::string_view name) {
        out_ += prefix_;
        out_ += name;
    }
    void labels_(std::string_view name, std::string_view labels) {
        name_(name);
        if (labels.empty()) return;
        out_ += '{';
        out_ += labels;
        out_ += '}';
    }

    std::string& out_;
    std::string_view prefix_;
};

/// A gauge kept as add/sub on an unsigned counter, read between another thread's add and sub,
/// can look negative: 0 then.
[[nodiscard]] constexpr std::uint64_t gauge_value(std::uint64_t v) noexcept {
    return static_cast<std::int64_t>(v) < 0 ? 0 : v;
}

/// True when a Stats block adds families of its own (see the header comment).
template <class Stats>
concept has_service_metrics = requires(writer& w, std::span<const Stats* const> workers) {
    Stats::render_metrics(w, workers);
};

/// The samples of a latency histogram (worker_stats' buckets, in seconds): _bucket (cumulative,
/// le="..." then +Inf), _sum and _count. The header is the caller's.
inline void latency_samples(writer& w, std::string_view name,
                            const std::uint64_t (&buckets)[latency_slots], std::uint64_t sum_ns) {
    const std::string base(name);
    char lb[48];
    std::uint64_t cum = 0;
    for (int k = 0; k < latency_slots; ++k) {
        cum += buckets[k];
        if (k < latency_slots - 1)
            std::snprintf(lb, sizeof lb, "le=\"%.6g\"",
                          static_cast<double>(latency_bounds_us[k]) / 1e6);
        else
            std::snprintf(lb, sizeof lb, "le=\"+Inf\"");
        w.sample(base + "_bucket", lb, cum);
    }
    w.sample_f(base + "_sum", {}, static_cast<double>(sum_ns) / 1e9);
    w.sample(base + "_count", {}, cum);
}

/// The engine's families: totals over the workers, then the per-worker ones.
template <class Stats>
requires std::derived_from<Stats, worker_stats>
void render_engine(writer& w, std::span<const Stats* const> workers) {
    // Read every worker's block once; the totals and the per-worker samples come from this copy.
    struct totals {
        std::uint64_t frames_in = 0, hello = 0, notify = 0, disc_in = 0, acks = 0, acks_queued = 0,
                      health = 0, conns = 0, conns_total = 0, rejected = 0, bytes_in = 0,
                      bytes_out = 0, lat_sum_ns = 0;
        std::uint64_t disc[status_slots]{};
        std::uint64_t lat[latency_slots]{};
    };
    std::vector<totals> per(workers.size());
    totals all{};
    for (std::size_t i = 0; i < workers.size(); ++i) {
        const worker_stats& s = *workers[i];
        totals& t = per[i];
        t.frames_in = s.frames_in.get();
        t.hello = s.hello_frames.get();
        t.notify = s.notify_frames.get();
        t.disc_in = s.disconnect_frames.get();
        t.acks = s.acks.get();
        t.acks_queued = gauge_value(s.acks_queued.get());
        t.health = s.healthchecks.get();
        t.conns = gauge_value(s.conns_current.get());
        t.conns_total = s.conns_total.get();
        t.rejected = s.conns_rejected.get();
        t.bytes_in = s.bytes_in.get();
        t.bytes_out = s.bytes_out.get();
        t.lat_sum_ns = s.batch_latency_sum_ns.get();
        for (int k = 0; k < status_slots; ++k) t.disc[k] = s.disconnects_sent[k].get();
        for (int k = 0; k < latency_slots; ++k) t.lat[k] = s.batch_latency[k].get();
        all.frames_in += t.frames_in;
        all.hello += t.hello;
        all.notify += t.notify;
        all.disc_in += t.disc_in;
        all.acks += t.acks;
        all.acks_queued += t.acks_queued;
        all.health += t.health;
        all.conns += t.conns;
        all.conns_total += t.conns_total;
        all.rejected += t.rejected;
        all.bytes_in += t.bytes_in;
        all.bytes_out += t.bytes_out;
        all.lat_sum_ns += t.lat_sum_ns;
        for (int k = 0; k < status_slots; ++k) all.disc[k] += t.disc[k];
        for (int k = 0; k < latency_slots; ++k) all.lat[k] += t.lat[k];
    }

    char lb[64];
    w.header("frames_received_total", "counter", "SPOP frames received, by type.");
    w.sample("frames_received_total", "type=\"haproxy-hello\"", all.hello);
    w.sample("frames_received_total", "type=\"notify\"", all.notify);
    w.sample("frames_received_total", "type=\"haproxy-disconnect\"", all.disc_in);
    const std::uint64_t known = all.hello + all.notify + all.disc_in;
    w.sample("frames_received_total", "type=\"other\"",
             all.frames_in > known ? all.frames_in - known : 0);

    std::uint64_t disc_sent = 0;
    for (int k = 0; k < status_slots; ++k) disc_sent += all.disc[k];
    w.header("frames_sent_total", "counter", "SPOP frames sent, by type.");
    w.sample("frames_sent_total", "type=\"agent-hello\"", all.hello);
    w.sample("frames_sent_total", "type=\"ack\"", all.acks);
    w.sample("frames_sent_total", "type=\"agent-disconnect\"", disc_sent);

    w.one("acks_total", "counter", "ACK frames sent (one per NOTIFY).", all.acks);

    w.header("agent_disconnects_total", "counter",
             "AGENT-DISCONNECT frames sent, by SPOP status code (other = 14 and above).");
    for (int k = 0; k < status_slots; ++k) {
        if (k < status_slots - 1)
            std::snprintf(lb, sizeof lb, "status=\"%d\"", k);
        else
            std::snprintf(lb, sizeof lb, "status=\"other\"");
        w.sample("agent_disconnects_total", lb, all.disc[k]);
    }

    w.one("connections", "gauge", "Open connections from HAProxy.", all.conns);
    w.one("connections_total", "counter", "Connections accepted.", all.conns_total);
    w.one("connections_rejected_total", "counter", "Connections refused over --max-connections.",
          all.rejected);
    w.one("healthchecks_total", "counter", "Health-check handshakes (option spop-check).",
          all.health);
    w.one("inflight_frames", "gauge",
          "ACKs written but not yet all sent to HAProxy (NOTIFYs answered, not yet delivered).",
          all.acks_queued);
    w.one("received_bytes_total", "counter", "Bytes received from HAProxy.", all.bytes_in);
    w.one("sent_bytes_total", "counter", "Bytes sent to HAProxy.", all.bytes_out);

    w.header("notify_latency_seconds", "histogram",
             "Time from receiving a batch of NOTIFY frames to their ACKs queued (one "
             "observation per receive batch).");
    latency_samples(w, "notify_latency_seconds", all.lat, all.lat_sum_ns);

    render_deferred(w, workers);

    struct per_metric {
        std::string_view name;
        std::string_view type;
        std::string_view help;
        std::uint64_t totals::*field;
    };
    static constexpr per_metric per_metrics[] = {
        {"worker_frames_received_total", "counter", "Frames received, per worker.",
         &totals::frames_in},
        {"worker_notify_frames_total", "counter", "NOTIFY frames, per worker.", &totals::notify},
        {"worker_acks_total", "counter", "ACK frames sent, per worker.", &totals::acks},
        {"worker_connections", "gauge", "Open connections, per worker.", &totals::conns},
        {"worker_connections_total", "counter", "Connections accepted, per worker.",
         &totals::conns_total},
        {"worker_received_bytes_total", "counter", "Bytes received, per worker.",
         &totals::bytes_in},
        {"worker_sent_bytes_total", "counter", "Bytes sent, per worker.", &totals::bytes_out},
    };
    for (const auto& m : per_metrics) {
        w.header(m.name, m.type, m.help);
        for (std::size_t i = 0; i < per.size(); ++i)
            w.worker_sample(m.name, i, {}, per[i].*m.field);
    }
}

/// Deferred answers (tickets.hpp): in flight, how they ended, and how long they took.
template <class Stats>
void render_deferred(writer& w, std::span<const Stats* const> workers) {
    std::uint64_t inflight = 0, completed = 0, expired = 0, late = 0, after_close = 0, misuse = 0,
                  sum_ns = 0;
    std::uint64_t lat[latency_slots]{};
    for (const Stats* sp : workers) {
        const worker_stats& s = *sp;
        inflight += s.deferred_inflight.get();
        completed += s.deferred_completed.get();
        expired += s.deferred_expired.get();
        late += s.deferred_late.get();
        after_close += s.deferred_after_close.get();
        misuse += s.deferred_misuse.get();
        sum_ns += s.deferred_latency_sum_ns.get();
        for (int k = 0; k < latency_slots; ++k) lat[k] += s.deferred_latency[k].get();
    }
    w.one("deferred_in_flight", "gauge", "Deferred NOTIFYs waiting for their ticket.", inflight);
    w.one("deferred_completed_total", "counter",
          "Deferred NOTIFYs answered by their ticket (a dropped ticket: the fallback).", completed);
    w.one("deferred_expired_total", "counter",
          "Deferred NOTIFYs answered with the fallback at their deadline.", expired);
    w.one("deferred_completed_late_total", "counter",
          "Tickets completed after their deadline (discarded).", late);
    w.one("deferred_completed_after_close_total", "counter",
          "Tickets completed after their connection went away (discarded).", after_close);
    w.one("deferred_misuse_total", "counter", "complete() called on an empty ticket.", misuse);
    w.header("deferred_latency_seconds", "histogram",
             "Time from a NOTIFY deferred to its ticket completed.");
    latency_samples(w, "deferred_latency_seconds", lat, sum_ns);
}

/// What the page says about the process.
struct process_info {
    std::int64_t start_unix_ms = 0; ///< start time (wall clock)
    std::string_view engine;        ///< build_info's engine label: "io_uring" or "epoll"
    std::string_view version;       ///< build_info's version label
};

/// The process families, last on the page: workers, start time, build info.
inline void render_process(writer& w, std::size_t workers, const process_info& info) {
    w.one("workers", "gauge", "Worker threads.", workers);
    w.one_f("start_time_seconds", "gauge", "Agent start time (Unix time).",
            static_cast<double>(info.start_unix_ms) / 1e3);
    w.header("build_info", "gauge", "Version and I/O engine.");
    const std::string labels = "version=\"" + writer::escape(info.version) + "\",engine=\"" +
                               writer::escape(info.engine) + "\"";
    w.sample("build_info", labels, 1);
}

/// Renders into `w`: the engine's families, the Stats block's own (has_service_metrics), then
/// extra(w) for process-wide families, then the process families.
template <class Stats, class Extra>
requires std::derived_from<Stats, worker_stats> && std::invocable<Extra&, writer&>
void render(writer& w, std::span<const Stats* const> workers, const process_info& info,
            Extra&& extra) {
    render_engine(w, workers);
    if constexpr (has_service_metrics<Stats>) Stats::render_metrics(w, workers);
    extra(w);
    render_process(w, workers.size(), info);
}

/// The whole page, with the default prefix and no process-wide families of the caller's.
template <class Stats>
requires std::derived_from<Stats, worker_stats>
[[nodiscard]] std::string render(std::span<const Stats* const> workers, const process_info& info) {
    std::string out;
    out.reserve(8192 + workers.size() * 1024);
    writer w(out);
    render(w, workers, info, [](writer&) {});
    return out;
}

/// The whole page from server::stats() (one block per worker, valid while the server lives).
template <class Stats>
requires std::derived_from<Stats, worker_stats>
[[nodiscard]] std::string render(const std::vector<std::unique_ptr<Stats>>& stats,
                                 const process_info& info) {
    std::vector<const Stats*> ws;
    ws.reserve(stats.size());
    for (const auto& s : stats) ws.push_back(s.get());
    return render(std::span<const Stats* const>(ws), info);
}

/// Wall clock in milliseconds, for process_info::start_unix_ms.
[[nodiscard]] inline std::int64_t unix_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

} // namespace spop::server::prometheus
