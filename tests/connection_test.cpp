// The sans-IO connection core: handshake, NOTIFY -> ACK, any input split, every protocol error
// answered with the exact DISCONNECT status, health checks, shutdown, the empty-ACK no-op and
// back-pressure.
#include <spop/connection.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "support/conn_harness.hpp"
#include "support/frames.hpp"
#include "support/hex.hpp"
#include "support/vectors.hpp"

namespace {

using spop::conn_state;
using spop::errc;
using spop::frame_type;
using spop::value;
using spop_test::bytes;
using spop_test::conn_harness;
using spop_test::norm_hex;
using spop_test::scored_ack;
using spop_test::to_hex;
using spop_test::unhex;
namespace vec = spop_test::vec;

constexpr std::array<std::uint8_t, 4> localhost{127, 0, 0, 1};

/// A NOTIFY like V5 (check-client-ip, ip=127.0.0.1) with any ids.
bytes notify(std::uint64_t sid, std::uint64_t fid, std::uint32_t flags = spop::flag_fin) {
    bytes buf(128);
    spop::notify_writer w(buf, sid, fid, spop::default_max_frame_size);
    w.message("check-client-ip", 1);
    w.arg("ip", value::from_ipv4(localhost));
    const spop::result r = w.finish();
    EXPECT_TRUE(r);
    buf.resize(r.consumed);
    if (flags != spop::flag_fin) spop::store_be32(buf.data() + 5, flags);
    return buf;
}

/// A bigger NOTIFY: 5 args (2 NULL, 2 strings, an IPv4).
bytes fat_notify(std::uint64_t sid, std::uint64_t fid) {
    bytes buf(256);
    spop::notify_writer w(buf, sid, fid, spop::default_max_frame_size);
    w.message("check-request", 5);
    w.arg("unique-id", value::null());
    w.arg("host", value::from_string("www.example.com"));
    w.arg("cookie", value::null());
    w.arg("path", value::from_string("/api/v1/accounts/12345/settings?x=1"));
    w.arg("src", value::from_ipv4(localhost));
    const spop::result r = w.finish();
    EXPECT_TRUE(r);
    buf.resize(r.consumed);
    return buf;
}

/// The connection's HELLO done and its AGENT-HELLO drained.
void establish(conn_harness& h, std::string_view hello_hex = vec::v1_hello_34) {
    h.feed(hello_hex);
    ASSERT_EQ(h.conn.state(), conn_state::established);
    const bytes out = h.drain();
    ASSERT_EQ(to_hex(out), norm_hex(vec::v4_agent_hello));
}

/// The output's last frame, which must be an AGENT-DISCONNECT.
spop_test::disconnect_info last_disconnect(const bytes& out) {
    std::size_t rest = 1;
    const auto frames = spop_test::split_frames(out, &rest);
    EXPECT_EQ(rest, 0u) << "output must be whole frames";
    if (frames.empty()) {
        ADD_FAILURE() << "no output at all";
        return {};
    }
    EXPECT_EQ(frames.back().type, frame_type::agent_disconnect);
    return spop_test::read_disconnect(frames.back());
}

/// Feeds `input`, expects exactly one AGENT-DISCONNECT with `code` and its standard message,
/// then a connection that wants nothing more and closes once the output is sent.
void expect_disconnect(conn_harness& h, const bytes& input, std::uint32_t code, errc why) {
    h.feed(input);
    EXPECT_FALSE(h.conn.wants_input());
    EXPECT_EQ(h.conn.state(), conn_state::closing);
    EXPECT_EQ(h.conn.error(), why) << spop::message(h.conn.error());
    EXPECT_FALSE(h.conn.should_close()) << "the DISCONNECT is not sent yet";
    const bytes out = h.drain();
    const auto frames = spop_test::split_frames(out);
    ASSERT_EQ(frames.size(), 1u) << to_hex(out);
    const auto d = last_disconnect(out);
    EXPECT_TRUE(d.well_formed);
    EXPECT_EQ(d.status, code);
    EXPECT_EQ(d.message, spop::status_message(static_cast<spop::status>(code)));
    EXPECT_TRUE(h.conn.should_close());
    // Anything after is ignored.
    const auto more = h.feed(notify(1, 1));
    EXPECT_EQ(more.frames, 0u);
    EXPECT_TRUE(h.conn.output().empty());
}

// --- handshake and NOTIFY -> ACK -------------------------------------------------------------

TEST(Connection, HelloThenNotify) {
    conn_harness h;
    EXPECT_EQ(h.conn.state(), conn_state::awaiting_hello);
    EXPECT_TRUE(h.conn.wants_input());
    const spop::feed_result r = h.feed(vec::v1_hello_34);
    EXPECT_EQ(r.frames, 1u);
    EXPECT_EQ(r.notifies, 0u);
    EXPECT_EQ(h.conn.state(), conn_state::established);
    EXPECT_EQ(to_hex(h.conn.output()), norm_hex(vec::v4_agent_hello));
    EXPECT_EQ(h.conn.settings().max_frame_size, 16380u);
    EXPECT_TRUE(h.conn.settings().pipelining);
    EXPECT_FALSE(h.conn.is_healthcheck());
    (void)h.consume(h.conn.output().size());

    const spop::feed_result n = h.feed(vec::v5_notify_34);
    EXPECT_EQ(n.frames, 1u);
    EXPECT_EQ(n.notifies, 1u);
    EXPECT_EQ(to_hex(h.drain()), norm_hex(vec::v7_ack_42));
    ASSERT_EQ(h.svc.ids.size(), 1u);
    EXPECT_EQ(h.svc.ids[0], (std::pair<std::uint64_t, std::uint64_t>{1, 1}));
    EXPECT_EQ(h.svc.messages[0], (std::vector<std::string>{"msg \"check-client-ip\" 1",
                                                           "arg \"ip\" ipv4:7f000001", "end"}));
    EXPECT_TRUE(h.conn.wants_input());
    EXPECT_FALSE(h.conn.should_close());
}

TEST(Connection, HelloAnswersWithOurSmallerFrameSize) {
    spop::connection_config cfg;
    cfg.limits.max_frame_size = 1024;
    cfg.limits.pipelining = false;
    conn_harness h(cfg);
    h.feed(vec::cap_hello_26);
    const auto frames = spop_test::split_frames(h.drain());
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].type, frame_type::agent_hello);
    spop_test::recorder rec;
    ASSERT_TRUE(spop::parse_kv_list(frames[0].payload_span(), rec));
    EXPECT_EQ(rec.events, (std::vector<std::string>{"kv \"version\" string:\"2.0\"",
                                                    "kv \"max-frame-size\" uint32:1024",
                                                    "kv \"capabilities\" string:\"\""}));
    EXPECT_EQ(h.conn.settings().max_frame_size, 1024u);
    EXPECT_FALSE(h.conn.settings().pipelining);
    EXPECT_TRUE(h.conn.settings().peer_async);
}

TEST(Connection, StreamIdZeroFrom26) {
    conn_harness h;
    establish(h, vec::cap_hello_26);
    h.feed(vec::v5_notify_26);
    EXPECT_EQ(to_hex(h.drain()),
              norm_hex("00000015 67 00000001 00 01 01 03 01 08 69705f73636f7265 03 2a"));
    // 2.6 repeats a stream-id with growing frame-ids.
    h.feed(spop_test::concat({notify(0, 2), notify(0, 3)}));
    EXPECT_EQ(to_hex(h.drain()), to_hex(spop_test::concat({scored_ack(0, 2), scored_ack(0, 3)})));
}

