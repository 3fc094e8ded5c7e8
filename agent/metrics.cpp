#include "metrics.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <netdb.h>
#include <netinet/in.h>
#include <string_view>
#include <thread>
#include <unistd.h>

#include <civetweb.h>

#include "log.hpp"

namespace agent {

namespace {

class writer {
  public:
    explicit writer(std::string& out) : out_(out) {}
    void header(const char* name, const char* type, const char* help) {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }
    void sample(const char* name, const char* labels, std::uint64_t v) {
        char buf[256];
        std::snprintf(buf, sizeof buf, "%s%s%s%s %llu\n", name, labels ? "{" : "",
                      labels ? labels : "", labels ? "}" : "", static_cast<unsigned long long>(v));
        out_ += buf;
    }
    void sample_f(const char* name, const char* labels, double v) {
        char buf[256];
        std::snprintf(buf, sizeof buf, "%s%s%s%s %.9g\n", name, labels ? "{" : "",
                      labels ? labels : "", labels ? "}" : "", v);
        out_ += buf;
    }
    void one(const char* name, const char* type, const char* help, std::uint64_t v) {
        header(name, type, help);
        sample(name, nullptr, v);
    }
    void one_f(const char* name, const char* type, const char* help, double v) {
        header(name, type, help);
        sample_f(name, nullptr, v);
    }

