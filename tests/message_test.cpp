// Message routing and typed arguments (message.hpp): dispatch by name, fallback, several
// messages per NOTIFY, typed getters by name and by position with their missing / null /
// wrong-type answers, every value type, 255 arguments, stop and error propagation, malformed
// payloads (same error as parse_notify), the §11 vectors, and the example services.
#include <spop/message.hpp>

#include <spop/connection.hpp>
#include <spop/frame.hpp>
#include <spop/writer.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <limits>
#include <random>
#include <ranges>
#include <string>
#include <vector>

#include "../examples/bot_service.hpp"
#include "../examples/random_service.hpp"
#include "support/frames.hpp"
#include "support/hex.hpp"
#include "support/vectors.hpp"

namespace {

using spop::arg_status;
using spop::errc;
using spop::ip_address;
using spop::message_view;
using spop::value;
using spop_test::bytes;
using spop_test::unhex;
namespace vec = spop_test::vec;

constexpr std::uint32_t mfs = spop::max_max_frame_size;

/// One message to encode: a name and its (name, value) arguments.
struct msg {
    std::string name;
    std::vector<std::pair<std::string, value>> args;
};

/// The payload of a NOTIFY carrying `msgs`, built with the library's own writer.
bytes payload_of(const std::vector<msg>& msgs) {
    bytes frame(mfs + 4);
    spop::notify_writer w(frame, 1, 1, mfs);
    for (const msg& m : msgs) {
        EXPECT_TRUE(w.message(m.name, static_cast<std::uint8_t>(m.args.size())));
        for (const auto& [n, v] : m.args) EXPECT_TRUE(w.arg(n, v));
    }
    const spop::result r = w.finish();
    EXPECT_TRUE(r);
    frame.resize(r.consumed);
    spop::frame f;
    EXPECT_TRUE(spop::split_frame(frame, mfs, f));
    return bytes(f.payload.begin(), f.payload.end());
}

/// The payload of a whole-frame hex vector.
bytes payload_of_vector(std::string_view hex) {
    const bytes frame = unhex(hex);
    spop::frame f;
    EXPECT_TRUE(spop::split_frame(frame, mfs, f));
    return bytes(f.payload.begin(), f.payload.end());
}

spop::notify_request request(const bytes& payload) {
    return {1, 1, 0, std::span<const std::uint8_t>(payload)};
}

/// An ack_writer over its own buffer, and the actions it wrote.
struct ack_buf {
    std::array<std::uint8_t, 4096> out{};
    spop::ack_writer w{out, 1, 1, mfs};

    std::vector<spop_test::ack_action> actions() {
        const spop::result r = w.finish();
        EXPECT_TRUE(r);
        spop::frame f;
        EXPECT_TRUE(
            spop::split_frame(std::span<const std::uint8_t>(out.data(), r.consumed), mfs, f));
        const spop_test::ack_parse p = spop_test::parse_ack_payload(f.payload);
        EXPECT_EQ(p.error, "");
        return p.actions;
    }
};

const std::array<std::uint8_t, 4> ip4{192, 0, 2, 1};
const std::array<std::uint8_t, 16> ip6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

/// Runs `f` on the first message of `payload` (via for_each_message) and returns its result.
template <class F>
void with_first_message(const bytes& payload, F f) {
    int calls = 0;
    const spop::result r = spop::for_each_message(payload, [&](const message_view& m) {
        if (calls++ == 0) f(m);
    });
    EXPECT_TRUE(r);
    EXPECT_GE(calls, 1);
}

static_assert(std::ranges::input_range<message_view>);
static_assert(std::is_trivially_copyable_v<message_view> && sizeof(message_view) <= 40);
static_assert(std::is_trivially_copyable_v<ip_address> && sizeof(ip_address) == 17);

// --- dispatch ------------------------------------------------------------------------------

TEST(Router, DispatchesByName) {
    std::vector<std::string> seen;
    spop::router r{
        spop::on("check-client-ip",
                 [&](const message_view& m, spop::ack_writer&) {
                     seen.push_back("ip:" + std::string(m.name()));
                 }),
        spop::on("check-ua",
                 [&](const message_view& m, spop::ack_writer&) {
                     seen.push_back("ua:" + std::string(m.name()));
                 }),
    };
    const bytes p = payload_of({{"check-ua", {}}, {"check-client-ip", {}}, {"check-ua", {}}});
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(p), ack.w), errc::ok);
    EXPECT_EQ(seen, (std::vector<std::string>{"ua:check-ua", "ip:check-client-ip", "ua:check-ua"}));
    EXPECT_TRUE(ack.w.empty());
    EXPECT_TRUE(r.handles("check-ua"));
    EXPECT_FALSE(r.handles("check-u"));
    EXPECT_FALSE(r.handles(""));
}