TEST(Connection, TwentyInFlightWithOddStreamIds) {
    conn_harness h;
    establish(h);
    bytes in, expected;
    for (std::uint64_t sid = 1; sid < 40; sid += 2) {
        spop_test::append(in, notify(sid, 1));
        spop_test::append(expected, scored_ack(sid, 1));
    }
    const spop::feed_result r = h.feed(in);
    EXPECT_EQ(r.frames, 20u);
    EXPECT_EQ(r.notifies, 20u);
    EXPECT_EQ(to_hex(h.drain()), to_hex(expected));
    EXPECT_EQ(h.svc.ids.size(), 20u);
}

TEST(Connection, TwoByteStreamIdCapture) {
    conn_harness h;
    establish(h);
    h.feed(vec::cap_notify_sid241);
    EXPECT_EQ(to_hex(h.drain()),
              norm_hex("00000016 67 00000001 f100 01 01 03 01 08 69705f73636f7265 03 2a"));
}

TEST(Connection, SixtyFourBitIdsEchoed) {
    constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    const std::pair<std::uint64_t, std::uint64_t> ids[] = {
        {max, max}, {max, 1}, {std::uint64_t{1} << 63, 0}, {0xffffffffu, 0x100000000u}};
    conn_harness h;
    establish(h);
    for (const auto& [sid, fid] : ids) {
        h.feed(notify(sid, fid));
        const bytes out = h.drain();
        EXPECT_EQ(to_hex(out), to_hex(scored_ack(sid, fid)));
        const auto frames = spop_test::split_frames(out);
        ASSERT_EQ(frames.size(), 1u);
        EXPECT_EQ(frames[0].stream_id, sid);
        EXPECT_EQ(frames[0].frame_id, fid);
    }
}

TEST(Connection, ZeroMessageNotifyIsAcked) {
    conn_harness h;
    establish(h);
    h.feed("00000007 03 00000001 05 01");
    EXPECT_EQ(to_hex(h.drain()), to_hex(scored_ack(5, 1)));
}

// --- the whole conversation, split anywhere ---------------------------------------------------

struct conversation {
    bytes input;
    bytes expected;
};

conversation make_conversation() {
    conversation c;
    spop_test::append(c.input, unhex(vec::v1_hello_34));
    spop_test::append(c.expected, unhex(vec::v4_agent_hello));
    for (std::uint64_t i = 0; i < 25; ++i) {
        const std::uint64_t sid = 2 * i + 1;
        spop_test::append(c.input, i % 3 == 0 ? fat_notify(sid, 1) : notify(sid, 1));
        spop_test::append(c.expected, scored_ack(sid, 1));
    }
    spop_test::append(c.input, unhex(vec::v8_disc_idle));
    spop_test::append(c.expected, unhex(vec::cap_agent_disc_idle));
    return c;
}

TEST(Connection, ConversationInOneFeed) {
    const conversation c = make_conversation();
    conn_harness h;
    const spop::feed_result r = h.feed(c.input);
    EXPECT_EQ(r.frames, 27u);
    EXPECT_EQ(r.notifies, 25u);
    EXPECT_EQ(to_hex(h.drain()), to_hex(c.expected));
    EXPECT_TRUE(h.conn.should_close());
    EXPECT_EQ(h.conn.error(), errc::peer_disconnect);
    EXPECT_EQ(h.conn.peer_status(), 2u);
    EXPECT_EQ(h.svc.ids.size(), 25u);
}

TEST(Connection, ConversationSplitAtEveryOffset) {
    const conversation c = make_conversation();
    for (std::size_t k = 0; k <= c.input.size(); ++k) {
        auto h = std::make_unique<conn_harness>();
        const spop::feed_result a = h->feed(std::span<const std::uint8_t>(c.input).first(k));
        ASSERT_TRUE(spop_test::whole_frames(h->conn.output())) << "split at " << k;
        const spop::feed_result b = h->feed(std::span<const std::uint8_t>(c.input).subspan(k));
        ASSERT_EQ(a.frames + b.frames, 27u) << "split at " << k;
        ASSERT_EQ(a.notifies + b.notifies, 25u) << "split at " << k;
        ASSERT_EQ(to_hex(h->drain()), to_hex(c.expected)) << "split at " << k;
        ASSERT_TRUE(h->conn.should_close()) << "split at " << k;
        ASSERT_EQ(h->svc.ids.size(), 25u) << "split at " << k;
    }
}

TEST(Connection, ConversationOneByteAtATime) {
    const conversation c = make_conversation();
    conn_harness h;
    bytes out;
    std::uint32_t frames = 0, notifies = 0;
    for (std::size_t i = 0; i < c.input.size(); ++i) {
        const spop::feed_result r = h.feed(std::span<const std::uint8_t>(c.input).subspan(i, 1));
        frames += r.frames;
        notifies += r.notifies;
        ASSERT_TRUE(spop_test::whole_frames(h.conn.output())) << "after byte " << i;
        // Send the output as soon as there is some: the buffers go back to the pool.
        spop_test::append(out, h.drain());
        if (!h.conn.should_close()) {
            ASSERT_LE(h.conn.buffered_bytes(), h.pool.block_size()) << "after byte " << i;
        }
    }
    EXPECT_EQ(frames, 27u);
    EXPECT_EQ(notifies, 25u);
    EXPECT_EQ(to_hex(out), to_hex(c.expected));
    EXPECT_TRUE(h.conn.should_close());
}

TEST(Connection, ConversationRandomChunksAndPartialSends) {
    const conversation c = make_conversation();
    std::mt19937 rng(42);
    for (int iter = 0; iter < 300; ++iter) {
        conn_harness h;
        bytes out;
        std::size_t pos = 0;
        while (pos < c.input.size()) {
            const std::size_t n = std::min<std::size_t>(1 + rng() % 80, c.input.size() - pos);
            h.feed(std::span<const std::uint8_t>(c.input).subspan(pos, n));
            pos += n;
            // What was sent plus what is pending is always whole frames.
            const auto o = h.conn.output();
            ASSERT_TRUE(spop_test::whole_frames(spop_test::concat({out, o})));
            // Send a random part of the output (a short write).
            const std::size_t sent = o.empty() ? 0 : rng() % (o.size() + 1);
            out.insert(out.end(), o.begin(), o.begin() + static_cast<std::ptrdiff_t>(sent));
            (void)h.consume(sent);
        }
        spop_test::append(out, h.drain());
        ASSERT_EQ(to_hex(out), to_hex(c.expected)) << "iteration " << iter;
    }
}

