// The worker's side of check-rate in the agent's service (iprep::service): the NOTIFY is
// deferred and queued without allocating, and a NOTIFY that also carries check-client-ip gets
// its score written into the deferred ACK.
#include <gtest/gtest.h>

#include "../../tests/support/counting_new.hpp"

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include <spop/actions.hpp>
#include <spop/frame.hpp>
#include <spop/writer.hpp>

#include "../iprep/service.hpp"
#include "../ratelimit/gateway.hpp"

using namespace agent;

// Every allocation of this test executable is counted (tests/support/counting_new.hpp; this is
// its one translation unit that includes it): the worker's check-rate path must make none.
namespace {

/// Tickets whose ACK bytes stay readable after completion.
class keep_deferral final : public spop::deferral {
  public:
    static constexpr std::uint32_t n = 256;
    keep_deferral() {
        bufs_.resize(n);
        writers_.resize(n);
        done_.assign(n, 0);
    }
    spop::ticket open(std::uint64_t, std::uint64_t sid, std::uint64_t fid,
                      std::uint32_t mfs) noexcept override {
        const std::uint32_t id = next_++ % n;
        writers_[id] = spop::ack_writer({bufs_[id].data(), bufs_[id].size()}, sid, fid, mfs);
        done_[id] = 0;
        return spop::ticket(this, id);
    }
    bool available() const noexcept override { return true; }
    spop::ack_writer& writer(std::uint32_t id) noexcept override { return writers_[id]; }
    void finish(std::uint32_t id, bool abandoned) noexcept override {
        done_[id] = abandoned ? 2 : 1;
        if (!abandoned) sizes_[id] = writers_[id].finish().consumed;
    }
    /// SET-VAR name -> integer value of ticket `id`'s ACK.
    std::vector<std::pair<std::string, std::uint64_t>> vars(std::uint32_t id) {
        std::vector<std::pair<std::string, std::uint64_t>> out;
        spop::frame fr;
        if (!spop::decode_frame_body({bufs_[id].data() + 4, sizes_[id] - 4}, fr)) return out;
        struct h {
            decltype(out)* o;
            spop::action on_set_var(spop::var_scope, std::string_view name, const spop::value& v) {
                o->emplace_back(std::string(name), v.as_uint());
                return spop::action::proceed;
            }
            spop::action on_unset_var(spop::var_scope, std::string_view) {
                return spop::action::proceed;
            }
        } hh{&out};
        (void)spop::parse_actions(fr.payload, hh);
        return out;
    }
    int done(std::uint32_t id) const { return done_[id]; }

  private:
    std::vector<std::array<std::uint8_t, 512>> bufs_;
    std::vector<spop::ack_writer> writers_;
    std::vector<int> done_;
    std::size_t sizes_[n]{};
    std::uint32_t next_ = 0;
};

/// A NOTIFY payload: check-client-ip 192.0.2.1, then check-rate key=`key`.
std::vector<std::uint8_t> payload(std::string_view key, bool with_ip) {
    std::vector<std::uint8_t> buf(1024);
    spop::notify_writer w(buf, 0, 0, 1020);
    const std::uint8_t ip[4] = {192, 0, 2, 1};
    if (with_ip) {
        w.message("check-client-ip", 1);
        w.arg("ip", spop::value::from_ipv4(std::span<const std::uint8_t, 4>(ip, 4)));
    }
    w.message("check-rate", 2);
    w.arg("key", spop::value::from_string(key));
    w.arg("limit", spop::value::from_int64(7));
    const spop::result r = w.finish();
    return {buf.begin() + 11, buf.begin() + static_cast<std::ptrdiff_t>(r.consumed)};
}

struct fixture {
    iprep::service_config cfg = [] {
        iprep::service_config c;
        c.default_score = 42;
        return c;
    }();
    iprep::reputation_source rep;
    iprep::service_stats stats;
    ratelimit::config rc = [] {
        ratelimit::config c;
        c.enabled = true;
        return c;
    }();
    ratelimit::gateway g{1, 512, rc};
    iprep::service svc{cfg, rep, stats, 1, &g, 0};
    keep_deferral d;

    /// on_notify with deferral; returns whether it deferred.
    bool notify(const std::vector<std::uint8_t>& p, std::uint64_t sid) {
        bool deferred = false;
        const spop::notify_request req{sid, 1, 0, p, &d, 0, 16380, &deferred, nullptr};
        std::uint8_t out[256];
        spop::ack_writer ack({out, sizeof out}, sid, 1, 16380);
        EXPECT_EQ(svc.on_notify(req, ack), spop::errc::ok);
        return deferred;
    }
};

} // namespace

