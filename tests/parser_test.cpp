// KV-LIST and NOTIFY parsers: stop at every callback, truncate at every offset, inputs that end
// right before a PROT_NONE guard page, unnamed arguments, empty NOTIFYs, handler concepts.
#include <spop/kv.hpp>
#include <spop/notify.hpp>
#include <spop/writer.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "support/frames.hpp"
#include "support/guard_page.hpp"
#include "support/hex.hpp"
#include "support/recorder.hpp"
#include "support/vectors.hpp"

namespace {

using spop::errc;
using spop::value;
using spop_test::bytes;
using spop_test::recorder;
using spop_test::unhex;
using events = std::vector<std::string>;
namespace vec = spop_test::vec;

// --- handler concepts ----------------------------------------------------------------------

struct wrong_return { // on_arg returns bool
    spop::action on_message(std::string_view, std::uint8_t);
    bool on_arg(std::string_view, const value&);
    spop::action on_message_end();
};
struct missing_end {
    spop::action on_message(std::string_view, std::uint8_t);
    spop::action on_arg(std::string_view, const value&);
};
struct kv_void {
    void on_kv(std::string_view, const value&);
};
struct kv_wrong_args {
    spop::action on_kv(int);
};
static_assert(spop::notify_handler<spop::null_notify_handler>);
static_assert(spop::kv_handler<spop::null_kv_handler>);
static_assert(!spop::notify_handler<wrong_return>);
static_assert(!spop::notify_handler<missing_end>);
static_assert(!spop::notify_handler<spop::null_kv_handler>);
static_assert(!spop::kv_handler<kv_void>);
static_assert(!spop::kv_handler<kv_wrong_args>);
static_assert(!spop::kv_handler<spop::null_notify_handler>);

// --- payload corpus ------------------------------------------------------------------------

enum class kind { kv, notify };

struct payload_case {
    std::string name;
    kind k;
    bytes payload;