TEST(Connection, RandomizedInvariants) {
    // Mutated conversations fed in random chunks with short writes. Whatever the input:
    // the output is whole frames, AGENT-HELLO first, ACKs matching the NOTIFYs the service saw,
    // AGENT-DISCONNECT (if any) last, and never more than two pool blocks held.
    const conversation c = make_conversation();
    std::mt19937 rng(7);
    for (int iter = 0; iter < 3000; ++iter) {
        SCOPED_TRACE("iteration " + std::to_string(iter));
        bytes in = c.input;
        const int mutations = iter == 0 ? 0 : static_cast<int>(rng() % 4);
        for (int m = 0; m < mutations; ++m)
            in[rng() % in.size()] = static_cast<std::uint8_t>(rng());
        if (rng() % 8 == 0) in.resize(rng() % in.size());
        conn_harness h;
        bytes sent;
        std::size_t pos = 0;
        for (int guard = 0; guard < 100000 && !h.conn.should_close(); ++guard) {
            if (pos < in.size() && h.conn.wants_input()) {
                const std::size_t n = std::min<std::size_t>(1 + rng() % 64, in.size() - pos);
                h.feed(std::span<const std::uint8_t>(in).subspan(pos, n));
                pos += n;
            } else if (pos >= in.size() && h.conn.state() == conn_state::established &&
                       h.conn.wants_input()) {
                h.conn.shutdown();
            }
            ASSERT_LE(h.pool.in_use(), 2u);
            ASSERT_LE(h.conn.buffered_bytes(), 2 * h.pool.block_size());
            const auto o = h.conn.output();
            const std::size_t n = o.empty() ? 0 : (rng() % 2 ? o.size() : rng() % (o.size() + 1));
            sent.insert(sent.end(), o.begin(), o.begin() + static_cast<std::ptrdiff_t>(n));
            (void)h.consume(n);
            if (pos >= in.size() && h.conn.state() == conn_state::awaiting_hello) break;
        }
        spop_test::append(sent, h.drain());
        std::size_t rest = 1;
        spop::errc ec{};
        const auto frames = spop_test::split_frames(sent, &rest, &ec);
        ASSERT_EQ(rest, 0u);
        ASSERT_EQ(ec, errc::ok);
        std::size_t acks = 0;
        for (std::size_t i = 0; i < frames.size(); ++i) {
            const auto t = frames[i].type;
            ASSERT_TRUE(t == frame_type::agent_hello || t == frame_type::ack ||
                        t == frame_type::agent_disconnect);
            if (t == frame_type::agent_hello) {
                ASSERT_EQ(i, 0u);
            }
            if (t == frame_type::agent_disconnect) {
                ASSERT_EQ(i + 1, frames.size()) << "nothing after AGENT-DISCONNECT";
                ASSERT_TRUE(spop_test::read_disconnect(frames[i]).well_formed || iter != 0);
            }
            if (t == frame_type::ack) {
                ASSERT_LT(acks, h.svc.ids.size());
                ASSERT_EQ(frames[i].stream_id, h.svc.ids[acks].first);
                ASSERT_EQ(frames[i].frame_id, h.svc.ids[acks].second);
                ++acks;
            }
        }
        ASSERT_EQ(acks, h.svc.ids.size());
        if (h.conn.state() != conn_state::awaiting_hello) {
            ASSERT_TRUE(h.conn.should_close());
            ASSERT_FALSE(frames.empty());
            ASSERT_TRUE(frames.back().type == frame_type::agent_disconnect ||
                        (h.conn.is_healthcheck() && frames.size() == 1));
        }
        h.conn.on_peer_closed();
        ASSERT_EQ(h.pool.in_use(), 0u);
    }
}

// --- protocol errors -> AGENT-DISCONNECT with the exact status -------------------------------

TEST(ConnectionError, OversizeFromTheLengthPrefixAlone) {
    {
        conn_harness h;
        establish(h);
        EXPECT_EQ(h.conn.buffered_bytes(), 0u) << "idle connection holds no buffer";
        expect_disconnect(h, unhex("ffffffff"), 3, errc::frame_too_big);
    }
    {
        // Before the HELLO, against our own limit.
        conn_harness h;
        h.feed("ffff");
        EXPECT_TRUE(h.conn.output().empty());
        EXPECT_LE(h.conn.buffered_bytes(), h.pool.block_size());
        expect_disconnect(h, unhex("ffff"), 3, errc::frame_too_big);
    }
    {
        // One above the limit; only the prefix is fed, and no payload was buffered.
        conn_harness h;
        establish(h);
        h.feed("00003ffd");
        EXPECT_EQ(h.conn.state(), conn_state::closing);
        EXPECT_EQ(h.conn.buffered_bytes(), h.pool.block_size()) << "only the output block";
        EXPECT_EQ(h.pool.in_use(), 1u);
        const auto d = last_disconnect(h.drain());
        EXPECT_EQ(d.status, 3u);
        EXPECT_EQ(d.message, "frame is too big");
    }
}

TEST(ConnectionError, BadLengthPrefixSplitAnywhere) {
    // The same verdicts when the prefix arrives in pieces (the reassembly path).
    const std::pair<const char*, std::uint32_t> prefixes[] = {
        {"00003ffd", 3}, // max-frame-size + 1
        {"ffffffff", 3},
        {"00000000", 4},
        {"00000006", 4},
    };
    for (const auto& [hex, code] : prefixes) {
        const bytes prefix = unhex(hex);
        for (std::size_t k = 1; k < 4; ++k) {
            SCOPED_TRACE(std::string(hex) + " split at " + std::to_string(k));
            conn_harness h;
            establish(h);
            h.feed(std::span<const std::uint8_t>(prefix).first(k));
            EXPECT_EQ(h.conn.state(), conn_state::established);
            EXPECT_TRUE(h.conn.output().empty());
            expect_disconnect(h,
                              bytes(prefix.begin() + static_cast<std::ptrdiff_t>(k), prefix.end()),
                              code, code == 3 ? errc::frame_too_big : errc::frame_too_small);
        }
    }
}

TEST(ConnectionError, OversizeAgainstTheNegotiatedSize) {
    conn_harness h;
    h.feed(spop_test::make_hello({{"supported-versions", value::from_string("2.0")},
                                  {"max-frame-size", value::from_uint32(1024)},
                                  {"capabilities", value::from_string("pipelining")}}));
    ASSERT_EQ(h.conn.settings().max_frame_size, 1024u);
    h.drain();
    // A NOTIFY whose FRAME-LENGTH is exactly 1024 is fine: one message with a 1014-byte name
    // (2-byte length) and no arguments makes a 1017-byte payload.
    bytes payload(1100);
    std::uint8_t* e =
        spop::encode_name(std::string(1014, 'm'), payload.data(), payload.data() + payload.size());
    ASSERT_NE(e, nullptr);
    *e++ = 0x00;
    payload.resize(static_cast<std::size_t>(e - payload.data()));
    const bytes exact = spop_test::make_frame(frame_type::notify, spop::flag_fin, 1, 1, payload);
    ASSERT_EQ(exact.size(), 4u + 1024u);
    h.feed(exact);
    EXPECT_EQ(h.conn.state(), conn_state::established);
    EXPECT_EQ(to_hex(h.drain()), to_hex(scored_ack(1, 1)));
    // 1025 is one too many: refused from the prefix alone.
    bytes prefix(4);
    spop::store_be32(prefix.data(), 1025);
    expect_disconnect(h, prefix, 3, errc::frame_too_big);
}

TEST(ConnectionError, ZeroLengthFrame) {
    conn_harness h;
    establish(h);
    expect_disconnect(h, unhex("00000000"), 4, errc::frame_too_small);
}

TEST(ConnectionError, ShortFrame) {
    conn_harness h;
    establish(h);
    expect_disconnect(h, unhex("00000006 03 00000001 01"), 4, errc::frame_too_small);
}

TEST(ConnectionError, NotifyBeforeHello) {
    conn_harness h;
    expect_disconnect(h, unhex(vec::v5_notify_34), 4, errc::unexpected_frame);
}

TEST(ConnectionError, BadVarintInIds) {
    conn_harness h;
    establish(h);
    expect_disconnect(h, unhex("00000011 03 00000001 ffffffffffffffffffffff 01"), 4,
                      errc::varint_overflow);
}

TEST(ConnectionError, TruncatedIds) {
    conn_harness h;
    establish(h);
    expect_disconnect(h, unhex("00000007 03 00000001 01 f0"), 4, errc::truncated);
}

TEST(ConnectionError, BadDataTypeInNotify) {
    conn_harness h;
    establish(h);
    expect_disconnect(
        h, spop_test::make_frame(frame_type::notify, spop::flag_fin, 1, 1, unhex("01 6d 01 00 0a")),
        4, errc::bad_data_type);
}

