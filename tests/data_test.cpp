// Typed data (PROTOCOL-NOTES §3) and NAMEs: exact encodings of all ten types, round trips,
// reserved types, truncation.
#include <spop/data.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support/hex.hpp"

namespace {

using spop::data_type;
using spop::errc;
using spop::value;
using spop_test::bytes;
using spop_test::describe;
using spop_test::norm_hex;
using spop_test::to_hex;
using spop_test::unhex;

constexpr std::array<std::uint8_t, 4> ipv4_addr{192, 0, 2, 1};
constexpr std::array<std::uint8_t, 16> ipv6_addr{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                                 0,    0,    0,    0,    0, 0, 0, 1};

bytes encode(const value& v) {
    bytes out(64 * 1024, 0xAA);
    std::uint8_t* end = spop::encode_value(v, out.data(), out.data() + out.size());
    EXPECT_NE(end, nullptr);
    if (end == nullptr) return {};
    out.resize(static_cast<std::size_t>(end - out.data()));
    return out;
}

struct typed_case {
    const char* name;
    value v;
    const char* hex;         ///< exact wire bytes (PROTOCOL-NOTES §3 / §11)
    const char* description; ///< describe() of the decoded value
};

std::vector<typed_case> cases() {
    return {
        {"Null", value::null(), "00", "null"},
        {"BoolTrue", value::from_bool(true), "11", "bool:true"},
        {"BoolFalse", value::from_bool(false), "01", "bool:false"},
        {"Int32Small", value::from_int32(42), "02 2a", "int32:42"},
        {"Int32Neg5", value::from_int32(-5), "02 fbf0fefefefefefefe0e", "int32:-5"},
        {"Int32Min", value::from_int32(std::numeric_limits<std::int32_t>::min()),
         "02 f0f1fefebefefefefe0e", "int32:-2147483648"},
        {"Uint32Mfs", value::from_uint32(16380), "03 fcf006", "uint32:16380"},
        {"Uint32Max", value::from_uint32(0xFFFFFFFFu), "03 fff0fefe7e", "uint32:4294967295"},
        {"Int64NegOne", value::from_int64(-1), "04 fff0fefefefefefefe0e", "int64:-1"},
        {"Int64Max", value::from_int64(std::numeric_limits<std::int64_t>::max()),
         "04 fff0fefefefefefefe06", "int64:9223372036854775807"},
        {"Uint64Max", value::from_uint64(std::numeric_limits<std::uint64_t>::max()),
         "05 fff0fefefefefefefe0e", "uint64:18446744073709551615"},
        {"Ipv4", value::from_ipv4(ipv4_addr), "06 c0000201", "ipv4:c0000201"},
        {"Ipv6", value::from_ipv6(ipv6_addr), "07 20010db8000000000000000000000001",
         "ipv6:20010db8000000000000000000000001"},
        {"StringAbc", value::from_string("abc"), "08 03 616263", "string:\"abc\""},
        {"StringEmpty", value::from_string(""), "08 00", "string:\"\""},
        {"Binary", value::from_binary(std::string_view("\x00\xff", 2)), "09 02 00ff",
         "binary:00ff"},
        {"BinaryEmpty", value::from_binary(""), "09 00", "binary:"},
    };
}

TEST(Data, EncodesExactBytes) {
    for (const auto& c : cases()) {
        SCOPED_TRACE(c.name);
        EXPECT_EQ(to_hex(encode(c.v)), norm_hex(c.hex));
        EXPECT_EQ(spop::value_size(c.v), unhex(c.hex).size());
    }
}

TEST(Data, DecodesExactBytes) {
    for (const auto& c : cases()) {
        SCOPED_TRACE(c.name);
        const bytes in = unhex(c.hex);
        value v;
        v.integer = 999;
        const spop::result r = spop::decode_value(in.data(), in.data() + in.size(), v);
        EXPECT_EQ(r, (spop::result{errc::ok, in.size()}));
        EXPECT_EQ(describe(v), c.description);
    }
}

TEST(Data, EveryTypeRoundTrips) {
    for (const auto& c : cases()) {
        SCOPED_TRACE(c.name);
        const bytes e = encode(c.v);
        value back;
        const spop::result r = spop::decode_value(e.data(), e.data() + e.size(), back);
        ASSERT_EQ(r.ec, errc::ok);
        EXPECT_EQ(r.consumed, e.size());
        EXPECT_EQ(back.type, c.v.type);
        EXPECT_EQ(back.boolean, c.v.boolean);
        EXPECT_EQ(back.integer, c.v.integer);
        EXPECT_EQ(to_hex(back.bytes), to_hex(c.v.bytes));
        // Encoding the decoded value reproduces the bytes.
        EXPECT_EQ(to_hex(encode(back)), to_hex(e));
    }
}

TEST(Data, DecodedViewsPointIntoTheInput) {
    const bytes in = unhex("08 03 616263");
    value v;
    ASSERT_TRUE(spop::decode_value(in.data(), in.data() + in.size(), v));
    EXPECT_EQ(reinterpret_cast<const std::uint8_t*>(v.bytes.data()), in.data() + 2);
    EXPECT_EQ(v.byte_span().data(), in.data() + 2);
    EXPECT_EQ(v.byte_span().size(), 3u);
}

TEST(Data, SignedAndUnsignedReadings) {
    // HAProxy sends every integer sample as INT64 two's complement.
    const bytes in = unhex("04 fbf0fefefefefefefe0e");
    value v;
    ASSERT_TRUE(spop::decode_value(in.data(), in.data() + in.size(), v));
    EXPECT_EQ(v.type, data_type::int64);
    EXPECT_TRUE(v.is_integer());
    EXPECT_EQ(v.as_int(), -5);
    EXPECT_EQ(v.as_uint(), std::numeric_limits<std::uint64_t>::max() - 4);
    // An INT32 -1 sent as a 5-byte varint (32-bit two's complement) reads as 4294967295,
    // exactly as HAProxy would read it (PROTOCOL-NOTES §3).
    const bytes in32 = unhex("02 fff0fefe7e");
    ASSERT_TRUE(spop::decode_value(in32.data(), in32.data() + in32.size(), v));
    EXPECT_EQ(v.as_int(), 4294967295);
    EXPECT_FALSE(value::null().is_integer());
    EXPECT_FALSE(value::from_string("1").is_integer());
}

TEST(Data, FlagBitsOnlyAffectBool) {
    value v;
    const bytes t = unhex("11"), f = unhex("01");
    ASSERT_TRUE(spop::decode_value(t.data(), t.data() + 1, v));
    EXPECT_TRUE(v.boolean);
    ASSERT_TRUE(spop::decode_value(f.data(), f.data() + 1, v));
    EXPECT_FALSE(v.boolean);
    // The type is the low nibble; a decoded value never keeps a stale boolean.
    const bytes s = unhex("08 01 41");
    v.boolean = true;
    ASSERT_TRUE(spop::decode_value(s.data(), s.data() + s.size(), v));
    EXPECT_EQ(v.type, data_type::string);
    EXPECT_FALSE(v.boolean);
    EXPECT_EQ(v.integer, 0u);
}

TEST(Data, ReservedTypesAreRejected) {
    for (unsigned t = 10; t <= 15; ++t) {
        for (unsigned flags : {0x00u, 0x10u, 0xf0u}) {
            const bytes in{static_cast<std::uint8_t>(t | flags), 0x01, 0x02, 0x03};
            SCOPED_TRACE(to_hex(in));
            value v;
            const spop::result r = spop::decode_value(in.data(), in.data() + in.size(), v);
            EXPECT_EQ(r, (spop::result{errc::bad_data_type, 0}));
        }
    }
}

TEST(Data, EmptyInputIsTruncated) {
    const bytes in{0x00};
    value v;
    EXPECT_EQ(spop::decode_value(in.data(), in.data(), v), (spop::result{errc::truncated, 0}));
}

TEST(Data, TruncatedBodies) {
    for (const auto& c : cases()) {
        const bytes in = unhex(c.hex);
        for (std::size_t len = 0; len < in.size(); ++len) {
            SCOPED_TRACE(std::string(c.name) + " cut at " + std::to_string(len));
            value v;
            const spop::result r = spop::decode_value(in.data(), in.data() + len, v);
            EXPECT_EQ(r.ec, errc::truncated);
            EXPECT_LE(r.consumed, len);
        }
    }
    // A string whose length runs past the end, by far.
    const bytes huge = unhex("08 fff0fefefefefefefe0e 61");
    value v;
    EXPECT_EQ(spop::decode_value(huge.data(), huge.data() + huge.size(), v).ec, errc::truncated);
}

TEST(Data, OverflowingIntegerBody) {
    const bytes in = unhex("04 ffffffffffffffffff7f");
    value v;
    const spop::result r = spop::decode_value(in.data(), in.data() + in.size(), v);
    EXPECT_EQ(r.ec, errc::varint_overflow);
    EXPECT_GE(r.consumed, 1u);
    EXPECT_LE(r.consumed, in.size());
    const bytes len_overflow = unhex("09 ffffffffffffffffff7f");
    EXPECT_EQ(
        spop::decode_value(len_overflow.data(), len_overflow.data() + len_overflow.size(), v).ec,
        errc::varint_overflow);
}

TEST(Data, EncodeRefusesATooSmallBufferForEveryType) {
    for (const auto& c : cases()) {
        SCOPED_TRACE(c.name);
        const std::size_t n = spop::value_size(c.v);
        bytes buf(n, 0xAA);
        EXPECT_EQ(spop::encode_value(c.v, buf.data(), buf.data() + n - 1), nullptr);
        EXPECT_EQ(buf, bytes(n, 0xAA)) << "nothing written on failure";
        EXPECT_EQ(spop::encode_value(c.v, buf.data(), buf.data() + n), buf.data() + n);
    }
}

TEST(Data, AddressWithWrongViewSizeEncodesAsNull) {
    value bad4{data_type::ipv4, false, 0, std::string_view("\x01\x02\x03", 3)};
    value bad6{data_type::ipv6, false, 0, std::string_view("0123456789abcdefX", 17)};
    EXPECT_EQ(to_hex(encode(bad4)), "00");
    EXPECT_EQ(to_hex(encode(bad6)), "00");
}

TEST(Data, LongStringUsesAMultiByteLength) {
    const std::string s(600, 'x');
    const bytes e = encode(value::from_string(s));
    ASSERT_EQ(e.size(), 1u + 2u + 600u);
    EXPECT_EQ(to_hex(std::span<const std::uint8_t>(e).first(3)), "08f816"); // PROTOCOL-NOTES V9
    value back;
    ASSERT_TRUE(spop::decode_value(e.data(), e.data() + e.size(), back));
    EXPECT_EQ(back.bytes, s);
}

// --- NAMEs: varint length + bytes, no type byte ----------------------------------------------

TEST(Name, DecodesWithoutTypeByte) {
    const bytes in = unhex("02 6970 ff");
    std::string_view n;
    const spop::result r = spop::decode_name(in.data(), in.data() + in.size(), n);
    EXPECT_EQ(r, (spop::result{errc::ok, 3}));
    EXPECT_EQ(n, "ip");
    EXPECT_EQ(reinterpret_cast<const std::uint8_t*>(n.data()), in.data() + 1);
}

TEST(Name, EmptyName) {
    const bytes in = unhex("00");
    std::string_view n = "junk";
    EXPECT_EQ(spop::decode_name(in.data(), in.data() + 1, n), (spop::result{errc::ok, 1}));
    EXPECT_TRUE(n.empty());
}

TEST(Name, Truncated) {
    std::string_view n;
    const bytes in = unhex("05 6162");
    EXPECT_EQ(spop::decode_name(in.data(), in.data() + in.size(), n).ec, errc::truncated);
    EXPECT_EQ(spop::decode_name(in.data(), in.data(), n), (spop::result{errc::truncated, 0}));
    const bytes cut_len = unhex("f0"); // the length varint itself is cut
    EXPECT_EQ(spop::decode_name(cut_len.data(), cut_len.data() + 1, n).ec, errc::truncated);
    const bytes max_len = unhex("fff0fefefefefefefe0e 41"); // 2^64-1 bytes claimed
    EXPECT_EQ(spop::decode_name(max_len.data(), max_len.data() + max_len.size(), n).ec,
              errc::truncated);
}

TEST(Name, OverflowingLength) {
    std::string_view n;
    const bytes in = unhex("ffffffffffffffffff7f");
    EXPECT_EQ(spop::decode_name(in.data(), in.data() + in.size(), n).ec, errc::varint_overflow);
}

TEST(Name, EncodeRoundTrip) {
    for (const std::string& s : {std::string(), std::string("ip"), std::string(239, 'a'),
                                 std::string(240, 'b'), std::string(3000, 'c')}) {
        SCOPED_TRACE(s.size());
        bytes buf(4096);
        std::uint8_t* end = spop::encode_name(s, buf.data(), buf.data() + buf.size());
        ASSERT_NE(end, nullptr);
        const auto n = static_cast<std::size_t>(end - buf.data());
        EXPECT_EQ(n, spop::varint_size(s.size()) + s.size());
        EXPECT_EQ(spop::encode_name(s, buf.data(), buf.data() + n - 1), nullptr);
        std::string_view back;
        EXPECT_EQ(spop::decode_name(buf.data(), end, back), (spop::result{errc::ok, n}));
        EXPECT_EQ(back, s);
    }
    bytes ip(3);
    spop::encode_name("ip", ip.data(), ip.data() + 3);
    EXPECT_EQ(to_hex(ip), "026970");
}

} // namespace