  private:
    std::string& out_;
};

std::int64_t wall_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

} // namespace

std::string render_metrics(const metrics_sources& src) {
    // Read every worker's block once; the sums below all come from this copy.
    struct totals {
        std::uint64_t frames_in, hello, notify, disc_in, acks, health, conns, conns_total, rejected,
            bytes_in, bytes_out, listed, allowed, deflt, lat_sum_ns;
        std::uint64_t disc[status_slots];
        std::uint64_t acks_queued;
        std::uint64_t lat[latency_slots];
    };
    std::vector<totals> per(src.workers.size());
    totals all{};
    for (std::size_t i = 0; i < src.workers.size(); ++i) {
        const worker_stats& w = *src.workers[i];
        totals& t = per[i];
        t = totals{};
        t.frames_in = w.frames_in.get();
        t.hello = w.hello_frames.get();
        t.notify = w.notify_frames.get();
        t.disc_in = w.disconnect_frames.get();
        t.acks = w.acks.get();
        t.acks_queued = w.acks_queued.get();
        t.health = w.healthchecks.get();
        t.conns = w.conns_current.get();
        t.conns_total = w.conns_total.get();
        t.rejected = w.conns_rejected.get();
        t.bytes_in = w.bytes_in.get();
        t.bytes_out = w.bytes_out.get();
        t.listed = w.lookups_listed.get();
        t.allowed = w.lookups_allowed.get();
        t.deflt = w.lookups_default.get();
        t.lat_sum_ns = w.batch_latency_sum_ns.get();
        for (int s = 0; s < status_slots; ++s) t.disc[s] = w.disconnects_sent[s].get();
        for (int s = 0; s < latency_slots; ++s) t.lat[s] = w.batch_latency[s].get();
        all.frames_in += t.frames_in;
        all.hello += t.hello;
        all.notify += t.notify;
        all.disc_in += t.disc_in;
        all.acks += t.acks;
        all.acks_queued += static_cast<std::int64_t>(t.acks_queued) < 0 ? 0 : t.acks_queued;
        all.health += t.health;
        // A worker's gauge can be read between its own add and sub: never below zero.
        all.conns += static_cast<std::int64_t>(t.conns) < 0 ? 0 : t.conns;
        all.conns_total += t.conns_total;
        all.rejected += t.rejected;
        all.bytes_in += t.bytes_in;
        all.bytes_out += t.bytes_out;
        all.listed += t.listed;
        all.allowed += t.allowed;
        all.deflt += t.deflt;
        all.lat_sum_ns += t.lat_sum_ns;
        for (int s = 0; s < status_slots; ++s) all.disc[s] += t.disc[s];
        for (int s = 0; s < latency_slots; ++s) all.lat[s] += t.lat[s];
    }

    std::string out;
    out.reserve(8192 + src.workers.size() * 1024);
    writer w(out);
    char lb[128];

    w.header("spop_agent_frames_received_total", "counter", "SPOP frames received, by type.");
    w.sample("spop_agent_frames_received_total", "type=\"haproxy-hello\"", all.hello);
    w.sample("spop_agent_frames_received_total", "type=\"notify\"", all.notify);
    w.sample("spop_agent_frames_received_total", "type=\"haproxy-disconnect\"", all.disc_in);
    const std::uint64_t known = all.hello + all.notify + all.disc_in;
    w.sample("spop_agent_frames_received_total", "type=\"other\"",
             all.frames_in > known ? all.frames_in - known : 0);

    std::uint64_t disc_sent = 0;
    for (int s = 0; s < status_slots; ++s) disc_sent += all.disc[s];
    w.header("spop_agent_frames_sent_total", "counter", "SPOP frames sent, by type.");
    w.sample("spop_agent_frames_sent_total", "type=\"agent-hello\"", all.hello);
    w.sample("spop_agent_frames_sent_total", "type=\"ack\"", all.acks);
    w.sample("spop_agent_frames_sent_total", "type=\"agent-disconnect\"", disc_sent);

    w.one("spop_agent_acks_total", "counter", "ACK frames sent (one per NOTIFY).", all.acks);

    w.header("spop_agent_agent_disconnects_total", "counter",
             "AGENT-DISCONNECT frames sent, by SPOP status code (other = 14 and above).");
    for (int s = 0; s < status_slots; ++s) {
        if (s < status_slots - 1)
            std::snprintf(lb, sizeof lb, "status=\"%d\"", s);
        else
            std::snprintf(lb, sizeof lb, "status=\"other\"");
        w.sample("spop_agent_agent_disconnects_total", lb, all.disc[s]);
    }

    w.one("spop_agent_connections", "gauge", "Open connections from HAProxy.", all.conns);
    w.one("spop_agent_connections_total", "counter", "Connections accepted.", all.conns_total);
    w.one("spop_agent_connections_rejected_total", "counter",
          "Connections refused over --max-connections.", all.rejected);
    w.one("spop_agent_healthchecks_total", "counter",
          "Health-check handshakes (option spop-check).", all.health);
    w.one("spop_agent_inflight_frames", "gauge",
          "ACKs written but not yet all sent to HAProxy (NOTIFYs answered, not yet delivered).",
          all.acks_queued);
    w.one("spop_agent_received_bytes_total", "counter", "Bytes received from HAProxy.",
          all.bytes_in);
    w.one("spop_agent_sent_bytes_total", "counter", "Bytes sent to HAProxy.", all.bytes_out);

    w.header("spop_agent_notify_latency_seconds", "histogram",
             "Time from receiving a batch of NOTIFY frames to their ACKs queued (one "
             "observation per receive batch).");
    std::uint64_t cum = 0;
    for (int s = 0; s < latency_slots; ++s) {
        cum += all.lat[s];
        if (s < latency_slots - 1)
            std::snprintf(lb, sizeof lb, "le=\"%.6g\"",
                          static_cast<double>(latency_bounds_us[s]) / 1e6);
        else
            std::snprintf(lb, sizeof lb, "le=\"+Inf\"");
        w.sample("spop_agent_notify_latency_seconds_bucket", lb, cum);
    }
    w.sample_f("spop_agent_notify_latency_seconds_sum", nullptr,
               static_cast<double>(all.lat_sum_ns) / 1e9);
    w.sample("spop_agent_notify_latency_seconds_count", nullptr, cum);

    w.header("spop_agent_lookups_total", "counter",
             "Reputation lookups by outcome: listed (a list, CSV or MMDB entry), allowed "
             "(allow-list), default (unlisted: --default-score).");
    w.sample("spop_agent_lookups_total", "outcome=\"listed\"", all.listed);
    w.sample("spop_agent_lookups_total", "outcome=\"allowed\"", all.allowed);
    w.sample("spop_agent_lookups_total", "outcome=\"default\"", all.deflt);
    w.one("spop_agent_ack_actions_dropped_total", "counter",
          "SET-VAR actions left out of ACKs that could not hold them all (scores go first).",
          [&] { std::uint64_t n = 0; for (const auto* ws : src.workers) n += ws->ack_actions_dropped.get(); return n; }());

    // Per worker.
    struct per_metric {
        const char* name;
        const char* type;
        const char* help;
        std::uint64_t totals::*field;
    };
    static constexpr per_metric per_metrics[] = {
        {"spop_agent_worker_frames_received_total", "counter", "Frames received, per worker.",
         &totals::frames_in},
        {"spop_agent_worker_notify_frames_total", "counter", "NOTIFY frames, per worker.",
         &totals::notify},
        {"spop_agent_worker_acks_total", "counter", "ACK frames sent, per worker.", &totals::acks},
        {"spop_agent_worker_connections", "gauge", "Open connections, per worker.", &totals::conns},
        {"spop_agent_worker_connections_total", "counter", "Connections accepted, per worker.",
         &totals::conns_total},
        {"spop_agent_worker_received_bytes_total", "counter", "Bytes received, per worker.",
         &totals::bytes_in},
        {"spop_agent_worker_sent_bytes_total", "counter", "Bytes sent, per worker.",
         &totals::bytes_out},
    };
    for (const auto& m : per_metrics) {
        w.header(m.name, m.type, m.help);
        for (std::size_t i = 0; i < per.size(); ++i) {
            std::snprintf(lb, sizeof lb, "worker=\"%zu\"", i);
            std::uint64_t v = per[i].*m.field;
            if (m.field == &totals::conns && static_cast<std::int64_t>(v) < 0) v = 0;
            w.sample(m.name, lb, v);
        }
    }
    w.header("spop_agent_worker_lookups_total", "counter", "Lookups by outcome, per worker.");
    for (std::size_t i = 0; i < per.size(); ++i) {
        static constexpr const char* names[] = {"listed", "allowed", "default"};
        const std::uint64_t vals[] = {per[i].listed, per[i].allowed, per[i].deflt};
        for (int k = 0; k < 3; ++k) {
            std::snprintf(lb, sizeof lb, "worker=\"%zu\",outcome=\"%s\"", i, names[k]);
            w.sample("spop_agent_worker_lookups_total", lb, vals[k]);
        }
    }

    // Reputation data.
    if (src.reload != nullptr) {
        const iprep::reload_stats& r = *src.reload;
        const std::int64_t now = wall_ms();
        const std::int64_t loaded = r.loaded_unix_ms.load(std::memory_order_relaxed);
        w.header("spop_agent_reloads_total", "counter",
                 "Reputation table loads (the initial load included), by result.");
        w.sample("spop_agent_reloads_total", "result=\"ok\"",
                 r.reloads_ok.load(std::memory_order_relaxed));
        w.sample("spop_agent_reloads_total", "result=\"error\"",
                 r.reloads_failed.load(std::memory_order_relaxed));
        w.one("spop_agent_reputation_configured", "gauge",
              "1 if any --list, --allow, --csv or --mmdb source is configured.",
              r.configured.load(std::memory_order_relaxed) ? 1 : 0);
        w.one_f("spop_agent_reputation_last_reload_timestamp_seconds", "gauge",
                "When the tables in use were loaded (Unix time; 0 = never).",
                static_cast<double>(loaded) / 1e3);
        w.one_f("spop_agent_reputation_age_seconds", "gauge",
                "Seconds since the tables in use were loaded (0 when none are).",
                loaded > 0 ? static_cast<double>(now - loaded) / 1e3 : 0.0);
        w.one_f("spop_agent_reputation_last_failed_reload_timestamp_seconds", "gauge",
                "When a load last failed (Unix time; 0 = never).",
                static_cast<double>(r.failed_unix_ms.load(std::memory_order_relaxed)) / 1e3);
        w.one("spop_agent_reputation_newest_file_mtime_seconds", "gauge",
              "Newest modification time among the loaded source files (Unix time).",
              static_cast<std::uint64_t>(r.newest_mtime.load(std::memory_order_relaxed)));
        w.header("spop_agent_reputation_prefixes", "gauge",
                 "Distinct prefixes in the loaded tables, by address family.");
        w.sample("spop_agent_reputation_prefixes", "family=\"ipv4\"",
                 r.prefixes_v4.load(std::memory_order_relaxed));
        w.sample("spop_agent_reputation_prefixes", "family=\"ipv6\"",
                 r.prefixes_v6.load(std::memory_order_relaxed));
        w.header("spop_agent_reputation_entries", "gauge",
                 "Entries read by source kind at the last successful load.");
        w.sample("spop_agent_reputation_entries", "source=\"list\"",
                 r.list_entries.load(std::memory_order_relaxed));
        w.sample("spop_agent_reputation_entries", "source=\"allow\"",
                 r.allow_entries.load(std::memory_order_relaxed));
        w.sample("spop_agent_reputation_entries", "source=\"csv\"",
                 r.csv_entries.load(std::memory_order_relaxed));
        w.sample("spop_agent_reputation_entries", "source=\"mmdb\"",
                 r.mmdb_networks.load(std::memory_order_relaxed));
        w.one("spop_agent_reputation_table_bytes", "gauge",
              "Memory of the loaded IPv4 and IPv6 tables.",
              r.table_bytes.load(std::memory_order_relaxed));
        w.one_f("spop_agent_reputation_build_seconds", "gauge",
                "Time the last successful load took (read, parse, build).",
                static_cast<double>(r.build_ns.load(std::memory_order_relaxed)) / 1e9);
    }

    w.one("spop_agent_workers", "gauge", "Worker threads.", src.workers.size());
    w.one_f("spop_agent_start_time_seconds", "gauge", "Agent start time (Unix time).",
            static_cast<double>(src.start_unix_ms) / 1e3);
    w.header("spop_agent_build_info", "gauge", "Version and I/O engine.");
    std::snprintf(lb, sizeof lb, "version=\"%s\",engine=\"%s\"", src.version.c_str(),
                  src.engine.c_str());
    w.sample("spop_agent_build_info", lb, 1);
    return out;
}

bool parse_metrics_address(const std::string& spec, sockaddr_storage& ss, socklen_t& len,
                           std::string& err) {
    const std::size_t colon = spec.rfind(':');
    if (colon == std::string::npos || colon + 1 >= spec.size()) {
        err = "invalid --metrics '" + spec + "' (expected ADDR:PORT, [V6ADDR]:PORT or :PORT)";
        return false;
    }
    std::string host = spec.substr(0, colon);
    const std::string port = spec.substr(colon + 1);
    for (char c : port) {
        if (c < '0' || c > '9') {
            err = "invalid --metrics port in '" + spec + "'";
            return false;
        }
    }
    const long p = std::strtol(port.c_str(), nullptr, 10);
    if (port.size() > 5 || p < 1 || p > 65535) {
        err = "invalid --metrics port in '" + spec + "' (1..65535)";
        return false;
    }
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    else if (host.find(':') != std::string::npos) {
        err = "invalid --metrics '" + spec + "' (write IPv6 addresses as [ADDR]:PORT)";
        return false;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    // Only names with letters go to the resolver ("localhost"); "256.1.1.1" is just invalid.
    bool name = false;
    for (char c : host) name = name || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!name || host.find(':') != std::string::npos) hints.ai_flags |= AI_NUMERICHOST;
    addrinfo* res = nullptr;
    const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0 || res == nullptr) {
        err = "invalid --metrics address '" + spec + "': " + gai_strerror(rc);
        return false;
    }
    // ":PORT" listens on every IPv4 address, like the agent's default listener. A name with
    // both families ("localhost") takes its IPv4 address: Debian's civetweb has no IPv6.
    const addrinfo* pick = res;
    for (const addrinfo* a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    }
    std::memcpy(&ss, pick->ai_addr, pick->ai_addrlen);
    len = static_cast<socklen_t>(pick->ai_addrlen);
    freeaddrinfo(res);
    return true;
}

