// spop-decide: writes live decisions to Redis for every agent started with --decisions.
//
//   spop-decide [--redis URL] add PREFIX [--score N] [--ttl SECONDS] [--reason TEXT]
//   spop-decide [--redis URL] del PREFIX
//   spop-decide [--redis URL] list
//   spop-decide [--redis URL] resync
//
// Each change is one MULTI/EXEC: the hash field and the stream entry together (the layout in
// decisions/entry.hpp and docs/decisions.md), so an agent never sees one without the other.
// Errors: one line "spop-decide: ..." on stderr; exit 2 for bad input, 1 when Redis fails.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <getopt.h>
#include <string>
#include <vector>

#include "decisions/entry.hpp"
#include "redis/url.hpp"

using namespace agent;
using namespace agent::decisions;

namespace {

int usage_error(const std::string& msg) {
    std::fprintf(stderr, "spop-decide: %s (see --help)\n", msg.c_str());
    return 2;
}
int redis_error(const std::string& msg) {
    std::fprintf(stderr, "spop-decide: %s\n", msg.c_str());
    return 1;
}

void usage() {
    std::printf(
        "Usage: spop-decide [--redis URL] add PREFIX [--score N] [--ttl SECONDS] [--reason TEXT]\n"
        "       spop-decide [--redis URL] del PREFIX\n"
        "       spop-decide [--redis URL] list\n"
        "       spop-decide [--redis URL] resync\n"
        "Writes live decisions for agents started with --decisions URL (docs/decisions.md).\n"
        "\n"
        "  --redis URL      redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH[?db=N]\n"
        "                   (default $SPOP_REDIS, else redis://127.0.0.1:6379/0)\n"
        "  --score N        0..100, the score the agents answer (default 0: banned)\n"
        "  --ttl SECONDS    lifetime (default 3600; 0 = until deleted)\n"
        "  --reason TEXT    up to 64 printable ASCII bytes; exported as the category\n"
        "                   variable when the agent has --category-var (default \"manual\")\n"
        "  --hash KEY       hash key (default spop:decisions)\n"
        "  --stream KEY     stream key (default spop:decisions:log)\n"
        "  --maxlen N       trim the stream to about N entries (default 100000)\n"
        "PREFIX: an IPv4 or IPv6 address or CIDR; host bits are cleared.\n");
}

bool parse_long(const char* s, long lo, long hi, long& out) {
    if (s == nullptr || *s == '\0') return false;
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) return false;
    out = v;
    return true;
}

using redis::get_reply;
using redis::reply_ptr;

std::string why(redisContext* c, const redisReply* r) {
    if (r == nullptr) return c->errstr[0] != '\0' ? c->errstr : "no reply";
    if (r->type == REDIS_REPLY_ERROR) return std::string(r->str, r->len);
    return "unexpected reply";
}

/// Runs the queued commands (appended after MULTI) and EXEC; returns EXEC's reply.
reply_ptr exec(redisContext* c, std::size_t queued, std::string& err) {
    for (std::size_t i = 0; i < queued + 1; ++i) { // MULTI and every QUEUED
        reply_ptr r = get_reply(c);
        if (!r || r->type != REDIS_REPLY_STATUS) {
            err = why(c, r.get());
            return nullptr;
        }
    }
    reply_ptr r = get_reply(c);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != queued) {
        err = why(c, r.get());
        return nullptr;
    }
    for (std::size_t i = 0; i < r->elements; ++i)
        if (r->element[i]->type == REDIS_REPLY_ERROR) {
            err = why(c, r->element[i]);
            return nullptr;
        }
    return r;
}

std::string utc(std::int64_t t) {
    if (t == 0) return "never";
    const std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char b[32];
    std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

} // namespace

