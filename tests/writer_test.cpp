// Encoders (ACK, AGENT-HELLO, AGENT-DISCONNECT, KV and NOTIFY writers), their limits, and the
// status/errc tables against the wire strings of PROTOCOL-NOTES §6.
#include <spop/status.hpp>
#include <spop/writer.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "support/frames.hpp"
#include "support/hex.hpp"

namespace {

using spop::errc;
using spop::status;
using spop::value;
using spop::var_scope;
using spop_test::bytes;
using spop_test::norm_hex;
using spop_test::to_hex;
using spop_test::unhex;

constexpr std::uint32_t mfs = spop::default_max_frame_size;
constexpr std::array<std::uint8_t, 4> ipv4_addr{192, 0, 2, 1};
constexpr std::array<std::uint8_t, 16> ipv6_addr{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                                 0,    0,    0,    0,    0, 0, 0, 1};

std::string frame_hex(const bytes& buf, spop::result r) {
    if (!r) return std::string("error: ") + std::string(spop::message(r.ec));
    return to_hex(std::span<const std::uint8_t>(buf).first(r.consumed));
}

// --- ACK: SET-VAR with every scope and every type --------------------------------------------

struct typed {
    const char* name;
    value v;
    const char* hex;
};

std::vector<typed> all_types() {
    return {
        {"null", value::null(), "00"},
        {"true", value::from_bool(true), "11"},
        {"false", value::from_bool(false), "01"},
        {"int32", value::from_int32(-5), "02 fbf0fefefefefefefe0e"},
        {"uint32", value::from_uint32(16380), "03 fcf006"},
        {"int64", value::from_int64(-1), "04 fff0fefefefefefefe0e"},
        {"uint64", value::from_uint64(std::numeric_limits<std::uint64_t>::max()),
         "05 fff0fefefefefefefe0e"},
        {"ipv4", value::from_ipv4(ipv4_addr), "06 c0000201"},
        {"ipv6", value::from_ipv6(ipv6_addr), "07 20010db8000000000000000000000001"},
        {"string", value::from_string("abc"), "08 03 616263"},
        {"binary", value::from_binary(std::string_view("\x00\xff", 2)), "09 02 00ff"},
    };
}

TEST(AckWriter, SetVarEveryScopeEveryType) {
    for (std::uint8_t scope = 0; scope <= 4; ++scope) {
        for (const auto& t : all_types()) {
            SCOPED_TRACE(std::string(t.name) + " scope " + std::to_string(scope));
            bytes buf(256);
            spop::ack_writer w(buf, 1, 1, mfs);
            EXPECT_TRUE(w.empty());
            ASSERT_TRUE(w.set_var(static_cast<var_scope>(scope), "ip_score", t.v));
            EXPECT_FALSE(w.empty());
            EXPECT_TRUE(w.ok());
            const std::string action = norm_hex("01 03") + to_hex(bytes{scope}) +
                                       norm_hex("08 69705f73636f7265") + norm_hex(t.hex);
            const std::size_t len = 7 + action.size() / 2;
            bytes prefix(4);
            spop::store_be32(prefix.data(), static_cast<std::uint32_t>(len));
            EXPECT_EQ(frame_hex(buf, w.finish()),
                      to_hex(prefix) + norm_hex("67 00000001 01 01") + action);
        }
    }
}

TEST(AckWriter, ScopeValues) {
    EXPECT_EQ(static_cast<int>(var_scope::proc), 0);
    EXPECT_EQ(static_cast<int>(var_scope::sess), 1);
    EXPECT_EQ(static_cast<int>(var_scope::txn), 2);
    EXPECT_EQ(static_cast<int>(var_scope::req), 3);
    EXPECT_EQ(static_cast<int>(var_scope::res), 4);
}

TEST(AckWriter, UnsetVarEveryScope) {
    for (std::uint8_t scope = 0; scope <= 4; ++scope) {
        bytes buf(64);
        spop::ack_writer w(buf, 3, 1, mfs);
        ASSERT_TRUE(w.unset_var(static_cast<var_scope>(scope), "ip_score"));
        EXPECT_EQ(frame_hex(buf, w.finish()), norm_hex("00000013 67 00000001 03 01 02 02") +
                                                  to_hex(bytes{scope}) +
                                                  norm_hex("08 69705f73636f7265"))
            << int(scope);
    }
}

TEST(AckWriter, ManyActionsParseBack) {
    bytes buf(4096);
    spop::ack_writer w(buf, 241, std::uint64_t{1} << 40, mfs);
    for (const auto& t : all_types()) ASSERT_TRUE(w.set_var(var_scope::txn, t.name, t.v));
    ASSERT_TRUE(w.unset_var(var_scope::res, "gone"));
    const spop::result r = w.finish();
    ASSERT_TRUE(r);
    const auto frames =
        spop_test::split_frames(std::span<const std::uint8_t>(buf).first(r.consumed));
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].type, spop::frame_type::ack);
    EXPECT_EQ(frames[0].stream_id, 241u);
    EXPECT_EQ(frames[0].frame_id, std::uint64_t{1} << 40);
    const auto p = spop_test::parse_ack_payload(frames[0].payload);
    EXPECT_EQ(p.error, "");
    ASSERT_EQ(p.actions.size(), all_types().size() + 1);
    EXPECT_EQ(p.actions[3].name, "int32");
    EXPECT_EQ(p.actions[3].value, "int32:-5");
    EXPECT_EQ(p.actions.back().type, spop::action_type::unset_var);
    EXPECT_EQ(p.actions.back().scope, var_scope::res);
}

