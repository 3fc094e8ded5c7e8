// spop::parse_actions (spop/actions.hpp): the HAProxy side of an ACK. Every ACK vector, every
// action type, scope and value type through ack_writer and back, each error with its offset,
// every truncation offset and a stop at every callback.
#include <spop/actions.hpp>
#include <spop/writer.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support/frames.hpp"
#include "support/hex.hpp"
#include "support/vectors.hpp"

namespace {

using spop::errc;
using spop::value;
using spop::var_scope;
using spop_test::bytes;
using spop_test::describe;
using spop_test::unhex;

constexpr std::uint32_t mfs = spop::default_max_frame_size;

/// Records every callback as "set <scope> <name> <describe(value)>" / "unset <scope> <name>",
/// checks that every view points into the payload, and stops at callback number `stop_at`.
struct recording {
    std::span<const std::uint8_t> payload;
    std::vector<std::string> events;
    std::size_t stop_at = std::numeric_limits<std::size_t>::max();
    bool views_inside = true;

    void check_view(std::string_view s) {
        if (s.empty()) return;
        const auto* b = reinterpret_cast<const std::uint8_t*>(s.data());
        if (b < payload.data() || b + s.size() > payload.data() + payload.size())
            views_inside = false;
    }
    spop::action next() {
        return events.size() == stop_at + 1 ? spop::action::stop : spop::action::proceed;
    }
    spop::action on_set_var(var_scope s, std::string_view name, const value& v) {
        check_view(name);
        check_view(v.bytes);
        events.push_back("set " + std::to_string(static_cast<int>(s)) + " " + std::string(name) +
                         " " + describe(v));
        return next();
    }
    spop::action on_unset_var(var_scope s, std::string_view name) {
        check_view(name);
        events.push_back("unset " + std::to_string(static_cast<int>(s)) + " " + std::string(name));
        return next();
    }
};
static_assert(spop::action_handler<recording>);
static_assert(noexcept(spop::parse_actions(std::span<const std::uint8_t>{},
                                           std::declval<spop::null_action_handler&>())));

spop::result parse(std::span<const std::uint8_t> payload, recording& h) {
    h.payload = payload;
    return spop::parse_actions(payload, h);
}

constexpr std::array<std::uint8_t, 4> ipv4_addr{192, 0, 2, 1};
constexpr std::array<std::uint8_t, 16> ipv6_addr{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                                 0,    0,    0,    0,    0, 0, 0, 1};

std::vector<value> all_values() {
    return {
        value::null(),
        value::from_bool(true),
        value::from_bool(false),
        value::from_int32(-5),
        value::from_int32(std::numeric_limits<std::int32_t>::min()),
        value::from_uint32(16380),
        value::from_int64(-1),
        value::from_uint64(std::numeric_limits<std::uint64_t>::max()),
        value::from_ipv4(ipv4_addr),
        value::from_ipv6(ipv6_addr),
        value::from_string("abc"),
        value::from_string(""),
        value::from_binary(std::string_view("\x00\xff", 2)),
    };
}

/// An ACK payload written by ack_writer, with the payload offset after each action.
struct written {
    bytes payload;
    std::vector<std::size_t> ends;
    std::vector<std::string> expected;
};

/// Every value type in every scope, then an UNSET-VAR in every scope.
written every_action() {
    bytes buf(8192);
    spop::ack_writer w(buf, 5, 9, mfs);
    const std::size_t header = w.size();
    written out;
    for (int scope = 0; scope <= 4; ++scope) {
        const auto s = static_cast<var_scope>(scope);
        for (const value& v : all_values()) {
            std::string name = std::to_string(out.ends.size()); // GCC 12 -Wrestrict: no "v" + ...
            name.insert(0, 1, 'v');
            EXPECT_TRUE(w.set_var(s, name, v));
            out.ends.push_back(w.size() - header);
            out.expected.push_back("set " + std::to_string(scope) + " " + name + " " + describe(v));
        }
        EXPECT_TRUE(w.unset_var(s, "gone"));
        out.ends.push_back(w.size() - header);
        out.expected.push_back("unset " + std::to_string(scope) + " gone");
    }
    const spop::result r = w.finish();
    EXPECT_TRUE(r);
    const auto frames =
        spop_test::split_frames(std::span<const std::uint8_t>(buf).first(r.consumed));
    EXPECT_EQ(frames.size(), 1u);
    if (!frames.empty()) out.payload = frames[0].payload;
    EXPECT_EQ(out.payload.size(), out.ends.back());
    return out;
}

// --- the vectors -----------------------------------------------------------------------------

TEST(Actions, EveryAckVector) {
    const std::vector<std::pair<std::string_view, std::vector<std::string>>> want = {
        {spop_test::vec::v7_ack_42, {"set 1 ip_score uint32:42"}},
        {spop_test::vec::v7_ack_empty, {}},
        {spop_test::vec::v7_ack_set_unset, {"set 1 ip_score uint32:42", "unset 1 ip_score"}},
        {spop_test::vec::v7_ack_int32_neg5, {"set 1 ip_score int32:-5"}},
        {spop_test::vec::cap_ack_26, {"set 1 ip_score uint32:83"}},
        {spop_test::vec::cap_ack_34, {"set 1 ip_score uint32:83"}},
    };
    for (const auto& [hex, events] : want) {
        SCOPED_TRACE(std::string(hex));
        const auto frames = spop_test::split_frames(unhex(hex));
        ASSERT_EQ(frames.size(), 1u);
        recording h;
        const spop::result r = parse(frames[0].payload, h);
        EXPECT_EQ(r, (spop::result{errc::ok, frames[0].payload.size()}));
        EXPECT_EQ(h.events, events);
        EXPECT_TRUE(h.views_inside);
    }
    // And nothing in the vector set that is an ACK escapes the table above.
    std::size_t acks = 0;
    for (const auto& n : spop_test::vec::all()) {
        const auto frames = spop_test::split_frames(n.frame);
        if (frames.size() != 1 || frames[0].type != spop::frame_type::ack) continue;
        ++acks;
        spop::null_action_handler h;
        EXPECT_TRUE(spop::parse_actions(frames[0].payload, h)) << n.name;
    }
    EXPECT_EQ(acks, want.size());
}

// --- round trip with ack_writer --------------------------------------------------------------

TEST(Actions, EveryScopeAndTypeRoundTrips) {
    const written w = every_action();
    recording h;
    const spop::result r = parse(w.payload, h);
    EXPECT_EQ(r, (spop::result{errc::ok, w.payload.size()}));
    EXPECT_EQ(h.events, w.expected);
    EXPECT_TRUE(h.views_inside);
    EXPECT_EQ(h.events.size(), 5 * (all_values().size() + 1));
}

TEST(Actions, LongAndEmptyNamesRoundTrip) {
    const std::string long_name(300, 'n'); // a two-byte length varint
    bytes buf(1024);
    spop::ack_writer w(buf, 1, 1, mfs);
    ASSERT_TRUE(w.set_var(var_scope::txn, long_name, value::from_string(long_name)));
    ASSERT_TRUE(w.unset_var(var_scope::req, ""));
    const spop::result fr = w.finish();
    ASSERT_TRUE(fr);
    const auto frames =
        spop_test::split_frames(std::span<const std::uint8_t>(buf).first(fr.consumed));
    ASSERT_EQ(frames.size(), 1u);
    recording h;
    EXPECT_TRUE(parse(frames[0].payload, h));
    ASSERT_EQ(h.events.size(), 2u);
    EXPECT_EQ(h.events[0], "set 2 " + long_name + " " + describe(value::from_string(long_name)));
    EXPECT_EQ(h.events[1], "unset 3 ");
    EXPECT_TRUE(h.views_inside);
}

TEST(Actions, EmptyPayloadIsNoAction) {
    recording h;
    EXPECT_EQ(parse({}, h), (spop::result{errc::ok, 0}));
    EXPECT_TRUE(h.events.empty());
}

// --- errors ----------------------------------------------------------------------------------

struct bad_case {
    const char* what;
    std::string_view hex;
    errc ec;
    std::size_t offset;
    std::size_t delivered; ///< actions handed to the handler before the error
};

TEST(Actions, EachErrorWithItsOffset) {
    const bad_case cases[] = {
        {"action type 0", "00 03 01 00 00", errc::bad_action, 0, 0},
        {"action type 3", "03 02 01 00", errc::bad_action, 0, 0},
        {"action type 255", "ff", errc::bad_action, 0, 0},
        {"SET-VAR with NB-ARGS 2", "01 02 01 00 00", errc::bad_action, 1, 0},
        {"SET-VAR with NB-ARGS 4", "01 04 01 00 00", errc::bad_action, 1, 0},
        {"UNSET-VAR with NB-ARGS 3", "02 03 01 00", errc::bad_action, 1, 0},
        {"UNSET-VAR with NB-ARGS 0", "02 00 01 00", errc::bad_action, 1, 0},
        {"SET-VAR scope 5", "01 03 05 00 00", errc::bad_action, 2, 0},
        {"UNSET-VAR scope 255", "02 02 ff 00", errc::bad_action, 2, 0},
        {"bad second action", "02 02 01 01 61 07 02 01 00", errc::bad_action, 5, 1},
        {"type byte only", "01", errc::truncated, 1, 0},
        {"no scope", "02 02", errc::truncated, 2, 0},
        {"no name", "02 02 01", errc::truncated, 3, 0},
        {"name past the end", "02 02 01 05 61 62", errc::truncated, 3, 0},
        {"name length overflow", "02 02 01 ff ff ff ff ff ff ff ff ff ff ff 00",
         errc::varint_overflow, 3, 0},
        {"no value", "01 03 01 01 61", errc::truncated, 5, 0},
        {"value type 10", "01 03 01 01 61 0a", errc::bad_data_type, 5, 0},
        {"value type 15", "01 03 01 01 61 0f", errc::bad_data_type, 5, 0},
        {"uint32 without bytes", "01 03 01 01 61 03", errc::truncated, 5, 0},
        {"integer overflow", "01 03 01 01 61 05 ff ff ff ff ff ff ff ff ff ff ff 00",
         errc::varint_overflow, 5, 0},
        {"short ipv4", "01 03 01 01 61 06 7f 00 00", errc::truncated, 5, 0},
        {"short ipv6", "01 03 01 01 61 07 20 01", errc::truncated, 5, 0},
        {"string past the end", "01 03 01 01 61 08 04 61 62 63", errc::truncated, 5, 0},
        {"good then cut", "02 02 01 01 61 01 03 01 01 62 09 01", errc::truncated, 10, 1},
    };
    for (const bad_case& c : cases) {
        SCOPED_TRACE(c.what);
        const bytes payload = unhex(c.hex);
        recording h;
        const spop::result r = parse(payload, h);
        EXPECT_EQ(r.ec, c.ec) << spop::message(r.ec);
        EXPECT_EQ(r.consumed, c.offset);
        EXPECT_EQ(h.events.size(), c.delivered);
        EXPECT_EQ(spop::to_status(r.ec), spop::status::invalid);
    }
}

TEST(Actions, EveryTruncationOffset) {
    const written w = every_action();
    for (std::size_t n = 0; n < w.payload.size(); ++n) {
        SCOPED_TRACE(n);
        // A copy of exactly n bytes, so that any read past the end is a sanitizer finding.
        const bytes cut(w.payload.begin(), w.payload.begin() + static_cast<std::ptrdiff_t>(n));
        recording h;
        const spop::result r = parse(cut, h);
        std::size_t whole = 0; // actions that end at or before n
        while (whole < w.ends.size() && w.ends[whole] <= n) ++whole;
        const std::size_t start = whole == 0 ? 0 : w.ends[whole - 1];
        ASSERT_EQ(h.events.size(), whole);
        for (std::size_t i = 0; i < whole; ++i) ASSERT_EQ(h.events[i], w.expected[i]);
        if (n == start) {
            EXPECT_EQ(r, (spop::result{errc::ok, n}));
        } else {
            EXPECT_EQ(r.ec, errc::truncated) << spop::message(r.ec);
            EXPECT_GT(r.consumed, start);
            EXPECT_LE(r.consumed, n);
        }
    }
}

TEST(Actions, StopAtEveryCallback) {
    const written w = every_action();
    for (std::size_t k = 0; k < w.ends.size(); ++k) {
        SCOPED_TRACE(k);
        recording h;
        h.stop_at = k;
        const spop::result r = parse(w.payload, h);
        EXPECT_EQ(r, (spop::result{errc::stopped, w.ends[k]}));
        ASSERT_EQ(h.events.size(), k + 1);
        EXPECT_EQ(h.events.back(), w.expected[k]);
        // The rest parses on its own from `consumed`: nothing is lost or repeated.
        recording rest;
        EXPECT_EQ(parse(std::span<const std::uint8_t>(w.payload).subspan(r.consumed), rest).ec,
                  errc::ok);
        EXPECT_EQ(rest.events.size(), w.ends.size() - k - 1);
    }
}

TEST(Actions, TestHelperKeepsItsMeaning) {
    const written w = every_action();
    const spop_test::ack_parse p = spop_test::parse_ack_payload(w.payload);
    EXPECT_EQ(p.error, "");
    EXPECT_EQ(p.offset, w.payload.size());
    ASSERT_EQ(p.actions.size(), w.expected.size());
    EXPECT_EQ(p.actions[3].name, "v3");
    EXPECT_EQ(p.actions[3].value, "int32:-5");
    EXPECT_EQ(p.actions.back().type, spop::action_type::unset_var);
    EXPECT_EQ(p.actions.back().scope, var_scope::res);

    const spop_test::ack_parse bad = spop_test::parse_ack_payload(unhex("02 02 01 01 61 02 03"));
    EXPECT_EQ(bad.ec, errc::bad_action);
    EXPECT_EQ(bad.error, spop::message(errc::bad_action));
    EXPECT_EQ(bad.offset, 6u);
    EXPECT_EQ(bad.actions.size(), 1u);
}

} // namespace