int main(int argc, char** argv) {
    const char* env = std::getenv("SPOP_REDIS");
    std::string url = env != nullptr && *env != '\0' ? env : "redis://127.0.0.1:6379/0";
    std::string hash(default_hash_key), stream(default_stream_key), reason = "manual";
    long score = 0, ttl = 3600, maxlen = default_stream_maxlen, v = 0;
    bool have_score = false, have_ttl = false, have_reason = false;
    enum { o_redis = 256, o_score, o_ttl, o_reason, o_hash, o_stream, o_maxlen };
    static const option longs[] = {
        {"help", no_argument, nullptr, 'h'},
        {"redis", required_argument, nullptr, o_redis},
        {"score", required_argument, nullptr, o_score},
        {"ttl", required_argument, nullptr, o_ttl},
        {"reason", required_argument, nullptr, o_reason},
        {"hash", required_argument, nullptr, o_hash},
        {"stream", required_argument, nullptr, o_stream},
        {"maxlen", required_argument, nullptr, o_maxlen},
        {nullptr, 0, nullptr, 0},
    };
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longs, nullptr)) != -1) {
        switch (ch) {
        case 'h':
            usage();
            return 0;
        case o_redis:
            url = optarg;
            break;
        case o_score:
            if (!parse_long(optarg, 0, 100, v))
                return usage_error(std::string("invalid --score '") + optarg + "' (0..100)");
            score = v;
            have_score = true;
            break;
        case o_ttl:
            if (!parse_long(optarg, 0, 100L * 365 * 86400, v))
                return usage_error(std::string("invalid --ttl '") + optarg +
                                   "' (seconds, 0..100 years; 0 = until deleted)");
            ttl = v;
            have_ttl = true;
            break;
        case o_reason:
            reason = optarg;
            have_reason = true;
            if (!valid_reason(reason))
                return usage_error("invalid --reason: at most " + std::to_string(max_reason_bytes) +
                                   " bytes of printable ASCII");
            break;
        case o_hash:
        case o_stream:
            if (*optarg == '\0' || std::strlen(optarg) > 256)
                return usage_error("invalid key name (1..256 bytes)");
            (ch == o_hash ? hash : stream) = optarg;
            break;
        case o_maxlen:
            if (!parse_long(optarg, 1, 1L << 40, v)) return usage_error("invalid --maxlen");
            maxlen = v;
            break;
        case ':':
            return usage_error(std::string("missing argument for ") + argv[optind - 1]);
        default:
            return usage_error(std::string("unknown option ") + argv[optind - 1]);
        }
    }
    std::vector<std::string> args(argv + optind, argv + argc);
    if (args.empty()) return usage_error("missing command (add, del, list or resync)");
    const std::string cmd = args[0];
    const std::size_t want = cmd == "add" || cmd == "del" ? 2 : 1;
    if (cmd != "add" && cmd != "del" && cmd != "list" && cmd != "resync")
        return usage_error("unknown command '" + printable(cmd) + "' (add, del, list or resync)");
    if (args.size() < want) return usage_error(cmd + ": missing PREFIX");
    if (args.size() > want)
        return usage_error("unexpected argument '" + printable(args[want]) + "'");
    if (cmd != "add" && (have_score || have_ttl || have_reason))
        return usage_error("--score, --ttl and --reason go with add");

    decision d;
    std::string prefix;
    if (want == 2) {
        std::string err;
        if (!normalize_prefix(args[1], d.prefix, prefix, err))
            return usage_error("invalid PREFIX: " + err);
    }
    redis::endpoint ep;
    std::string err;
    if (!redis::parse_url(url, ep, err)) return usage_error("--redis: " + err);
    redis::context_ptr c = redis::connect(ep, timeval{5, 0}, err);
    if (!c) return redis_error("cannot connect to " + ep.describe() + ": " + err);

    const std::string ml = std::to_string(maxlen);
    if (cmd == "add") {
        d.score = static_cast<int>(score);
        d.expiry = ttl == 0 ? 0 : static_cast<std::int64_t>(std::time(nullptr)) + ttl;
        d.reason = reason;
        const std::string value = format_value(d);
        const std::string sc = std::to_string(d.score), ex = std::to_string(d.expiry);
        redisAppendCommand(c.get(), "MULTI");
        redisAppendCommand(c.get(), "HSET %b %b %b", hash.data(), hash.size(), prefix.data(),
                           prefix.size(), value.data(), value.size());
        const char* argvv[] = {"XADD",        stream.c_str(), "MAXLEN", "~",        ml.c_str(),
                               "*",           "op",           "add",    "prefix",   prefix.c_str(),
                               "score",       sc.c_str(),     "expiry", ex.c_str(), "reason",
                               reason.c_str()};
        redisAppendCommandArgv(c.get(), 16, argvv, nullptr);
        redisAppendCommand(c.get(), "EXEC");
        reply_ptr r = exec(c.get(), 2, err);
        if (!r) return redis_error("add " + prefix + ": " + err);
        std::printf("added %s score=%d expiry=%s reason=%s id=%.*s\n", prefix.c_str(), d.score,
                    utc(d.expiry).c_str(), reason.c_str(), static_cast<int>(r->element[1]->len),
                    r->element[1]->str);
        return 0;
    }
    if (cmd == "del" || cmd == "resync") {
        redisAppendCommand(c.get(), "MULTI");
        std::size_t queued = 1;
        if (cmd == "del") {
            redisAppendCommand(c.get(), "HDEL %b %b", hash.data(), hash.size(), prefix.data(),
                               prefix.size());
            redisAppendCommand(c.get(), "XADD %b MAXLEN ~ %b * op del prefix %b", stream.data(),
                               stream.size(), ml.data(), ml.size(), prefix.data(), prefix.size());
            queued = 2;
        } else {
            redisAppendCommand(c.get(), "XADD %b MAXLEN ~ %b * op resync", stream.data(),
                               stream.size(), ml.data(), ml.size());
        }
        redisAppendCommand(c.get(), "EXEC");
        reply_ptr r = exec(c.get(), queued, err);
        if (!r) return redis_error(cmd + ": " + err);
        if (cmd == "del")
            std::printf("deleted %s%s\n", prefix.c_str(),
                        r->element[0]->integer == 0 ? " (was not present)" : "");
        else
            std::printf("resync requested\n");
        return 0;
    }
    // list
    reply_ptr r(
        static_cast<redisReply*>(redisCommand(c.get(), "HGETALL %b", hash.data(), hash.size())));
    if (!r || r->type != REDIS_REPLY_ARRAY) return redis_error("list: " + why(c.get(), r.get()));
    struct row {
        std::string prefix, text;
    };
    std::vector<row> rows;
    const std::int64_t now = std::time(nullptr);
    for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
        const std::string_view k(r->element[i]->str, r->element[i]->len);
        const std::string_view val(r->element[i + 1]->str, r->element[i + 1]->len);
        decision x;
        std::string e;
        if (!parse_stored_prefix(k, x.prefix, e) || !parse_value(val, x, e)) {
            rows.push_back({std::string(k), printable(k) + " # malformed: " + e});
            continue;
        }
        rows.push_back({std::string(k), std::string(k) + " score=" + std::to_string(x.score) +
                                            " expiry=" + utc(x.expiry) +
                                            (x.expiry != 0 && x.expiry <= now ? " (expired)" : "") +
                                            " reason=" + x.reason});
    }
    std::sort(rows.begin(), rows.end(),
              [](const row& a, const row& b) { return a.prefix < b.prefix; });
    for (const auto& rw : rows) std::printf("%s\n", rw.text.c_str());
    return 0;
}
