// spop-loadgen: a synthetic HAProxy SPOP client for loopback load tests.
//
// It behaves like HAProxy's SPOE: HAPROXY-HELLO (supported-versions "2.0", max-frame-size,
// capabilities "pipelining", an engine-id), waits for AGENT-HELLO, then keeps up to --depth
// `check-client-ip` NOTIFYs in flight per connection, with HAProxy 2.6 ids (global increasing
// stream ids, frame ids 1..K per stream) or 3.x ids (odd per-connection stream ids, frame id 1).
// Every ACK is validated: ids match an outstanding NOTIFY, FIN set, the actions parse, and
// `SET-VAR sess ip_score` is present and in 0..100. At the end every connection says goodbye
// with HAPROXY-DISCONNECT 0 "normal" and waits (bounded) for the AGENT-DISCONNECT.
//
// Closed loop by default (a new NOTIFY as soon as an ACK frees a slot). With --rate R it is an
// open loop: NOTIFYs are scheduled (at fixed intervals, or with --arrivals poisson as a Poisson
// process per connection: HAProxy's shape, many connections, one NOTIFY each) and latency counts
// from the *intended* send time, so a stalled agent is charged for the requests it delayed
// (coordinated omission corrected). An arrival that finds its connection at --depth in flight
// waits in that connection's queue (in order), and the wait is part of its latency. Each thread
// owns its connections and an epoll set; a connection's NOTIFYs go out in one send(), its ACKs are
// read in large recv()s. Nothing is allocated per frame.
//
// Exit status: 0 all frames answered correctly; 1 invalid/lost frames or connection errors;
// 2 usage error. Every run is bounded in time (a watchdog alarm backs the bounded waits).
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <spop/spop.hpp>

#include "../tests/support/vectors.hpp"
#include "ip_score.hpp"
#include "latency_histogram.hpp"
#include "mini_agent.hpp"