    friend void PrintTo(const payload_case& c, std::ostream* os) { *os << c.name; }
};

bytes payload_of(const bytes& frame) {
    spop::frame f;
    const spop::result r = spop::split_frame(frame, spop::max_max_frame_size, f);
    EXPECT_TRUE(r);
    return bytes(f.payload.begin(), f.payload.end());
}

/// A NOTIFY payload written with notify_writer (header stripped).
template <class F>
bytes notify_payload(F&& write) {
    bytes buf(4096);
    spop::notify_writer w(buf, 1, 1, 4000);
    write(w);
    const spop::result r = w.finish();
    EXPECT_TRUE(r);
    return bytes(buf.begin() + 11, buf.begin() + static_cast<std::ptrdiff_t>(r.consumed));
}

constexpr std::array<std::uint8_t, 4> client_ip{192, 0, 2, 1};

/// 5 args: 2 NULL, 2 strings, 1 IPv4; ~125 bytes on the wire.
bytes fat_notify() {
    return notify_payload([](spop::notify_writer& w) {
        w.message("check-request", 5);
        w.arg("unique-id", value::null());
        w.arg("host", value::from_string("www.example.com"));
        w.arg("cookie", value::null());
        w.arg("path", value::from_string("/api/v1/accounts/12345/settings?x=1"));
        w.arg("src", value::from_ipv4(client_ip));
    });
}

bytes multi_notify() {
    return notify_payload([](spop::notify_writer& w) {
        w.message("check-client-ip", 1);
        w.arg("ip", value::from_ipv4(client_ip));
        w.message("no-args", 0);
        w.message("mixed", 4);
        w.arg("", value::from_int64(-1));
        w.arg("b", value::from_bool(true));
        w.arg("bin", value::from_binary(std::string_view("\x00\x01\x02", 3)));
        w.arg("u", value::from_uint64(1ull << 40));
        w.message("check-client-ip", 1);
        w.arg("", value::from_ipv4(client_ip));
    });
}

std::vector<payload_case> corpus() {
    std::vector<payload_case> c;
    for (const auto& [name, hex] : {std::pair{"V1", vec::v1_hello_34},
                                    {"V3", vec::v3_healthcheck},
                                    {"V4", vec::v4_agent_hello},
                                    {"Cap26", vec::cap_hello_26},
                                    {"V8Idle", vec::v8_disc_idle},
                                    {"V8Empty", vec::v8_agent_disc_empty}}) {
        c.push_back({name, kind::kv, payload_of(unhex(hex))});
    }
    for (const auto& [name, hex] : {std::pair{"V5", vec::v5_notify_34},
                                    {"V6", vec::v6_notify_unnamed},
                                    {"Sid241", vec::cap_notify_sid241}}) {
        c.push_back({name, kind::notify, payload_of(unhex(hex))});
    }
    c.push_back({"Fat", kind::notify, fat_notify()});
    c.push_back({"Multi", kind::notify, multi_notify()});
    bytes v9;
    for (const bytes& f : {vec::v9_f1(), vec::v9_f2(), vec::v9_f3()}) {
        const bytes p = payload_of(f);
        v9.insert(v9.end(), p.begin(), p.end());
    }
    c.push_back({"V9Reassembled", kind::notify, v9});
    return c;
}

spop::result run(const payload_case& c, std::span<const std::uint8_t> p, recorder& rec) {
    return c.k == kind::kv ? spop::parse_kv_list(p, rec) : spop::parse_notify(p, rec);
}

class Payload : public ::testing::TestWithParam<payload_case> {
  protected:
    spop_test::guarded_region region{8192};
};

TEST_P(Payload, FullParseAtGuardPage) {
    const auto& c = GetParam();
    const auto p = region.place(c.payload);
    recorder rec(recorder::never, p);
    EXPECT_EQ(run(c, p, rec), (spop::result{errc::ok, p.size()}));
    EXPECT_FALSE(rec.events.empty());
    EXPECT_TRUE(rec.views_in_bounds);
    if (c.k == kind::notify) {
        spop::null_notify_handler h;
        EXPECT_EQ(spop::parse_notify(p, h), (spop::result{errc::ok, p.size()}));
        EXPECT_EQ(rec.events.back(), "end");
    } else {
        spop::null_kv_handler h;
        EXPECT_EQ(spop::parse_kv_list(p, h), (spop::result{errc::ok, p.size()}));
    }
}

TEST_P(Payload, StopAtEveryCallback) {
    const auto& c = GetParam();
    const auto p = region.place(c.payload);
    recorder full;
    ASSERT_TRUE(run(c, p, full));
    const events& all = full.events;
    std::size_t last_consumed = 0;
    for (std::size_t k = 0; k < all.size(); ++k) {
        SCOPED_TRACE("stop at callback " + std::to_string(k) + ": " + all[k]);
        recorder rec(k);
        const spop::result r = run(c, p, rec);
        EXPECT_EQ(r.ec, errc::stopped);
        EXPECT_EQ(rec.events,
                  events(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k + 1)));
        EXPECT_GE(r.consumed, last_consumed);
        EXPECT_LE(r.consumed, p.size());
        last_consumed = r.consumed;
        // Resuming after a complete pair/message reproduces the rest of the recording.
        const bool boundary = c.k == kind::kv || all[k] == "end";
        if (boundary) {
            recorder rest;
            EXPECT_TRUE(run(c, p.subspan(r.consumed), rest));
            EXPECT_EQ(rest.events,
                      events(all.begin() + static_cast<std::ptrdiff_t>(k + 1), all.end()));
        }
    }
    EXPECT_EQ(last_consumed, p.size()) << "stopping at the last callback consumes everything";
}