TEST(RateService, DefersAndQueuesWithoutAllocating) {
    fixture f;
    const auto p = payload("client-a", false);
    ASSERT_TRUE(f.notify(p, 1)); // warm-up
    spop_test_alloc::alloc_window w;
    for (std::uint64_t i = 0; i < 100; ++i) ASSERT_TRUE(f.notify(p, 3 + 2 * i));
    EXPECT_EQ(w.news(), 0u) << "the worker's check-rate path allocated";
    ::operator delete(::operator new(4)); // the counter works (a call, not elided)
    EXPECT_EQ(w.news(), 1u);
    w.stop();
    std::size_t queued = 0;
    f.g.at(0).r->drain(
        [&](ratelimit::request& r) {
            EXPECT_EQ(std::string_view(r.key, r.key_len), "client-a");
            EXPECT_EQ(r.limit, 7u);
            EXPECT_EQ(r.window_ms, 60000u);
            ++queued;
            r.t.complete(); // the test plays the Redis thread
        },
        1000);
    EXPECT_EQ(queued, 101u);
    EXPECT_EQ(f.g.at(0).c.deferred.get(), 101u);
}

TEST(RateService, ScoreOfTheSameNotifyGoesIntoTheDeferredAck) {
    fixture f;
    ASSERT_TRUE(f.notify(payload("client-b", true), 1));
    std::uint32_t id = 0;
    f.g.at(0).r->drain(
        [&](ratelimit::request& r) {
            id = r.t.id();
            r.t.complete([](spop::ack_writer& a) {
                ratelimit::write_count(a, ratelimit::answer_vars{}, 3, false);
            });
        },
        10);
    ASSERT_EQ(f.d.done(id), 1);
    const auto vars = f.d.vars(id);
    ASSERT_EQ(vars.size(), 3u);
    EXPECT_EQ(vars[0], (std::pair<std::string, std::uint64_t>{"ip_score", 42}));
    EXPECT_EQ(vars[1], (std::pair<std::string, std::uint64_t>{"rate", 3}));
    EXPECT_EQ(vars[2], (std::pair<std::string, std::uint64_t>{"over_limit", 0}));
    EXPECT_EQ(f.stats.lookups_default.get(), 1u) << "the rewrite does not count twice";
}

TEST(RateService, ManyScoresNeverCrowdOutTheRateAnswer) {
    // 75 check-client-ip messages and a check-rate: the scores alone overflow the ticket's ACK
    // room (512 bytes here, options::deferred_ack_bytes in the agent). The rate answer written
    // later by the Redis thread must still fit: scores are dropped instead of over_limit.
    std::vector<std::uint8_t> buf(4096);
    spop::notify_writer w(buf, 0, 0, 4000);
    const std::uint8_t ip[4] = {192, 0, 2, 1};
    for (int i = 0; i < 75; ++i) {
        w.message("check-client-ip", 1);
        w.arg("ip", spop::value::from_ipv4(std::span<const std::uint8_t, 4>(ip, 4)));
    }
    w.message("check-rate", 1);
    w.arg("key", spop::value::from_string("many"));
    const spop::result r = w.finish();
    ASSERT_TRUE(r);
    const std::vector<std::uint8_t> p(buf.begin() + 11,
                                      buf.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    fixture f;
    ASSERT_TRUE(f.notify(p, 1));
    std::uint32_t id = 0;
    f.g.at(0).r->drain(
        [&](ratelimit::request& q) {
            id = q.t.id();
            q.t.complete([](spop::ack_writer& a) {
                ratelimit::write_count(a, ratelimit::answer_vars{}, 0xFFFFFFFFull, true);
            });
        },
        10);
    ASSERT_EQ(f.d.done(id), 1);
    const auto vars = f.d.vars(id);
    ASSERT_GE(vars.size(), 3u);
    EXPECT_LT(vars.size(), 77u) << "the test should overflow the ACK room";
    for (std::size_t i = 0; i + 2 < vars.size(); ++i) EXPECT_EQ(vars[i].first, "ip_score");
    EXPECT_EQ(vars[vars.size() - 2], (std::pair<std::string, std::uint64_t>{"rate", 0xFFFFFFFFu}));
    EXPECT_EQ(vars.back(), (std::pair<std::string, std::uint64_t>{"over_limit", 1}));
}

TEST(RateService, WithoutCheckRateNothingIsDeferred) {
    fixture f;
    std::vector<std::uint8_t> buf(256);
    spop::notify_writer w(buf, 0, 0, 252);
    const std::uint8_t ip[4] = {192, 0, 2, 1};
    w.message("check-client-ip", 1);
    w.arg("ip", spop::value::from_ipv4(std::span<const std::uint8_t, 4>(ip, 4)));
    const spop::result r = w.finish();
    const std::vector<std::uint8_t> p(buf.begin() + 11,
                                      buf.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    EXPECT_FALSE(f.notify(p, 1));
    EXPECT_EQ(f.g.at(0).c.messages.get(), 0u);
    EXPECT_FALSE(f.g.at(0).r->nonempty());
}

TEST(RateService, HugeKeyAnsweredAtOnce) {
    fixture f;
    EXPECT_FALSE(f.notify(payload(std::string(ratelimit::max_key_bytes + 1, 'x'), false), 1));
    EXPECT_EQ(f.g.at(0).c.fails[static_cast<int>(ratelimit::fail_reason::key_too_long)].get(), 1u);
    EXPECT_FALSE(f.g.at(0).r->nonempty());
}
