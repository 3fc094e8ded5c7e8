// HAProxy varints ("peers encoding", PROTOCOL-NOTES §2): exact bytes at every length boundary,
// truncation, overflow, and a reference decoder in 128-bit arithmetic.
#include <spop/varint.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/hex.hpp"

namespace {

using spop::errc;
using spop_test::bytes;
using spop_test::norm_hex;
using spop_test::to_hex;
using spop_test::unhex;

__extension__ typedef unsigned __int128 u128;

constexpr std::uint64_t u64max = std::numeric_limits<std::uint64_t>::max();

bytes encode(std::uint64_t v) {
    bytes out(spop::max_varint_size + 4, 0xAA);
    std::uint8_t* end = spop::encode_varint(v, out.data(), out.data() + out.size());
    EXPECT_NE(end, nullptr);
    out.resize(static_cast<std::size_t>(end - out.data()));
    return out;
}

/// HAProxy's decode loop (intops.h) in 128-bit arithmetic, bounded at 10 bytes:
/// returns -1 for need_more, -2 for overflow, else the byte count; `out` the value.
int reference_decode(const bytes& in, u128& out) {
    if (in.empty()) return -1;
    u128 x = in[0];
    if (in[0] < 240) {
        out = x;
        return 1;
    }
    unsigned shift = 4;
    for (std::size_t i = 1;; ++i) {
        if (i >= spop::max_varint_size) return -2;
        if (i >= in.size()) return -1;
        x += u128{in[i]} << shift;
        shift += 7;
        if (in[i] < 128) {
            out = x;
            if (x > u128{u64max}) return -2;
            return static_cast<int>(i + 1);
        }
    }
}

struct boundary {
    std::uint64_t value;
    const char* hex;
};

// PROTOCOL-NOTES §2 table, plus the length boundaries it lists (1 byte below 240, 2 below 2288,
// 3 below 264432, 4 below 33818864). Bytes not in the table were derived by hand from the
// encoding rule: e.g. 241 = 0xF1 | ((241-240)>>4 = 0) -> F1 00 (CAPTURES: `f1 00` = 241).
const boundary boundaries[] = {
    {0, "00"},
    {1, "01"},
    {239, "ef"},
    {240, "f000"},
    {241, "f100"},
    {2287, "ff7f"},
    {2288, "f08000"},
    {16380, "fcf006"},
    {264431, "ffff7f"},
    {264432, "f0808000"},
    {33818863, "ffffff7f"},
    {33818864, "f080808000"},
    {4294967295u, "fff0fefe7e"},
    {9223372036854775807u, "fff0fefefefefefefe06"},
    {u64max, "fff0fefefefefefefe0e"},
};

TEST(Varint, BoundariesEncodeToExactBytes) {
    for (const auto& b : boundaries) {
        SCOPED_TRACE(b.value);
        EXPECT_EQ(to_hex(encode(b.value)), b.hex);
    }
}

TEST(Varint, BoundariesDecode) {
    for (const auto& b : boundaries) {
        SCOPED_TRACE(b.value);
        const bytes in = unhex(b.hex);
        std::uint64_t v = 12345;
        const spop::result r = spop::decode_varint(in.data(), in.data() + in.size(), v);
        EXPECT_EQ(r.ec, errc::ok);
        EXPECT_EQ(r.consumed, in.size());
        EXPECT_EQ(v, b.value);
    }
}

TEST(Varint, DecodeStopsAtTheVarintsEnd) {
    // Trailing bytes are not part of the varint.
    const bytes in = unhex("fcf006 ffff");
    std::uint64_t v = 0;
    const spop::result r = spop::decode_varint(in.data(), in.data() + in.size(), v);
    EXPECT_EQ(r, (spop::result{errc::ok, 3}));
    EXPECT_EQ(v, 16380u);
}

TEST(Varint, SizeMatchesEncodingAtBoundaries) {
    for (const auto& b : boundaries) {
        SCOPED_TRACE(b.value);
        EXPECT_EQ(spop::varint_size(b.value), unhex(b.hex).size());
    }
    // The byte-length steps of intops.h:573-587.
    const std::uint64_t steps[] = {
        240u,          2288u,           264432u,           33818864u,           4328786160u,
        554084600048u, 70922828777712u, 9078122083518704u, 1161999626690365680u};
    for (std::size_t i = 0; i < std::size(steps); ++i) {
        SCOPED_TRACE(steps[i]);
        EXPECT_EQ(spop::varint_size(steps[i] - 1), i + 1);
        EXPECT_EQ(spop::varint_size(steps[i]), i + 2);
        EXPECT_EQ(encode(steps[i] - 1).size(), i + 1);
        EXPECT_EQ(encode(steps[i]).size(), i + 2);
    }
    EXPECT_EQ(spop::varint_size(u64max), spop::max_varint_size);
}

TEST(Varint, EncodeRefusesATooSmallBuffer) {
    for (const auto& b : boundaries) {
        SCOPED_TRACE(b.value);
        const std::size_t n = unhex(b.hex).size();
        bytes buf(n, 0xAA);
        EXPECT_EQ(spop::encode_varint(b.value, buf.data(), buf.data() + n - 1), nullptr);
        EXPECT_EQ(buf, bytes(n, 0xAA)) << "nothing written on failure";
        EXPECT_EQ(spop::encode_varint(b.value, buf.data(), buf.data() + n), buf.data() + n);
    }
}

TEST(Varint, EncodeIsConstexpr) {
    constexpr auto bytes16380 = [] {
        std::uint8_t b[3]{};
        spop::encode_varint_unchecked(16380, b);
        return (b[0] << 16) | (b[1] << 8) | b[2];
    }();
    static_assert(bytes16380 == 0xfcf006);
    static_assert(spop::varint_size(239) == 1 && spop::varint_size(240) == 2);
    SUCCEED();
}

TEST(Varint, EveryTruncationNeedsMore) {
    for (const auto& b : boundaries) {
        const bytes in = unhex(b.hex);
        for (std::size_t len = 0; len < in.size(); ++len) {
            SCOPED_TRACE(std::string(b.hex) + " cut at " + std::to_string(len));
            std::uint64_t v = 777;
            const spop::result r = spop::decode_varint(in.data(), in.data() + len, v);
            EXPECT_EQ(r, (spop::result{errc::need_more, 0}));
            EXPECT_EQ(v, 777u) << "output untouched on need_more";
        }
    }
}

TEST(Varint, ElevenBytesOverflow) {
    // A first byte >= 240 followed by ten continuation bytes: longer than any u64 encoding.
    const bytes in = unhex("f0 80 80 80 80 80 80 80 80 80 00");
    std::uint64_t v = 0;
    const spop::result r = spop::decode_varint(in.data(), in.data() + in.size(), v);
    EXPECT_EQ(r.ec, errc::varint_overflow);
    EXPECT_LE(r.consumed, spop::max_varint_size);
    // And an endless run of continuation bytes, as HAProxy's unbounded decoder would accept.
    const bytes endless(64, 0xff);
    const spop::result r2 = spop::decode_varint(endless.data(), endless.data() + endless.size(), v);
    EXPECT_EQ(r2.ec, errc::varint_overflow);
    EXPECT_LE(r2.consumed, spop::max_varint_size);
}

TEST(Varint, TenContinuationBytesOverflowEvenWhenTheBufferEndsThere) {
    // Ten bytes, the last still a continuation: no 11th byte can make it valid, so this is
    // overflow, not need_more.
    const bytes in = unhex("f0 80 80 80 80 80 80 80 80 80");
    std::uint64_t v = 0;
    EXPECT_EQ(spop::decode_varint(in.data(), in.data() + in.size(), v).ec, errc::varint_overflow);
}

TEST(Varint, ValuesAboveU64MaxOverflow) {
    const char* const above[] = {
        "fff0fefefefefefefe0f", // 2^64 (max's last byte + 1)
        "fff0fefefefefefefe7f", // far above
        "ffffffffffffffffff7f", // every byte maxed
        "ffffffffffffffffff0e", // 9 x FF then the max u64's last byte
        "f0808080808080808010", // high nibble of the 10th byte set
    };
    for (const char* h : above) {
        SCOPED_TRACE(h);
        const bytes in = unhex(h);
        u128 ref = 0;
        ASSERT_EQ(reference_decode(in, ref), -2) << "test vector must be above 2^64-1";
        std::uint64_t v = 0;
        EXPECT_EQ(spop::decode_varint(in.data(), in.data() + in.size(), v).ec,
                  errc::varint_overflow);
    }
}

TEST(Varint, AllTwoByteSequencesMatchTheReference) {
    for (unsigned a = 0; a < 256; ++a) {
        for (unsigned b = 0; b < 256; ++b) {
            const bytes in{static_cast<std::uint8_t>(a), static_cast<std::uint8_t>(b)};
            u128 ref = 0;
            const int n = reference_decode(in, ref);
            std::uint64_t v = 0;
            const spop::result r = spop::decode_varint(in.data(), in.data() + 2, v);
            if (n == -1) {
                ASSERT_EQ(r.ec, errc::need_more) << to_hex(in);
            } else {
                ASSERT_EQ(r.ec, errc::ok) << to_hex(in);
                ASSERT_EQ(r.consumed, static_cast<std::size_t>(n)) << to_hex(in);
                ASSERT_EQ(v, static_cast<std::uint64_t>(ref)) << to_hex(in);
                // Bijective: re-encoding gives the same bytes.
                ASSERT_EQ(to_hex(encode(v)), to_hex(bytes(in.begin(), in.begin() + n)));
            }
        }
    }
}

TEST(Varint, RandomLongSequencesMatchTheReference) {
    std::mt19937_64 rng(0x5bd1e995);
    // Bytes near the u64 limit are the interesting ones for the 10th byte.
    const std::uint8_t edgy[] = {0x00, 0x0e, 0x0f, 0x10, 0x7e, 0x7f, 0x80, 0xfe, 0xff};
    for (int iter = 0; iter < 200000; ++iter) {
        const std::size_t len = 2 + rng() % 10; // 2..11 bytes
        bytes in(len);
        for (std::size_t i = 0; i < len; ++i) {
            in[i] = (rng() & 1) ? edgy[rng() % std::size(edgy)] : static_cast<std::uint8_t>(rng());
            if (i == 0)
                in[i] |= 0xf0; // long form
            else if (i + 1 < len)
                in[i] |= 0x80; // continuation
            else if (rng() % 4 != 0)
                in[i] &= 0x7f; // usually terminated
        }
        u128 ref = 0;
        const int n = reference_decode(in, ref);
        std::uint64_t v = 0;
        const spop::result r = spop::decode_varint(in.data(), in.data() + in.size(), v);
        if (n == -1) {
            ASSERT_EQ(r.ec, errc::need_more) << to_hex(in);
        } else if (n == -2) {
            ASSERT_EQ(r.ec, errc::varint_overflow) << to_hex(in);
        } else {
            ASSERT_EQ(r.ec, errc::ok) << to_hex(in);
            ASSERT_EQ(r.consumed, static_cast<std::size_t>(n)) << to_hex(in);
            ASSERT_EQ(v, static_cast<std::uint64_t>(ref)) << to_hex(in);
        }
    }
}

TEST(Varint, RandomRoundTrip) {
    std::mt19937_64 rng(20240601);
    for (int i = 0; i < 100000; ++i) {
        // Spread over every length: pick a bit width, then a value of that width.
        const unsigned bits = static_cast<unsigned>(rng() % 65);
        const std::uint64_t v = bits == 0 ? 0 : (bits == 64 ? rng() : rng() >> (64 - bits));
        const bytes e = encode(v);
        ASSERT_EQ(e.size(), spop::varint_size(v)) << v;
        std::uint64_t back = ~v;
        const spop::result r = spop::decode_varint(e.data(), e.data() + e.size(), back);
        ASSERT_EQ(r.ec, errc::ok) << v;
        ASSERT_EQ(r.consumed, e.size()) << v;
        ASSERT_EQ(back, v);
        u128 ref = 0;
        ASSERT_EQ(reference_decode(e, ref), static_cast<int>(e.size())) << v;
        ASSERT_EQ(static_cast<std::uint64_t>(ref), v);
    }
}

TEST(Varint, NormHexHelper) {
    EXPECT_EQ(norm_hex("FC F0 06"), "fcf006");
}

} // namespace