TEST_P(Payload, TruncatedAtEveryOffset) {
    const auto& c = GetParam();
    // Offsets where a shorter payload is still valid: after each complete pair or message.
    std::vector<std::size_t> boundaries{0};
    {
        const auto p = region.place(c.payload);
        recorder full;
        ASSERT_TRUE(run(c, p, full));
        for (std::size_t k = 0; k < full.events.size(); ++k) {
            if (c.k == kind::notify && full.events[k] != "end") continue;
            recorder rec(k);
            boundaries.push_back(run(c, p, rec).consumed);
        }
    }
    for (std::size_t len = 0; len < c.payload.size(); ++len) {
        SCOPED_TRACE("cut at " + std::to_string(len));
        const auto p = region.place({c.payload.data(), len});
        recorder rec(recorder::never, p);
        const spop::result r = run(c, p, rec);
        const bool valid = std::find(boundaries.begin(), boundaries.end(), len) != boundaries.end();
        if (valid) {
            EXPECT_EQ(r, (spop::result{errc::ok, len}));
        } else {
            EXPECT_EQ(r.ec, errc::truncated);
            EXPECT_LE(r.consumed, len);
        }
        EXPECT_TRUE(rec.views_in_bounds);
    }
}

TEST_P(Payload, RandomCorruptionNeverCrashes) {
    const auto& c = GetParam();
    std::mt19937 rng(1234);
    for (int iter = 0; iter < 2000; ++iter) {
        bytes m = c.payload;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < flips; ++i) {
            m[rng() % m.size()] = static_cast<std::uint8_t>(rng());
        }
        const std::size_t len = rng() % 3 == 0 ? rng() % (m.size() + 1) : m.size();
        const auto p = region.place({m.data(), len});
        recorder rec(recorder::never, p);
        const spop::result r = run(c, p, rec);
        ASSERT_TRUE(r.ec == errc::ok || r.ec == errc::truncated || r.ec == errc::varint_overflow ||
                    r.ec == errc::bad_data_type)
            << spop::message(r.ec);
        ASSERT_LE(r.consumed, len);
        ASSERT_TRUE(rec.views_in_bounds);
    }
}

std::string case_name(const ::testing::TestParamInfo<payload_case>& i) {
    return i.param.name;
}
INSTANTIATE_TEST_SUITE_P(Corpus, Payload, ::testing::ValuesIn(corpus()), case_name);

// --- specific behaviours -------------------------------------------------------------------

TEST(Notify, FatNotifyIsAboutOneHundredTwentyFiveBytes) {
    const bytes p = fat_notify();
    EXPECT_GE(p.size() + 11, 115u);
    EXPECT_LE(p.size() + 11, 135u);
    recorder rec;
    ASSERT_TRUE(spop::parse_notify(p, rec));
    EXPECT_EQ(rec.events, (events{
                              "msg \"check-request\" 5",
                              "arg \"unique-id\" null",
                              "arg \"host\" string:\"www.example.com\"",
                              "arg \"cookie\" null",
                              "arg \"path\" string:\"/api/v1/accounts/12345/settings?x=1\"",
                              "arg \"src\" ipv4:c0000201",
                              "end",
                          }));
}

TEST(Notify, MultipleMessages) {
    recorder rec;
    const bytes p = multi_notify();
    ASSERT_TRUE(spop::parse_notify(p, rec));
    EXPECT_EQ(rec.events, (events{
                              "msg \"check-client-ip\" 1",
                              "arg \"ip\" ipv4:c0000201",
                              "end",
                              "msg \"no-args\" 0",
                              "end",
                              "msg \"mixed\" 4",
                              "arg \"\" int64:-1",
                              "arg \"b\" bool:true",
                              "arg \"bin\" binary:000102",
                              "arg \"u\" uint64:1099511627776",
                              "end",
                              "msg \"check-client-ip\" 1",
                              "arg \"\" ipv4:c0000201",
                              "end",
                          }));
}

