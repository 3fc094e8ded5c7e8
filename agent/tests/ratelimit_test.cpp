// Shared rate limits without a Redis: check-rate arguments, the script's reply checks, the
// Redis key, the worker -> Redis thread ring, and the Redis thread answering tickets from its
// own thread when Redis cannot be reached (the TSan build runs this one too).
#include <gtest/gtest.h>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <spawn.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <spop/actions.hpp>
#include <spop/frame.hpp>

#include "../ratelimit/args.hpp"
#include "../ratelimit/gateway.hpp"
#include "../ratelimit/limiter.hpp"
#include "../ratelimit/script.hpp"

using namespace agent::ratelimit;

namespace {

rate_args capture(std::initializer_list<std::pair<std::string_view, spop::value>> args) {
    rate_args a;
    a.begin();
    for (const auto& [n, v] : args) a.arg(n, v);
    a.end();
    return a;
}

} // namespace

TEST(RateArgs, NamedArguments) {
    const rate_args a = capture({{"key", spop::value::from_string("alice")},
                                 {"limit", spop::value::from_int64(10)},
                                 {"window", spop::value::from_int64(30)}});
    EXPECT_TRUE(a.seen);
    ASSERT_TRUE(a.have_key);
    EXPECT_EQ(a.key_view(), "alice");
    EXPECT_EQ(a.limit, 10u);
    EXPECT_EQ(a.window_s, 30u);
    EXPECT_FALSE(a.bad_arg);
}

TEST(RateArgs, PositionalArgumentsAndTypes) {
    const std::uint8_t v4[4] = {192, 0, 2, 7};
    rate_args a = capture({{"", spop::value::from_ipv4(v4)},
                           {"", spop::value::from_string("5")},
                           {"", spop::value::from_uint32(2)}});
    ASSERT_TRUE(a.have_key);
    EXPECT_EQ(a.key_view(), "192.0.2.7");
    EXPECT_EQ(a.limit, 5u);
    EXPECT_EQ(a.window_s, 2u);

    std::uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8};
    v6[15] = 1;
    a = capture({{"key", spop::value::from_ipv6(v6)}});
    EXPECT_EQ(a.key_view(), "2001:db8::1");
    EXPECT_EQ(a.limit, 0u) << "not given: the default applies";

    a = capture({{"key", spop::value::from_int64(-42)}});
    EXPECT_EQ(a.key_view(), "-42");
    a = capture({{"key", spop::value::from_binary(std::string_view("\0\1x", 3))}});
    EXPECT_EQ(a.key_view(), std::string_view("\0\1x", 3));
}

TEST(RateArgs, NoUsableKey) {
    EXPECT_FALSE(capture({{"key", spop::value::null()}}).have_key);
    EXPECT_FALSE(capture({{"key", spop::value::from_string("")}}).have_key);
    EXPECT_FALSE(capture({{"key", spop::value::from_bool(true)}}).have_key);
    EXPECT_FALSE(capture({{"limit", spop::value::from_int64(3)}}).have_key);
}

TEST(RateArgs, HugeKeyIsRefusedNotCopied) {
    const std::string big(max_key_bytes + 1, 'k');
    rate_args a = capture({{"key", spop::value::from_string(big)}});
    EXPECT_TRUE(a.have_key);
    EXPECT_TRUE(a.key_too_long());
    EXPECT_EQ(a.key_len, max_key_bytes + 1);
    const std::string fits(max_key_bytes, 'k');
    a = capture({{"key", spop::value::from_string(fits)}});
    EXPECT_FALSE(a.key_too_long());
    EXPECT_EQ(a.key_view(), fits);
}

TEST(RateArgs, BadLimitsFallBackToDefaults) {
    for (const spop::value& v :
         {spop::value::from_int64(0), spop::value::from_int64(-5),
          spop::value::from_uint64(std::uint64_t{max_limit} + 1), spop::value::from_string("10x"),
          spop::value::from_string(""), spop::value::from_bool(true)}) {
        const rate_args a = capture({{"key", spop::value::from_string("k")}, {"limit", v}});
        EXPECT_TRUE(a.bad_arg);
        EXPECT_EQ(a.limit, 0u);
    }
    const rate_args a = capture({{"key", spop::value::from_string("k")},
                                 {"window", spop::value::from_int64(max_window_s + 1)}});
    EXPECT_TRUE(a.bad_arg);
    EXPECT_EQ(a.window_s, 0u);
    // NULL (a sample HAProxy could not fetch) is "not given", not an error.
    EXPECT_FALSE(
        capture({{"key", spop::value::from_string("k")}, {"limit", spop::value::null()}}).bad_arg);
}