// An empty ACK for ids (1, 1): what finish() returns when every action was left out.
const std::string empty_ack_1_1 = norm_hex("00000007 67 00000001 01 01");

TEST(AckWriter, NoBufferSpaceVersusExceedsMaxFrameSize) {
    const std::string big(300, 'v');
    {
        // The caller's buffer is the limit: the action is left out, the ACK is still produced.
        bytes buf(40);
        spop::ack_writer w(buf, 1, 1, mfs);
        EXPECT_FALSE(w.set_var(var_scope::sess, "x", value::from_string(big)));
        EXPECT_TRUE(w.ok());
        EXPECT_EQ(w.dropped(), 1u);
        EXPECT_EQ(w.drop_reason(), errc::no_buffer_space);
        EXPECT_TRUE(w.empty());
        EXPECT_EQ(frame_hex(buf, w.finish()), empty_ack_1_1);
    }
    {
        // max-frame-size is the limit (the buffer would have room).
        bytes buf(4096);
        spop::ack_writer w(buf, 1, 1, 256);
        EXPECT_FALSE(w.set_var(var_scope::sess, "x", value::from_string(big)));
        EXPECT_EQ(w.drop_reason(), errc::exceeds_max_frame_size);
        EXPECT_EQ(w.dropped(), 1u);
        EXPECT_EQ(frame_hex(buf, w.finish()), empty_ack_1_1);
    }
    {
        // A buffer of exactly 4 + max-frame-size: the frame is too big for the peer.
        bytes buf(4 + 256);
        spop::ack_writer w(buf, 1, 1, 256);
        EXPECT_FALSE(w.set_var(var_scope::sess, "x", value::from_string(big)));
        EXPECT_EQ(w.drop_reason(), errc::exceeds_max_frame_size);
    }
    {
        // The header alone does not fit: no ACK at all, and nothing counted as dropped.
        bytes buf(10);
        spop::ack_writer w(buf, 1, 1, mfs);
        EXPECT_FALSE(w.ok());
        EXPECT_EQ(w.error(), errc::no_buffer_space);
        EXPECT_FALSE(w.unset_var(var_scope::sess, "x"));
        EXPECT_EQ(w.dropped(), 0u);
        EXPECT_EQ(w.finish().ec, errc::no_buffer_space);
    }
    {
        // A max-frame-size below the header: the same, as exceeds_max_frame_size.
        bytes buf(64);
        spop::ack_writer w(buf, 1, 1, 6);
        EXPECT_FALSE(w.ok());
        EXPECT_FALSE(w.set_var(var_scope::sess, "x", value::null()));
        EXPECT_EQ(w.finish().ec, errc::exceeds_max_frame_size);
    }
    {
        // A default-constructed writer refuses everything and never writes.
        spop::ack_writer w;
        EXPECT_FALSE(w.ok());
        EXPECT_FALSE(w.set_var(var_scope::sess, "x", value::null()));
        EXPECT_EQ(w.dropped(), 0u);
        EXPECT_NE(w.finish().ec, errc::ok);
    }
}

TEST(AckWriter, OversizeFrameIsExceedsMaxFrameSizeEvenWithASmallBuffer) {
    // writer.hpp: "exceeds_max_frame_size (checked first, because it is what the peer would
    // reject)". A 300-byte value can never fit a 256-byte max-frame-size, whatever the buffer:
    // the reason must not depend on how much buffer the caller happened to pass.
    const std::string big(300, 'v');
    for (const std::size_t buf_size : {4096u, 261u, 260u, 259u, 200u, 100u}) {
        SCOPED_TRACE(buf_size);
        bytes buf(buf_size);
        spop::ack_writer w(buf, 1, 1, 256);
        EXPECT_FALSE(w.set_var(var_scope::sess, "x", value::from_string(big)));
        EXPECT_EQ(w.drop_reason(), errc::exceeds_max_frame_size);
        EXPECT_EQ(frame_hex(buf, w.finish()), empty_ack_1_1);
    }
}

