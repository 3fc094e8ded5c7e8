#include "options.hpp"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <getopt.h>
#include <grp.h>
#include <string>
#include <string_view>

#include "iprep/parse.hpp"
#include "iprep/service.hpp"

namespace agent {

void print_usage(const char* argv0) {
    std::printf(
        "Usage: %s [options]\n"
        "An SPOP agent (SPOA) for HAProxy 2.6-3.4: IP reputation for `check-client-ip`.\n"
        "A drop-in replacement for HAProxy's spoa-example.\n"
        "\n"
        "Reference-compatible options:\n"
        "  -h, --help                  show this help and exit\n"
        "  -d, --debug                 debug logging (every connection, frame errors)\n"
        "  -p, --port PORT             TCP port to listen on (default 12345)\n"
        "  -n, --workers N             worker threads, one event loop each (default 5)\n"
        "  -m, --max-frame-size SIZE   largest frame accepted/sent, 256..16777216 (default 16380)\n"
        "  -c, --capability CAP        announce CAP; only `pipelining` is supported (on by "
        "default);\n"
        "                              `async` and `fragmentation` are refused\n"
        "\n"
        "Listening:\n"
        "  -a, --address ADDR          address to bind (IPv4 or IPv6; repeatable; default "
        "0.0.0.0;\n"
        "                              `::` alone listens on IPv6 and IPv4)\n"
        "  -u, --unix PATH             also listen on a Unix socket\n"
        "      --unix-mode MODE        the socket file's permissions, octal (e.g. 660; default:\n"
        "                              as the umask leaves them). HAProxy needs write access\n"
        "      --unix-group GROUP      the socket file's group (name or number), e.g. haproxy\n"
        "      --backlog N             listen backlog (default 4096; HAProxy opens ~50 "
        "connections\n"
        "                              at once after every start or reload)\n"
        "      --engine auto|uring|epoll  I/O engine (default auto: io_uring, else epoll with a "
        "warning)\n"
        "      --no-pipelining         do not announce pipelining (one NOTIFY in flight per "
        "connection)\n"
        "      --cpus LIST             pin worker i to the i-th CPU of LIST (taskset -c syntax,\n"
        "                              e.g. 0-3 or 0,2; round robin when -n is larger; default:\n"
        "                              the scheduler places them)\n"
        "      --batch-window-us US    io_uring: once a request is ready, wait up to US "
        "microseconds\n"
        "                              for more, so one wakeup serves several (less CPU per "
        "request,\n"
        "                              up to US more latency; kernel 6.12+; default 0 = off)\n"
        "\n"
        "Limits:\n"
        "      --max-connections N     total connections; more are refused (default 100000)\n"
        "      --max-in-flight N       NOTIFYs answered but not yet read by a peer before the "
        "agent\n"
        "                              stops reading from it (back-pressure; default 1000;\n"
        "                              HAProxy keeps at most 20 in flight)\n"
        "      --idle-timeout SEC      close established connections idle that long (nothing\n"
        "                              read or sent, no answer pending) with AGENT-DISCONNECT 2\n"
        "                              (default 0 = never; HAProxy pools them)\n"
        "      --hello-timeout SEC     close connections that send no HELLO in time (default 10)\n"
        "      --shutdown-timeout SEC  on SIGTERM, wait at most that long for peers (default 10)\n"
        "      --drain-idle SEC        on SIGTERM, listeners close at once but a connection is\n"
        "                              served until idle that long, then gets AGENT-DISCONNECT\n"
        "                              (lame duck; default 1, 0 = disconnect at once)\n"
        "      --deferred-timeout MS   a NOTIFY answered later (check-rate) that has no answer\n"
        "                              by then gets the fallback ACK (default 400; keep it below\n"
        "                              HAProxy's `timeout processing`)\n"
        "      --user NAME             drop privileges to NAME after binding\n"
        "\n"
        "Reputation (scores 0..100, 100 = trusted):\n"
        "      --default-score N|random  score for unlisted addresses (default random, as the "
        "reference)\n"
        "      --list FILE=SCORE       IP/CIDR list (FireHOL .ipset/.netset format); repeatable\n"
        "      --allow FILE            allow-list: listed addresses always score 100; repeatable\n"
        "      --csv FILE              Suricata-style `ip-or-cidr,category,score` lines; "
        "repeatable\n"
        "      --mmdb FILE             MaxMind DB (see README for the field-to-score mapping)\n"
        "      --max-file-size BYTES   largest reputation file accepted, with an optional K, M\n"
        "                              or G suffix (default 512M); a larger file fails the load\n"
        "      --category-var NAME     also set sess.<prefix>.NAME to the list's category\n"
        "      --var-name NAME         score variable name (default ip_score)\n"
        "                              (both: 1-40 characters of a-z A-Z 0-9 . _)\n"
        "\n"
        "Live decisions (Redis; docs/decisions.md):\n"
        "      --decisions URL         follow decisions in Redis "
        "(redis://[:PASSWORD@]HOST[:PORT][/DB]\n"
        "                              or unix:///PATH[?db=N]); they override list entries,\n"
        "                              not the allow-list; write them with spop-decide\n"
        "      --decisions-max N       most decisions held (default 1000000; more are refused)\n"
        "      --decisions-wait MS     wait that long for the first load before listening\n"
        "                              (default 2000; Redis down: start without decisions)\n"
        "Shared rate limits (message check-rate, counted in Redis; docs/rate-limits.md):\n"
        "      --rate-redis URL        count check-rate keys in this Redis:\n"
        "                              redis://[:PASSWORD@]HOST[:PORT][/DB] or "
        "unix:///PATH[?db=N];\n"
        "                              without it, check-rate gets the --rate-fail value\n"
        "      --rate-limit N          requests allowed per window when the message gives no\n"
        "                              `limit` (1..1000000000, default 100)\n"
        "      --rate-window SECONDS   sliding window when the message gives no `window`\n"
        "                              (1..604800, default 60)\n"
        "      --rate-fail open|closed answer when Redis is down or slow: open sets over_limit=0,\n"
        "                              closed sets over_limit=1 (default open)\n"
        "\n"
        "Operations:\n"
        "      --metrics ADDR:PORT     serve /metrics (Prometheus), /healthz and /readyz over "
        "HTTP\n"
        "                              (IPv4 only: Debian's civetweb has no IPv6)\n"
        "  -V, --version               print the version and exit\n"
        "\n"
        "Signals: SIGTERM/SIGINT stop gracefully (pending NOTIFYs answered, AGENT-DISCONNECT 0);\n"
        "SIGHUP reloads reputation files.\n",
        argv0);
}

namespace {

/// Digits only (a '-' only where negatives are allowed): from_chars, unlike strtol, takes no
/// leading blanks or '+', so `-p ' 80'` and `--unix-mode -0` are refused, not guessed at.
bool parse_number(const char* s, int base, long lo, long hi, long& out) {
    if (s == nullptr || *s == '\0' || (*s == '-' && lo >= 0)) return false;
    const std::string_view sv(s);
    long v = 0;
    const auto [end, ec] = std::from_chars(sv.data(), sv.data() + sv.size(), v, base);
    if (ec != std::errc{} || end != sv.data() + sv.size() || v < lo || v > hi) return false;
    out = v;
    return true;
}

bool parse_int(const char* s, long lo, long hi, long& out) {
    return parse_number(s, 10, lo, hi, out);
}

parse_outcome fail(const char* what, const char* arg) {
    if (arg)
        std::fprintf(stderr, "agent: %s: '%s' (see --help)\n", what, arg);
    else
        std::fprintf(stderr, "agent: %s (see --help)\n", what);
    return parse_outcome::exit_error;
}

enum long_only : int {
    opt_backlog = 256,
    opt_engine,
    opt_no_pipelining,
    opt_max_connections,
    opt_idle_timeout,
    opt_max_in_flight,
    opt_hello_timeout,
    opt_shutdown_timeout,
    opt_drain_idle,
    opt_deferred_timeout,
    opt_user,
    opt_unix_mode,
    opt_unix_group,
    opt_default_score,
    opt_list,
    opt_allow,
    opt_csv,
    opt_mmdb,
    opt_max_file_size,
    opt_category_var,
    opt_var_name,
    opt_metrics,
    // Live decisions.
    opt_decisions = 400,
    opt_decisions_max,
    opt_decisions_wait,
    // Shared rate limits.
    opt_rate_redis,
    opt_rate_limit,
    opt_rate_window,
    opt_rate_fail,
};

/// HAProxy variable names: only a-z, A-Z, 0-9, '.' and '_' (anything else cannot be declared
/// in its configuration, so the variable would never be set).
bool valid_var_chars(std::string_view n) {
    for (const char c : n)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_'))
            return false;
    return true;
}

/// --batch-window-us (issue 14) and --cpus: long options outside the enum above.
constexpr int opt_batch_window_us = 1000;
constexpr int opt_cpus = 1001;

/// Refuses variable names HAProxy would never set, and a -m the ACK for a single
/// check-client-ip message can never fit.
parse_outcome check_variables(const options& o) {
    char msg[320];
    const struct {
        const char* flag;
        const std::string& name;
    } vars[] = {{"--var-name", o.var_name}, {"--category-var", o.category_var}};
    for (const auto& v : vars) {
        if (!v.name.empty() && !valid_var_chars(v.name)) {
            std::snprintf(msg, sizeof msg,
                          "%s: HAProxy variable names may only contain a-z A-Z 0-9 . _", v.flag);
            return fail(msg, nullptr);
        }
    }
    if (o.category_var == o.var_name)
        return fail("--category-var must differ from --var-name", o.category_var.c_str());
    iprep::service_config c;
    c.var_name = o.var_name;
    c.category_var = o.category_var;
    const std::size_t worst = max_single_message_ack(c);
    if (worst > o.max_frame_size) {
        std::snprintf(msg, sizeof msg,
                      "the ACK for one check-client-ip message (a score%s) can take %zu bytes, "
                      "above --max-frame-size %u: shorten the variable names or raise -m",
                      o.category_var.empty() ? "" : " and a 64-byte category", worst,
                      o.max_frame_size);
        return fail(msg, nullptr);
    }
    for (const auto& v : vars) {
        if (v.name.size() > max_var_name_length) {
            std::snprintf(msg, sizeof msg,
                          "%s is %zu bytes, above %zu: HAProxy drops a variable whose full "
                          "name sess.<var-prefix>.<name> reaches 64 bytes",
                          v.flag, v.name.size(), max_var_name_length);
            return fail(msg, nullptr);
        }
    }
    return parse_outcome::run;
}

} // namespace

parse_outcome parse_options(int argc, char** argv, options& o) {
    static const option longs[] = {
        {"help", no_argument, nullptr, 'h'},
        {"debug", no_argument, nullptr, 'd'},
        {"port", required_argument, nullptr, 'p'},
        {"workers", required_argument, nullptr, 'n'},
        {"max-frame-size", required_argument, nullptr, 'm'},
        {"capability", required_argument, nullptr, 'c'},
        {"address", required_argument, nullptr, 'a'},
        {"unix", required_argument, nullptr, 'u'},
        {"version", no_argument, nullptr, 'V'},
        {"backlog", required_argument, nullptr, opt_backlog},
        {"engine", required_argument, nullptr, opt_engine},
        {"no-pipelining", no_argument, nullptr, opt_no_pipelining},
        {"batch-window-us", required_argument, nullptr, opt_batch_window_us},
        {"cpus", required_argument, nullptr, opt_cpus},
        {"max-connections", required_argument, nullptr, opt_max_connections},
        {"idle-timeout", required_argument, nullptr, opt_idle_timeout},
        {"max-in-flight", required_argument, nullptr, opt_max_in_flight},
        {"hello-timeout", required_argument, nullptr, opt_hello_timeout},
        {"shutdown-timeout", required_argument, nullptr, opt_shutdown_timeout},
        {"drain-idle", required_argument, nullptr, opt_drain_idle},
        {"deferred-timeout", required_argument, nullptr, opt_deferred_timeout},
        {"user", required_argument, nullptr, opt_user},
        {"unix-mode", required_argument, nullptr, opt_unix_mode},
        {"unix-group", required_argument, nullptr, opt_unix_group},
        {"default-score", required_argument, nullptr, opt_default_score},
        {"list", required_argument, nullptr, opt_list},
        {"allow", required_argument, nullptr, opt_allow},
        {"csv", required_argument, nullptr, opt_csv},
        {"mmdb", required_argument, nullptr, opt_mmdb},
        {"max-file-size", required_argument, nullptr, opt_max_file_size},
        {"category-var", required_argument, nullptr, opt_category_var},
        {"var-name", required_argument, nullptr, opt_var_name},
        {"metrics", required_argument, nullptr, opt_metrics},
        {"decisions", required_argument, nullptr, opt_decisions},
        {"decisions-max", required_argument, nullptr, opt_decisions_max},
        {"decisions-wait", required_argument, nullptr, opt_decisions_wait},
        {"rate-redis", required_argument, nullptr, opt_rate_redis},
        {"rate-limit", required_argument, nullptr, opt_rate_limit},
        {"rate-window", required_argument, nullptr, opt_rate_window},
        {"rate-fail", required_argument, nullptr, opt_rate_fail},
        {nullptr, 0, nullptr, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    long v = 0;
    while ((c = getopt_long(argc, argv, ":hdp:n:m:c:a:u:V", longs, nullptr)) != -1) {
        switch (c) {
        case 'h':
            print_usage(argv[0]);
            return parse_outcome::exit_ok;
        case 'V':
            std::printf("agent (spop) 0.1.0\n");
            return parse_outcome::exit_ok;
        case 'd':
            o.debug = true;
            break;
        case 'p':
            if (!parse_int(optarg, 1, 65535, v)) return fail("invalid port (1..65535)", optarg);
            o.port = static_cast<int>(v);
            break;
        case 'n':
            if (!parse_int(optarg, 1, 256, v))
                return fail("invalid number of workers (1..256)", optarg);
            o.workers = static_cast<int>(v);
            break;
        case 'm':
            if (!parse_int(optarg, 256, 16777216, v))
                return fail("invalid max-frame-size (256..16777216)", optarg);
            o.max_frame_size = static_cast<std::uint32_t>(v);
            break;
        case 'c': {
            const std::string_view cap = optarg;
            if (cap == "pipelining") {
                o.pipelining = true;
            } else if (cap == "async") {
                return fail("capability not supported: async (removed in HAProxy 3.1; ACKs always "
                            "go back on the NOTIFY's connection)",
                            nullptr);
            } else if (cap == "fragmentation") {
                return fail("capability not supported: fragmentation (HAProxy 3.1+ removed it; "
                            "raise -m instead)",
                            nullptr);
            } else {
                return fail("unknown capability", optarg);
            }
            break;
        }
        case 'a':
            if (*optarg == '\0') return fail("empty --address", nullptr);
            o.addresses.emplace_back(optarg);
            break;
        case 'u':
            if (*optarg == '\0') return fail("empty --unix path", nullptr);
            o.unix_path = optarg;
            break;
        case opt_backlog:
            if (!parse_int(optarg, 1, 1 << 20, v)) return fail("invalid backlog", optarg);
            o.backlog = static_cast<int>(v);
            break;
        case opt_engine: {
            const std::string_view e = optarg;
            if (e == "auto")
                o.engine = engine_kind::automatic;
            else if (e == "uring" || e == "io_uring")
                o.engine = engine_kind::uring;
            else if (e == "epoll")
                o.engine = engine_kind::epoll;
            else
                return fail("invalid engine (auto, uring or epoll)", optarg);
            break;
        }
        case opt_no_pipelining:
            o.pipelining = false;
            break;
        case opt_batch_window_us:
            if (!parse_int(optarg, 0, 100000, v))
                return fail("invalid batch-window-us (0..100000)", optarg);
            o.batch_window_us = static_cast<std::uint32_t>(v);
            break;
        case opt_cpus: {
            std::string why;
            if (!spop::server::parse_cpu_list(optarg, o.cpus, why))
                return fail(("--cpus: " + why).c_str(), nullptr);
            break;
        }
        case opt_max_connections:
            if (!parse_int(optarg, 1, 10000000, v)) return fail("invalid max-connections", optarg);
            o.max_connections = static_cast<std::uint32_t>(v);
            break;
        case opt_max_in_flight:
            if (!parse_int(optarg, 1, 1000000, v))
                return fail("invalid max-in-flight (1..1000000)", optarg);
            o.max_in_flight = static_cast<std::uint32_t>(v);
            break;
        case opt_idle_timeout:
            if (!parse_int(optarg, 0, 86400 * 7, v)) return fail("invalid idle-timeout", optarg);
            o.idle_timeout_s = static_cast<std::uint32_t>(v);
            break;
        case opt_hello_timeout:
            if (!parse_int(optarg, 1, 3600, v))
                return fail("invalid hello-timeout (1..3600)", optarg);
            o.hello_timeout_s = static_cast<std::uint32_t>(v);
            break;
        case opt_shutdown_timeout:
            if (!parse_int(optarg, 0, 3600, v)) return fail("invalid shutdown-timeout", optarg);
            o.shutdown_timeout_s = static_cast<std::uint32_t>(v);
            break;
        case opt_drain_idle:
            if (!parse_int(optarg, 0, 3600, v)) return fail("invalid drain-idle", optarg);
            o.drain_idle_s = static_cast<std::uint32_t>(v);
            break;
        case opt_deferred_timeout:
            if (!parse_int(optarg, 1, 600000, v))
                return fail("invalid deferred-timeout (1..600000 ms)", optarg);
            o.deferred_timeout_ms = static_cast<std::uint32_t>(v);
            break;
        case opt_unix_mode: {
            long m = 0;
            if (!parse_number(optarg, 8, 0, 07777, m))
                return fail("invalid --unix-mode (octal permissions, e.g. 660)", optarg);
            o.unix_mode = static_cast<int>(m);
            break;
        }
        case opt_unix_group: {
            if (*optarg == '\0') return fail("empty --unix-group", nullptr);
            if (parse_int(optarg, 0, 0x7FFFFFFF, v)) {
                o.unix_gid = static_cast<int>(v);
            } else if (const group* g = ::getgrnam(optarg); g != nullptr) {
                o.unix_gid = static_cast<int>(g->gr_gid);
            } else {
                return fail("unknown --unix-group", optarg);
            }
            break;
        }
        case opt_user:
            // An unset variable in a unit ("--user $AGENT_USER") must not mean "stay root".
            if (*optarg == '\0') return fail("empty --user", nullptr);
            o.user = optarg;
            break;
        case opt_default_score:
            if (std::string_view(optarg) == "random") {
                o.default_score = -1;
            } else {
                if (!parse_int(optarg, 0, 100, v))
                    return fail("invalid default-score (0..100 or random)", optarg);
                o.default_score = static_cast<int>(v);
            }
            break;
        case opt_list: {
            const std::string_view s = optarg;
            const std::size_t eq = s.rfind('=');
            if (eq == std::string_view::npos || eq == 0)
                return fail("invalid --list, expected FILE=SCORE", optarg);
            const std::string score(s.substr(eq + 1));
            if (!parse_int(score.c_str(), 0, 100, v))
                return fail("invalid --list score (0..100)", optarg);
            o.lists.push_back({std::string(s.substr(0, eq)), static_cast<int>(v)});
            break;
        }
        case opt_allow:
            if (*optarg == '\0') return fail("empty --allow", nullptr);
            o.allow_lists.emplace_back(optarg);
            break;
        case opt_csv:
            if (*optarg == '\0') return fail("empty --csv", nullptr);
            o.csv_files.emplace_back(optarg);
            break;
        case opt_mmdb:
            if (*optarg == '\0') return fail("empty --mmdb", nullptr);
            o.mmdb = optarg;
            break;
        case opt_max_file_size:
            if (!iprep::parse_size(optarg, o.max_file_size))
                return fail("invalid --max-file-size (BYTES with an optional K, M or G suffix)",
                            optarg);
            break;
        case opt_category_var:
            if (*optarg == '\0') return fail("empty --category-var", nullptr);
            o.category_var = optarg;
            break;
        case opt_var_name:
            if (*optarg == '\0') return fail("empty --var-name", nullptr);
            o.var_name = optarg;
            break;
        case opt_metrics:
            if (*optarg == '\0') return fail("empty --metrics", nullptr);
            o.metrics = optarg;
            break;
        case opt_decisions:
            if (*optarg == '\0') return fail("empty --decisions", nullptr);
            o.decisions = optarg;
            break;
        case opt_decisions_max:
            if (!parse_int(optarg, 1, 30000000, v))
                return fail("invalid --decisions-max (1..30000000)", optarg);
            o.decisions_max = static_cast<std::size_t>(v);
            break;
        case opt_decisions_wait:
            if (!parse_int(optarg, 0, 600000, v))
                return fail("invalid --decisions-wait (0..600000 ms)", optarg);
            o.decisions_wait_ms = static_cast<unsigned>(v);
            break;
        case opt_rate_redis:
            if (*optarg == '\0') return fail("empty --rate-redis", nullptr);
            o.rate_redis = optarg;
            break;
        case opt_rate_limit:
            if (!parse_int(optarg, 1, 1000000000, v))
                return fail("invalid --rate-limit (1..1000000000)", optarg);
            o.rate_limit = static_cast<std::uint32_t>(v);
            break;
        case opt_rate_window:
            if (!parse_int(optarg, 1, 604800, v))
                return fail("invalid --rate-window (1..604800 seconds)", optarg);
            o.rate_window_s = static_cast<std::uint32_t>(v);
            break;
        case opt_rate_fail:
            if (std::string_view(optarg) == "open")
                o.rate_fail_closed = false;
            else if (std::string_view(optarg) == "closed")
                o.rate_fail_closed = true;
            else
                return fail("invalid --rate-fail (open or closed)", optarg);
            break;
        case ':':
            return fail("missing argument for option", argv[optind - 1]);
        default: {
            // A short option by its letter: inside a bundle such as -zd, getopt has not moved
            // past it yet and argv[optind - 1] is the argument before (optopt is 0 for a long one).
            const char short_opt[] = {'-', static_cast<char>(optopt), '\0'};
            return fail("unknown option", optopt != 0 ? short_opt : argv[optind - 1]);
        }
        }
    }
    if (optind < argc) return fail("unexpected argument", argv[optind]);
    if ((o.unix_mode >= 0 || o.unix_gid >= 0) && o.unix_path.empty())
        return fail("--unix-mode and --unix-group need --unix PATH", nullptr);
    return check_variables(o);
}

} // namespace agent