namespace {
redisReply integer(long long v) {
    redisReply r{};
    r.type = REDIS_REPLY_INTEGER;
    r.integer = v;
    return r;
}
} // namespace

TEST(ScriptReply, CountsAndShapes) {
    redisReply a = integer(7), b = integer(0);
    redisReply* el[3] = {&a, &b, &b};
    redisReply arr{};
    arr.type = REDIS_REPLY_ARRAY;
    arr.elements = 2;
    arr.element = el;
    count_reply c = parse_reply(&arr);
    EXPECT_EQ(c.kind, reply_kind::count);
    EXPECT_EQ(c.rate, 7u);
    EXPECT_FALSE(c.over);
    b = integer(1);
    c = parse_reply(&arr);
    EXPECT_EQ(c.kind, reply_kind::count);
    EXPECT_TRUE(c.over);

    b = integer(2); // over must be 0 or 1
    EXPECT_EQ(parse_reply(&arr).kind, reply_kind::error);
    b = integer(0);
    a = integer(-1);
    EXPECT_EQ(parse_reply(&arr).kind, reply_kind::error);
    a = integer(3);
    arr.elements = 3;
    EXPECT_EQ(parse_reply(&arr).kind, reply_kind::error);
    arr.elements = 1;
    EXPECT_EQ(parse_reply(&arr).kind, reply_kind::error);
    arr.elements = 2;
    char text[] = "7";
    a.type = REDIS_REPLY_STRING;
    a.str = text;
    a.len = 1;
    EXPECT_EQ(parse_reply(&arr).kind, reply_kind::error);
    redisReply i = integer(5);
    EXPECT_EQ(parse_reply(&i).kind, reply_kind::error);
    EXPECT_EQ(parse_reply(nullptr).kind, reply_kind::error);
    redisReply nil{};
    nil.type = REDIS_REPLY_NIL;
    EXPECT_EQ(parse_reply(&nil).kind, reply_kind::error);
}

TEST(ScriptReply, Errors) {
    char noscript[] = "NOSCRIPT No matching script. Please use EVAL.";
    redisReply e{};
    e.type = REDIS_REPLY_ERROR;
    e.str = noscript;
    e.len = std::strlen(noscript);
    EXPECT_EQ(parse_reply(&e).kind, reply_kind::noscript);
    char oom[] = "OOM command not allowed";
    e.str = oom;
    e.len = std::strlen(oom);
    EXPECT_EQ(parse_reply(&e).kind, reply_kind::error);
}

TEST(ScriptReply, Sha) {
    char sha[41];
    char good[] = "0123456789abcdef0123456789abcdef01234567";
    redisReply r{};
    r.type = REDIS_REPLY_STRING;
    r.str = good;
    r.len = 40;
    ASSERT_TRUE(parse_sha(&r, sha));
    EXPECT_STREQ(sha, good);
    char upper[] = "0123456789ABCDEF0123456789abcdef01234567";
    r.str = upper;
    EXPECT_FALSE(parse_sha(&r, sha));
    r.str = good;
    r.len = 39;
    EXPECT_FALSE(parse_sha(&r, sha));
    r.len = 40;
    r.type = REDIS_REPLY_STATUS;
    EXPECT_FALSE(parse_sha(&r, sha));
    EXPECT_FALSE(parse_sha(nullptr, sha));
}

TEST(Script, RedisKey) {
    char buf[redis_key_room(max_key_bytes)];
    std::size_t n = redis_key(buf, "192.0.2.7", 60000);
    EXPECT_EQ(std::string_view(buf, n), "spop:rate:{192.0.2.7}:60000");
    const std::string big(max_key_bytes, 'x');
    n = redis_key(buf, big, 4294967295u);
    EXPECT_EQ(n, redis_key_room(max_key_bytes));
    EXPECT_EQ(std::string_view(buf, n).substr(n - 12), "}:4294967295");
}