TEST(AckWriter, FrameLengthExactlyAtMaxFrameSize) {
    // FRAME-LENGTH = 7 (header) + 3 (action, nb-args, scope) + 2 (name "x") + value.
    // A STRING of n bytes takes 1 + (n < 240 ? 1 : 2) + n.
    constexpr std::uint32_t limit = 300;
    for (std::size_t n = 200; n < 320; ++n) {
        const std::size_t frame_len = 7 + 3 + 2 + 1 + (n < 240 ? 1 : 2) + n;
        for (const bool buffer_is_limit : {false, true}) {
            SCOPED_TRACE(std::to_string(n) + (buffer_is_limit ? " buffer" : " mfs"));
            bytes buf(buffer_is_limit ? 4 + limit : 4096);
            spop::ack_writer w(buf, 1, 1, buffer_is_limit ? 100000 : limit);
            const std::string text(n, 'a');
            const value v = value::from_string(text);
            EXPECT_EQ(spop::set_var_size("x", v) + 7, frame_len);
            const bool ok = w.set_var(var_scope::req, "x", v);
            EXPECT_EQ(ok, frame_len <= limit);
            const spop::result r = w.finish();
            if (frame_len <= limit) {
                EXPECT_EQ(r, (spop::result{errc::ok, 4 + frame_len}));
                EXPECT_EQ(w.dropped(), 0u);
            } else {
                // Left out, and the ACK still goes: an empty one.
                EXPECT_EQ(r, (spop::result{errc::ok, 4 + 7}));
                EXPECT_EQ(w.dropped(), 1u);
                EXPECT_EQ(w.drop_reason(),
                          buffer_is_limit ? errc::no_buffer_space : errc::exceeds_max_frame_size);
            }
        }
    }
}

TEST(AckWriter, RollbackKeepsEarlierActionsAndGoesOn) {
    bytes buf(1024, 0xEE); // larger than 4 + max-frame-size: the limit is max-frame-size
    spop::ack_writer w(buf, 1, 1, 256);
    ASSERT_TRUE(w.set_var(var_scope::sess, "ip_score", value::from_uint32(42)));
    // The first action, as V7 has it.
    const std::string first =
        norm_hex("00000000 67 00000001 01 01 01 03 01 08 69705f73636f7265 03 2a");
    ASSERT_EQ(to_hex(std::span<const std::uint8_t>(buf).first(25)), first);
    // A second action too big for max-frame-size is left out as a whole...
    EXPECT_FALSE(w.set_var(var_scope::sess, "blob", value::from_binary(std::string(400, 'b'))));
    EXPECT_EQ(w.drop_reason(), errc::exceeds_max_frame_size);
    EXPECT_EQ(w.dropped(), 1u);
    // ...leaves the first untouched; the writer is not empty and still usable.
    EXPECT_EQ(to_hex(std::span<const std::uint8_t>(buf).first(25)), first);
    EXPECT_FALSE(w.empty());
    EXPECT_TRUE(w.ok());
    // Not sticky: a later action that fits is written after the first.
    EXPECT_TRUE(w.unset_var(var_scope::txn, "x"));
    EXPECT_EQ(frame_hex(buf, w.finish()),
              norm_hex("0000001a 67 00000001 01 01 01 03 01 08 69705f73636f7265 03 2a "
                       "02 02 02 01 78"));

    // A failed first action leaves nothing written: the writer is still empty.
    spop::ack_writer w2(buf, 1, 1, 256);
    EXPECT_FALSE(w2.set_var(var_scope::sess, "blob", value::from_binary(std::string(400, 'b'))));
    EXPECT_TRUE(w2.empty());
    EXPECT_EQ(frame_hex(buf, w2.finish()), empty_ack_1_1);
}

// One action of a test script: SET-VAR (value set) or UNSET-VAR.
struct scripted {
    var_scope scope;
    std::string name;
    bool set;
    value v;
    [[nodiscard]] std::size_t size() const {
        return set ? spop::set_var_size(name, v) : spop::unset_var_size(name);
    }
    bool write(spop::ack_writer& w) const {
        return set ? w.set_var(scope, name, v) : w.unset_var(scope, name);
    }
};

std::vector<scripted> script() {
    static const std::string long_text(300, 'c');
    std::vector<scripted> s;
    s.push_back({var_scope::sess, "ip_score", true, value::from_uint32(42)});
    s.push_back({var_scope::sess, "ip_category", true, value::from_string(long_text)});
    s.push_back({var_scope::txn, "x", false, value::null()});
    for (const auto& t : all_types()) s.push_back({var_scope::req, t.name, true, t.v});
    s.push_back({var_scope::res, std::string(250, 'n'), false, value::null()}); // 2-byte varint
    s.push_back({var_scope::sess, "ip_score", true, value::from_uint32(7)});
    return s;
}

