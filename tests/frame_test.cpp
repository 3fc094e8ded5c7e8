// Frame header (PROTOCOL-NOTES §1): split_frame on every captured frame, the length prefix as
// the first gate on untrusted input, partial input, 64-bit ids, header encoding.
#include <spop/frame.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support/frames.hpp"
#include "support/hex.hpp"
#include "support/vectors.hpp"

namespace {

using spop::errc;
using spop::frame;
using spop::frame_type;
using spop_test::bytes;
using spop_test::norm_hex;
using spop_test::to_hex;
using spop_test::unhex;

constexpr std::uint32_t mfs = spop::default_max_frame_size;

class CapturedFrame : public ::testing::TestWithParam<spop_test::vec::named> {};

TEST_P(CapturedFrame, SplitsWhole) {
    const bytes& in = GetParam().frame;
    frame f;
    const spop::result r = spop::split_frame(in, mfs, f);
    ASSERT_EQ(r, (spop::result{errc::ok, in.size()}));
    EXPECT_EQ(spop::load_be32(in.data()), in.size() - 4);
    EXPECT_EQ(f.type, static_cast<frame_type>(in[4]));
    EXPECT_EQ(f.flags, spop::load_be32(in.data() + 5));
    // The payload is a view of the input's tail.
    EXPECT_EQ(f.payload.data() + f.payload.size(), in.data() + in.size());
    EXPECT_EQ(f.payload.size() + spop::frame_header_size(f.stream_id, f.frame_id), in.size());
}

TEST_P(CapturedFrame, EveryPrefixNeedsMore) {
    const bytes& in = GetParam().frame;
    for (std::size_t len = 0; len < in.size(); ++len) {
        frame f;
        const spop::result r = spop::split_frame({in.data(), len}, mfs, f);
        ASSERT_EQ(r, (spop::result{errc::need_more, 0})) << "prefix " << len;
    }
}

TEST_P(CapturedFrame, HeaderReencodes) {
    const bytes& in = GetParam().frame;
    frame f;
    ASSERT_TRUE(spop::split_frame(in, mfs, f));
    bytes hdr(spop::frame_header_size(f.stream_id, f.frame_id));
    std::uint8_t* end =
        spop::encode_frame_header_unchecked(f.type, f.flags, f.stream_id, f.frame_id, hdr.data());
    EXPECT_EQ(end, hdr.data() + hdr.size());
    EXPECT_EQ(to_hex(hdr).substr(0, 8), "00000000") << "length left for the caller to patch";
    spop::store_be32(hdr.data(), static_cast<std::uint32_t>(in.size() - 4));
    EXPECT_EQ(to_hex(hdr), to_hex(std::span<const std::uint8_t>(in).first(hdr.size())));
}

TEST_P(CapturedFrame, TwoFramesBackToBack) {
    const bytes& one = GetParam().frame;
    const bytes two = spop_test::concat({one, one});
    frame f;
    const spop::result r = spop::split_frame(two, mfs, f);
    ASSERT_EQ(r, (spop::result{errc::ok, one.size()}));
    EXPECT_EQ(f.payload.data() + f.payload.size(), two.data() + one.size())
        << "the payload ends at the first frame's end";
}

std::string param_name(const ::testing::TestParamInfo<spop_test::vec::named>& i) {
    return i.param.name;
}
INSTANTIATE_TEST_SUITE_P(Corpus, CapturedFrame, ::testing::ValuesIn(spop_test::vec::all()),
                         param_name);

TEST(Frame, CapturedHeaderFields) {
    frame f;
    const bytes n = unhex(spop_test::vec::cap_notify_sid241);
    ASSERT_TRUE(spop::split_frame(n, mfs, f));
    EXPECT_EQ(f.type, frame_type::notify);
    EXPECT_TRUE(f.fin());
    EXPECT_FALSE(f.abort());
    EXPECT_EQ(f.stream_id, 241u);
    EXPECT_EQ(f.frame_id, 1u);
    EXPECT_EQ(f.payload.size(), 0x21u - 8u);

    const bytes f1 = spop_test::vec::v9_f1();
    ASSERT_TRUE(spop::split_frame(f1, mfs, f));
    EXPECT_EQ(f.type, frame_type::notify);
    EXPECT_FALSE(f.fin());
    EXPECT_EQ(f.stream_id, 2u);
    const bytes f2 = spop_test::vec::v9_f2();
    ASSERT_TRUE(spop::split_frame(f2, mfs, f));
    EXPECT_EQ(f.type, frame_type::unset);
    EXPECT_FALSE(f.fin());
    const bytes f3 = spop_test::vec::v9_f3();
    ASSERT_TRUE(spop::split_frame(f3, mfs, f));
    EXPECT_EQ(f.type, frame_type::unset);
    EXPECT_TRUE(f.fin());
}

TEST(Frame, FlagBits) {
    frame f;
    f.flags = spop::flag_fin | spop::flag_abort;
    EXPECT_TRUE(f.fin());
    EXPECT_TRUE(f.abort());
    f.flags = 0x01000000; // FIN in the wrong byte order is not FIN
    EXPECT_FALSE(f.fin());
    EXPECT_EQ(spop::flag_fin, 1u);
    EXPECT_EQ(spop::flag_abort, 2u);
}

TEST(Frame, ZeroLengthIsTooSmall) {
    const bytes in = unhex("00000000");
    frame f;
    EXPECT_EQ(spop::split_frame(in, mfs, f), (spop::result{errc::frame_too_small, 0}));
}

TEST(Frame, LengthsOneToSixAreTooSmall) {
    for (std::uint32_t len = 1; len < 7; ++len) {
        SCOPED_TRACE(len);
        bytes in(4 + len, 0x01);
        spop::store_be32(in.data(), len);
        frame f;
        // With only the prefix and with the whole (too short) frame present.
        EXPECT_EQ(spop::split_frame({in.data(), 4}, mfs, f),
                  (spop::result{errc::frame_too_small, 0}));
        EXPECT_EQ(spop::split_frame(in, mfs, f), (spop::result{errc::frame_too_small, 0}));
    }
    EXPECT_EQ(spop::check_frame_length(7, mfs), errc::ok);
}

TEST(Frame, SmallestFrame) {
    const bytes in = unhex("00000007 03 00000001 00 00");
    frame f;
    ASSERT_EQ(spop::split_frame(in, mfs, f), (spop::result{errc::ok, 11}));
    EXPECT_EQ(f.type, frame_type::notify);
    EXPECT_EQ(f.stream_id, 0u);
    EXPECT_EQ(f.frame_id, 0u);
    EXPECT_TRUE(f.payload.empty());
}

TEST(Frame, TooBigFromThePrefixAlone) {
    for (const std::uint32_t len : {mfs + 1, 0x00010000u, 0x7fffffffu, 0xffffffffu}) {
        SCOPED_TRACE(len);
        bytes prefix(4);
        spop::store_be32(prefix.data(), len);
        frame f;
        // Only the 4-byte prefix: the verdict must not wait for the payload.
        EXPECT_EQ(spop::split_frame(prefix, mfs, f), (spop::result{errc::frame_too_big, 0}));
        EXPECT_EQ(spop::check_frame_length(len, mfs), errc::frame_too_big);
    }
}

TEST(Frame, LimitIsInclusive) {
    bytes in(4 + 256, 0x00);
    spop::store_be32(in.data(), 256);
    in[4] = 3;
    in[8] = 1;
    frame f;
    EXPECT_EQ(spop::split_frame(in, 256, f), (spop::result{errc::ok, 260}));
    EXPECT_EQ(spop::split_frame(in, 255, f), (spop::result{errc::frame_too_big, 0}));
    // Partial input of an acceptable frame needs more, at every length below the whole.
    EXPECT_EQ(spop::split_frame({in.data(), 259}, 256, f), (spop::result{errc::need_more, 0}));
    EXPECT_EQ(spop::split_frame({in.data(), 3}, 256, f), (spop::result{errc::need_more, 0}));
}

TEST(Frame, SixtyFourBitIdsRoundTrip) {
    const std::uint64_t ids[] = {0,
                                 1,
                                 239,
                                 240,
                                 241,
                                 0x7fffffffu,
                                 0xffffffffu,
                                 std::uint64_t{1} << 63,
                                 std::numeric_limits<std::uint64_t>::max()};
    for (const std::uint64_t sid : ids) {
        for (const std::uint64_t fid : ids) {
            const bytes payload = unhex("0102");
            const bytes in =
                spop_test::make_frame(frame_type::notify, spop::flag_fin, sid, fid, payload);
            ASSERT_EQ(in.size(), spop::frame_header_size(sid, fid) + 2);
            frame f;
            ASSERT_EQ(spop::split_frame(in, mfs, f), (spop::result{errc::ok, in.size()}));
            EXPECT_EQ(f.stream_id, sid);
            EXPECT_EQ(f.frame_id, fid);
            EXPECT_EQ(to_hex(f.payload), "0102");
        }
    }
}

TEST(Frame, HeaderEncodingExactBytes) {
    std::uint8_t buf[32];
    std::uint8_t* end =
        spop::encode_frame_header_unchecked(frame_type::ack, spop::flag_fin, 1, 1, buf);
    EXPECT_EQ(to_hex({buf, static_cast<std::size_t>(end - buf)}),
              norm_hex("00000000 67 00000001 01 01"));
    end = spop::encode_frame_header_unchecked(frame_type::notify, 0, 241,
                                              std::numeric_limits<std::uint64_t>::max(), buf);
    EXPECT_EQ(to_hex({buf, static_cast<std::size_t>(end - buf)}),
              norm_hex("00000000 03 00000000 f100 fff0fefefefefefefe0e"));
    EXPECT_EQ(spop::frame_header_size(0, 0), 11u);
    EXPECT_EQ(spop::frame_header_size(241, std::numeric_limits<std::uint64_t>::max()), 21u);
    spop::store_be32(buf, 0x01020304);
    EXPECT_EQ(to_hex({buf, 4}), "01020304");
    EXPECT_EQ(spop::load_be32(buf), 0x01020304u);
}

TEST(Frame, MalformedIds) {
    frame f;
    // stream-id varint cut by the frame end (not by the buffer end: the frame is complete).
    const bytes sid_cut = unhex("00000007 03 00000001 f0 f0");
    EXPECT_EQ(spop::split_frame(sid_cut, mfs, f).ec, errc::truncated);
    // frame-id varint cut by the frame end; a byte follows outside the frame.
    const bytes fid_cut = unhex("00000007 03 00000001 01 f0 00");
    EXPECT_EQ(spop::split_frame(fid_cut, mfs, f).ec, errc::truncated);
    // An 11-byte stream-id.
    const bytes sid_long = unhex("00000011 03 00000001 ffffffffffffffffffffff 01");
    EXPECT_EQ(spop::split_frame(sid_long, mfs, f).ec, errc::varint_overflow);
    // A frame-id above 2^64-1.
    const bytes fid_big = unhex("00000010 03 00000001 01 fff0fefefefefefefe0f");
    EXPECT_EQ(spop::split_frame(fid_big, mfs, f).ec, errc::varint_overflow);
}

TEST(Frame, DecodeFrameBodyErrors) {
    frame f;
    const bytes short_body = unhex("03 00000001 01");
    EXPECT_EQ(spop::decode_frame_body(short_body, f), (spop::result{errc::frame_too_small, 0}));
    const bytes sid_cut = unhex("03 00000001 f0 f0");
    EXPECT_EQ(spop::decode_frame_body(sid_cut, f), (spop::result{errc::truncated, 5}));
    const bytes fid_cut = unhex("03 00000001 01 f0");
    EXPECT_EQ(spop::decode_frame_body(fid_cut, f), (spop::result{errc::truncated, 6}));
    const bytes ok = unhex("02 00000001 00 00 aa");
    EXPECT_EQ(spop::decode_frame_body(ok, f), (spop::result{errc::ok, 8}));
    EXPECT_EQ(f.type, frame_type::haproxy_disconnect);
    EXPECT_EQ(to_hex(f.payload), "aa");
}

TEST(Frame, LengthChecksAreConstexpr) {
    static_assert(spop::check_frame_length(0, 16380) == errc::frame_too_small);
    static_assert(spop::check_frame_length(16381, 16380) == errc::frame_too_big);
    static_assert(spop::check_frame_length(16380, 16380) == errc::ok);
    static_assert(spop::min_frame_length == 7);
    static_assert(spop::default_max_frame_size == 16380);
    static_assert(spop::min_max_frame_size == 256);
    SUCCEED();
}

} // namespace