readiness_state& readiness() noexcept {
    static readiness_state state;
    return state;
}

const char* not_ready_reason(const readiness_state& r) noexcept {
    if (r.stopping.load(std::memory_order_relaxed)) return "shutting down";
    if (!r.data_loaded.load(std::memory_order_relaxed)) return "reputation data not loaded";
    if (!r.listening.load(std::memory_order_relaxed)) return "SPOP listeners not started";
    return nullptr;
}

namespace {

/// civetweb takes its configuration as strings.
std::string numeric_address(const sockaddr_storage& ss) {
    char a[INET6_ADDRSTRLEN] = "?";
    char d[INET6_ADDRSTRLEN + 16];
    if (ss.ss_family == AF_INET6) {
        const auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof a);
        std::snprintf(d, sizeof d, "[%s]:%u", a, static_cast<unsigned>(ntohs(s->sin6_port)));
    } else {
        const auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &s->sin_addr, a, sizeof a);
        std::snprintf(d, sizeof d, "%s:%u", a, static_cast<unsigned>(ntohs(s->sin_port)));
    }
    return d;
}

/// The whole response in one write: status line, headers, body (none for HEAD).
void respond(mg_connection* conn, int status, const char* reason, const char* type,
             const std::string& body, bool head, const char* extra = "") {
    std::string out;
    out.reserve(160 + (head ? 0 : body.size()));
    char hdr[256];
    std::snprintf(hdr, sizeof hdr,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                  "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                  status, reason, type, body.size(), extra);
    out += hdr;
    if (!head) out += body;
    mg_write(conn, out.data(), out.size());
}

} // namespace