TEST(Router, UnknownMessagesAreIgnoredWithoutFallback) {
    int calls = 0;
    spop::router r{spop::on("a", [&](const message_view&, spop::ack_writer&) { ++calls; })};
    const bytes p =
        payload_of({{"b", {{"x", value::from_int64(1)}}}, {"A", {}}, {"aa", {}}, {"", {}}});
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(p), ack.w), errc::ok);
    EXPECT_EQ(calls, 0);
    EXPECT_TRUE(ack.w.empty());
}

TEST(Router, FallbackGetsOnlyUnmatchedMessages) {
    std::vector<std::string> named, other;
    spop::router r{
        spop::otherwise(
            [&](const message_view& m, spop::ack_writer&) { other.emplace_back(m.name()); }),
        spop::on("a",
                 [&](const message_view& m, spop::ack_writer&) { named.emplace_back(m.name()); }),
    };
    const bytes p = payload_of({{"a", {}}, {"b", {}}, {"a", {}}, {"c", {}}});
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(p), ack.w), errc::ok);
    EXPECT_EQ(named, (std::vector<std::string>{"a", "a"}));
    EXPECT_EQ(other, (std::vector<std::string>{"b", "c"}));
}

TEST(Router, FirstMatchingRouteWins) {
    int first = 0, second = 0;
    spop::router r{spop::on("a", [&](const message_view&, spop::ack_writer&) { ++first; }),
                   spop::on("a", [&](const message_view&, spop::ack_writer&) { ++second; })};
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(payload_of({{"a", {}}})), ack.w), errc::ok);
    EXPECT_EQ(first, 1);
    EXPECT_EQ(second, 0);
}

TEST(Router, SeveralMessagesEachSeeTheirOwnArguments) {
    std::vector<std::string> seen;
    auto rec = [&](const message_view& m, spop::ack_writer& ack) {
        std::string s(m.name());
        for (const spop::argument& a : m) {
            s.append(" ").append(a.name).append("=").append(spop_test::describe(a.val));
        }
        seen.push_back(s);
        ack.set_var(spop::var_scope::txn, m.name(),
                    value::from_uint32(static_cast<std::uint32_t>(m.size())));
    };
    spop::router r{spop::on("m1", rec), spop::on("m2", rec)};
    const bytes p = payload_of({
        {"m1", {{"a", value::from_int64(1)}, {"b", value::from_string("x")}}},
        {"skip", {{"a", value::from_int64(99)}}},
        {"m2", {{"", value::from_ipv4(ip4)}}},
        {"m1", {}},
    });
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(p), ack.w), errc::ok);
    EXPECT_EQ(seen,
              (std::vector<std::string>{"m1 a=int64:1 b=string:\"x\"", "m2 =ipv4:c0000201", "m1"}));
    const auto acts = ack.actions();
    ASSERT_EQ(acts.size(), 3u);
    EXPECT_EQ(acts[0].name, "m1");
    EXPECT_EQ(acts[0].value, "uint32:2");
    EXPECT_EQ(acts[1].name, "m2");
    EXPECT_EQ(acts[2].value, "uint32:0");
}

TEST(Router, EmptyPayloadAndEmptyMessages) {
    int calls = 0;
    spop::router r{spop::on("e", [&](const message_view& m, spop::ack_writer&) {
        ++calls;
        EXPECT_TRUE(m.empty());
        EXPECT_EQ(m.begin(), m.end());
        EXPECT_EQ(m.arg(0).status(), arg_status::missing);
        EXPECT_EQ(m.arg("").status(), arg_status::missing);
    })};
    ack_buf ack;
    const bytes none;
    EXPECT_EQ(r.dispatch(request(none), ack.w), errc::ok);
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(r.dispatch(request(payload_of({{"e", {}}, {"e", {}}})), ack.w), errc::ok);
    EXPECT_EQ(calls, 2);
}