namespace {

using spop_bench::latency_histogram;

constexpr std::uint64_t ns_per_s = 1'000'000'000;

std::uint64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * ns_per_s +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) {
    g_interrupted.store(true, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// Options

enum class id_style { v26, v3x };
enum class addr_mix { ipv4, ipv6, mixed };
enum class arg_profile { simple, fat, rate };
enum class arrival_kind { fixed, poisson };

struct options {
    std::string host = "127.0.0.1";
    std::string unix_path; ///< connect to this Unix socket instead of host:port
    int port = 0;
    int connections = 1;
    int depth = 1;
    int threads = 1;
    double duration = 5.0;
    double warmup = -1; // default: min(0.5, duration / 5)
    std::uint64_t frames = 0;
    id_style ids = id_style::v26;
    int fids_per_stream = 2;
    addr_mix mix = addr_mix::ipv4;
    arg_profile profile = arg_profile::simple;
    double rate = 0;
    arrival_kind arrivals = arrival_kind::fixed;
    int agent_pid = 0;
    bool json = false;
    std::uint32_t max_frame_size = spop::default_max_frame_size;
    std::string label;
    bool self_serve = false;
    int serve_threads = 1;
    double connect_timeout = 5.0;
    double drain_timeout = 2.0;
    std::uint64_t seed = 0x5eed;
};

void usage(std::FILE* f, const char* argv0) {
    std::fprintf(
        f,
        "Usage: %s --port N [options]\n"
        "A synthetic HAProxy SPOP client: HELLO, then pipelined `check-client-ip` NOTIFYs over\n"
        "loopback; every ACK is validated (ids, FIN, SET-VAR sess ip_score 0..100).\n"
        "\n"
        "  --host 127.0.0.1|::1     agent address, loopback only (default 127.0.0.1)\n"
        "  --port N                 agent port (required unless --self-serve or --unix)\n"
        "  --unix PATH              connect to the agent's Unix socket instead (agent -u PATH)\n"
        "  --connections C          TCP connections (default 1)\n"
        "  --depth D                NOTIFYs in flight per connection: 1 = no pipelining,\n"
        "                           20 = HAProxy 3.x's limit (default 1, max 4096)\n"
        "  --threads T              client threads, each owning C/T connections (default 1)\n"
        "  --duration SECONDS       sending time, 0 < S <= 600 (default 5)\n"
        "  --warmup SECONDS         excluded from the statistics (default min(0.5, duration/5))\n"
        "  --frames N               stop sending after N NOTIFYs (statistics cover the whole run)\n"
        "  --ids 2.6|3.x            2.6: global increasing stream ids from 0, frame ids 1..K per\n"
        "                           stream; 3.x: odd per-connection stream ids, frame id 1\n"
        "                           (default 2.6)\n"
        "  --fids-per-stream K      2.6 ids: NOTIFYs per stream id (default 2)\n"
        "  --mix ipv4|ipv6|mixed    client addresses (random; default ipv4)\n"
        "  --profile simple|fat     simple: one `ip` argument; fat: 5-10 arguments (default "
        "simple)\n"
        "  --profile rate           `check-rate` with the client address as `key` (the agent's\n"
        "                           --rate-redis); an ACK is valid with txn over_limit 0 or 1\n"
        "  --rate R                 open loop at R NOTIFYs/s in total; latency counts from the\n"
        "                           intended send time (coordinated omission corrected).\n"
        "                           Without it: closed loop\n"
        "  --arrivals fixed|poisson with --rate: fixed intervals per connection, or Poisson\n"
        "                           arrivals (exponential gaps, each connection rate/C) as\n"
        "                           HAProxy spreads requests; an arrival that finds --depth in\n"
        "                           flight queues on its connection (default fixed)\n"
        "  --agent-pid PID          also report the agent's CPU us/frame (/proc/PID/stat) and\n"
        "                           its context switches per frame (/proc/PID/task/*/status)\n"
        "  --max-frame-size N       announced in HAPROXY-HELLO (default 16380)\n"
        "  --json                   print one JSON line instead of text\n"
        "  --label NAME             scenario name carried into the JSON\n"
        "  --self-serve             run a built-in agent (spop::connection over epoll) in-process\n"
        "  --serve-threads N        its worker threads (default 1)\n"
        "  --connect-timeout S      bound for connect + handshake (default 5)\n"
        "  --drain-timeout S        bound for outstanding ACKs, then for goodbyes (default 2)\n"
        "  --seed N                 random seed (default fixed)\n"
        "  -h, --help               this text\n"
        "\n"
        "Exit status: 0 ok, 1 invalid/lost frames or connection errors, 2 usage error.\n",
        argv0);
}

bool parse_num(std::string_view s, double lo, double hi, double& out) {
    char* end = nullptr;
    const std::string tmp(s);
    errno = 0;
    const double v = std::strtod(tmp.c_str(), &end);
    if (tmp.empty() || errno != 0 || *end != '\0' || !(v >= lo && v <= hi)) return false;
    out = v;
    return true;
}

template <class T>
bool parse_int(std::string_view s, T lo, T hi, T& out) {
    T v{};
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return false;
    out = v;
    return true;
}

/// 0: run; 1: exit 0 (help); 2: usage error.
int parse_options(int argc, char** argv, options& o) {
    auto bad = [&](std::string_view flag, std::string_view val) {
        std::fprintf(stderr, "spop-loadgen: invalid value for %.*s: '%.*s' (see --help)\n",
                     static_cast<int>(flag.size()), flag.data(), static_cast<int>(val.size()),
                     val.data());
        return 2;
    };
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        std::string_view val;
        bool has_val = false;
        if (const auto eq = a.find('='); a.starts_with("--") && eq != std::string_view::npos) {
            val = a.substr(eq + 1);
            a = a.substr(0, eq);
            has_val = true;
        }
        auto need = [&]() -> bool {
            if (has_val) return true;
            if (i + 1 >= argc) return false;
            val = argv[++i];
            return true;
        };
        if (a == "-h" || a == "--help") {
            usage(stdout, argv[0]);
            return 1;
        }
        if (a == "--json") {
            o.json = true;
        } else if (a == "--self-serve") {
            o.self_serve = true;
        } else if (!need()) {
            std::fprintf(stderr, "spop-loadgen: unknown option or missing value: %s (see --help)\n",
                         argv[i]);
            return 2;
        } else if (a == "--unix") {
            if (val.empty() || val.size() >= sizeof(sockaddr_un{}.sun_path)) return bad(a, val);
            o.unix_path = std::string(val);
        } else if (a == "--host") {
            o.host = std::string(val);
        } else if (a == "--port") {
            if (!parse_int(val, 1, 65535, o.port)) return bad(a, val);
        } else if (a == "--connections") {
            if (!parse_int(val, 1, 100000, o.connections)) return bad(a, val);
        } else if (a == "--depth") {
            if (!parse_int(val, 1, 4096, o.depth)) return bad(a, val);
        } else if (a == "--threads") {
            if (!parse_int(val, 1, 256, o.threads)) return bad(a, val);
        } else if (a == "--duration") {
            if (!parse_num(val, 0.001, 600, o.duration)) return bad(a, val);
        } else if (a == "--warmup") {
            if (!parse_num(val, 0, 60, o.warmup)) return bad(a, val);
        } else if (a == "--frames") {
            if (!parse_int<std::uint64_t>(val, 1, UINT64_MAX / 2, o.frames)) return bad(a, val);
        } else if (a == "--ids") {
            if (val == "2.6")
                o.ids = id_style::v26;
            else if (val == "3.x" || val == "3")
                o.ids = id_style::v3x;
            else
                return bad(a, val);
        } else if (a == "--fids-per-stream") {
            if (!parse_int(val, 1, 1000000, o.fids_per_stream)) return bad(a, val);
        } else if (a == "--mix") {
            if (val == "ipv4")
                o.mix = addr_mix::ipv4;
            else if (val == "ipv6")
                o.mix = addr_mix::ipv6;
            else if (val == "mixed")
                o.mix = addr_mix::mixed;
            else
                return bad(a, val);
        } else if (a == "--profile") {
            if (val == "simple")
                o.profile = arg_profile::simple;
            else if (val == "fat")
                o.profile = arg_profile::fat;
            else if (val == "rate")
                o.profile = arg_profile::rate;
            else
                return bad(a, val);
        } else if (a == "--rate") {
            if (!parse_num(val, 1, 1e9, o.rate)) return bad(a, val);
        } else if (a == "--arrivals") {
            if (val == "fixed")
                o.arrivals = arrival_kind::fixed;
            else if (val == "poisson")
                o.arrivals = arrival_kind::poisson;
            else
                return bad(a, val);
        } else if (a == "--agent-pid") {
            if (!parse_int(val, 1, 1 << 30, o.agent_pid)) return bad(a, val);
        } else if (a == "--max-frame-size") {
            if (!parse_int<std::uint32_t>(val, spop::min_max_frame_size, spop::max_max_frame_size,
                                          o.max_frame_size))
                return bad(a, val);
        } else if (a == "--label") {
            o.label = std::string(val);
        } else if (a == "--serve-threads") {
            if (!parse_int(val, 1, 64, o.serve_threads)) return bad(a, val);
        } else if (a == "--connect-timeout") {
            if (!parse_num(val, 0.01, 60, o.connect_timeout)) return bad(a, val);
        } else if (a == "--drain-timeout") {
            if (!parse_num(val, 0.01, 60, o.drain_timeout)) return bad(a, val);
        } else if (a == "--seed") {
            if (!parse_int<std::uint64_t>(val, 0, UINT64_MAX, o.seed)) return bad(a, val);
        } else {
            std::fprintf(stderr, "spop-loadgen: unknown option: %.*s (see --help)\n",
                         static_cast<int>(a.size()), a.data());
            return 2;
        }
    }
    if (!o.unix_path.empty() && o.self_serve) {
        std::fprintf(stderr, "spop-loadgen: --unix and --self-serve exclude each other\n");
        return 2;
    }
    if (!o.self_serve && o.port == 0 && o.unix_path.empty()) {
        std::fprintf(stderr, "spop-loadgen: --port is required (or --self-serve)\n");
        return 2;
    }
    if (o.warmup < 0) o.warmup = o.frames ? 0.0 : std::min(0.5, o.duration / 5);
    if (o.frames) o.warmup = 0; // --frames: the statistics cover every frame
    if (o.warmup >= o.duration) {
        std::fprintf(stderr, "spop-loadgen: --warmup must be shorter than --duration\n");
        return 2;
    }
    o.threads = std::min(o.threads, o.connections);
    return 0;
}

/// Resolves a loopback literal; anything else is refused (this tool never leaves the host).
bool loopback_address(const std::string& host, int port, sockaddr_storage& ss, socklen_t& len) {
    ss = {};
    const std::string h = host == "localhost" ? "127.0.0.1" : host;
    auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (::inet_pton(AF_INET, h.c_str(), &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127) return false;
        a4->sin_family = AF_INET;
        a4->sin_port = htons(static_cast<std::uint16_t>(port));
        len = sizeof *a4;
        return true;
    }
    if (::inet_pton(AF_INET6, h.c_str(), &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr)) return false;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(static_cast<std::uint16_t>(port));
        len = sizeof *a6;
        return true;
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// NOTIFY templates: payloads built once; per frame only the header and the address change.

struct notify_template {
    std::vector<std::uint8_t> payload;
    std::size_t ip_offset = 0; ///< where the 4 or 16 address bytes start
    std::size_t ip_len = 0;
};

struct xorshift {
    std::uint64_t s;
    explicit xorshift(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    std::uint64_t next() noexcept {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
};

/// Builds the payload of one `check-client-ip` NOTIFY whose first argument is `ip` (the
/// address bytes are placeholders) followed by `extra` HAProxy-like samples.
notify_template make_template(bool v6, int extra) {
    static constexpr std::array<std::uint8_t, 16> zero{};
    struct sample {
        std::string_view name;
        spop::value v;
    };
    static const sample pool[] = {
        {"h_host", spop::value::from_string("www.example.com")},
        {"h_ua", spop::value::from_string(
                     "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")},
        {"h_xff", spop::value::null()},
        {"path", spop::value::from_string("/api/v1/items?id=12345&sort=desc")},
        {"ssl", spop::value::from_bool(true)},
        {"dst_port", spop::value::from_int64(443)},
        {"h_cookie", spop::value::null()},
        {"method", spop::value::from_string("GET")},
        {"src_port", spop::value::from_int64(54321)},
    };
    std::vector<std::uint8_t> buf(4096);
    spop::notify_writer w(buf, 0, 0, 4092);
    w.message("check-client-ip", static_cast<std::uint8_t>(1 + extra));
    if (v6)
        w.arg("ip", spop::value::from_ipv6(std::span<const std::uint8_t, 16>(zero)));
    else
        w.arg("ip", spop::value::from_ipv4(std::span<const std::uint8_t, 4>(zero.data(), 4)));
    for (int i = 0; i < extra; ++i) w.arg(pool[i].name, pool[i].v);
    const spop::result r = w.finish();
    constexpr std::size_t header = 11; // length + type + flags + sid 0 + fid 0
    notify_template t;
    t.payload.assign(buf.begin() + header, buf.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    // 0f "check-client-ip" <nb> 02 "ip" <type>: the address follows.
    t.ip_offset = 1 + 15 + 1 + 1 + 2 + 1;
    t.ip_len = v6 ? 16 : 4;
    if (t.payload.size() < t.ip_offset + t.ip_len || t.payload[t.ip_offset - 1] != (v6 ? 7 : 6)) {
        std::fprintf(stderr, "spop-loadgen: internal error: NOTIFY template layout\n");
        std::abort();
    }
    return t;
}

// --profile rate (shared rate limits, docs/rate-limits.md): `check-rate` with the client
// address as `key`; an ACK is valid when it parses and sets txn over_limit to 0 or 1 (with a
// rate when Redis counted it, without one for the --rate-fail value).
notify_template make_rate_template(bool v6) {
    static constexpr std::array<std::uint8_t, 16> zero{};
    std::vector<std::uint8_t> buf(256);
    spop::notify_writer w(buf, 0, 0, 252);
    w.message("check-rate", 1);
    if (v6)
        w.arg("key", spop::value::from_ipv6(std::span<const std::uint8_t, 16>(zero)));
    else
        w.arg("key", spop::value::from_ipv4(std::span<const std::uint8_t, 4>(zero.data(), 4)));
    const spop::result r = w.finish();
    notify_template t;
    t.payload.assign(buf.begin() + 11, buf.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    t.ip_offset = 1 + 10 + 1 + 1 + 3 + 1; // 0a "check-rate" <nb> 03 "key" <type>
    t.ip_len = v6 ? 16 : 4;
    return t;
}
bool rate_ack_valid(std::span<const std::uint8_t> payload) {
    struct handler {
        int over = -1;
        spop::action on_set_var(spop::var_scope s, std::string_view n, const spop::value& v) {
            if (s == spop::var_scope::txn && n == "over_limit" && v.is_integer() && v.as_uint() < 2)
                over = static_cast<int>(v.as_uint());
            return spop::action::proceed;
        }
        spop::action on_unset_var(spop::var_scope, std::string_view) {
            return spop::action::proceed;
        }
    } h;
    return spop::parse_actions(payload, h) && h.over >= 0;
}

/// Writes one NOTIFY frame from a template at `out` (room for the payload + 29 bytes) with the
/// address bytes taken from `addr` (4 or 16 bytes). Returns the frame's size.
std::size_t encode_notify(std::uint8_t* out, const notify_template& t, std::uint64_t sid,
                          std::uint64_t fid, const std::uint8_t* addr) noexcept {
    std::uint8_t* p = spop::encode_frame_header_unchecked(spop::frame_type::notify, spop::flag_fin,
                                                          sid, fid, out);
    std::memcpy(p, t.payload.data(), t.payload.size());
    std::memcpy(p + t.ip_offset, addr, t.ip_len);
    p += t.payload.size();
    spop::store_be32(out, static_cast<std::uint32_t>(p - out - spop::frame_length_size));
    return static_cast<std::size_t>(p - out);
}

/// The simple template must reproduce the NOTIFY HAProxy 3.4 sent (PROTOCOL-NOTES §11 V5).
bool template_matches_v5(const notify_template& simple_v4) {
    const spop_test::bytes want = spop_test::unhex(spop_test::vec::v5_notify_34);
    std::vector<std::uint8_t> got(simple_v4.payload.size() + 32);
    const std::uint8_t localhost[4] = {127, 0, 0, 1};
    got.resize(encode_notify(got.data(), simple_v4, 1, 1, localhost));
    return got == want;
}

// ---------------------------------------------------------------------------------------------
// Outstanding NOTIFYs: stream-id -> slot, open addressing with backward-shift deletion.

class id_map {
  public:
    void init(std::size_t n) {
        std::size_t cap = 8;
        while (cap < 2 * n) cap <<= 1;
        keys_.assign(cap, 0);
        vals_.assign(cap, empty);
        mask_ = cap - 1;
    }
    bool insert(std::uint64_t k, std::uint32_t v) noexcept {
        for (std::size_t i = home(k);; i = (i + 1) & mask_) {
            if (vals_[i] == empty) {
                keys_[i] = k;
                vals_[i] = v;
                return true;
            }
            if (keys_[i] == k) return false;
        }
    }
    [[nodiscard]] std::uint32_t find(std::uint64_t k) const noexcept {
        for (std::size_t i = home(k); vals_[i] != empty; i = (i + 1) & mask_)
            if (keys_[i] == k) return vals_[i];
        return empty;
    }
    void erase(std::uint64_t k) noexcept {
        std::size_t i = home(k);
        while (vals_[i] != empty && keys_[i] != k) i = (i + 1) & mask_;
        if (vals_[i] == empty) return;
        for (std::size_t j = (i + 1) & mask_; vals_[j] != empty; j = (j + 1) & mask_) {
            const std::size_t h = home(keys_[j]);
            if (((j - h) & mask_) >= ((j - i) & mask_)) {
                keys_[i] = keys_[j];
                vals_[i] = vals_[j];
                i = j;
            }
        }
        vals_[i] = empty;
    }
    void clear() noexcept { std::fill(vals_.begin(), vals_.end(), empty); }

    static constexpr std::uint32_t empty = 0xFFFFFFFFu;

  private:
    [[nodiscard]] std::size_t home(std::uint64_t k) const noexcept {
        return static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ull) >> 32) & mask_;
    }
    std::vector<std::uint64_t> keys_;
    std::vector<std::uint32_t> vals_;
    std::size_t mask_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Per-thread statistics

struct stats {
    latency_histogram hist;
    /// Open loop: actual minus intended send time, i.e. the loadgen's own lateness.
    latency_histogram send_lag;
    std::uint64_t sent = 0;
    std::uint64_t acked = 0;        ///< valid ACKs, whole run
    std::uint64_t acked_window = 0; ///< valid ACKs received inside the measurement window
    std::uint64_t invalid = 0;
    std::uint64_t lost = 0;
    std::uint64_t disconnects = 0;     ///< connections the agent closed or reset mid-run
    std::uint64_t connect_errors = 0;  ///< connect or handshake failures
    std::uint64_t protocol_errors = 0; ///< malformed frames from the agent
    std::uint64_t goodbye_missing = 0; ///< no AGENT-DISCONNECT after our HAPROXY-DISCONNECT
    std::uint64_t missed_sends = 0;    ///< open loop: scheduled but never sent
    std::uint64_t queued = 0; ///< open loop: arrivals that waited for a free slot (approximate)
    std::uint64_t last_ack = 0;
    std::string first_error;

    void note(std::string_view what) {
        if (first_error.empty()) first_error = std::string(what);
    }
    void merge(const stats& o) {
        hist.merge(o.hist);
        send_lag.merge(o.send_lag);
        sent += o.sent;
        acked += o.acked;
        acked_window += o.acked_window;
        invalid += o.invalid;
        lost += o.lost;
        disconnects += o.disconnects;
        connect_errors += o.connect_errors;
        protocol_errors += o.protocol_errors;
        goodbye_missing += o.goodbye_missing;
        missed_sends += o.missed_sends;
        queued += o.queued;
        last_ack = std::max(last_ack, o.last_ack);
        if (first_error.empty()) first_error = o.first_error;
    }
    [[nodiscard]] std::uint64_t errors() const noexcept {
        return invalid + lost + disconnects + connect_errors + protocol_errors + goodbye_missing;
    }
};

// ---------------------------------------------------------------------------------------------
// Shared run state

struct start_stamp {
    std::atomic<std::uint64_t>* at;
    void operator()() noexcept { at->store(now_ns(), std::memory_order_release); }
};

struct shared_state {
    const options& o;
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    std::vector<notify_template> v4, v6;
    std::size_t max_payload = 0;
    std::atomic<std::uint64_t> next_global_sid{0};
    std::atomic<std::uint64_t> budget_used{0};
    std::atomic<std::uint64_t> run_start{0};
    std::barrier<start_stamp> start;

    shared_state(const options& opt, int threads)
        : o(opt), start(threads, start_stamp{&run_start}) {}

    /// --frames: grants up to `want` more NOTIFYs (all of them without a budget).
    std::uint64_t take_budget(std::uint64_t want) noexcept {
        if (o.frames == 0) return want;
        const std::uint64_t before = budget_used.fetch_add(want, std::memory_order_relaxed);
        if (before >= o.frames) return 0;
        return std::min(want, o.frames - before);
    }
};

// ---------------------------------------------------------------------------------------------
// One client thread

enum class conn_state : std::uint8_t { connecting, hello_sent, established, bye_sent, done };

struct slot {
    std::uint64_t sid = 0;
    std::uint64_t fid = 0;
    std::uint64_t t0 = 0; ///< (intended) send time
    int events = 0;       ///< 2.6 ids: NOTIFYs sent on this stream id so far
};

struct conn {
    int fd = -1;
    conn_state st = conn_state::connecting;
    std::uint32_t events = 0; ///< epoll interest
    std::uint32_t mfs = 0;    ///< negotiated
    std::uint32_t depth = 1;  ///< effective (1 if the agent refused pipelining)
    std::vector<std::uint8_t> in;
    std::size_t in_len = 0;
    std::vector<std::uint8_t> out;
    std::size_t out_head = 0, out_tail = 0;
    std::vector<slot> slots;
    std::vector<std::uint32_t> free_slots;
    id_map outstanding;
    std::uint64_t next_sid = 1; ///< 3.x ids
    std::uint64_t next_due = 0; ///< open loop: the intended time of the oldest unsent arrival
    /// Open loop: when an ACK last freed a slot of this connection while it was full.
    std::uint64_t unfull_at = 0;
    std::uint32_t inflight() const noexcept {
        return static_cast<std::uint32_t>(slots.size() - free_slots.size());
    }
};

class worker {
  public:
    worker(shared_state& sh, int index, int conn_count)
        : sh_(sh), o_(sh.o), index_(index), rng_(sh.o.seed + index),
          conns_(static_cast<std::size_t>(conn_count)) {}

    void run() {
        // Open loop: a timer that fires late delays the send and is charged to the agent (the
        // latency counts from the intended time), so ask for precise wakeups.
        if (o_.rate > 0) ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
        ep_ = ::epoll_create1(EPOLL_CLOEXEC);
        connect_all();
        sh_.start.arrive_and_wait();
        const std::uint64_t start = sh_.run_start.load(std::memory_order_acquire);
        measure_start_ = start + static_cast<std::uint64_t>(o_.warmup * 1e9);
        send_end_ = start + static_cast<std::uint64_t>(o_.duration * 1e9);
        window_end_ = o_.frames ? UINT64_MAX : send_end_;
        load_phase(start);
        goodbye_phase();
        for (conn& c : conns_)
            if (c.fd >= 0) close_conn(c);
        ::close(ep_);
    }

    [[nodiscard]] const stats& result() const noexcept { return st_; }
    /// The agent did not announce pipelining, so this thread kept one NOTIFY in flight.
    [[nodiscard]] bool pipelining_refused() const noexcept { return pipelining_refused_; }

  private:
    // --- socket plumbing -----------------------------------------------------------------

    void set_events(conn& c, std::uint32_t ev) {
        if (c.events == ev || c.fd < 0) return;
        c.events = ev;
        epoll_event e{};
        e.events = ev;
        e.data.u32 = static_cast<std::uint32_t>(&c - conns_.data());
        ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &e);
    }

    void close_conn(conn& c) {
        if (c.fd >= 0) {
            ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
            ::close(c.fd);
        }
        c.fd = -1;
        c.st = conn_state::done;
        inflight_total_ -= c.inflight();
        c.free_slots.clear();
        for (std::uint32_t i = 0; i < c.slots.size(); ++i) c.free_slots.push_back(i);
        c.outstanding.clear();
    }

    /// The connection died with NOTIFYs in flight: they are lost.
    void fail_conn(conn& c, std::uint64_t& counter, std::string_view why) {
        st_.lost += c.inflight();
        ++counter;
        st_.note(why);
        close_conn(c);
    }

    /// Sends what is queued; arms EPOLLOUT on a short write.
    void flush(conn& c) {
        while (c.out_head != c.out_tail) {
            const ssize_t n =
                ::send(c.fd, c.out.data() + c.out_head, c.out_tail - c.out_head, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                if (c.st == conn_state::bye_sent) {
                    ++st_.goodbye_missing;
                    st_.note("connection reset before AGENT-DISCONNECT");
                    close_conn(c);
                } else {
                    fail_conn(c, st_.disconnects, "send failed (connection reset)");
                }
                return;
            }
            c.out_head += static_cast<std::size_t>(n);
        }
        if (c.out_head == c.out_tail) c.out_head = c.out_tail = 0;
        set_events(c, EPOLLIN | (c.out_head != c.out_tail ? EPOLLOUT : 0u));
    }

    /// Room for `n` more bytes at the tail, compacting if needed.
    bool out_room(conn& c, std::size_t n) {
        if (c.out.size() - c.out_tail >= n) return true;
        if (c.out_head != 0) {
            std::memmove(c.out.data(), c.out.data() + c.out_head, c.out_tail - c.out_head);
            c.out_tail -= c.out_head;
            c.out_head = 0;
        }
        return c.out.size() - c.out_tail >= n;
    }

    // --- connect + handshake ---------------------------------------------------------------

    void connect_all() {
        const std::size_t out_cap = static_cast<std::size_t>(o_.depth) *
                                        (sh_.max_payload + spop::frame_header_size(~0ull, ~0ull)) +
                                    4096;
        const std::size_t in_cap = std::max<std::size_t>(256 * 1024, 2 * (o_.max_frame_size + 4));
        std::size_t pending = 0;
        for (std::size_t i = 0; i < conns_.size(); ++i) {
            conn& c = conns_[i];
            c.in.resize(in_cap);
            c.out.resize(out_cap);
            c.slots.resize(static_cast<std::size_t>(o_.depth));
            for (std::uint32_t s = static_cast<std::uint32_t>(o_.depth); s-- > 0;)
                c.free_slots.push_back(s);
            c.outstanding.init(static_cast<std::size_t>(o_.depth));
            c.mfs = o_.max_frame_size;
            c.fd = ::socket(sh_.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c.fd < 0) {
                ++st_.connect_errors;
                st_.note("socket() failed");
                c.st = conn_state::done;
                continue;
            }
            const int one = 1;
            if (sh_.addr.ss_family != AF_UNIX)
                ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&sh_.addr), sh_.addr_len) != 0 &&
                errno != EINPROGRESS) {
                ++st_.connect_errors;
                st_.note(std::string("connect: ") + std::strerror(errno));
                ::close(c.fd);
                c.fd = -1;
                c.st = conn_state::done;
                continue;
            }
            epoll_event e{};
            e.events = c.events = EPOLLOUT | EPOLLIN;
            e.data.u32 = static_cast<std::uint32_t>(i);
            ::epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &e);
            ++pending;
        }
        const std::uint64_t deadline =
            now_ns() + static_cast<std::uint64_t>(o_.connect_timeout * 1e9);
        epoll_event evs[256];
        while (pending > 0 && !g_interrupted.load(std::memory_order_relaxed)) {
            const std::uint64_t now = now_ns();
            if (now >= deadline) break;
            const int n = wait(evs, 256, deadline - now);
            for (int k = 0; k < n; ++k) {
                conn& c = conns_[evs[k].data.u32];
                const conn_state before = c.st;
                if (c.st == conn_state::connecting &&
                    (evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                    on_connected(c);
                if (c.fd >= 0 && c.st == conn_state::hello_sent && (evs[k].events & EPOLLOUT))
                    flush(c);
                if (c.fd >= 0 && c.st == conn_state::hello_sent &&
                    (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    on_readable(c, now_ns());
                if (before != c.st && (c.st == conn_state::established || c.st == conn_state::done))
                    --pending;
            }
        }
        for (conn& c : conns_) {
            if (c.st == conn_state::connecting || c.st == conn_state::hello_sent) {
                ++st_.connect_errors;
                st_.note(g_interrupted ? "interrupted during the handshake"
                                       : "connect/handshake timeout");
                close_conn(c);
            }
        }
    }

    void on_connected(conn& c) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            ++st_.connect_errors;
            st_.note(std::string("connect: ") + std::strerror(err));
            close_conn(c);
            return;
        }
        // HAPROXY-HELLO, as HAProxy 3.x sends it (PROTOCOL-NOTES §11 V1), with a UUID-like
        // engine-id per client thread.
        char engine[40];
        const std::uint64_t a = rng_.next(), b = rng_.next();
        std::snprintf(engine, sizeof engine, "%08x-%04x-4%03x-%04x-%012llx",
                      static_cast<unsigned>(a >> 32), static_cast<unsigned>(a >> 16) & 0xFFFF,
                      static_cast<unsigned>(a) & 0xFFF,
                      (static_cast<unsigned>(b >> 48) & 0x3FFF) | 0x8000,
                      static_cast<unsigned long long>(b & 0xFFFFFFFFFFFFull));
        spop::kv_writer w(std::span<std::uint8_t>(c.out.data(), c.out.size()), o_.max_frame_size,
                          spop::frame_type::haproxy_hello);
        w.put("supported-versions", spop::value::from_string("2.0"));
        w.put("max-frame-size", spop::value::from_uint32(o_.max_frame_size));
        w.put("capabilities", spop::value::from_string("pipelining"));
        w.put("engine-id", spop::value::from_string(engine));
        const spop::result r = w.finish();
        c.out_head = 0;
        c.out_tail = r.consumed;
        c.st = conn_state::hello_sent;
        flush(c);
    }

    /// AGENT-HELLO checks (PROTOCOL-NOTES §5): version exactly 2.0, max-frame-size in
    /// [256, ours], capabilities present.
    void on_agent_hello(conn& c, const spop::frame& f) {
        struct fields {
            std::string_view version, caps;
            std::uint64_t mfs = 0;
            bool has_version = false, has_mfs = false, has_caps = false, bad = false;
            spop::action on_kv(std::string_view k, const spop::value& v) noexcept {
                if (k == "version") {
                    has_version = v.type == spop::data_type::string;
                    version = v.bytes;
                } else if (k == "max-frame-size") {
                    has_mfs = v.is_integer();
                    mfs = v.integer;
                } else if (k == "capabilities") {
                    has_caps = v.type == spop::data_type::string;
                    caps = v.bytes;
                }
                return spop::action::proceed;
            }
        } h;
        std::string_view problem;
        if (!f.fin() || f.stream_id != 0 || f.frame_id != 0)
            problem = "AGENT-HELLO: bad flags or ids";
        else if (!spop::parse_kv_list(f.payload, h))
            problem = "AGENT-HELLO: malformed KV-LIST";
        else if (!h.has_version || !spop::offers_version_2_0(h.version) ||
                 h.version.find(',') != std::string_view::npos)
            problem = "AGENT-HELLO: version is not 2.0";
        else if (!h.has_mfs || h.mfs < spop::min_max_frame_size || h.mfs > o_.max_frame_size)
            problem = "AGENT-HELLO: max-frame-size missing or out of range";
        else if (!h.has_caps)
            problem = "AGENT-HELLO: capabilities missing";
        if (!problem.empty()) {
            ++st_.connect_errors;
            st_.note(problem);
            close_conn(c);
            return;
        }
        c.mfs = static_cast<std::uint32_t>(h.mfs);
        if (sh_.max_payload + spop::frame_header_size(~0ull, ~0ull) - 4 > c.mfs) {
            ++st_.connect_errors;
            st_.note("negotiated max-frame-size too small for the NOTIFY profile");
            close_conn(c);
            return;
        }
        if (!spop::list_contains(h.caps, "pipelining") && o_.depth > 1) {
            // HAProxy then keeps one NOTIFY in flight: so do we.
            c.depth = 1;
            pipelining_refused_ = true;
            c.free_slots.assign(1, 0);
            c.slots.resize(1);
        } else {
            c.depth = static_cast<std::uint32_t>(o_.depth);
        }
        c.st = conn_state::established;
    }

    // --- reading ---------------------------------------------------------------------------

    void on_readable(conn& c, std::uint64_t now) {
        for (int round = 0; round < 4 && c.fd >= 0; ++round) {
            const std::size_t space = c.in.size() - c.in_len;
            const ssize_t n = ::recv(c.fd, c.in.data() + c.in_len, space, 0);
            if (n > 0) {
                c.in_len += static_cast<std::size_t>(n);
                if (round > 0) now = now_ns();
                process_frames(c, now);
                if (static_cast<std::size_t>(n) < space) break;
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            on_eof(c);
            break;
        }
    }

    void on_eof(conn& c) {
        switch (c.st) {
        case conn_state::hello_sent:
            ++st_.connect_errors;
            st_.note("connection closed before AGENT-HELLO");
            close_conn(c);
            break;
        case conn_state::bye_sent:
            ++st_.goodbye_missing;
            st_.note("connection closed without AGENT-DISCONNECT");
            close_conn(c);
            break;
        case conn_state::established:
            fail_conn(c, st_.disconnects, "agent closed the connection mid-run");
            break;
        default:
            close_conn(c);
            break;
        }
    }

    void process_frames(conn& c, std::uint64_t now) {
        std::size_t off = 0;
        while (c.fd >= 0) {
            spop::frame f;
            const spop::result r = spop::split_frame(
                std::span<const std::uint8_t>(c.in.data() + off, c.in_len - off), c.mfs, f);
            if (r.ec == spop::errc::need_more) break;
            if (!r) {
                st_.note(std::string("malformed frame from the agent: ") +
                         std::string(spop::message(r.ec)));
                if (c.st == conn_state::hello_sent) {
                    ++st_.connect_errors;
                    close_conn(c);
                } else {
                    fail_conn(c, st_.protocol_errors, "malformed frame from the agent");
                }
                return;
            }
            off += r.consumed;
            on_frame(c, f, now);
        }
        if (c.fd < 0) return;
        if (off != 0) {
            std::memmove(c.in.data(), c.in.data() + off, c.in_len - off);
            c.in_len -= off;
        }
    }

    void on_frame(conn& c, const spop::frame& f, std::uint64_t now) {
        if (f.type == spop::frame_type::ack && c.st == conn_state::established)
            return on_ack(c, f, now);
        if (f.type == spop::frame_type::agent_disconnect) return on_agent_disconnect(c, f);
        switch (c.st) {
        case conn_state::hello_sent:
            if (f.type == spop::frame_type::agent_hello) return on_agent_hello(c, f);
            ++st_.connect_errors;
            st_.note("first frame is not AGENT-HELLO");
            return close_conn(c);
        case conn_state::bye_sent:
            return; // late ACKs after the goodbye: their frames were already counted as lost
        default:
            ++st_.protocol_errors;
            st_.note("unexpected frame type from the agent");
            return;
        }
    }

    void on_agent_disconnect(conn& c, const spop::frame& f) {
        spop::disconnect_fields d;
        const bool parsed = static_cast<bool>(spop::parse_kv_list(f.payload, d));
        if (c.st == conn_state::bye_sent) {
            if (!parsed || !d.has_status || d.status_code != 0) {
                ++st_.goodbye_missing;
                st_.note("AGENT-DISCONNECT reply without status 0");
            }
            close_conn(c);
            return;
        }
        std::string why = "AGENT-DISCONNECT status " + std::to_string(d.status_code) + " \"" +
                          std::string(d.message) + "\"";
        if (c.st == conn_state::hello_sent) {
            ++st_.connect_errors;
            st_.note(why);
            close_conn(c);
            return;
        }
        fail_conn(c, st_.disconnects, why);
    }

    void on_ack(conn& c, const spop::frame& f, std::uint64_t now) {
        const std::uint32_t si = c.outstanding.find(f.stream_id);
        if (si == id_map::empty || c.slots[si].fid != f.frame_id) {
            ++st_.invalid;
            st_.note("ACK for ids with no outstanding NOTIFY");
            return;
        }
        c.outstanding.erase(f.stream_id);
        if (c.free_slots.empty()) c.unfull_at = now;
        c.free_slots.push_back(si);
        --inflight_total_;
        spop_bench::ip_score_handler h;
        if (!f.fin() || f.abort()) {
            ++st_.invalid;
            st_.note("ACK without FIN (or with ABORT)");
            return;
        }
        if (o_.profile == arg_profile::rate) {
            if (!rate_ack_valid(f.payload)) {
                ++st_.invalid;
                st_.note("check-rate ACK without txn over_limit 0/1");
                return;
            }
            h.has_score = true; // relaxed: no ip_score in a check-rate answer
            h.score = 0;
        } else if (const spop::result r = spop::parse_actions(f.payload, h); !r) {
            ++st_.invalid;
            st_.note(std::string("ACK actions: ") + std::string(spop::message(r.ec)) +
                     " at offset " + std::to_string(r.consumed));
            return;
        }
        if (!h.valid()) {
            ++st_.invalid;
            st_.note(h.has_score ? "ip_score out of 0..100 or not an integer"
                                 : "ACK without ip_score");
            return;
        }
        ++st_.acked;
        st_.last_ack = now;
        const std::uint64_t t0 = c.slots[si].t0;
        if (now >= measure_start_ && now <= window_end_) ++st_.acked_window;
        if (t0 >= measure_start_) st_.hist.record(now > t0 ? now - t0 : 0);
    }

    // --- sending ---------------------------------------------------------------------------

    /// Queues one NOTIFY into free slot `si` with (intended) send time t0.
    void queue_notify(conn& c, std::uint32_t si, std::uint64_t t0) {
        slot& s = c.slots[si];
        if (o_.ids == id_style::v26) {
            if (s.events == 0 || s.events >= o_.fids_per_stream) {
                s.sid = sh_.next_global_sid.fetch_add(1, std::memory_order_relaxed);
                s.fid = 1;
                s.events = 1;
            } else {
                ++s.fid;
                ++s.events;
            }
        } else {
            s.sid = c.next_sid;
            s.fid = 1;
            c.next_sid += 2;
            if (c.next_sid > 0x7FFFFFFF) c.next_sid = 1;
        }
        s.t0 = t0;
        const bool v6 =
            o_.mix == addr_mix::ipv6 || (o_.mix == addr_mix::mixed && (rng_.next() & 1));
        const auto& pool = v6 ? sh_.v6 : sh_.v4;
        const std::uint64_t r = rng_.next();
        const notify_template& t = pool[static_cast<std::size_t>(r % pool.size())];
        // Random client address (the low bits of r chose the template; use fresh bits).
        std::array<std::uint64_t, 2> addr{rng_.next(), rng_.next()};
        c.out_tail += encode_notify(c.out.data() + c.out_tail, t, s.sid, s.fid,
                                    reinterpret_cast<const std::uint8_t*>(addr.data()));
        c.outstanding.insert(s.sid, si);
        ++inflight_total_;
        ++st_.sent;
    }

    [[nodiscard]] std::size_t max_frame_bytes() const noexcept {
        return sh_.max_payload + spop::frame_header_size(~0ull, ~0ull);
    }

    /// Closed loop: fills every free slot, stamped `now`.
    void fill_closed(conn& c, std::uint64_t now) {
        if (c.st != conn_state::established || stopping_ || c.free_slots.empty()) return;
        const std::uint64_t granted = sh_.take_budget(c.free_slots.size());
        if (granted < c.free_slots.size()) budget_done_ = true;
        for (std::uint64_t k = 0; k < granted && out_room(c, max_frame_bytes()); ++k) {
            const std::uint32_t si = c.free_slots.back();
            c.free_slots.pop_back();
            queue_notify(c, si, now);
        }
    }

    /// Open loop: the time to the connection's next arrival. Poisson: an exponential gap of
    /// mean interval_ns_ (53 random bits, so never log(0)).
    std::uint64_t gap() noexcept {
        if (o_.arrivals == arrival_kind::fixed) return interval_ns_;
        const double u = (static_cast<double>(rng_.next() >> 11) + 1.0) * 0x1.0p-53;
        return std::max<std::uint64_t>(
            1, static_cast<std::uint64_t>(-std::log(u) * static_cast<double>(interval_ns_)));
    }

    /// Open loop: sends what is due (intended time <= now) while slots are free.
    void fill_open(conn& c, std::uint64_t now) {
        if (c.st != conn_state::established || stopping_) return;
        while (!c.free_slots.empty() && c.next_due <= now && c.next_due < send_end_) {
            if (sh_.take_budget(1) == 0) {
                budget_done_ = true;
                return;
            }
            if (!out_room(c, max_frame_bytes())) return;
            const std::uint32_t si = c.free_slots.back();
            c.free_slots.pop_back();
            queue_notify(c, si, c.next_due);
            if (c.next_due >= measure_start_) {
                st_.send_lag.record(now - c.next_due);
                // A slot freed after its intended time: it waited in the connection's queue.
                if (c.unfull_at > c.next_due) ++st_.queued;
            }
            c.next_due += gap();
        }
    }

    // --- phases ----------------------------------------------------------------------------

    int wait(epoll_event* evs, int max, std::uint64_t timeout_ns) {
        if (timeout_ns > ns_per_s) timeout_ns = ns_per_s;
        if (!no_pwait2_) {
            timespec ts{static_cast<time_t>(timeout_ns / ns_per_s),
                        static_cast<long>(timeout_ns % ns_per_s)};
            const int n = ::epoll_pwait2(ep_, evs, max, &ts, nullptr);
            if (n >= 0 || errno != ENOSYS) return n < 0 ? 0 : n;
            no_pwait2_ = true;
        }
        const int n =
            ::epoll_wait(ep_, evs, max, static_cast<int>((timeout_ns + 999'999) / 1'000'000));
        return n < 0 ? 0 : n;
    }

    void load_phase(std::uint64_t start) {
        const bool open = o_.rate > 0;
        if (open) {
            // Each connection gets rate/C. A thread's connections share one schedule, so one
            // wakeup serves all of them (wakeups are what an open loop costs); threads are
            // staggered against each other.
            const double per_conn = o_.rate / o_.connections;
            interval_ns_ = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(1e9 / per_conn));
            const std::uint64_t offset = interval_ns_ * static_cast<std::uint64_t>(index_) /
                                         static_cast<std::uint64_t>(o_.threads);
            for (conn& c : conns_)
                c.next_due = o_.arrivals == arrival_kind::poisson ? start + gap() : start + offset;
        }
        std::uint64_t now = now_ns();
        for (conn& c : conns_) {
            if (open)
                fill_open(c, now);
            else
                fill_closed(c, now);
            if (c.fd >= 0) flush(c);
        }
        std::uint64_t drain_deadline = 0;
        epoll_event evs[256];
        for (;;) {
            now = now_ns();
            if (!stopping_ && (now >= send_end_ || budget_done_ ||
                               g_interrupted.load(std::memory_order_relaxed))) {
                stopping_ = true;
                drain_deadline = now + static_cast<std::uint64_t>(o_.drain_timeout * 1e9);
                if (open) count_missed(now);
            }
            if (stopping_ && (inflight_total_ == 0 || now >= drain_deadline)) break;
            std::uint64_t timeout = stopping_ ? drain_deadline - now : send_end_ - now;
            if (open && !stopping_) {
                for (conn& c : conns_) {
                    fill_open(c, now);
                    if (c.fd >= 0 && c.out_tail != c.out_head) flush(c);
                    if (c.st == conn_state::established && !c.free_slots.empty())
                        timeout = std::min(timeout, c.next_due > now ? c.next_due - now : 0);
                }
            }
            const int n = wait(evs, 256, timeout);
            for (int k = 0; k < n; ++k) {
                conn& c = conns_[evs[k].data.u32];
                if (c.fd < 0) continue;
                if (evs[k].events & EPOLLOUT) flush(c);
                if (c.fd >= 0 && (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                    on_readable(c, now_ns());
                    if (c.fd >= 0 && !open) {
                        fill_closed(c, now_ns());
                        flush(c);
                    }
                }
            }
        }
        // Whatever is still in flight after the drain bound is lost.
        for (conn& c : conns_) {
            if (c.st == conn_state::established && c.inflight() != 0) {
                st_.lost += c.inflight();
                st_.note("ACKs missing after the drain timeout");
                inflight_total_ -= c.inflight();
                c.free_slots.clear();
                for (std::uint32_t i = 0; i < c.slots.size(); ++i) c.free_slots.push_back(i);
                c.outstanding.clear();
            }
        }
    }

    /// Open loop: requests whose intended time fell inside the run but never went out.
    void count_missed(std::uint64_t now) {
        for (conn& c : conns_) {
            if (c.st != conn_state::established) continue;
            const std::uint64_t until = std::min(now, send_end_);
            if (c.next_due >= until) continue;
            if (o_.arrivals == arrival_kind::fixed) {
                st_.missed_sends += (until - c.next_due) / interval_ns_ + 1;
                continue;
            }
            for (std::uint64_t t = c.next_due; t < until; t += gap()) ++st_.missed_sends;
        }
    }

    void goodbye_phase() {
        std::size_t pending = 0;
        for (conn& c : conns_) {
            if (c.st != conn_state::established) continue;
            if (!out_room(c, 64)) {
                close_conn(c);
                continue;
            }
            spop::kv_writer w(
                std::span<std::uint8_t>(c.out.data() + c.out_tail, c.out.size() - c.out_tail),
                c.mfs, spop::frame_type::haproxy_disconnect);
            w.put("status-code", spop::value::from_uint32(0));
            w.put("message", spop::value::from_string("normal"));
            c.out_tail += w.finish().consumed;
            c.st = conn_state::bye_sent;
            flush(c);
            if (c.fd >= 0) ++pending;
        }
        const std::uint64_t deadline =
            now_ns() + static_cast<std::uint64_t>(o_.drain_timeout * 1e9);
        epoll_event evs[256];
        while (pending > 0) {
            const std::uint64_t now = now_ns();
            if (now >= deadline) break;
            const int n = wait(evs, 256, deadline - now);
            for (int k = 0; k < n; ++k) {
                conn& c = conns_[evs[k].data.u32];
                if (c.fd < 0) continue;
                if (evs[k].events & EPOLLOUT) flush(c);
                if (c.fd >= 0 && (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    on_readable(c, now);
                if (c.fd < 0) --pending;
            }
        }
        for (conn& c : conns_) {
            if (c.st == conn_state::bye_sent) {
                ++st_.goodbye_missing;
                st_.note("no AGENT-DISCONNECT within the drain timeout");
                close_conn(c);
            }
        }
    }

    shared_state& sh_;
    const options& o_;
    int index_;
    xorshift rng_;
    std::vector<conn> conns_;
    stats st_;
    int ep_ = -1;
    bool no_pwait2_ = false;
    bool stopping_ = false;
    bool budget_done_ = false;
    std::uint64_t inflight_total_ = 0;
    std::uint64_t interval_ns_ = 0;
    std::uint64_t measure_start_ = 0;
    std::uint64_t send_end_ = 0;
    std::uint64_t window_end_ = 0;
    bool pipelining_refused_ = false;
};

// ---------------------------------------------------------------------------------------------
// CPU accounting

/// utime + stime of a process in microseconds, or -1.
double proc_cpu_us(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!f || !std::getline(f, line)) return -1;
    const auto rp = line.rfind(')');
    if (rp == std::string::npos) return -1;
    const char* p = line.c_str() + rp + 2; // fields from #3 (state) on
    unsigned long long ut = 0, stime = 0;
    // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    if (std::sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stime) != 2)
        return -1;
    return static_cast<double>(ut + stime) * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// Context switches of every thread of a process (voluntary: it slept, i.e. a wakeup later;
/// involuntary: preempted), summed over /proc/PID/task/*/status; {-1, -1} when unreadable.
struct ctxsw {
    double voluntary = -1, involuntary = -1;
};
ctxsw proc_ctxsw(int pid) {
    ctxsw r;
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return r;
    r.voluntary = r.involuntary = 0;
    while (const dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream f(dir + "/" + e->d_name + "/status");
        std::string line;
        while (std::getline(f, line)) {
            if (line.starts_with("voluntary_ctxt_switches:"))
                r.voluntary += std::strtod(line.c_str() + 24, nullptr);
            else if (line.starts_with("nonvoluntary_ctxt_switches:"))
                r.involuntary += std::strtod(line.c_str() + 27, nullptr);
        }
    }
    ::closedir(d);
    return r;
}

double self_cpu_us() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

std::string json_escape(std::string_view s) {
    std::string out;
    for (const char ch : s) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (static_cast<unsigned char>(ch) < 0x20) {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(ch));
            out += b;
        } else {
            out += ch;
        }
    }
    return out;
}

/// One flat JSON object, built key by key.
struct json_line {
    std::string text = "{";
    void key(std::string_view k) {
        if (text.size() > 1) text += ',';
        text += '"';
        text += k;
        text += "\":";
    }
    void raw(std::string_view k, std::string_view v) {
        key(k);
        text += v;
    }
    void str(std::string_view k, std::string_view v) {
        key(k);
        text += '"';
        text += json_escape(v);
        text += '"';
    }
    void num(std::string_view k, double v) {
        char b[64];
        std::snprintf(b, sizeof b, "%.4g", v);
        if (v == std::floor(v) && std::fabs(v) < 1e15)
            std::snprintf(b, sizeof b, "%.0f", v);
        else if (std::fabs(v) >= 1000)
            std::snprintf(b, sizeof b, "%.1f", v);
        raw(k, b);
    }
    void num(std::string_view k, std::uint64_t v) { raw(k, std::to_string(v)); }
    void num(std::string_view k, int v) { raw(k, std::to_string(v)); }
};

const char* name_of(id_style s) {
    return s == id_style::v26 ? "2.6" : "3.x";
}
const char* name_of(addr_mix m) {
    return m == addr_mix::ipv4 ? "ipv4" : m == addr_mix::ipv6 ? "ipv6" : "mixed";
}
const char* name_of(arg_profile p) {
    return p == arg_profile::simple ? "simple" : p == arg_profile::fat ? "fat" : "rate";
}

} // namespace

int main(int argc, char** argv) {
    options o;
    if (const int rc = parse_options(argc, argv, o); rc != 0) return rc == 1 ? 0 : 2;

    std::signal(SIGPIPE, SIG_IGN);
    std::signal(SIGINT, on_sigint);
    std::signal(SIGTERM, on_sigint);
    // Watchdog: every phase is bounded on its own; this catches anything that is not.
    ::alarm(static_cast<unsigned>(o.warmup + o.duration + o.connect_timeout + 3 * o.drain_timeout) +
            10);

    spop_bench::mini_agent self;
    if (o.self_serve) {
        sockaddr_storage probe{};
        socklen_t probe_len = 0;
        if (!loopback_address(o.host, 1, probe, probe_len)) {
            std::fprintf(stderr, "spop-loadgen: --host must be a loopback address\n");
            return 2;
        }
        o.port = self.start(probe.ss_family == AF_INET6, o.serve_threads);
        if (o.port == 0) {
            std::fprintf(stderr, "spop-loadgen: --self-serve: could not listen: %s\n",
                         std::strerror(errno));
            return 1;
        }
    }

    shared_state sh(o, o.threads);
    if (!o.unix_path.empty()) {
        auto* un = reinterpret_cast<sockaddr_un*>(&sh.addr);
        un->sun_family = AF_UNIX;
        std::memcpy(un->sun_path, o.unix_path.c_str(), o.unix_path.size() + 1);
        sh.addr_len = static_cast<socklen_t>(sizeof(sockaddr_un));
    } else if (!loopback_address(o.host, o.port, sh.addr, sh.addr_len)) {
        std::fprintf(
            stderr,
            "spop-loadgen: --host must be a loopback address (127.0.0.0/8, ::1), got '%s'\n",
            o.host.c_str());
        return 2;
    }
    // Templates: simple = one `ip` argument; fat = `ip` + 4..9 more samples (5..10 arguments).
    for (int v6 = 0; v6 < 2; ++v6) {
        auto& pool = v6 ? sh.v6 : sh.v4;
        if (o.profile == arg_profile::rate) {
            pool.push_back(make_rate_template(v6 != 0));
        } else if (o.profile == arg_profile::simple) {
            pool.push_back(make_template(v6 != 0, 0));
        } else {
            for (int extra = 4; extra <= 9; ++extra) pool.push_back(make_template(v6 != 0, extra));
        }
        for (const auto& t : pool) sh.max_payload = std::max(sh.max_payload, t.payload.size());
    }
    if (!template_matches_v5(make_template(false, 0))) {
        std::fprintf(stderr, "spop-loadgen: internal error: the NOTIFY encoding differs from V5\n");
        return 1;
    }
    if (sh.max_payload + spop::frame_header_size(~0ull, ~0ull) - 4 > o.max_frame_size) {
        std::fprintf(stderr, "spop-loadgen: --max-frame-size %u is too small for the %s profile\n",
                     o.max_frame_size, name_of(o.profile));
        return 2;
    }

    std::vector<std::unique_ptr<worker>> workers;
    for (int t = 0; t < o.threads; ++t) {
        const int n = o.connections / o.threads + (t < o.connections % o.threads ? 1 : 0);
        workers.push_back(std::make_unique<worker>(sh, t, n));
    }
    std::vector<std::thread> threads;
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    // The CPU baselines are taken right after the handshakes (the barrier stamps run_start).
    double self_cpu0 = -1, agent_cpu0 = -1;
    while (sh.run_start.load(std::memory_order_acquire) == 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        if (g_interrupted.load()) break;
    }
    self_cpu0 = self_cpu_us();
    ctxsw agent_sw0, agent_sw1;
    if (o.agent_pid) {
        agent_cpu0 = proc_cpu_us(o.agent_pid);
        agent_sw0 = proc_ctxsw(o.agent_pid);
    }
    for (auto& t : threads) t.join();
    const double self_cpu1 = self_cpu_us();
    const double agent_cpu1 = o.agent_pid ? proc_cpu_us(o.agent_pid) : -1;
    if (o.agent_pid) agent_sw1 = proc_ctxsw(o.agent_pid);
    const std::uint64_t run_start = sh.run_start.load();
    if (o.self_serve) self.stop();

    stats total;
    bool pipelining_refused = false;
    for (auto& w : workers) {
        total.merge(w->result());
        pipelining_refused = pipelining_refused || w->pipelining_refused();
    }

    // The measurement window: [start + warmup, end of sending], or up to the last ACK with --frames
    // or when the budget ran out early.
    const double duration_s = o.duration;
    double window_s = o.duration - o.warmup;
    std::uint64_t frames = total.acked_window;
    if (o.frames) {
        frames = total.acked;
        window_s =
            total.last_ack > run_start ? static_cast<double>(total.last_ack - run_start) / 1e9 : 0;
    }
    const double fps = window_s > 0 ? static_cast<double>(frames) / window_s : 0;
    const double us = 1e3;
    const auto q = [&](double p) { return static_cast<double>(total.hist.quantile(p)) / us; };
    const auto lag = [&](double p) { return static_cast<double>(total.send_lag.quantile(p)) / us; };
    const double self_per_frame =
        total.acked ? (self_cpu1 - self_cpu0) / static_cast<double>(total.acked) : 0;
    const bool have_agent_cpu = o.agent_pid && agent_cpu0 >= 0 && agent_cpu1 >= 0 && total.acked;
    const double agent_per_frame =
        have_agent_cpu ? (agent_cpu1 - agent_cpu0) / static_cast<double>(total.acked) : 0;
    const bool have_agent_sw =
        o.agent_pid && agent_sw0.voluntary >= 0 && agent_sw1.voluntary >= 0 && total.acked;
    const auto per_frame = [&](double a, double b) {
        return (b - a) / static_cast<double>(total.acked);
    };
    const bool ok = total.errors() == 0 && total.acked > 0;

    if (o.json) {
        json_line j;
        j.str("tool", "spop-loadgen");
        j.str("label", o.label);
        j.str("host", o.unix_path.empty() ? o.host : "unix:" + o.unix_path);
        j.num("port", o.port);
        j.num("connections", o.connections);
        j.num("depth", o.depth);
        j.num("threads", o.threads);
        j.str("ids", name_of(o.ids));
        j.str("mix", name_of(o.mix));
        j.str("profile", name_of(o.profile));
        j.str("mode", o.rate > 0 ? "open" : "closed");
        if (o.rate > 0)
            j.num("rate", o.rate);
        else
            j.raw("rate", "null");
        j.raw("self_serve", o.self_serve ? "true" : "false");
        j.num("duration_s", duration_s);
        j.num("window_s", window_s);
        j.num("frames", frames);
        j.num("frames_total", total.acked);
        j.num("sent", total.sent);
        j.num("frames_per_s", fps);
        j.num("p50_us", q(0.50));
        j.num("p90_us", q(0.90));
        j.num("p99_us", q(0.99));
        j.num("p999_us", q(0.999));
        j.num("max_us", static_cast<double>(total.hist.max()) / us);
        j.num("mean_us", total.hist.mean() / us);
        j.num("invalid", total.invalid);
        j.num("lost", total.lost);
        j.num("disconnects", total.disconnects);
        j.num("connect_errors", total.connect_errors);
        j.num("protocol_errors", total.protocol_errors);
        j.num("goodbye_missing", total.goodbye_missing);
        if (o.rate > 0) {
            j.num("missed_sends", total.missed_sends);
            j.num("send_lag_p50_us", lag(0.5));
            j.num("send_lag_p99_us", lag(0.99));
        }
        if (o.rate > 0) {
            j.str("arrivals", o.arrivals == arrival_kind::poisson ? "poisson" : "fixed");
            j.num("queued", total.queued);
        }
        if (have_agent_sw) {
            j.num("agent_vol_ctxsw_per_frame", per_frame(agent_sw0.voluntary, agent_sw1.voluntary));
            j.num("agent_invol_ctxsw_per_frame",
                  per_frame(agent_sw0.involuntary, agent_sw1.involuntary));
        }
        {
            // The latency distribution (us at fixed quantiles), for CDF plots.
            static constexpr double qs[] = {0.01,  0.05,  0.1,   0.2,    0.3,   0.4,  0.5,
                                            0.6,   0.7,   0.8,   0.9,    0.95,  0.98, 0.99,
                                            0.995, 0.998, 0.999, 0.9995, 0.9999};
            std::string a = "[";
            for (const double p : qs) {
                char b[64];
                std::snprintf(b, sizeof b, "%s[%g,%.2f]", a.size() > 1 ? "," : "", p, q(p));
                a += b;
            }
            j.raw("quantiles_us", a + "]");
        }
        j.raw("pipelining_refused", pipelining_refused ? "true" : "false");
        j.num("loadgen_cpu_us_per_frame", self_per_frame);
        if (have_agent_cpu)
            j.num("agent_cpu_us_per_frame", agent_per_frame);
        else
            j.raw("agent_cpu_us_per_frame", "null");
        j.str("first_error", total.first_error);
        j.raw("ok", ok ? "true" : "false");
        std::printf("%s}\n", j.text.c_str());
    } else {
        std::printf("spop-loadgen %s%s%s:%d  c=%d d=%d t=%d ids=%s mix=%s profile=%s %s",
                    o.label.empty() ? "" : "[", o.label.c_str(), o.label.empty() ? "" : "] ",
                    o.port, o.connections, o.depth, o.threads, name_of(o.ids), name_of(o.mix),
                    name_of(o.profile), o.rate > 0 ? "open-loop" : "closed-loop");
        if (o.rate > 0) std::printf(" rate=%.0f/s", o.rate);
        std::printf("%s\n", o.self_serve ? " (self-serve)" : "");
        std::printf("  frames     %" PRIu64 " in %.2f s window (%" PRIu64 " answered, %" PRIu64
                    " sent): %.0f frames/s\n",
                    frames, window_s, total.acked, total.sent, fps);
        std::printf("  latency us p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n",
                    q(0.50), q(0.90), q(0.99), q(0.999), static_cast<double>(total.hist.max()) / us,
                    total.hist.mean() / us);
        std::printf("  errors     invalid %" PRIu64 "  lost %" PRIu64 "  disconnects %" PRIu64
                    "  connect %" PRIu64 "  protocol %" PRIu64 "  goodbye %" PRIu64 "\n",
                    total.invalid, total.lost, total.disconnects, total.connect_errors,
                    total.protocol_errors, total.goodbye_missing);
        if (o.rate > 0)
            std::printf("  send lag   p50 %.1f  p99 %.1f  max %.1f us behind schedule; %" PRIu64
                        " scheduled sends never went out\n",
                        lag(0.5), lag(0.99), static_cast<double>(total.send_lag.max()) / us,
                        total.missed_sends);
        if (o.rate > 0)
            std::printf("  arrivals   %s; %" PRIu64 " waited for a free slot on their connection\n",
                        o.arrivals == arrival_kind::poisson ? "poisson" : "fixed", total.queued);
        if (pipelining_refused)
            std::printf("  note       the agent did not announce pipelining: depth 1\n");
        std::printf("  cpu        loadgen %.3f us/frame", self_per_frame);
        if (have_agent_cpu) std::printf(", agent %.3f us/frame", agent_per_frame);
        std::printf("\n");
        if (have_agent_sw)
            std::printf("  agent      %.3f voluntary + %.3f involuntary context switches/frame\n",
                        per_frame(agent_sw0.voluntary, agent_sw1.voluntary),
                        per_frame(agent_sw0.involuntary, agent_sw1.involuntary));
        if (!total.first_error.empty())
            std::printf("  first error: %s\n", total.first_error.c_str());
        std::printf("  result     %s\n", ok ? "OK" : "FAIL");
    }
    return ok ? 0 : 1;
}