TEST(Notify, ZeroMessagesParseOk) {
    spop_test::guarded_region region;
    const auto p = region.place({});
    recorder rec;
    EXPECT_EQ(spop::parse_notify(p, rec), (spop::result{errc::ok, 0}));
    EXPECT_TRUE(rec.events.empty());
    // As a whole frame, as HAProxy 3.1-3.3 could send it.
    const auto f = region.place(unhex("00000007 03 00000001 01 01"));
    spop::frame fr;
    ASSERT_TRUE(spop::split_frame(f, spop::default_max_frame_size, fr));
    EXPECT_TRUE(fr.payload.empty());
    EXPECT_EQ(spop::parse_notify(fr.payload, rec), (spop::result{errc::ok, 0}));
    EXPECT_TRUE(rec.events.empty());
}

TEST(Notify, UnnamedArgument) {
    const bytes p = payload_of(unhex(vec::v6_notify_unnamed));
    recorder rec;
    ASSERT_TRUE(spop::parse_notify(p, rec));
    ASSERT_EQ(rec.events.size(), 3u);
    EXPECT_EQ(rec.events[1], "arg \"\" ipv4:7f000001");
}

TEST(Notify, NullHandlerAcceptsEveryNotify) {
    for (const auto& c : corpus()) {
        if (c.k != kind::notify) continue;
        SCOPED_TRACE(c.name);
        spop::null_notify_handler h;
        EXPECT_EQ(spop::parse_notify(c.payload, h), (spop::result{errc::ok, c.payload.size()}));
    }
}

TEST(Notify, StopOffsets) {
    // V5 payload: 0f "check-client-ip" 01 | 02 "ip" 06 7f000001 |
    const bytes p = payload_of(unhex(vec::v5_notify_34));
    ASSERT_EQ(p.size(), 25u);
    const std::size_t expected[] = {17, 25, 25}; // after nb-args, after the value, end
    for (std::size_t k = 0; k < 3; ++k) {
        recorder rec(k);
        EXPECT_EQ(spop::parse_notify(p, rec), (spop::result{errc::stopped, expected[k]})) << k;
    }
}

TEST(Notify, ErrorOffsets) {
    recorder rec;
    // Reserved type in the argument value: reported at the value.
    const bytes bad_type = unhex("01 6d 01 02 6970 0a 00");
    EXPECT_EQ(spop::parse_notify(bad_type, rec), (spop::result{errc::bad_data_type, 6}));
    // NB-ARGS larger than the arguments present.
    const bytes missing_arg = unhex("01 6d 02 02 6970 00");
    EXPECT_EQ(spop::parse_notify(missing_arg, rec), (spop::result{errc::truncated, 7}));
    // Message name without NB-ARGS.
    const bytes no_count = unhex("01 6d");
    EXPECT_EQ(spop::parse_notify(no_count, rec), (spop::result{errc::truncated, 2}));
    // Message name length overflowing.
    const bytes long_name = unhex("ffffffffffffffffff7f");
    EXPECT_EQ(spop::parse_notify(long_name, rec).ec, errc::varint_overflow);
    // Argument value with an overflowing integer: reported at the value.
    const bytes big_int = unhex("01 6d 01 00 04 ffffffffffffffffff7f");
    EXPECT_EQ(spop::parse_notify(big_int, rec), (spop::result{errc::varint_overflow, 4}));
}

TEST(Notify, TwoHundredFiftyFiveArguments) {
    bytes p = unhex("01 6d ff");
    for (int i = 0; i < 255; ++i) {
        p.push_back(0x00); // unnamed
        p.push_back(0x00); // NULL
    }
    recorder rec;
    ASSERT_EQ(spop::parse_notify(p, rec), (spop::result{errc::ok, p.size()}));
    ASSERT_EQ(rec.events.size(), 257u);
    EXPECT_EQ(rec.events.front(), "msg \"m\" 255");
    EXPECT_EQ(rec.events.back(), "end");
}

TEST(Kv, ErrorOffsets) {
    recorder rec;
    // Second pair's value has a reserved type: reported at the pair.
    const bytes p = unhex("01 61 00 01 62 0f");
    EXPECT_EQ(spop::parse_kv_list(p, rec), (spop::result{errc::bad_data_type, 3}));
    EXPECT_EQ(rec.events, (events{"kv \"a\" null"}));
    // A key without a value.
    const bytes no_value = unhex("01 61");
    EXPECT_EQ(spop::parse_kv_list(no_value, rec), (spop::result{errc::truncated, 0}));
}