// A deferral for tests: tickets whose ACKs are decoded when finished, from any thread.
class fake_deferral final : public spop::deferral {
  public:
    explicit fake_deferral(std::size_t n) : bufs_(n), writers_(n) {}
    spop::ticket open(std::uint64_t, std::uint64_t sid, std::uint64_t fid,
                      std::uint32_t mfs) noexcept override {
        const auto id = static_cast<std::uint32_t>(next_++);
        writers_[id] = spop::ack_writer({bufs_[id].data(), bufs_[id].size()}, sid, fid, mfs);
        return spop::ticket(this, id);
    }
    bool available() const noexcept override { return true; }
    spop::ack_writer& writer(std::uint32_t id) noexcept override { return writers_[id]; }
    void finish(std::uint32_t id, bool abandoned) noexcept override {
        std::map<std::string, std::uint64_t> vars;
        if (!abandoned) {
            const spop::result w = writers_[id].finish();
            spop::frame fr;
            if (w && spop::decode_frame_body({bufs_[id].data() + 4, w.consumed - 4}, fr)) {
                struct h {
                    std::map<std::string, std::uint64_t>* v;
                    spop::action on_set_var(spop::var_scope, std::string_view n,
                                            const spop::value& val) {
                        (*v)[std::string(n)] = val.as_uint();
                        return spop::action::proceed;
                    }
                    spop::action on_unset_var(spop::var_scope, std::string_view) {
                        return spop::action::proceed;
                    }
                } hh{&vars};
                (void)spop::parse_actions(fr.payload, hh);
            }
        }
        std::lock_guard<std::mutex> g(m_);
        done_.push_back({abandoned, std::move(vars)});
        cv_.notify_all();
    }
    struct result_t {
        bool abandoned;
        std::map<std::string, std::uint64_t> vars;
    };
    std::vector<result_t> wait(std::size_t n, std::chrono::milliseconds limit) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait_for(lk, limit, [&] { return done_.size() >= n; });
        return done_;
    }

  private:
    std::vector<std::array<std::uint8_t, 256>> bufs_;
    std::vector<spop::ack_writer> writers_;
    std::atomic<std::size_t> next_{0};
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<result_t> done_;
};

TEST(Ring, OrderAndCapacity) {
    fake_deferral d(16);
    ring r(4);
    EXPECT_EQ(r.capacity(), 4u);
    for (int i = 0; i < 4; ++i) {
        spop::ticket t = d.open(0, 1, static_cast<std::uint64_t>(i), 16380);
        const std::string k = "k" + std::to_string(i);
        ASSERT_TRUE(r.push(t, k, 1, 1000, 0));
        EXPECT_FALSE(t) << "moved into the ring";
    }
    spop::ticket extra = d.open(0, 1, 9, 16380);
    EXPECT_FALSE(r.push(extra, "x", 1, 1000, 0));
    EXPECT_TRUE(extra) << "a full ring leaves the ticket with the caller";
    extra.complete();
    std::vector<std::string> keys;
    r.drain(
        [&](request& q) {
            keys.emplace_back(q.key, q.key_len);
            q.t.complete();
        },
        100);
    EXPECT_EQ(keys, (std::vector<std::string>{"k0", "k1", "k2", "k3"}));
    EXPECT_FALSE(r.nonempty());
}

namespace {
/// A loopback TCP port nothing listens on (bound, then closed).
std::uint16_t closed_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    (void)::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}
} // namespace

// Redis unreachable: every request, pushed by two worker threads at once, is answered from the
// Redis thread with the fail value (closed: over_limit = 1, no rate) well within the budget.
TEST(Limiter, DownRedisAnswersFailValueFromItsThread) {
    constexpr int per_worker = 500;
    config cfg;
    cfg.enabled = true;
    cfg.fail = fail_policy::closed;
    gateway g(2, 1024, cfg);
    agent::redis::endpoint ep;
    ep.host = "127.0.0.1";
    ep.port = closed_port();
    limiter lim(g, ep, 300);
    lim.start();
    fake_deferral d(2 * per_worker);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int w = 0; w < 2; ++w) {
        workers.emplace_back([&, w] {
            for (int i = 0; i < per_worker; ++i) {
                spop::ticket t = d.open(0, 1, static_cast<std::uint64_t>(i), 16380);
                // Appended, not "w" + ...: GCC 12 at -O3 warns -Wrestrict on that (a false
                // positive in char_traits), and warnings are errors here.
                std::string key = "w";
                key += std::to_string(w);
                key += '-';
                key += std::to_string(i);
                while (!g.submit(g.at(w), t, key, 10, 60000, now_ns()))
                    std::this_thread::yield(); // ring full: the Redis thread drains it
            }
        });
    }
    for (auto& t : workers) t.join();
    const auto res = d.wait(2 * per_worker, std::chrono::seconds(5));
    const auto took = std::chrono::steady_clock::now() - t0;
    lim.stop();
    ASSERT_EQ(res.size(), 2u * per_worker);
    for (const auto& r : res) {
        EXPECT_FALSE(r.abandoned);
        ASSERT_EQ(r.vars.count("over_limit"), 1u);
        EXPECT_EQ(r.vars.at("over_limit"), 1u);
        EXPECT_EQ(r.vars.count("rate"), 0u) << "no count when Redis is down";
    }
    EXPECT_LT(took, std::chrono::seconds(2));
    const thread_counters& tc = g.redis_counters();
    EXPECT_EQ(tc.fails[static_cast<int>(fail_reason::down)].get(), 2u * per_worker);
    EXPECT_EQ(tc.up.get(), 0u);
    EXPECT_GE(tc.connect_failures.get(), 1u);
}