metrics_server::~metrics_server() {
    stop();
}

int metrics_server::log_message(const mg_connection* conn, const char* msg) {
    auto* self = static_cast<metrics_server*>(mg_get_user_data(mg_get_context(conn)));
    std::string line = msg != nullptr ? msg : "";
    for (char& c : line)
        if (c == '\n' || c == '\r' || c == '"') c = ' ';
    if (self != nullptr && self->starting_.load(std::memory_order_acquire)) {
        const std::lock_guard<std::mutex> lock(self->start_mu_);
        // The first complaint says why (later ones only say that starting failed).
        if (self->start_error_.empty()) self->start_error_ = line;
    }
    log(level::debug, "event=metrics_http msg=\"%s\"", line.c_str());
    return 1; // handled: civetweb writes nothing itself
}

bool metrics_server::open(const std::string& spec, std::string& err, const readiness_state* state) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (!parse_metrics_address(spec, ss, len, err)) return false;
    static const unsigned init_once = mg_init_library(0);
    (void)init_once;
    if (ss.ss_family == AF_INET6 && mg_check_feature(8) == 0) {
        err = "--metrics " + spec + ": this civetweb build has no IPv6 support";
        return false;
    }
    state_ = state != nullptr ? state : &readiness();
    desc_ = numeric_address(ss);
    // Where stop() connects to wake the server: the address itself, or loopback for "any".
    addr_ = ss;
    addr_len_ = len;
    if (ss.ss_family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&addr_);
        if (in->sin_addr.s_addr == htonl(INADDR_ANY)) in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }

    const std::string threads = std::to_string(metrics_limits::threads);
    const std::string queue = std::to_string(metrics_limits::connection_queue);
    const std::string backlog = std::to_string(metrics_limits::listen_backlog);
    const std::string reqmax = std::to_string(metrics_limits::max_request_bytes);
    const std::string timeout = std::to_string(metrics_limits::request_timeout_ms);
    // clang-format off
    const char* options[] = {
        "listening_ports",    desc_.c_str(),
        "num_threads",        threads.c_str(),
        "connection_queue",   queue.c_str(),
        "listen_backlog",     backlog.c_str(),
        "max_request_size",   reqmax.c_str(),
        "request_timeout_ms", timeout.c_str(),
        "enable_keep_alive",  "no",
        "tcp_nodelay",        "1",
        nullptr,
    };
    // clang-format on
    mg_callbacks cb{};
    cb.log_message = &metrics_server::log_message;
    mg_init_data init{};
    init.callbacks = &cb;
    init.user_data = this;
    init.configuration_options = options;
    char text[256] = "";
    unsigned code = 0;
    mg_error_data error{};
    error.code = &code;
    error.text = text;
    error.text_buffer_size = sizeof text;

    start_error_.clear();
    starting_.store(true, std::memory_order_release);
    mg_context* ctx = mg_start2(&init, &error);
    starting_.store(false, std::memory_order_release);
    if (ctx == nullptr) {
        const std::lock_guard<std::mutex> lock(start_mu_);
        std::string why = !start_error_.empty() ? start_error_ : std::string(text);
        // "cannot bind to ADDR: 98 (Address already in use)": keep what is in parentheses.
        const std::size_t open_paren = why.rfind(" (");
        if (why.rfind("cannot bind", 0) == 0 && open_paren != std::string::npos &&
            why.back() == ')')
            why = why.substr(open_paren + 2, why.size() - open_paren - 3);
        if (why.empty()) why = "cannot start the HTTP server";
        err = "cannot listen on --metrics " + spec + ": " + why;
        return false;
    }
    ctx_ = ctx;
    mg_set_request_handler(ctx_, "/", &metrics_server::handle, this);
    return true;
}