// --- callables: member functions, objects, const routers, return types ------------------------

struct svc_with_members {
    int ips = 0;
    std::vector<std::string> order;
    void ip(const message_view& m, spop::ack_writer&) noexcept {
        if (m.ip("ip")) ++ips;
        order.emplace_back("ip");
    }
    spop::errc count(const message_view&, spop::ack_writer&) noexcept {
        order.emplace_back("count");
        return errc::ok;
    }
    static constexpr spop::router routes{
        spop::on("check-client-ip", &svc_with_members::ip),
        spop::on("count", &svc_with_members::count),
        // `auto&`: the class is still incomplete here, so the body must wait for the call.
        spop::on("lambda", [](auto& self, const message_view&,
                              spop::ack_writer&) { self.order.emplace_back("lambda"); }),
        spop::on("plain", [](const message_view&, spop::ack_writer&) noexcept {}),
    };
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        return routes.dispatch(req, ack, *this);
    }
};
static_assert(spop::service<svc_with_members>);

TEST(Router, MemberFunctionsAndObjectTakingLambdas) {
    svc_with_members s;
    const bytes p = payload_of({{"count", {}},
                                {"check-client-ip", {{"ip", value::from_ipv4(ip4)}}},
                                {"lambda", {}},
                                {"plain", {}},
                                {"check-client-ip", {{"ip", value::null()}}}});
    ack_buf ack;
    EXPECT_EQ(s.on_notify(request(p), ack.w), errc::ok);
    EXPECT_EQ(s.ips, 1);
    EXPECT_EQ(s.order, (std::vector<std::string>{"count", "ip", "lambda", "ip"}));
}

TEST(Router, MutableLambdaKeepsState) {
    int n = 0;
    spop::router r{
        spop::on("a", [k = 0, &n](const message_view&, spop::ack_writer&) mutable { n = ++k; })};
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(payload_of({{"a", {}}, {"a", {}}})), ack.w), errc::ok);
    EXPECT_EQ(r.dispatch(request(payload_of({{"a", {}}})), ack.w), errc::ok);
    EXPECT_EQ(n, 3);
}

TEST(Router, ActionStopEndsTheNotify) {
    std::vector<std::string> seen;
    spop::router r{
        spop::on("stop",
                 [&](const message_view& m, spop::ack_writer&) {
                     seen.emplace_back(m.name());
                     return spop::action::stop;
                 }),
        spop::on("go",
                 [&](const message_view& m, spop::ack_writer&) {
                     seen.emplace_back(m.name());
                     return spop::action::proceed;
                 }),
    };
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(payload_of({{"go", {}}, {"stop", {}}, {"go", {}}})), ack.w),
              errc::stopped);
    EXPECT_EQ(seen, (std::vector<std::string>{"go", "stop"}));
    // A stop before a malformed tail hides the tail: it is never parsed.
    bytes p = payload_of({{"stop", {}}});
    p.push_back(0x05); // a name length running past the end
    seen.clear();
    EXPECT_EQ(r.dispatch(request(p), ack.w), errc::stopped);
}

TEST(Router, RouteErrcIsReturned) {
    int later = 0;
    spop::router r{
        spop::on("fail",
                 [](const message_view&, spop::ack_writer&) { return errc::no_buffer_space; }),
        spop::on("ok", [](const message_view&, spop::ack_writer&) { return errc::ok; }),
        spop::otherwise([&](const message_view&, spop::ack_writer&) { ++later; }),
    };
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(payload_of({{"ok", {}}, {"fail", {}}, {"x", {}}})), ack.w),
              errc::no_buffer_space);
    EXPECT_EQ(later, 0);
    EXPECT_EQ(r.dispatch(request(payload_of({{"ok", {}}, {"x", {}}})), ack.w), errc::ok);
    EXPECT_EQ(later, 1);
}