TEST(ConnectionError, TruncatedNotifyPayload) {
    conn_harness h;
    establish(h);
    expect_disconnect(
        h,
        spop_test::make_frame(frame_type::notify, spop::flag_fin, 1, 1,
                              unhex("0f 636865636b2d636c69656e742d6970 01 02 6970 06 7f00")),
        4, errc::truncated);
}

TEST(ConnectionError, FinUnsetOnNotify) {
    conn_harness h;
    establish(h);
    expect_disconnect(h, notify(1, 1, 0), 10, errc::fragmented_frame);
}

TEST(ConnectionError, FragmentedNotifyV9) {
    conn_harness h;
    establish(h);
    expect_disconnect(h, vec::v9_f1(), 10, errc::fragmented_frame);
}

TEST(ConnectionError, FinUnsetOnHello) {
    conn_harness h;
    bytes hello = unhex(vec::v1_hello_34);
    spop::store_be32(hello.data() + 5, 0);
    expect_disconnect(h, hello, 10, errc::fragmented_frame);
}

TEST(ConnectionError, HelloWithNonZeroIds) {
    for (const auto& [sid, fid] : {std::pair<std::uint64_t, std::uint64_t>{1, 0}, {0, 1}}) {
        conn_harness h;
        spop::frame f;
        const bytes v1 = unhex(vec::v1_hello_34);
        ASSERT_TRUE(spop::split_frame(v1, spop::default_max_frame_size, f));
        expect_disconnect(
            h,
            spop_test::make_frame(frame_type::haproxy_hello, spop::flag_fin, sid, fid, f.payload),
            4, errc::bad_frame_ids);
    }
}

TEST(ConnectionError, UnknownFrameTypeWithStreamIdZero) {
    conn_harness h;
    establish(h);
    expect_disconnect(h, spop_test::make_frame(std::uint8_t{50}, spop::flag_fin, 0, 0, {}), 4,
                      errc::bad_frame_type);
}

TEST(Connection, UnknownFrameTypeWithStreamIdIsSkipped) {
    conn_harness h;
    establish(h);
    for (const std::uint8_t type : {std::uint8_t{50}, std::uint8_t{0x67}, std::uint8_t{0xff}}) {
        const spop::feed_result r =
            h.feed(spop_test::make_frame(type, spop::flag_fin, 7, 1, unhex("0102")));
        EXPECT_EQ(r.frames, 1u);
        EXPECT_EQ(r.notifies, 0u);
        EXPECT_TRUE(h.conn.output().empty()) << int(type);
        EXPECT_EQ(h.conn.state(), conn_state::established);
    }
    h.feed(vec::v5_notify_34);
    EXPECT_EQ(to_hex(h.drain()), norm_hex(vec::v7_ack_42));
}

TEST(Connection, UnsetFrameTypeIsSkipped) {
    conn_harness h;
    establish(h);
    h.feed("00000007 00 00000001 01 01");
    h.feed(vec::v9_f2());                 // a 2.x fragment continuation
    h.feed("00000007 00 00000003 01 01"); // FIN|ABORT, as 2.x aborts a fragmented NOTIFY
    EXPECT_TRUE(h.conn.output().empty());
    EXPECT_EQ(h.conn.state(), conn_state::established);
    h.feed(vec::v5_notify_34);
    EXPECT_EQ(to_hex(h.drain()), norm_hex(vec::v7_ack_42));
}

TEST(ConnectionError, SecondHello) {
    conn_harness h;
    establish(h);
    expect_disconnect(h, unhex(vec::v1_hello_34), 4, errc::unexpected_frame);
}

TEST(ConnectionError, AgentFrameTypeBeforeHello) {
    conn_harness h;
    expect_disconnect(h, unhex(vec::v4_agent_hello), 4, errc::unexpected_frame);
}

TEST(ConnectionError, HelloNegotiationFailures) {
    const auto v = value::from_string("2.0");
    const auto m = value::from_uint32(16380);
    const auto c = value::from_string("pipelining");
    struct hello_case {
        const char* name;
        bytes frame;
        std::uint32_t code;
        errc why;
    };
    using spop_test::make_hello;
    const hello_case cases[] = {
        {"version missing", make_hello({{"max-frame-size", m}, {"capabilities", c}}), 5,
         errc::no_version},
        {"version 3.0",
         make_hello({{"supported-versions", value::from_string("3.0")},
                     {"max-frame-size", m},
                     {"capabilities", c}}),
         8, errc::bad_version},
        {"version 1.0",
         make_hello({{"supported-versions", value::from_string("1.0")},
                     {"max-frame-size", m},
                     {"capabilities", c}}),
         8, errc::bad_version},
        {"max-frame-size missing", make_hello({{"supported-versions", v}, {"capabilities", c}}), 6,
         errc::no_frame_size},
        {"max-frame-size 255",
         make_hello({{"supported-versions", v},
                     {"max-frame-size", value::from_uint32(255)},
                     {"capabilities", c}}),
         9, errc::bad_frame_size},
        {"capabilities missing", make_hello({{"supported-versions", v}, {"max-frame-size", m}}), 7,
         errc::no_capabilities},
        {"max-frame-size as a string",
         make_hello({{"supported-versions", v},
                     {"max-frame-size", value::from_string("16380")},
                     {"capabilities", c}}),
         4, errc::bad_kv_type},
    };
    for (const auto& hc : cases) {
        SCOPED_TRACE(hc.name);
        conn_harness h;
        expect_disconnect(h, hc.frame, hc.code, hc.why);
    }
}

TEST(ConnectionError, MalformedHelloPayload) {
    conn_harness h;
    expect_disconnect(
        h,
        spop_test::make_frame(frame_type::haproxy_hello, spop::flag_fin, 0, 0, unhex("01 61 0c")),
        4, errc::bad_data_type);
}

// --- DISCONNECT, health check, shutdown, timeout, EOF ---------------------------------------

TEST(Connection, HaproxyDisconnectIsEchoed) {
    conn_harness h;
    establish(h);
    h.feed(vec::v8_disc_idle);
    EXPECT_EQ(h.conn.state(), conn_state::closing);
    EXPECT_FALSE(h.conn.wants_input());
    EXPECT_FALSE(h.conn.should_close());
    EXPECT_EQ(h.conn.error(), errc::peer_disconnect);
    EXPECT_EQ(h.conn.peer_status(), 2u);
    EXPECT_EQ(to_hex(h.drain()), norm_hex(vec::cap_agent_disc_idle));
    EXPECT_TRUE(h.conn.should_close());
    EXPECT_EQ(h.conn.buffered_bytes(), 0u);
    EXPECT_EQ(h.feed(vec::v5_notify_34).frames, 0u);
    EXPECT_TRUE(h.conn.output().empty());
}

TEST(Connection, HaproxyDisconnectNormalAndBadVersion) {
    for (const auto& [hex, code, msg] :
         {std::tuple{vec::v8_disc_normal, 0u, "normal"},
          std::tuple{vec::v8_disc_bad_version, 8u, "unsupported version"}}) {
        conn_harness h;
        establish(h);
        h.feed(hex);
        const auto d = last_disconnect(h.drain());
        EXPECT_TRUE(d.well_formed);
        EXPECT_EQ(d.status, code);
        EXPECT_EQ(d.message, msg);
        EXPECT_TRUE(h.conn.should_close());
    }
}

TEST(Connection, HaproxyDisconnectBeforeHello) {
    conn_harness h;
    h.feed(vec::v8_disc_bad_version);
    const auto d = last_disconnect(h.drain());
    EXPECT_EQ(d.status, 8u);
    EXPECT_EQ(d.message, "unsupported version");
    EXPECT_TRUE(h.conn.should_close());
}