bool metrics_server::start(metrics_sources src, std::string& err) {
    if (ctx_ == nullptr) {
        err = "metrics server not open";
        return false;
    }
    src_ = std::move(src);
    published_.store(true, std::memory_order_release);
    return true;
}

void metrics_server::stop() {
    if (ctx_ == nullptr) return;
    // civetweb's accept thread sees the stop flag only when its poll() returns, which it does
    // every 2 s. A connection to the listener wakes it at once.
    std::atomic<bool> done{false};
    std::thread stopper([this, &done] {
        mg_stop(ctx_);
        done.store(true, std::memory_order_release);
    });
    for (int i = 0; i < 150 && !done.load(std::memory_order_acquire); ++i) {
        const int fd = ::socket(addr_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            (void)::connect(fd, reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
            ::close(fd);
        }
        ::usleep(20 * 1000);
    }
    stopper.join();
    ctx_ = nullptr;
}

int metrics_server::handle(mg_connection* conn, void* arg) {
    const auto* self = static_cast<const metrics_server*>(arg);
    const mg_request_info* ri = mg_get_request_info(conn);
    const std::string_view method = ri->request_method != nullptr ? ri->request_method : "";
    const std::string_view path = ri->local_uri != nullptr ? ri->local_uri : "";
    const bool head = method == "HEAD";
    if (method != "GET" && !head) {
        respond(conn, 405, "Method Not Allowed", "text/plain", "only GET and HEAD\n", false,
                "Allow: GET, HEAD\r\n");
        return 405;
    }
    if (path == "/metrics") {
        if (!self->published_.load(std::memory_order_acquire)) {
            respond(conn, 503, "Service Unavailable", "text/plain", "starting\n", head);
            return 503;
        }
        respond(conn, 200, "OK", "text/plain; version=0.0.4; charset=utf-8",
                render_metrics(self->src_), head);
        return 200;
    }
    if (path == "/healthz") {
        respond(conn, 200, "OK", "text/plain", "ok\n", head);
        return 200;
    }
    if (path == "/readyz") {
        if (const char* why = not_ready_reason(*self->state_)) {
            respond(conn, 503, "Service Unavailable", "text/plain",
                    std::string("not ready: ") + why + "\n", head);
            return 503;
        }
        respond(conn, 200, "OK", "text/plain", "ready\n", head);
        return 200;
    }
    if (path == "/") {
        respond(conn, 200, "OK", "text/plain", "spop agent: /metrics, /healthz, /readyz\n", head);
        return 200;
    }
    respond(conn, 404, "Not Found", "text/plain", "not found; try /metrics\n", head);
    return 404;
}

} // namespace agent