TEST(Router, ForEachMessageReportsCallableErrc) {
    const bytes p = payload_of({{"a", {}}, {"b", {}}});
    int calls = 0;
    const spop::result r = spop::for_each_message(p, [&](const message_view&) {
        ++calls;
        return errc::bad_kv_type;
    });
    EXPECT_EQ(r.ec, errc::bad_kv_type);
    EXPECT_EQ(calls, 1);
    calls = 0;
    EXPECT_EQ(spop::for_each_message(p, [&](const message_view&) { ++calls; }).ec, errc::ok);
    EXPECT_EQ(calls, 2);
}

// --- malformed payloads ----------------------------------------------------------------------

errc null_parse(std::span<const std::uint8_t> p) {
    spop::null_notify_handler h;
    return spop::parse_notify(p, h).ec;
}

TEST(Router, MalformedPayloadReturnsItsParseError) {
    int calls = 0;
    spop::router r{spop::on("m", [&](const message_view& m, spop::ack_writer&) {
        ++calls;
        for (const spop::argument& a : m) (void)a; // a validated message can always be walked
    })};
    const bytes good = payload_of({{"m",
                                    {{"ip", value::from_ipv6(ip6)},
                                     {"s", value::from_string("hello")},
                                     {"i", value::from_int64(-300)}}},
                                   {"m", {{"b", value::from_bool(true)}}}});
    const std::size_t first_size = payload_of({{"m",
                                                {{"ip", value::from_ipv6(ip6)},
                                                 {"s", value::from_string("hello")},
                                                 {"i", value::from_int64(-300)}}}})
                                       .size();
    // Every truncation: the router's answer is exactly parse_notify's.
    for (std::size_t cut = 0; cut < good.size(); ++cut) {
        const bytes p(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
        ack_buf ack;
        const errc want = null_parse(p);
        EXPECT_EQ(r.dispatch(request(p), ack.w), want) << "cut at " << cut;
        if (cut != 0 && cut != first_size) {
            EXPECT_NE(want, errc::ok) << "cut at " << cut;
        }
    }
    // Reserved type 10, and an 11-byte varint.
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(unhex("01 6d 01 01 61 0a")), ack.w), errc::bad_data_type);
    EXPECT_EQ(r.dispatch(request(unhex("01 6d 01 01 61 02 ffffffffffffffffffff7f")), ack.w),
              errc::varint_overflow);
    // The first message is whole and is dispatched; the error in the second is still returned.
    calls = 0;
    EXPECT_EQ(r.dispatch(request(unhex("01 6d 00 01 6d 01 01 61 0b")), ack.w), errc::bad_data_type);
    EXPECT_EQ(calls, 1);
}

TEST(Router, RandomMutationsAgreeWithTheParser) {
    const bytes good = payload_of({{"m",
                                    {{"ip", value::from_ipv4(ip4)},
                                     {"", value::from_binary(std::string_view("\x00\x01", 2))},
                                     {"n", value::from_uint64(1ull << 40)}}},
                                   {"m", {{"s", value::from_string("abc")}}}});
    std::mt19937 rng(1234);
    std::size_t walked = 0;
    spop::router r{spop::on("m", [&](const message_view& m, spop::ack_writer&) {
        std::size_t n = 0;
        for (const spop::argument& a : m) {
            (void)a;
            ++n;
        }
        EXPECT_EQ(n, m.size());
        if (m.size() > 0) {
            EXPECT_TRUE(m.arg(m.size() - 1));
        }
        walked += n;
    })};
    for (int i = 0; i < 20000; ++i) {
        bytes p = good;
        const int flips = 1 + static_cast<int>(rng() % 3);
        for (int k = 0; k < flips; ++k) p[rng() % p.size()] = static_cast<std::uint8_t>(rng());
        if (rng() % 4 == 0) p.resize(rng() % p.size());
        ack_buf ack;
        const errc want = null_parse(p);
        ASSERT_EQ(r.dispatch(request(p), ack.w), want) << spop_test::to_hex(p);
    }
    EXPECT_GT(walked, 0u);
}

// --- typed getters ---------------------------------------------------------------------------