TEST(Connection, HaproxyDisconnectAfterPipelinedNotifies) {
    conn_harness h;
    establish(h);
    h.feed(
        spop_test::concat({notify(1, 1), notify(3, 1), unhex(vec::v8_disc_normal), notify(5, 1)}));
    const bytes out = h.drain();
    const auto frames = spop_test::split_frames(out);
    ASSERT_EQ(frames.size(), 3u);
    EXPECT_EQ(to_hex(frames[0].raw), to_hex(scored_ack(1, 1)));
    EXPECT_EQ(to_hex(frames[1].raw), to_hex(scored_ack(3, 1)));
    EXPECT_EQ(spop_test::read_disconnect(frames[2]).status, 0u);
    EXPECT_EQ(h.svc.ids.size(), 2u) << "nothing after the DISCONNECT is processed";
}

TEST(Connection, HealthCheck) {
    conn_harness h;
    const spop::feed_result r = h.feed(vec::v3_healthcheck);
    EXPECT_EQ(r.frames, 1u);
    EXPECT_TRUE(h.conn.is_healthcheck());
    EXPECT_FALSE(h.conn.wants_input());
    EXPECT_FALSE(h.conn.should_close()) << "the AGENT-HELLO is not sent yet";
    // Exactly one AGENT-HELLO, nothing after it (3.x checkers parse to the end of the read).
    EXPECT_EQ(to_hex(h.conn.output()), norm_hex(vec::v4_agent_hello));
    // Input arriving meanwhile is ignored.
    EXPECT_EQ(h.feed(vec::v5_notify_34).frames, 0u);
    EXPECT_EQ(to_hex(h.drain()), norm_hex(vec::v4_agent_hello));
    EXPECT_TRUE(h.conn.should_close());
    EXPECT_EQ(h.conn.buffered_bytes(), 0u);
    EXPECT_EQ(h.feed(vec::v5_notify_34).frames, 0u);
    EXPECT_TRUE(h.conn.output().empty());
    EXPECT_TRUE(h.svc.ids.empty());
}

TEST(Connection, HealthCheckWithMoreInputInTheSameRead) {
    conn_harness h;
    h.feed(spop_test::concat(
        {unhex(vec::v3_healthcheck), unhex(vec::v5_notify_34), unhex(vec::v8_disc_normal)}));
    EXPECT_EQ(to_hex(h.drain()), norm_hex(vec::v4_agent_hello));
    EXPECT_TRUE(h.conn.should_close());
    EXPECT_TRUE(h.svc.ids.empty());
}

TEST(Connection, HealthCheckSplitAtEveryOffset) {
    const bytes in = unhex(vec::v3_healthcheck);
    for (std::size_t k = 0; k <= in.size(); ++k) {
        conn_harness h;
        h.feed(std::span<const std::uint8_t>(in).first(k));
        h.feed(std::span<const std::uint8_t>(in).subspan(k));
        ASSERT_EQ(to_hex(h.drain()), norm_hex(vec::v4_agent_hello)) << k;
        ASSERT_TRUE(h.conn.should_close()) << k;
    }
}

TEST(Connection, ShutdownAnswersReceivedNotifiesFirst) {
    conn_harness h;
    h.feed(spop_test::concat({unhex(vec::v1_hello_34), notify(1, 1), notify(3, 1), notify(5, 1)}));
    // A partial NOTIFY is pending: it was never received whole, so it is not answered.
    const bytes partial = notify(7, 1);
    h.feed(std::span<const std::uint8_t>(partial).first(10));
    h.conn.shutdown();
    EXPECT_FALSE(h.conn.wants_input());
    EXPECT_EQ(h.conn.error(), errc::shutdown);
    bytes expected = unhex(vec::v4_agent_hello);
    for (const std::uint64_t sid : {1u, 3u, 5u}) spop_test::append(expected, scored_ack(sid, 1));
    bytes disc(512);
    const spop::result r = spop::encode_agent_disconnect(disc, 16380, spop::status::normal);
    ASSERT_TRUE(r);
    disc.resize(r.consumed);
    spop_test::append(expected, disc);
    EXPECT_EQ(to_hex(h.drain()), to_hex(expected));
    EXPECT_TRUE(h.conn.should_close());
    EXPECT_EQ(h.pool.in_use(), 0u);
}

TEST(Connection, ShutdownBeforeHello) {
    conn_harness h;
    h.conn.shutdown();
    const auto d = last_disconnect(h.drain());
    EXPECT_EQ(d.status, 0u);
    EXPECT_EQ(d.message, "normal");
    EXPECT_TRUE(h.conn.should_close());
    h.conn.shutdown(); // idempotent: nothing more is queued
    EXPECT_TRUE(h.conn.output().empty());
}

TEST(Connection, CloseWithTimeout) {
    conn_harness h;
    establish(h);
    h.conn.close_with(errc::timeout);
    EXPECT_EQ(h.conn.error(), errc::timeout);
    const auto d = last_disconnect(h.drain());
    EXPECT_EQ(d.status, 2u);
    EXPECT_EQ(d.message, "a timeout occurred");
    EXPECT_TRUE(h.conn.should_close());
}

TEST(Connection, PeerClosedDropsEverything) {
    conn_harness h;
    h.feed(spop_test::concat({unhex(vec::v1_hello_34), notify(1, 1)}));
    const bytes partial = notify(3, 1);
    h.feed(std::span<const std::uint8_t>(partial).first(5));
    EXPECT_GT(h.pool.in_use(), 0u);
    h.conn.on_peer_closed();
    EXPECT_EQ(h.conn.state(), conn_state::closed);
    EXPECT_TRUE(h.conn.should_close());
    EXPECT_FALSE(h.conn.wants_input());
    EXPECT_TRUE(h.conn.output().empty());
    EXPECT_EQ(h.conn.buffered_bytes(), 0u);
    EXPECT_EQ(h.pool.in_use(), 0u);
}

TEST(Connection, IdleConnectionHoldsNoBuffers) {
    conn_harness h;
    EXPECT_EQ(h.conn.buffered_bytes(), 0u);
    establish(h);
    EXPECT_EQ(h.conn.buffered_bytes(), 0u);
    h.feed(vec::v5_notify_34);
    EXPECT_EQ(h.conn.buffered_bytes(), h.pool.block_size()) << "the ACK waits in one block";
    h.drain();
    EXPECT_EQ(h.conn.buffered_bytes(), 0u);
    EXPECT_EQ(h.pool.in_use(), 0u);
    // A partial frame holds the input block until it completes.
    const bytes n = unhex(vec::v5_notify_34);
    h.feed(std::span<const std::uint8_t>(n).first(20));
    EXPECT_EQ(h.conn.buffered_bytes(), h.pool.block_size());
    h.feed(std::span<const std::uint8_t>(n).subspan(20));
    h.drain();
    EXPECT_EQ(h.conn.buffered_bytes(), 0u);
    EXPECT_EQ(h.pool.allocations(), 2u) << "one input and one output block, reused";
}

// --- empty ACKs ------------------------------------------------------------------------------

TEST(Connection, EmptyAckGetsTheNoopUnsetVar) {
    conn_harness h;
    h.svc.score = false;
    establish(h);
    h.feed(vec::v5_notify_34);
    EXPECT_EQ(to_hex(h.drain()),
              norm_hex("00000014 67 00000001 01 01 02 02 02 09 73706f705f6e6f6f70"));
}