namespace {
/// A private redis-server on a free loopback port, or pid 0 when it is not installed.
struct redis_process {
    pid_t pid = 0;
    std::uint16_t port = 0;
    redis_process() {
        port = closed_port();
        const std::string p = std::to_string(port);
        const char* argv[] = {"redis-server", "--port", p.c_str(),      "--bind", "127.0.0.1",
                              "--save",       "",       "--appendonly", "no",     nullptr};
        if (posix_spawnp(&pid, "redis-server", nullptr, nullptr, const_cast<char**>(argv),
                         environ) != 0) {
            pid = 0;
            return;
        }
        for (int i = 0; i < 250; ++i) { // up to 5 s for it to listen
            const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(port);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
            ::close(fd);
            if (up) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    ~redis_process() {
        if (pid == 0) return;
        ::kill(pid, SIGKILL);
        int st = 0;
        ::waitpid(pid, &st, 0);
    }
};
} // namespace

// With a real Redis (when redis-server is installed): two producer threads, one key, pipelined
// through the Redis thread; every request gets a distinct count 1..N and exactly N - limit are
// over. Exercises the completion path across threads (the TSan build runs it).
TEST(Limiter, CountsWithRealRedis) {
    redis_process redis;
    if (redis.pid == 0) GTEST_SKIP() << "redis-server is not installed";
    constexpr int per_worker = 500;
    constexpr std::uint32_t limit = 600;
    config cfg;
    cfg.enabled = true;
    gateway g(2, 1024, cfg);
    agent::redis::endpoint ep;
    ep.host = "127.0.0.1";
    ep.port = redis.port;
    limiter lim(g, ep, 2000);
    lim.start();
    fake_deferral d(2 * per_worker);
    const std::string key = "unit-" + std::to_string(::getpid());
    std::vector<std::thread> workers;
    for (int w = 0; w < 2; ++w) {
        workers.emplace_back([&, w] {
            for (int i = 0; i < per_worker; ++i) {
                spop::ticket t = d.open(0, 1, static_cast<std::uint64_t>(i), 16380);
                while (!g.submit(g.at(w), t, key, limit, 60000, now_ns()))
                    std::this_thread::yield();
            }
        });
    }
    for (auto& t : workers) t.join();
    const auto res = d.wait(2 * per_worker, std::chrono::seconds(20));
    lim.stop();
    ASSERT_EQ(res.size(), 2u * per_worker);
    std::vector<std::uint64_t> rates;
    int over = 0;
    for (const auto& r : res) {
        ASSERT_EQ(r.vars.count("rate"), 1u) << "every request counted";
        rates.push_back(r.vars.at("rate"));
        over += r.vars.at("over_limit") == 1 ? 1 : 0;
        EXPECT_EQ(r.vars.at("over_limit") == 1, r.vars.at("rate") > limit);
    }
    std::sort(rates.begin(), rates.end());
    for (std::size_t i = 0; i < rates.size(); ++i) ASSERT_EQ(rates[i], i + 1);
    EXPECT_EQ(over, 2 * per_worker - static_cast<int>(limit));
    const thread_counters& tc = g.redis_counters();
    EXPECT_EQ(tc.answered.get(), 2u * per_worker);
    EXPECT_GE(tc.commands.get(), tc.batches.get());
}