TEST(Message, ArgumentsByNameAndPosition) {
    const bytes p = payload_of({{"m",
                                 {{"a", value::from_int64(1)},
                                  {"", value::from_string("unnamed")},
                                  {"b", value::from_int64(2)},
                                  {"a", value::from_int64(3)}}}});
    with_first_message(p, [](const message_view& m) {
        EXPECT_EQ(m.name(), "m");
        EXPECT_EQ(m.size(), 4u);
        EXPECT_EQ(*m.integer("a"), 1) << "the first of two 'a' wins";
        EXPECT_EQ(*m.integer("b"), 2);
        EXPECT_EQ(*m.integer(0), 1);
        EXPECT_EQ(*m.integer(2), 2);
        EXPECT_EQ(*m.integer(3), 3);
        EXPECT_EQ(*m.string(1), "unnamed");
        EXPECT_EQ(*m.string(""), "unnamed") << "\"\" finds the first unnamed argument";
        EXPECT_EQ(*m.arg_name(1), "");
        EXPECT_EQ(*m.arg_name(3), "a");
        EXPECT_EQ(m.arg_name(4).status(), arg_status::missing);
        EXPECT_EQ(m.integer(4).status(), arg_status::missing);
        EXPECT_EQ(m.integer(-1).status(), arg_status::missing);
        EXPECT_EQ(m.integer(std::numeric_limits<std::size_t>::max()).status(), arg_status::missing);
        EXPECT_EQ(m.integer("c").status(), arg_status::missing);
        EXPECT_EQ(m.integer("A").status(), arg_status::missing) << "names are case-sensitive";
        const std::string key = "b";
        EXPECT_EQ(*m.integer(key), 2) << "std::string keys";
        EXPECT_EQ(m.integer(std::string_view("ab", 1)).value_or(-1), 1);
    });
}

TEST(Message, MissingNullAndWrongType) {
    const bytes p = payload_of({{"m",
                                 {{"n", value::null()},
                                  {"s", value::from_string("1.2.3.4")},
                                  {"b", value::from_binary("bin")},
                                  {"i", value::from_int32(7)}}}});
    with_first_message(p, [](const message_view& m) {
        // NULL is its own answer for every typed getter; arg() returns it as a value.
        EXPECT_EQ(m.ip("n").status(), arg_status::null);
        EXPECT_EQ(m.ip_or_string("n").status(), arg_status::null);
        EXPECT_EQ(m.integer("n").status(), arg_status::null);
        EXPECT_EQ(m.uinteger("n").status(), arg_status::null);
        EXPECT_EQ(m.string("n").status(), arg_status::null);
        EXPECT_EQ(m.binary("n").status(), arg_status::null);
        EXPECT_EQ(m.boolean("n").status(), arg_status::null);
        ASSERT_TRUE(m.arg("n"));
        EXPECT_EQ(m.arg("n")->type, spop::data_type::null);
        // Wrong types, and the value-initialized fallbacks.
        EXPECT_EQ(m.ip("s").status(), arg_status::wrong_type);
        EXPECT_EQ(m.string("b").status(), arg_status::wrong_type);
        EXPECT_EQ(m.binary("s").status(), arg_status::wrong_type);
        EXPECT_EQ(m.integer("s").status(), arg_status::wrong_type);
        EXPECT_EQ(m.boolean("i").status(), arg_status::wrong_type);
        EXPECT_EQ(m.string("i").status(), arg_status::wrong_type);
        EXPECT_EQ(*m.integer("s"), 0);
        EXPECT_EQ(*m.string("i"), "");
        EXPECT_TRUE(m.ip("s")->empty());
        EXPECT_EQ(m.string("i").value_or("dflt"), "dflt");
        // Missing everywhere.
        EXPECT_EQ(m.ip("zz").status(), arg_status::missing);
        EXPECT_EQ(m.ip_or_string("zz").status(), arg_status::missing);
        EXPECT_EQ(m.boolean(9).status(), arg_status::missing);
        EXPECT_FALSE(m.arg("zz"));
        // The string holds a literal: ip_or_string reads it, ip does not.
        ASSERT_TRUE(m.ip_or_string("s"));
        EXPECT_EQ(*m.ip_or_string("s"),
                  ip_address::from_bytes(std::string_view("\x01\x02\x03\x04", 4)));
        EXPECT_EQ(m.ip_or_string("b").status(), arg_status::wrong_type);
    });
    EXPECT_EQ(spop::to_string(arg_status::ok), "ok");
    EXPECT_EQ(spop::to_string(arg_status::missing), "missing");
    EXPECT_EQ(spop::to_string(arg_status::null), "null");
    EXPECT_EQ(spop::to_string(arg_status::wrong_type), "wrong type");
}

