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

#include <spop/server/prometheus.hpp>

#include "log.hpp"
#include "ratelimit/metrics.hpp"

namespace agent {

std::string render_metrics(const metrics_sources& src) {
    namespace prom = spop::server::prometheus;
    std::string out;
    out.reserve(8192 + src.workers.size() * 1024);
    prom::writer w(out);
    const prom::process_info info{src.start_unix_ms, src.engine, src.version};
    // The engine's families and the reputation service's (worker_stats' hook), then the
    // reputation data's, which are process-wide.
    prom::render(w, std::span<const worker_stats* const>(src.workers), info,
                 [&src](prom::writer& pw) {
                     if (src.reload != nullptr) iprep::render_metrics(pw, *src.reload);
                     if (src.decisions != nullptr) decisions::render_metrics(pw, *src.decisions);
                     if (src.rate != nullptr) ratelimit::render_metrics(pw, *src.rate);
                 });
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