TEST(Connection, NoopCanBeDisabledOrRenamed) {
    {
        spop::connection_config cfg;
        cfg.noop_on_empty_ack = false;
        conn_harness h(cfg);
        h.svc.score = false;
        establish(h);
        h.feed(vec::v5_notify_34);
        EXPECT_EQ(to_hex(h.drain()), norm_hex(vec::v7_ack_empty));
    }
    {
        spop::connection_config cfg;
        cfg.noop_var = "x";
        cfg.noop_scope = spop::var_scope::req;
        conn_harness h(cfg);
        h.svc.score = false;
        establish(h);
        h.feed(vec::v5_notify_34);
        EXPECT_EQ(to_hex(h.drain()), norm_hex("0000000c 67 00000001 01 01 02 02 03 01 78"));
    }
    {
        // A non-empty ACK never gets the no-op.
        conn_harness h;
        establish(h);
        h.feed(vec::v5_notify_34);
        EXPECT_EQ(to_hex(h.drain()), norm_hex(vec::v7_ack_42));
    }
}

// --- back-pressure ---------------------------------------------------------------------------

std::size_t count_acks(const bytes& out, std::vector<std::uint64_t>* sids = nullptr) {
    std::size_t rest = 1;
    const auto frames = spop_test::split_frames(out, &rest);
    EXPECT_EQ(rest, 0u);
    std::size_t n = 0;
    for (const auto& f : frames) {
        if (f.type != frame_type::ack) continue;
        ++n;
        if (sids) sids->push_back(f.stream_id);
    }
    return n;
}

TEST(Connection, BackPressureLosesNothing) {
    conn_harness h;
    establish(h);
    // Feed NOTIFYs without reading the ACKs until the connection asks us to stop reading.
    std::uint64_t fed = 0;
    while (h.conn.wants_input() && fed < 100000) {
        (void)h.feed(notify(2 * fed + 1, 1));
        ++fed;
    }
    ASSERT_FALSE(h.conn.wants_input()) << "never back-pressured";
    ASSERT_EQ(h.conn.state(), conn_state::established);
    const std::size_t answered = count_acks(bytes(h.conn.output().begin(), h.conn.output().end()));
    EXPECT_LT(answered, fed);
    // More arrive anyway (already in flight): the connection takes none, the embedder keeps them.
    const std::size_t held_before = h.held.size();
    for (int i = 0; i < 50; ++i, ++fed) (void)h.feed(notify(2 * fed + 1, 1));
    EXPECT_EQ(h.conn.state(), conn_state::established);
    EXPECT_GT(h.held.size(), held_before);
    EXPECT_TRUE(h.conn.input_held());
    // Sending the output resumes processing, possibly over several rounds.
    bytes out;
    for (int round = 0; round < 100 && !h.conn.output().empty(); ++round) {
        ASSERT_TRUE(spop_test::whole_frames(h.conn.output()));
        spop_test::append(out, h.drain());
    }
    std::vector<std::uint64_t> sids;
    EXPECT_EQ(count_acks(out, &sids), fed);
    ASSERT_EQ(sids.size(), fed);
    for (std::uint64_t i = 0; i < fed; ++i) ASSERT_EQ(sids[i], 2 * i + 1) << "in order";
    EXPECT_TRUE(h.conn.wants_input());
    EXPECT_FALSE(h.conn.input_held());
    EXPECT_TRUE(h.held.empty());
    EXPECT_EQ(h.conn.buffered_bytes(), 0u);
}

// The embedder's side of the contract, without the harness: feed() says how much it took, the
// rest is fed again once the output drained. Any chunk size works (64 KiB here, 16 MiB below).
TEST(Connection, BackPressureInOneBigFeed) {
    conn_harness h;
    establish(h);
    bytes in;
    const std::uint64_t n = 2200; // more ACKs than one output block holds
    for (std::uint64_t i = 0; i < n; ++i) spop_test::append(in, notify(2 * i + 1, 1));
    spop::feed_result r = h.conn.feed(in);
    EXPECT_LT(r.notifies, n) << "the output block cannot hold 2200 ACKs at once";
    EXPECT_LT(r.consumed, in.size());
    EXPECT_FALSE(h.conn.wants_input());
    std::size_t pos = r.consumed;
    bytes out;
    std::uint32_t total = r.notifies;
    for (int round = 0; round < 1000 && (!h.conn.output().empty() || pos < in.size()); ++round) {
        const auto o = h.conn.output();
        out.insert(out.end(), o.begin(), o.end());
        total += h.conn.consume_output(o.size()).notifies;
        ASSERT_TRUE(h.conn.wants_input());
        r = h.conn.feed(std::span<const std::uint8_t>(in).subspan(pos));
        pos += r.consumed;
        total += r.notifies;
    }
    EXPECT_EQ(pos, in.size());
    EXPECT_EQ(total, n);
    EXPECT_EQ(count_acks(out), n);
    EXPECT_TRUE(h.conn.wants_input());
}

TEST(Connection, ShutdownWhileBackPressured) {
    conn_harness h;
    establish(h);
    std::uint64_t fed = 0;
    while (h.conn.wants_input() && fed < 100000) (void)h.feed(notify(2 * fed++ + 1, 1));
    for (int i = 0; i < 10; ++i) (void)h.feed(notify(2 * fed++ + 1, 1));
    ASSERT_FALSE(h.held.empty());
    h.conn.shutdown();
    EXPECT_EQ(h.conn.state(), conn_state::established) << "not before the held bytes are fed";
    bytes out;
    for (int round = 0; round < 100 && !h.conn.output().empty(); ++round) {
        spop_test::append(out, h.drain());
    }
    EXPECT_EQ(count_acks(out), fed) << "every NOTIFY received before shutdown is answered";
    const auto d = last_disconnect(out);
    EXPECT_EQ(d.status, 0u);
    EXPECT_TRUE(h.conn.should_close());
}

// A peer that keeps sending without reading is pushed back by TCP, not disconnected: the
// connection takes nothing more, whatever the embedder offers.
TEST(Connection, FloodWhileBackPressuredIsRefusedNotDropped) {
    conn_harness h;
    establish(h);
    std::uint64_t fed = 0;
    while (h.conn.wants_input() && fed < 100000) (void)h.feed(notify(2 * fed++ + 1, 1));
    ASSERT_FALSE(h.conn.wants_input());
    bytes flood;
    std::uint64_t extra = 0;
    while (flood.size() < 4 * h.pool.block_size())
        spop_test::append(flood, notify(2 * (fed + extra++) + 1, 1));
    const spop::feed_result r = h.conn.feed(flood);
    EXPECT_EQ(r.consumed, 0u);
    EXPECT_EQ(h.conn.state(), conn_state::established);
    EXPECT_LE(h.pool.in_use(), 2u);
    (void)h.feed(flood);
    bytes out;
    for (int round = 0; round < 1000 && !h.conn.output().empty(); ++round)
        spop_test::append(out, h.drain());
    EXPECT_EQ(count_acks(out), fed + extra);
    EXPECT_TRUE(h.held.empty());
}

// End of stream (the peer half-closes) right after its frames, even while back-pressured:
// everything received is answered and flushed before should_close().
TEST(Connection, EofAfterFramesAnswersEverything) {
    for (const bool pressured : {false, true}) {
        SCOPED_TRACE(pressured ? "back-pressured" : "prompt");
        conn_harness h;
        establish(h);
        const std::uint64_t n = pressured ? 3000 : 20;
        bytes in;
        for (std::uint64_t i = 0; i < n; ++i) spop_test::append(in, notify(2 * i + 1, 1));
        (void)h.feed(in);
        h.conn.on_peer_eof();
        EXPECT_FALSE(h.conn.wants_input());
        EXPECT_FALSE(h.conn.should_close()) << "ACKs still to send";
        bytes out;
        for (int round = 0; round < 1000 && !h.conn.output().empty(); ++round)
            spop_test::append(out, h.drain());
        EXPECT_EQ(count_acks(out), n);
        EXPECT_TRUE(h.conn.should_close());
        EXPECT_EQ(h.conn.error(), errc::ok);
        h.conn.on_peer_closed();
        EXPECT_EQ(h.pool.in_use(), 0u);
    }
}