TEST(Message, EveryValueType) {
    const std::string blob("\x00\xff\x10", 3);
    const bytes p =
        payload_of({{"m",
                     {{"null", value::null()},
                      {"t", value::from_bool(true)},
                      {"f", value::from_bool(false)},
                      {"i32", value::from_int32(-5)},
                      {"u32", value::from_uint32(4000000000u)},
                      {"i64", value::from_int64(std::numeric_limits<std::int64_t>::min())},
                      {"u64", value::from_uint64(std::numeric_limits<std::uint64_t>::max())},
                      {"v4", value::from_ipv4(ip4)},
                      {"v6", value::from_ipv6(ip6)},
                      {"s", value::from_string("text")},
                      {"e", value::from_string("")},
                      {"bin", value::from_binary(blob)}}}});
    with_first_message(p, [&](const message_view& m) {
        EXPECT_EQ(m.size(), 12u);
        EXPECT_EQ(*m.boolean("t"), true);
        EXPECT_TRUE(m.boolean("f"));
        EXPECT_EQ(*m.boolean("f"), false);
        EXPECT_EQ(*m.integer("i32"), -5);
        EXPECT_EQ(*m.integer("u32"), 4000000000);
        EXPECT_EQ(*m.uinteger("u32"), 4000000000u);
        EXPECT_EQ(*m.integer("i64"), std::numeric_limits<std::int64_t>::min());
        EXPECT_EQ(*m.uinteger("u64"), std::numeric_limits<std::uint64_t>::max());
        EXPECT_EQ(*m.integer("u64"), -1) << "the signed reading of the raw 64-bit value";
        ASSERT_TRUE(m.ip("v4"));
        EXPECT_TRUE(m.ip("v4")->is_v4());
        EXPECT_EQ(m.ip("v4")->view(),
                  std::string_view(reinterpret_cast<const char*>(ip4.data()), 4));
        ASSERT_TRUE(m.ip("v6"));
        EXPECT_TRUE(m.ip("v6")->is_v6());
        EXPECT_TRUE(std::equal(ip6.begin(), ip6.end(), m.ip("v6")->bytes().begin()));
        EXPECT_EQ(m.ip("v6")->to_value(), value::from_ipv6(ip6));
        EXPECT_EQ(*m.ip_or_string("v6"), *m.ip(8));
        EXPECT_EQ(*m.string("s"), "text");
        EXPECT_TRUE(m.string("e"));
        EXPECT_EQ(*m.string("e"), "");
        EXPECT_EQ(*m.binary("bin"), blob);
        // Each raw value equals what the parser decoded, in order.
        const std::vector<std::string> want = {"null",
                                               "bool:true",
                                               "bool:false",
                                               "int32:-5",
                                               "uint32:4000000000",
                                               "int64:-9223372036854775808",
                                               "uint64:18446744073709551615",
                                               "ipv4:c0000201",
                                               "ipv6:20010db8000000000000000000000001",
                                               "string:\"text\"",
                                               "string:\"\"",
                                               "binary:00ff10"};
        std::vector<std::string> got, by_index;
        for (const spop::argument& a : m) got.push_back(spop_test::describe(a.val));
        for (std::size_t i = 0; i < m.size(); ++i)
            by_index.push_back(spop_test::describe(*m.arg(i)));
        EXPECT_EQ(got, want);
        EXPECT_EQ(by_index, want);
    });
}

TEST(Message, IpAddressParsing) {
    ip_address a;
    EXPECT_TRUE(ip_address::parse("192.0.2.1", a));
    EXPECT_EQ(a, ip_address::from_bytes(std::span<const std::uint8_t>(ip4)));
    EXPECT_TRUE(ip_address::parse("2001:db8::1", a));
    EXPECT_EQ(a, ip_address::from_bytes(std::span<const std::uint8_t>(ip6)));
    EXPECT_TRUE(ip_address::parse("::ffff:1.2.3.4", a));
    EXPECT_TRUE(a.is_v6());
    EXPECT_TRUE(ip_address::parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", a)); // 45 chars
    const ip_address before = a;
    for (std::string_view bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", " 1.2.3.4",
                                 "[::1]", "::1%eth0", "1.2.3.4:80", "example.com", "0x7f.0.0.1",
                                 "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555"}) {
        EXPECT_FALSE(ip_address::parse(bad, a)) << bad;
    }
    EXPECT_FALSE(ip_address::parse(std::string_view("1.2.3.4\0", 8), a));
    EXPECT_EQ(a, before) << "a failed parse leaves the output untouched";
    EXPECT_TRUE(ip_address::from_bytes(std::string_view("abc")).empty());
    EXPECT_EQ(ip_address{}.to_value(), value::null());
    EXPECT_FALSE(ip_address{} == ip_address::from_bytes(std::span<const std::uint8_t>(ip4)));
}