// Writes `actions` into a writer limited either by its buffer (`limit` bytes, length prefix
// included) or by max-frame-size (`limit` - 4), and checks the result against the greedy rule:
// each action is kept iff it fits after the ones kept before it.
void check_greedy(const std::vector<scripted>& actions, std::size_t limit, bool buffer_is_limit,
                  std::uint64_t sid, std::uint64_t fid) {
    const std::size_t header = spop::frame_header_size(sid, fid);
    // The writer gets a span inside a larger, poisoned buffer: nothing may land outside it.
    const std::size_t span_size = buffer_is_limit ? limit : limit + 512;
    bytes big(span_size + 64, 0xEE);
    const std::uint32_t max_frame =
        buffer_is_limit ? spop::max_max_frame_size : static_cast<std::uint32_t>(limit - 4);
    spop::ack_writer w(std::span<std::uint8_t>(big).first(span_size), sid, fid, max_frame);
    if (header > limit) {
        EXPECT_FALSE(w.ok());
        for (const auto& a : actions) EXPECT_FALSE(a.write(w));
        EXPECT_EQ(w.dropped(), 0u);
        EXPECT_FALSE(w.finish());
        return;
    }
    ASSERT_TRUE(w.ok());
    std::size_t used = header;
    std::vector<const scripted*> kept;
    std::size_t dropped = 0;
    for (const auto& a : actions) {
        const bool fits = used + a.size() <= limit;
        EXPECT_EQ(a.write(w), fits) << a.name << " at " << used;
        if (fits) {
            used += a.size();
            kept.push_back(&a);
        } else {
            ++dropped;
            EXPECT_EQ(w.drop_reason(),
                      buffer_is_limit ? errc::no_buffer_space : errc::exceeds_max_frame_size);
        }
        EXPECT_EQ(w.size(), used);
    }
    EXPECT_EQ(w.dropped(), dropped);
    const spop::result r = w.finish();
    ASSERT_TRUE(r);
    ASSERT_EQ(r.consumed, used);
    for (std::size_t i = span_size; i < big.size(); ++i) ASSERT_EQ(big[i], 0xEE) << i;

    // The same frame, written with only the kept actions and no limit.
    bytes ref(8192);
    spop::ack_writer rw(ref, sid, fid, spop::max_max_frame_size);
    for (const scripted* a : kept) ASSERT_TRUE(a->write(rw));
    const spop::result rr = rw.finish();
    ASSERT_TRUE(rr);
    EXPECT_EQ(to_hex(std::span<const std::uint8_t>(big).first(r.consumed)),
              to_hex(std::span<const std::uint8_t>(ref).first(rr.consumed)));
    // And it parses back as a valid ACK with exactly those actions.
    const auto frames =
        spop_test::split_frames(std::span<const std::uint8_t>(big).first(r.consumed));
    ASSERT_EQ(frames.size(), 1u);
    const auto p = spop_test::parse_ack_payload(frames[0].payload);
    EXPECT_EQ(p.error, "");
    ASSERT_EQ(p.actions.size(), kept.size());
    for (std::size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(p.actions[i].name, kept[i]->name);
}

TEST(AckWriter, RollbackAtEveryBoundary) {
    const auto actions = script();
    std::size_t total = 0;
    for (const auto& a : actions) total += a.size();
    for (const auto& [sid, fid] : {std::pair<std::uint64_t, std::uint64_t>{1, 1},
                                   {std::numeric_limits<std::uint64_t>::max(), 1u << 20}}) {
        const std::size_t header = spop::frame_header_size(sid, fid);
        // Every limit from "not even the header" to "everything fits", in both modes, and with
        // the actions in both orders (big ones first leaves room that small ones then use).
        for (std::size_t limit = header > 4 ? header - 2 : 0; limit <= header + total + 2;
             ++limit) {
            for (const bool buffer_is_limit : {true, false}) {
                if (!buffer_is_limit && limit < 4) continue; // max-frame-size = limit - 4
                for (const bool reversed : {false, true}) {
                    SCOPED_TRACE("limit " + std::to_string(limit) +
                                 (buffer_is_limit ? " buffer" : " mfs") +
                                 (reversed ? " reversed" : "") + " sid " + std::to_string(sid));
                    auto a = actions;
                    if (reversed) std::reverse(a.begin(), a.end());
                    check_greedy(a, limit, buffer_is_limit, sid, fid);
                    if (::testing::Test::HasFatalFailure()) return;
                }
            }
        }
    }
}

TEST(AckWriter, ManyScoresAtSmallFrameFinishAfterDrops) {
    // Issue 10: 9 scores and 9 64-byte categories at max-frame-size 256. Scores first: all nine
    // fit, then as many categories as the frame still holds; the ACK stays a valid frame.
    bytes buf(4096);
    spop::ack_writer w(buf, 1, 1, 256);
    const std::string cat(64, 'k');
    for (int i = 0; i < 9; ++i)
        EXPECT_TRUE(w.set_var(var_scope::sess, "ip_score", value::from_uint32(50)));
    int cats = 0;
    for (int i = 0; i < 9; ++i)
        cats += w.set_var(var_scope::sess, "ip_category", value::from_string(cat)) ? 1 : 0;
    EXPECT_EQ(cats, 1); // 11 + 9*14 = 137 bytes, then one 83-byte category
    EXPECT_EQ(w.dropped(), 8u);
    const spop::result r = w.finish();
    ASSERT_TRUE(r);
    EXPECT_LE(r.consumed, 4u + 256u);
    const auto frames =
        spop_test::split_frames(std::span<const std::uint8_t>(buf).first(r.consumed));
    ASSERT_EQ(frames.size(), 1u);
    const auto p = spop_test::parse_ack_payload(frames[0].payload);
    EXPECT_EQ(p.error, "");
    ASSERT_EQ(p.actions.size(), 10u);
    for (int i = 0; i < 9; ++i) EXPECT_EQ(p.actions[static_cast<std::size_t>(i)].name, "ip_score");
    EXPECT_EQ(p.actions[9].name, "ip_category");
}

TEST(AckWriter, ReserveKeepsRoomForALaterAnswerUnderBothLimits) {
    const value score = value::from_uint32(50);
    const value rate = value::from_uint32(0xFFFFFFFFu);
    const std::size_t later = spop::set_var_size("rate", rate);
    for (const bool frame_limit : {true, false}) {
        SCOPED_TRACE(frame_limit ? "max-frame-size" : "buffer");
        // Either limit may be the tight one: a 4 KiB buffer under a 256-byte frame, or a
        // 260-byte buffer under a large frame.
        bytes buf(frame_limit ? 4096 : 260);
        spop::ack_writer w(buf, 1, 1, frame_limit ? 256 : 16380);
        w.reserve(later);
        int scores = 0;
        for (int i = 0; i < 40; ++i)
            scores += w.set_var(var_scope::sess, "ip_score", score) ? 1 : 0;
        EXPECT_GT(w.dropped(), 0u);
        EXPECT_FALSE(w.set_var(var_scope::txn, "rate", rate)) << "still reserved";
        w.reserve(0);
        EXPECT_TRUE(w.set_var(var_scope::txn, "rate", rate)) << "the room was kept";
        const spop::result r = w.finish();
        ASSERT_TRUE(r);
        const auto frames =
            spop_test::split_frames(std::span<const std::uint8_t>(buf).first(r.consumed));
        ASSERT_EQ(frames.size(), 1u);
        const auto p = spop_test::parse_ack_payload(frames[0].payload);
        EXPECT_EQ(p.error, "");
        ASSERT_EQ(p.actions.size(), static_cast<std::size_t>(scores) + 1);
        EXPECT_EQ(p.actions.back().name, "rate");
        // Without the reservation the scores would have taken that room.
        bytes buf2(buf.size());
        spop::ack_writer w2(buf2, 1, 1, frame_limit ? 256 : 16380);
        for (int i = 0; i < 40; ++i) (void)w2.set_var(var_scope::sess, "ip_score", score);
        EXPECT_FALSE(w2.set_var(var_scope::txn, "rate", rate));
    }
}

TEST(AckWriter, SizesAndLimits) {
    for (const auto& t : all_types()) {
        bytes buf(512);
        spop::ack_writer w(buf, 1, 1, mfs);
        ASSERT_TRUE(w.set_var(var_scope::sess, t.name, t.v));
        EXPECT_EQ(w.size(), spop::frame_header_size(1, 1) + spop::set_var_size(t.name, t.v));
    }
    const std::string n250(250, 'n');
    bytes buf(512);
    spop::ack_writer w(buf, 1, 1, mfs);
    ASSERT_TRUE(w.unset_var(var_scope::sess, n250));
    EXPECT_EQ(w.size(), spop::frame_header_size(1, 1) + spop::unset_var_size(n250));
    constexpr auto max_id = std::numeric_limits<std::uint64_t>::max();
    EXPECT_EQ(spop::max_ack_header_length, spop::frame_header_size(max_id, max_id) - 4);
    // "sess.iprep.ip_score" is 19 bytes: well below HAProxy's 63.
    EXPECT_EQ(spop::haproxy_max_var_full_name, 63u);
}

TEST(AckWriter, EmptyAck) {
    bytes buf(64);
    spop::ack_writer w(buf, 1, 1, mfs);
    EXPECT_TRUE(w.empty());
    EXPECT_EQ(frame_hex(buf, w.finish()), norm_hex("00000007 67 00000001 01 01"));
}

// --- AGENT-HELLO ----------------------------------------------------------------------------

TEST(AgentHello, ExactBytes) {
    bytes buf(256);
    EXPECT_EQ(frame_hex(buf, spop::encode_agent_hello(buf, 16380, "pipelining")),
              norm_hex("00000040 65 00000001 00 00 07 76657273696f6e 08 03 322e30 0e "
                       "6d61782d6672616d652d73697a65 03 fcf006 0c 6361706162696c6974696573 08 0a "
                       "706970656c696e696e67"));
    EXPECT_EQ(frame_hex(buf, spop::encode_agent_hello(buf, 256, "")),
              norm_hex("00000035 65 00000001 00 00 07 76657273696f6e 08 03 322e30 0e "
                       "6d61782d6672616d652d73697a65 03 f001 0c 6361706162696c6974696573 08 00"));
}

TEST(AgentHello, Limits) {
    bytes small(60);
    EXPECT_EQ(spop::encode_agent_hello(small, 16380, "pipelining").ec, errc::no_buffer_space);
    bytes big(256);
    // A max-frame-size below the AGENT-HELLO's own length cannot be honoured.
    EXPECT_EQ(spop::encode_agent_hello(big, 40, "pipelining").ec, errc::exceeds_max_frame_size);
    bytes exact(68);
    EXPECT_EQ(spop::encode_agent_hello(exact, 16380, "pipelining"), (spop::result{errc::ok, 68}));
}

// --- AGENT-DISCONNECT ------------------------------------------------------------------------

TEST(AgentDisconnect, MessageCutTo255Bytes) {
    for (const std::size_t n : {0u, 1u, 254u, 255u, 256u, 300u, 5000u}) {
        SCOPED_TRACE(n);
        const std::string msg(n, 'm');
        bytes buf(8192);
        const spop::result r = spop::encode_agent_disconnect(buf, 16380, 13, msg);
        ASSERT_TRUE(r);
        const auto frames =
            spop_test::split_frames(std::span<const std::uint8_t>(buf).first(r.consumed));
        ASSERT_EQ(frames.size(), 1u);
        EXPECT_EQ(frames[0].type, spop::frame_type::agent_disconnect);
        const auto d = spop_test::read_disconnect(frames[0]);
        EXPECT_TRUE(d.well_formed);
        EXPECT_EQ(d.status, 13u);
        EXPECT_EQ(d.message, msg.substr(0, 255));
    }
}

TEST(AgentDisconnect, MaxSizeBoundIsTight) {
    bytes buf(1024);
    const spop::result r = spop::encode_agent_disconnect(
        buf, 16380, std::numeric_limits<std::uint32_t>::max(), std::string(1000, 'z'));
    ASSERT_TRUE(r);
    EXPECT_EQ(r.consumed, spop::max_agent_disconnect_size);
    // And it fits in exactly that many bytes.
    bytes exact(spop::max_agent_disconnect_size);
    EXPECT_TRUE(spop::encode_agent_disconnect(exact, 16380, 0xFFFFFFFFu, std::string(255, 'z')));
}

/// At the smallest max-frame-size (256) a long message (up to the 255-byte cap) does not fit
/// with the status: it is shortened to fit, never the whole DISCONNECT refused.
TEST(AgentDisconnect, LongMessageShortenedToFitTheSmallestFrameSize) {
    for (const std::uint32_t code : {0u, 240u, 0xFFFFFFFFu}) {
        for (const std::size_t n : {200u, 226u, 227u, 228u, 240u, 255u, 1000u}) {
            SCOPED_TRACE(std::to_string(code) + " " + std::to_string(n));
            bytes buf(1024);
            const spop::result r =
                spop::encode_agent_disconnect(buf, 256, code, std::string(n, 'm'));
            ASSERT_TRUE(r);
            EXPECT_LE(r.consumed, 4u + 256u);
            const auto frames =
                spop_test::split_frames(std::span<const std::uint8_t>(buf).first(r.consumed));
            ASSERT_EQ(frames.size(), 1u);
            const auto d = spop_test::read_disconnect(frames[0]);
            EXPECT_TRUE(d.well_formed);
            EXPECT_EQ(d.status, code);
            EXPECT_EQ(d.message, std::string(d.message.size(), 'm'));
            EXPECT_GE(d.message.size(), std::min<std::size_t>(n, 220));
            EXPECT_EQ(r.consumed == 4u + 256u || d.message.size() == std::min<std::size_t>(n, 255),
                      true);
        }
    }
}

TEST(AgentDisconnect, StandardStatusCarriesTheWireMessage) {
    for (const std::uint32_t code :
         {0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 10u, 11u, 12u, 13u, 99u}) {
        SCOPED_TRACE(code);
        bytes buf(512);
        const spop::result r = spop::encode_agent_disconnect(buf, 16380, static_cast<status>(code));
        ASSERT_TRUE(r);
        const auto frames =
            spop_test::split_frames(std::span<const std::uint8_t>(buf).first(r.consumed));
        ASSERT_EQ(frames.size(), 1u);
        const auto d = spop_test::read_disconnect(frames[0]);
        EXPECT_TRUE(d.well_formed);
        EXPECT_EQ(d.status, code);
        EXPECT_EQ(d.message, spop::status_message(static_cast<status>(code)));
    }
}

// --- KV and NOTIFY writers -------------------------------------------------------------------

TEST(KvWriter, CustomFlags) {
    bytes buf(64);
    spop::kv_writer w(buf, mfs, spop::frame_type::haproxy_hello, 0);
    EXPECT_TRUE(w.put("a", value::null()));
    EXPECT_EQ(frame_hex(buf, w.finish()), norm_hex("0000000a 01 00000000 00 00 01 61 00"));
    spop::kv_writer w2(buf, mfs, spop::frame_type::haproxy_disconnect, 0x80000003u);
    EXPECT_EQ(frame_hex(buf, w2.finish()), norm_hex("00000007 02 80000003 00 00"));
}

TEST(KvWriter, FailedPutIsRolledBack) {
    bytes buf(20, 0xEE);
    spop::kv_writer w(buf, mfs, spop::frame_type::haproxy_hello);
    EXPECT_TRUE(w.put("a", value::null()));
    EXPECT_FALSE(w.put("bbbb", value::from_string("too long for the buffer")));
    EXPECT_EQ(w.finish().ec, errc::no_buffer_space);
}

TEST(NotifyWriter, BuildsV5) {
    bytes buf(64);
    spop::notify_writer w(buf, 1, 1, mfs);
    const std::array<std::uint8_t, 4> lo{127, 0, 0, 1};
    EXPECT_TRUE(w.message("check-client-ip", 1));
    EXPECT_TRUE(w.arg("ip", value::from_ipv4(lo)));
    EXPECT_EQ(frame_hex(buf, w.finish()),
              norm_hex("00000020 03 00000001 01 01 0f 636865636b2d636c69656e742d6970 01 02 6970 "
                       "06 7f000001"));
    spop::notify_writer tiny(buf, 1, 1, 10);
    EXPECT_FALSE(tiny.message("check-client-ip", 1));
    EXPECT_EQ(tiny.finish().ec, errc::exceeds_max_frame_size);
}

// --- status and errc tables ------------------------------------------------------------------

TEST(Status, WireMessages) {
    // PROTOCOL-NOTES §6: the strings HAProxy puts on the wire.
    const std::pair<std::uint32_t, const char*> table[] = {
        {0, "normal"},
        {1, "I/O error"},
        {2, "a timeout occurred"},
        {3, "frame is too big"},
        {4, "invalid frame received"},
        {5, "version value not found"},
        {6, "max-frame-size value not found"},
        {7, "capabilities value not found"},
        {8, "unsupported version"},
        {9, "max-frame-size too big or too small"},
        {10, "fragmentation not supported"},
        {11, "invalid interlaced frames"},
        {12, "frame-id not found"},
        {13, "resource allocation error"},
        {99, "an unknown error occurred"},
    };
    for (const auto& [code, msg] : table) {
        EXPECT_EQ(spop::status_message(static_cast<status>(code)), msg) << code;
    }
    for (const std::uint32_t code : {14u, 50u, 98u, 100u, 255u, 0xFFFFFFFFu}) {
        EXPECT_EQ(spop::status_message(static_cast<status>(code)), "an unknown error occurred")
            << code;
    }
}

TEST(Errc, MessagesAreNonEmptyAndDistinct) {
    EXPECT_EQ(spop::errc_count, 26u);
    std::set<std::string_view> seen;
    for (std::size_t i = 0; i < spop::errc_count; ++i) {
        const std::string_view m = spop::message(static_cast<errc>(i));
        EXPECT_FALSE(m.empty()) << i;
        EXPECT_NE(m, "unknown error") << i << " has no message of its own";
        EXPECT_TRUE(seen.insert(m).second) << i << " repeats \"" << m << "\"";
    }
    EXPECT_EQ(spop::message(static_cast<errc>(spop::errc_count)), "unknown error");
}

TEST(Errc, ToStatusMapping) {
    // Hard-coded on purpose: a changed mapping changes what HAProxy logs.
    const std::pair<errc, std::uint32_t> table[] = {
        {errc::ok, 0},
        {errc::need_more, 4},
        {errc::stopped, 4},
        {errc::varint_overflow, 4},
        {errc::truncated, 4},
        {errc::bad_data_type, 4},
        {errc::frame_too_big, 3},
        {errc::frame_too_small, 4},
        {errc::unexpected_frame, 4},
        {errc::bad_frame_type, 4},
        {errc::bad_frame_ids, 4},
        {errc::fragmented_frame, 10},
        {errc::bad_kv_type, 4},
        {errc::no_version, 5},
        {errc::bad_version, 8},
        {errc::no_frame_size, 6},
        {errc::bad_frame_size, 9},
        {errc::no_capabilities, 7},
        {errc::no_buffer_space, 13},
        {errc::exceeds_max_frame_size, 3},
        {errc::input_overflow, 13},
        {errc::nb_args_overflow, 13},
        {errc::peer_disconnect, 0},
        {errc::shutdown, 0},
        {errc::timeout, 2},
        {errc::bad_action, 4},
    };
    ASSERT_EQ(std::size(table), spop::errc_count);
    for (std::size_t i = 0; i < spop::errc_count; ++i) {
        EXPECT_EQ(static_cast<std::size_t>(table[i].first), i) << "table order";
        const auto s = static_cast<std::uint32_t>(spop::to_status(table[i].first));
        EXPECT_EQ(s, table[i].second) << spop::message(table[i].first);
        EXPECT_TRUE(s <= 13 || s == 99) << i;
    }
    EXPECT_EQ(spop::to_status(static_cast<errc>(200)), status::unknown);
}

TEST(Result, BoolAndEquality) {
    constexpr spop::result ok{errc::ok, 3};
    static_assert(static_cast<bool>(ok));
    static_assert(!static_cast<bool>(spop::result{errc::need_more, 0}));
    static_assert(ok == spop::result{errc::ok, 3});
    static_assert(ok != spop::result{errc::ok, 4});
    SUCCEED();
}

// Issue 13: HAProxy rejects an empty key in AGENT-HELLO/AGENT-DISCONNECT KV lists, so the
// encoders must never write one, whatever the capabilities, status or message.
struct keys_of {
    std::vector<std::string> keys;
    spop::action on_kv(std::string_view k, const value&) {
        keys.emplace_back(k);
        return spop::action::proceed;
    }
};

std::vector<std::string> kv_keys(const bytes& buf, spop::result r, spop::frame_type type) {
    EXPECT_TRUE(r) << spop::message(r.ec);
    const auto frames =
        spop_test::split_frames(std::span<const std::uint8_t>(buf).first(r.consumed));
    EXPECT_EQ(frames.size(), 1u);
    if (frames.size() != 1) return {};
    EXPECT_EQ(frames[0].type, type);
    keys_of h;
    EXPECT_EQ(spop::parse_kv_list(frames[0].payload_span(), h).ec, errc::ok);
    for (const std::string& k : h.keys) EXPECT_FALSE(k.empty()) << "empty KV key";
    return h.keys;
}

TEST(KvKeys, AgentHelloNeverHasAnEmptyKey) {
    for (const std::string_view caps : {"", "pipelining", "pipelining,async", ","}) {
        for (const std::uint32_t m : {256u, 16380u, spop::max_max_frame_size}) {
            SCOPED_TRACE(std::string(caps) + " " + std::to_string(m));
            bytes buf(512);
            const auto keys =
                kv_keys(buf, spop::encode_agent_hello(buf, m, caps), spop::frame_type::agent_hello);
            EXPECT_EQ(keys,
                      (std::vector<std::string>{"version", "max-frame-size", "capabilities"}));
        }
    }
}

TEST(KvKeys, AgentDisconnectNeverHasAnEmptyKey) {
    const std::vector<std::string> want{"status-code", "message"};
    for (const std::uint32_t code : {0u, 4u, 13u, 99u, 100u, 255u, 0xFFFFFFFFu}) {
        for (const std::string& msg : {std::string(), std::string("bye"), std::string(400, 'x')}) {
            SCOPED_TRACE(std::to_string(code) + " " + std::to_string(msg.size()));
            bytes buf(spop::max_agent_disconnect_size);
            EXPECT_EQ(kv_keys(buf, spop::encode_agent_disconnect(buf, mfs, code, msg),
                              spop::frame_type::agent_disconnect),
                      want);
        }
    }
    for (std::uint32_t s = 0; s <= 99; ++s) {
        bytes buf(spop::max_agent_disconnect_size);
        EXPECT_EQ(kv_keys(buf, spop::encode_agent_disconnect(buf, mfs, static_cast<status>(s)),
                          spop::frame_type::agent_disconnect),
                  want)
            << s;
    }
}

} // namespace