TEST(Kv, NullHandlerAndEmptyList) {
    spop::null_kv_handler h;
    EXPECT_EQ(spop::parse_kv_list({}, h), (spop::result{errc::ok, 0}));
    const bytes p = payload_of(unhex(vec::v1_hello_34));
    EXPECT_EQ(spop::parse_kv_list(p, h), (spop::result{errc::ok, p.size()}));
}

// --- whole frames at the guard page ----------------------------------------------------------

TEST(GuardPage, EveryFramePrefixAtTheEdge) {
    spop_test::guarded_region region(8192);
    for (const auto& v : vec::all()) {
        SCOPED_TRACE(v.name);
        for (std::size_t len = 0; len < v.frame.size(); ++len) {
            const auto p = region.place({v.frame.data(), len});
            spop::frame f;
            ASSERT_EQ(spop::split_frame(p, spop::default_max_frame_size, f),
                      (spop::result{errc::need_more, 0}))
                << len;
            // The body alone, cut short: decode_frame_body never reads past it.
            if (len > 4) {
                const auto body = region.place({v.frame.data() + 4, len - 4});
                const spop::result r = spop::decode_frame_body(body, f);
                ASSERT_LE(r.consumed, body.size());
            }
        }
        const auto p = region.place(v.frame);
        spop::frame f;
        ASSERT_EQ(spop::split_frame(p, spop::default_max_frame_size, f),
                  (spop::result{errc::ok, p.size()}));
        // Any payload, parsed as either kind, stays inside the frame.
        recorder kv(recorder::never, f.payload), n(recorder::never, f.payload);
        (void)spop::parse_kv_list(f.payload, kv);
        (void)spop::parse_notify(f.payload, n);
        EXPECT_TRUE(kv.views_in_bounds);
        EXPECT_TRUE(n.views_in_bounds);
    }
}

TEST(GuardPage, TypedValuesCutAtTheEdge) {
    spop_test::guarded_region region;
    const char* const values[] = {"02 fbf0fefefefefefefe0e",
                                  "03 fcf006",
                                  "06 c0000201",
                                  "07 20010db8000000000000000000000001",
                                  "08 03 616263",
                                  "09 f816",
                                  "08 fff0fefefefefefefe0e"};
    for (const char* hex : values) {
        const bytes b = unhex(hex);
        for (std::size_t len = 0; len < b.size(); ++len) {
            const auto p = region.place({b.data(), len});
            value v;
            const spop::result r = spop::decode_value(p.data(), p.data() + p.size(), v);
            EXPECT_EQ(r.ec, errc::truncated) << hex << " cut at " << len;
        }
    }
}

// --- the guard page itself -----------------------------------------------------------------

TEST(GuardPageDeathTest, ReadingPastTheEndFaults) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    spop_test::guarded_region region;
    const auto p = region.place(unhex("0102"));
    EXPECT_EQ(p.data() + p.size(), region.guard());
    EXPECT_DEATH(
        {
            const volatile std::uint8_t* past = p.data() + p.size();
            const std::uint8_t b = *past;
            (void)b;
        },
        "");
}

TEST(GuardPage, OverReadingVarintAtTheEdgeIsDetectedByTheGuardNotMasked) {
    // A varint whose continuation runs into the guard: must stop at the end pointer.
    spop_test::guarded_region region;
    for (std::size_t len = 1; len <= 10; ++len) {
        bytes b(len, 0xff);
        const auto p = region.place(b);
        std::uint64_t v = 0;
        const spop::result r = spop::decode_varint(p.data(), p.data() + p.size(), v);
        EXPECT_TRUE(r.ec == errc::need_more || r.ec == errc::varint_overflow) << len;
    }
}

} // namespace