TEST(Message, TwoHundredFiftyFiveArguments) {
    msg big{"big", {}};
    std::vector<std::string> names;
    for (int i = 0; i < 255; ++i) names.push_back(std::string("a").append(std::to_string(i)));
    for (int i = 0; i < 255; ++i)
        big.args.emplace_back(names[static_cast<std::size_t>(i)], value::from_int64(i * 3));
    const bytes p = payload_of({big, {"after", {{"x", value::from_bool(true)}}}});
    int messages = 0;
    EXPECT_TRUE(spop::for_each_message(p, [&](const message_view& m) {
        ++messages;
        if (m.name() != "big") {
            EXPECT_TRUE(*m.boolean("x")) << "the next message starts where the 255th arg ended";
            return;
        }
        EXPECT_EQ(m.size(), 255u);
        EXPECT_EQ(*m.integer(0), 0);
        EXPECT_EQ(*m.integer(254), 254 * 3);
        EXPECT_EQ(*m.integer("a254"), 254 * 3);
        EXPECT_EQ(*m.integer("a128"), 128 * 3);
        EXPECT_EQ(m.integer(255).status(), arg_status::missing);
        EXPECT_EQ(m.integer("x").status(), arg_status::missing)
            << "no reading into the next message";
        std::size_t n = 0;
        for (const spop::argument& a : m) {
            EXPECT_EQ(a.name, names[n]);
            ++n;
        }
        EXPECT_EQ(n, 255u);
    }));
    EXPECT_EQ(messages, 2);
}

// --- §11 vectors and the example services --------------------------------------------------

TEST(Vectors, V5AndV6) {
    const ip_address localhost = ip_address::from_bytes(std::string_view("\x7f\x00\x00\x01", 4));
    for (std::string_view v : {vec::v5_notify_34, vec::v5_notify_26, vec::cap_notify_sid241}) {
        const bytes p = payload_of_vector(v);
        int calls = 0;
        spop::router r{spop::on("check-client-ip", [&](const message_view& m, spop::ack_writer&) {
            ++calls;
            EXPECT_EQ(m.size(), 1u);
            EXPECT_EQ(*m.ip("ip"), localhost);
            EXPECT_EQ(*m.ip(0), localhost);
            EXPECT_EQ(m.ip("").status(), arg_status::missing);
        })};
        ack_buf ack;
        EXPECT_EQ(r.dispatch(request(p), ack.w), errc::ok);
        EXPECT_EQ(calls, 1);
    }
    const bytes p = payload_of_vector(vec::v6_notify_unnamed);
    int calls = 0;
    spop::router r{spop::on("check-client-ip", [&](const message_view& m, spop::ack_writer&) {
        ++calls;
        EXPECT_EQ(*m.ip(0), localhost);
        EXPECT_EQ(*m.ip(""), localhost);
        EXPECT_EQ(*m.arg_name(0), "");
        EXPECT_EQ(m.ip("ip").status(), arg_status::missing);
    })};
    ack_buf ack;
    EXPECT_EQ(r.dispatch(request(p), ack.w), errc::ok);
    EXPECT_EQ(calls, 1);
    // V9's first fragment as a whole payload: ip then a 600-byte string claimed, 238 present.
    const bytes f1 = spop_test::vec::v9_f1();
    spop::frame f;
    ASSERT_TRUE(spop::split_frame(f1, mfs, f));
    EXPECT_EQ(r.dispatch(request(bytes(f.payload.begin(), f.payload.end())), ack.w),
              errc::truncated);
}