TEST(Connection, HelloThenEofStillGetsAgentHello) {
    conn_harness h;
    (void)h.feed(vec::v1_hello_34);
    h.conn.on_peer_eof();
    ASSERT_FALSE(h.conn.should_close());
    const bytes out = h.drain();
    const auto frames = spop_test::split_frames(out);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].type, frame_type::agent_hello);
    EXPECT_TRUE(h.conn.should_close());
}

TEST(Connection, EofInsidePartialFrameDropsIt) {
    conn_harness h;
    establish(h);
    bytes in = notify(1, 1);
    spop_test::append(in, notify(3, 1));
    in.resize(in.size() - 3); // the second one is cut
    (void)h.feed(in);
    h.conn.on_peer_eof();
    const bytes out = h.drain();
    EXPECT_EQ(count_acks(out), 1u);
    EXPECT_TRUE(h.conn.should_close());
    h.conn.on_peer_closed(); // the embedder closes: the partial frame goes with it
    EXPECT_EQ(h.pool.in_use(), 0u);
}

// End of stream while the embedder still holds several chunks, a frame straddling two of them:
// the connection cannot know more is coming, so it must not drop its partial frame early.
TEST(Connection, EofWithHeldChunksAndAFrameAcrossThem) {
    conn_harness h;
    establish(h);
    bytes in;
    const std::uint64_t n = 3000;
    for (std::uint64_t i = 0; i < n; ++i) spop_test::append(in, notify(2 * i + 1, 1));
    std::vector<bytes> chunks;
    for (std::size_t off = 0; off < in.size(); off += 997)
        chunks.emplace_back(in.begin() + static_cast<std::ptrdiff_t>(off),
                            in.begin() +
                                static_cast<std::ptrdiff_t>(std::min(off + 997, in.size())));
    std::size_t next = 0;
    bytes partial; // what feed() left of the current chunk
    while (next < chunks.size() && h.conn.takes_input()) {
        const spop::feed_result r = h.conn.feed(chunks[next]);
        if (r.consumed < chunks[next].size()) {
            partial.assign(chunks[next].begin() + static_cast<std::ptrdiff_t>(r.consumed),
                           chunks[next].end());
            ++next;
            break;
        }
        ++next;
    }
    ASSERT_FALSE(h.conn.takes_input()) << "back-pressured with chunks still held";
    h.conn.on_peer_eof();
    bytes out;
    for (int round = 0; round < 10000 && !h.conn.should_close(); ++round) {
        const auto o = h.conn.output();
        out.insert(out.end(), o.begin(), o.end());
        (void)h.conn.consume_output(o.size());
        while (h.conn.takes_input() && (!partial.empty() || next < chunks.size())) {
            bytes& cur = partial.empty() ? chunks[next] : partial;
            const spop::feed_result r = h.conn.feed(cur);
            if (&cur != &partial) ++next;
            bytes rest(cur.begin() + static_cast<std::ptrdiff_t>(r.consumed), cur.end());
            partial = std::move(rest);
        }
    }
    EXPECT_EQ(count_acks(out), n);
    EXPECT_EQ(h.conn.error(), errc::ok);
}

// Shutdown while back-pressured, the embedder holding several chunks cut mid-frame (so the
// connection pauses on a frame completed in its reassembly buffer): every complete NOTIFY
// received is answered before AGENT-DISCONNECT (review finding: resume() used to forget the
// embedder's held bytes, and a chunk fed whole used to end the wait for the next ones).
TEST(Connection, ShutdownWithHeldChunksCutMidFrame) {
    for (const std::size_t cut : {997u, 64u, 4096u}) {
        SCOPED_TRACE("chunk " + std::to_string(cut));
        conn_harness h;
        establish(h);
        bytes in;
        const std::uint64_t n = 3000;
        for (std::uint64_t i = 0; i < n; ++i) spop_test::append(in, notify(2 * i + 1, 1));
        std::vector<bytes> chunks;
        for (std::size_t off = 0; off < in.size(); off += cut)
            chunks.emplace_back(in.begin() + static_cast<std::ptrdiff_t>(off),
                                in.begin() +
                                    static_cast<std::ptrdiff_t>(std::min(off + cut, in.size())));
        std::size_t next = 0;
        bytes partial;
        const auto feed_some = [&] {
            while (h.conn.takes_input() && (!partial.empty() || next < chunks.size())) {
                const bool from_partial = !partial.empty();
                bytes& cur = from_partial ? partial : chunks[next];
                const bool more = from_partial ? next < chunks.size() : next + 1 < chunks.size();
                const spop::feed_result r = h.conn.feed(cur, more);
                bytes rest(cur.begin() + static_cast<std::ptrdiff_t>(r.consumed), cur.end());
                if (!from_partial) ++next;
                partial = std::move(rest);
            }
        };
        feed_some();
        ASSERT_FALSE(h.conn.takes_input()) << "back-pressured with chunks still held";
        h.conn.shutdown();
        bytes out;
        for (int round = 0; round < 10000 && !h.conn.should_close(); ++round) {
            const auto o = h.conn.output();
            out.insert(out.end(), o.begin(), o.end());
            (void)h.conn.consume_output(o.size());
            feed_some();
        }
        EXPECT_EQ(count_acks(out), n);
        EXPECT_EQ(last_disconnect(out).status, 0u);
    }
}

// A service without max_ack_size gets a whole frame of room for each ACK, so large ACKs are
// never cut, however slowly the peer reads.
struct large_ack_service {
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        spop::null_notify_handler nh;
        if (const spop::result r = req.parse(nh); !r) return r.ec;
        static const std::string long_name(1500, 'v');
        ack.set_var(spop::var_scope::txn, long_name, spop::value::from_uint32(7));
        ack.set_var(spop::var_scope::txn, "score", spop::value::from_uint32(1));
        return spop::errc::ok;
    }
};

TEST(Connection, LargeAcksWithASlowReader) {
    const spop::connection_config cfg{};
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    large_ack_service svc;
    spop::connection<large_ack_service> conn(svc, pool, cfg);
    (void)conn.feed(unhex(vec::v1_hello_34));
    (void)conn.consume_output(conn.output().size());
    bytes in;
    const std::uint64_t n = 400;
    for (std::uint64_t i = 0; i < n; ++i) spop_test::append(in, notify(2 * i + 1, 1));
    std::size_t pos = 0;
    bytes out;
    for (int round = 0; round < 10000 && (pos < in.size() || !conn.output().empty()); ++round) {
        if (conn.wants_input() && pos < in.size()) {
            // 64 KiB per call: more than the agent's engines read at once.
            const auto chunk = std::span<const std::uint8_t>(in).subspan(pos).first(
                std::min<std::size_t>(64 * 1024, in.size() - pos));
            pos += conn.feed(chunk).consumed;
        }
        const auto o = conn.output();
        const std::size_t k = std::min<std::size_t>(o.size(), 1000); // a slow reader
        out.insert(out.end(), o.begin(), o.begin() + static_cast<std::ptrdiff_t>(k));
        (void)conn.consume_output(k);
        ASSERT_EQ(conn.state(), conn_state::established);
    }
    std::size_t rest = 1;
    const auto frames = spop_test::split_frames(out, &rest);
    EXPECT_EQ(rest, 0u);
    ASSERT_EQ(frames.size(), n);
    for (const auto& f : frames) {
        ASSERT_EQ(f.type, frame_type::ack);
        EXPECT_GT(f.payload.size(), 1500u);
    }
}

// A service's own errc (service.hpp): the ACKs before it go out, the NOTIFY that returned it
// gets none, and the AGENT-DISCONNECT carries to_status() of it, not always status 4.
struct erring_service {
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        spop::null_notify_handler nh;
        if (const spop::result r = req.parse(nh); !r) return r.ec;
        ack.set_var(spop::var_scope::txn, "written", spop::value::from_uint32(1));
        return req.stream_id == 3 ? spop::errc::timeout : spop::errc::ok;
    }
};

TEST(ConnectionError, AServiceErrcEndsTheConnectionWithItsStatus) {
    const spop::connection_config cfg{};
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    erring_service svc;
    spop::connection<erring_service> conn(svc, pool, cfg);
    (void)conn.feed(unhex(vec::v1_hello_34));
    (void)conn.consume_output(conn.output().size());
    bytes in = notify(1, 1);
    spop_test::append(in, notify(3, 1));
    spop_test::append(in, notify(5, 1));
    (void)conn.feed(in);
    EXPECT_EQ(conn.state(), conn_state::closing);
    EXPECT_EQ(conn.error(), errc::timeout);
    const bytes out(conn.output().begin(), conn.output().end());
    const auto frames = spop_test::split_frames(out);
    ASSERT_EQ(frames.size(), 2u) << to_hex(out);
    EXPECT_EQ(frames[0].type, frame_type::ack);
    EXPECT_EQ(frames[0].stream_id, 1u);
    const auto d = last_disconnect(out);
    EXPECT_EQ(d.status, 2u);
    EXPECT_EQ(d.message, "a timeout occurred");
}

} // namespace

// --max-in-flight: at most N ACKs queue up before the connection stops taking NOTIFYs; the
// rest are answered, in order, once the peer reads.
TEST(ConnectionLimits, MaxQueuedAcksBackPressures) {
    spop::connection_config cfg;
    cfg.max_queued_acks = 5;
    spop::null_service svc;
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    spop::connection<spop::null_service> conn(svc, pool, cfg);
    const auto hello = spop_test::unhex(spop_test::vec::v1_hello_34);
    (void)conn.feed(hello);
    ASSERT_EQ(conn.state(), spop::conn_state::established);
    (void)conn.consume_output(conn.output().size());
    const auto notify = spop_test::unhex(spop_test::vec::v5_notify_34);
    std::vector<std::uint8_t> twelve;
    for (int i = 0; i < 12; ++i) twelve.insert(twelve.end(), notify.begin(), notify.end());
    auto r = conn.feed(twelve);
    EXPECT_EQ(r.notifies, 5u);
    EXPECT_EQ(r.consumed, 5 * notify.size());
    EXPECT_FALSE(conn.wants_input());
    std::size_t answered = r.notifies;
    std::size_t pos = r.consumed;
    for (int round = 0; round < 5 && answered < 12; ++round) {
        answered += conn.consume_output(conn.output().size()).notifies;
        r = conn.feed(std::span<const std::uint8_t>(twelve).subspan(pos));
        pos += r.consumed;
        answered += r.notifies;
    }
    EXPECT_EQ(answered, 12u);
    EXPECT_TRUE(conn.wants_input());
    EXPECT_EQ(conn.state(), spop::conn_state::established);
}

// Optional service hooks at the sans-IO level: on_hello with HAProxy's engine-id and the
// negotiated settings, and the per-connection state every NOTIFY sees (set_context).
namespace {
struct hooked_service {
    struct connection_state {
        int notifies = 0;
    };
    std::string engine_id;
    std::uint32_t mfs = 0;
    std::uint64_t hello_id = 0;
    int hellos = 0;
    void on_hello(const spop::connection_event& ev) {
        ++hellos;
        engine_id.assign(ev.engine_id);
        mfs = ev.settings->max_frame_size;
        hello_id = ev.id;
        ev.state_as<connection_state>().notifies = 100;
    }
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer&) noexcept {
        ++req.state<connection_state>().notifies;
        return spop::errc::ok;
    }
};
} // namespace

TEST(ConnectionHooks, HelloHookAndPerConnectionState) {
    const spop::connection_config cfg{};
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    hooked_service svc;
    hooked_service::connection_state st;
    spop::connection<hooked_service> c(svc, pool, cfg);
    c.set_context(42, "127.0.0.1:5000", &st);
    // A HAPROXY-HELLO with an engine-id (HAProxy 2.6 sends one; see CAPTURES.md).
    bytes hello(256);
    spop::kv_writer kw(hello, spop::default_max_frame_size, spop::frame_type::haproxy_hello);
    kw.put("supported-versions", value::from_string("2.0"));
    kw.put("max-frame-size", value::from_uint32(4096));
    kw.put("capabilities", value::from_string("pipelining"));
    kw.put("engine-id", value::from_string("0b5b3d8e-0000-4000-8000-000000000001"));
    const spop::result r = kw.finish();
    ASSERT_TRUE(r);
    hello.resize(r.consumed);
    ASSERT_EQ(c.feed(hello).consumed, hello.size());
    ASSERT_EQ(c.state(), conn_state::established);
    EXPECT_EQ(svc.hellos, 1);
    EXPECT_EQ(svc.engine_id, "0b5b3d8e-0000-4000-8000-000000000001");
    EXPECT_EQ(svc.mfs, 4096u);
    EXPECT_EQ(svc.hello_id, 42u);
    (void)c.consume_output(c.output().size());
    bytes in = notify(1, 1);
    spop_test::append(in, notify(3, 1));
    EXPECT_EQ(c.feed(in).notifies, 2u);
    EXPECT_EQ(st.notifies, 102);
}

// Issue 13: a HAPROXY-DISCONNECT with a status HAProxy itself never sends (>= 100) or does not
// know (14..98) is still echoed as one well-formed AGENT-DISCONNECT carrying that status and
// HAProxy's message (cut to the 255 bytes 2.6 accepts), and the connection then closes.
TEST(Connection, HaproxyDisconnectUnknownStatusIsEchoedSafely) {
    const std::string long_msg(300, 'm');
    const std::tuple<std::uint32_t, std::string, std::string> cases[] = {
        {14u, "unknown to HAProxy", "unknown to HAProxy"},
        {99u, "an unknown error occurred", "an unknown error occurred"},
        {100u, "first code above the table", "first code above the table"},
        {255u, "", ""},
        {4294967295u, "max uint32", "max uint32"},
        {1000u, long_msg, long_msg.substr(0, spop::max_disconnect_message)},
    };
    for (const auto& [code, msg, echoed] : cases) {
        SCOPED_TRACE(code);
        conn_harness h;
        establish(h);
        h.feed(
            spop_test::make_frame(frame_type::haproxy_disconnect, spop::flag_fin, 0, 0,
                                  spop_test::kv_payload({{"status-code", value::from_uint32(code)},
                                                         {"message", value::from_string(msg)}})));
        EXPECT_EQ(h.conn.state(), conn_state::closing);
        EXPECT_EQ(h.conn.error(), errc::peer_disconnect);
        EXPECT_EQ(h.conn.peer_status(), code);
        EXPECT_FALSE(h.conn.wants_input());
        const bytes out = h.drain();
        const auto frames = spop_test::split_frames(out);
        ASSERT_EQ(frames.size(), 1u) << to_hex(out);
        const auto d = last_disconnect(out);
        EXPECT_TRUE(d.well_formed);
        EXPECT_EQ(d.status, code);
        EXPECT_EQ(d.message, echoed);
        EXPECT_TRUE(h.conn.should_close());
        EXPECT_EQ(h.feed(vec::v5_notify_34).frames, 0u);
        EXPECT_TRUE(h.conn.output().empty());
    }
}