TEST(Examples, RandomServiceAnswersV5WithTheSeededScore) {
    for (std::uint32_t seed : {1u, 42u, 123456u}) {
        example::random_service svc(seed);
        std::minstd_rand rng(seed);
        for (int i = 0; i < 5; ++i) {
            ack_buf ack;
            EXPECT_EQ(svc.on_notify(request(payload_of_vector(vec::v5_notify_34)), ack.w),
                      errc::ok);
            const auto acts = ack.actions();
            ASSERT_EQ(acts.size(), 1u);
            EXPECT_EQ(acts[0].type, spop::action_type::set_var);
            EXPECT_EQ(acts[0].scope, spop::var_scope::sess);
            EXPECT_EQ(acts[0].name, "ip_score");
            EXPECT_EQ(acts[0].value, "uint32:" + std::to_string(rng() % 101));
        }
    }
    // Unnamed (args src), IPv6: answered; NULL, a string, another message: not answered.
    example::random_service svc(7);
    ack_buf a6;
    EXPECT_EQ(svc.on_notify(
                  request(payload_of({{"check-client-ip", {{"", value::from_ipv6(ip6)}}}})), a6.w),
              errc::ok);
    EXPECT_EQ(a6.actions().size(), 1u);
    for (const msg& m :
         {msg{"check-client-ip", {{"ip", value::null()}}},
          msg{"check-client-ip", {{"ip", value::from_string("1.2.3.4")}}},
          msg{"check-client-ip", {}}, msg{"other", {{"ip", value::from_ipv4(ip4)}}}}) {
        ack_buf ack;
        EXPECT_EQ(svc.on_notify(request(payload_of({m})), ack.w), errc::ok);
        EXPECT_TRUE(ack.w.empty()) << m.name;
    }
    ack_buf bad;
    EXPECT_EQ(svc.on_notify(request(unhex("0f 636865636b2d636c69656e742d6970 01 02 6970 06 7f00")),
                            bad.w),
              errc::truncated);
}

TEST(Examples, RandomServiceThroughTheConnection) {
    example::random_service svc(99);
    std::minstd_rand rng(99);
    spop::connection_config cfg;
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    spop::connection<example::random_service> conn(svc, pool, cfg);
    (void)conn.feed(unhex(vec::v1_hello_34));
    ASSERT_EQ(conn.state(), spop::conn_state::established);
    (void)conn.consume_output(conn.output().size());
    bytes two = unhex(vec::v5_notify_34);
    const bytes again = unhex(vec::cap_notify_sid241);
    two.insert(two.end(), again.begin(), again.end());
    EXPECT_EQ(conn.feed(two).notifies, 2u);
    const auto out = conn.output();
    const auto frames = spop_test::split_frames(out);
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_EQ(frames[0].stream_id, 1u);
    EXPECT_EQ(frames[1].stream_id, 241u);
    for (const auto& f : frames) {
        EXPECT_EQ(f.type, spop::frame_type::ack);
        const auto p = spop_test::parse_ack_payload(f.payload);
        ASSERT_EQ(p.actions.size(), 1u);
        EXPECT_EQ(p.actions[0].value, "uint32:" + std::to_string(rng() % 101));
    }
}

TEST(Examples, BotService) {
    example::bot_service svc;
    struct tc {
        value ua;
        std::string want; // empty: no action
    };
    for (const tc& t : {tc{value::from_string("Googlebot/2.1"), "bool:true"},
                        tc{value::from_string("some crawler"), "bool:true"},
                        tc{value::from_string("Mozilla/5.0"), "bool:false"}, tc{value::null(), ""},
                        tc{value::from_binary("bot"), ""}}) {
        ack_buf ack;
        EXPECT_EQ(svc.on_notify(request(payload_of({{"check-ua", {{"ua", t.ua}}}})), ack.w),
                  errc::ok);
        const auto acts = ack.actions();
        if (t.want.empty()) {
            EXPECT_TRUE(acts.empty());
        } else {
            ASSERT_EQ(acts.size(), 1u);
            EXPECT_EQ(acts[0].scope, spop::var_scope::txn);
            EXPECT_EQ(acts[0].name, "is_bot");
            EXPECT_EQ(acts[0].value, t.want);
        }
    }
}

} // namespace
