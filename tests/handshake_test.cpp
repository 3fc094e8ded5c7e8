// HELLO negotiation (PROTOCOL-NOTES §5): the captured HELLOs, every missing/bad key, version
// strings, capabilities tokens, and max-frame-size selection.
#include <spop/handshake.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "support/frames.hpp"
#include "support/hex.hpp"
#include "support/vectors.hpp"

namespace {

using spop::errc;
using spop::value;
using spop_test::bytes;
using spop_test::kv_payload;
using spop_test::unhex;
namespace vec = spop_test::vec;

bytes payload_of(std::string_view hex) {
    const bytes in = unhex(hex);
    spop::frame f;
    EXPECT_TRUE(spop::split_frame(in, spop::default_max_frame_size, f));
    return bytes(f.payload.begin(), f.payload.end());
}

/// The payload is kept with the result: `fields` views it.
struct outcome {
    bytes payload;
    errc ec{};
    spop::negotiated n;
    spop::hello_fields fields;
};

outcome negotiate(bytes payload, spop::agent_limits ours = {}) {
    outcome o;
    o.payload = std::move(payload);
    o.n.max_frame_size = 1; // must be overwritten on success
    o.ec = spop::negotiate(o.payload, ours, o.n, o.fields);
    return o;
}

/// A HELLO payload with the standard keys, where `versions` etc. can be changed.
bytes hello(std::string_view versions = "2.0", std::uint32_t mfs = 16380,
            std::string_view caps = "pipelining") {
    return kv_payload({{"supported-versions", value::from_string(versions)},
                       {"max-frame-size", value::from_uint32(mfs)},
                       {"capabilities", value::from_string(caps)}});
}

TEST(Handshake, V1HaproxyHello34) {
    const outcome o = negotiate(payload_of(vec::v1_hello_34));
    ASSERT_EQ(o.ec, errc::ok);
    EXPECT_EQ(o.n.max_frame_size, 16380u);
    EXPECT_TRUE(o.n.pipelining);
    EXPECT_FALSE(o.n.healthcheck);
    EXPECT_FALSE(o.n.peer_async);
    EXPECT_EQ(o.fields.versions, "2.0");
    EXPECT_EQ(o.fields.capabilities, "pipelining");
    EXPECT_EQ(o.fields.engine_id, "bc250262-feec-4411-aee7-699dcefaa22f");
}

TEST(Handshake, V2HaproxyHello26) {
    const outcome o = negotiate(payload_of(vec::cap_hello_26));
    ASSERT_EQ(o.ec, errc::ok);
    EXPECT_EQ(o.n.max_frame_size, 16380u);
    EXPECT_TRUE(o.n.pipelining);
    EXPECT_TRUE(o.n.peer_async);
    EXPECT_FALSE(o.n.healthcheck);
}

TEST(Handshake, V3Healthcheck) {
    const outcome o = negotiate(payload_of(vec::v3_healthcheck));
    ASSERT_EQ(o.ec, errc::ok);
    EXPECT_TRUE(o.n.healthcheck);
    EXPECT_FALSE(o.n.pipelining) << "capabilities is empty";
    EXPECT_EQ(o.n.max_frame_size, 16380u);
    EXPECT_TRUE(o.fields.engine_id.empty());
}

TEST(Handshake, PipeliningOnlyWhenBothSidesAnnounceIt) {
    spop::agent_limits no_pipe;
    no_pipe.pipelining = false;
    EXPECT_TRUE(negotiate(hello("2.0", 16380, "pipelining")).n.pipelining);
    EXPECT_TRUE(negotiate(hello("2.0", 16380, "async, pipelining ")).n.pipelining);
    EXPECT_FALSE(negotiate(hello("2.0", 16380, "pipelining"), no_pipe).n.pipelining);
    EXPECT_FALSE(negotiate(hello("2.0", 16380, "")).n.pipelining);
    EXPECT_FALSE(negotiate(hello("2.0", 16380, "async")).n.pipelining);
    EXPECT_FALSE(negotiate(hello("2.0", 16380, "pipelining2")).n.pipelining);
    EXPECT_FALSE(negotiate(hello("2.0", 16380, "pipe")).n.pipelining);
    EXPECT_EQ(spop::announced_capabilities(no_pipe), "");
    EXPECT_EQ(spop::announced_capabilities(spop::agent_limits{}), "pipelining");
}

TEST(Handshake, MaxFrameSizeIsTheMinimum) {
    spop::agent_limits ours;
    ours.max_frame_size = 1024;
    EXPECT_EQ(negotiate(hello("2.0", 16380), ours).n.max_frame_size, 1024u) << "ours smaller";
    EXPECT_EQ(negotiate(hello("2.0", 512), ours).n.max_frame_size, 512u) << "theirs smaller";
    ours.max_frame_size = 65532;
    EXPECT_EQ(negotiate(hello("2.0", 65532), ours).n.max_frame_size, 65532u);
    EXPECT_EQ(negotiate(hello("2.0", 16380), ours).n.max_frame_size, 16380u);
    // Any integer type is accepted, even a value far above u32.
    const bytes p = kv_payload({{"supported-versions", value::from_string("2.0")},
                                {"max-frame-size", value::from_uint64(std::uint64_t{1} << 40)},
                                {"capabilities", value::from_string("")}});
    EXPECT_EQ(negotiate(p, ours).n.max_frame_size, 65532u);
    const bytes p64 = kv_payload({{"supported-versions", value::from_string("2.0")},
                                  {"max-frame-size", value::from_int64(4096)},
                                  {"capabilities", value::from_string("")}});
    EXPECT_EQ(negotiate(p64, ours).n.max_frame_size, 4096u);
}

TEST(Handshake, MaxFrameSizeBounds) {
    EXPECT_EQ(negotiate(hello("2.0", 255)).ec, errc::bad_frame_size);
    EXPECT_EQ(negotiate(hello("2.0", 0)).ec, errc::bad_frame_size);
    const outcome o = negotiate(hello("2.0", 256));
    ASSERT_EQ(o.ec, errc::ok);
    EXPECT_EQ(o.n.max_frame_size, 256u);
}

TEST(Handshake, MissingKeys) {
    const auto v = value::from_string("2.0");
    const auto m = value::from_uint32(16380);
    const auto c = value::from_string("pipelining");
    EXPECT_EQ(negotiate(kv_payload({{"max-frame-size", m}, {"capabilities", c}})).ec,
              errc::no_version);
    EXPECT_EQ(negotiate(kv_payload({{"supported-versions", v}, {"capabilities", c}})).ec,
              errc::no_frame_size);
    EXPECT_EQ(negotiate(kv_payload({{"supported-versions", v}, {"max-frame-size", m}})).ec,
              errc::no_capabilities);
    EXPECT_EQ(negotiate({}).ec, errc::no_version) << "checked first";
    // Key order does not matter.
    EXPECT_EQ(
        negotiate(
            kv_payload({{"capabilities", c}, {"max-frame-size", m}, {"supported-versions", v}}))
            .ec,
        errc::ok);
    // The statuses they map to.
    EXPECT_EQ(static_cast<int>(spop::to_status(errc::no_version)), 5);
    EXPECT_EQ(static_cast<int>(spop::to_status(errc::no_frame_size)), 6);
    EXPECT_EQ(static_cast<int>(spop::to_status(errc::no_capabilities)), 7);
    EXPECT_EQ(static_cast<int>(spop::to_status(errc::bad_version)), 8);
    EXPECT_EQ(static_cast<int>(spop::to_status(errc::bad_frame_size)), 9);
}

TEST(Handshake, VersionStrings) {
    // A 2.x item includes 2.0 (SPOE.txt 3.2.4), read as HAProxy reads versions.
    for (const char* good :
         {"2.0", " 2.0 ", "2.00", "2.000", "1.0,2.0", "2.0, 1.0", "1.0 , 2.0", "3.0,2.0", "2.1",
          "2.5", "1.0, 2.9", "2.999", "2.0000", "02.0", "\t2.0\t", "2.01", "3.0, 2.1"}) {
        EXPECT_EQ(negotiate(hello(good)).ec, errc::ok) << '"' << good << '"';
    }
    for (const char* bad : {"1.0",  "1.5",  "3.0",  "",          " ",      "2",    "2.",   ".0",
                            "0.0",  "20",   "2,0",  "2.0.1",     "2.1000", "12.0", "2.0x", ",",
                            "v2.0", "2 .0", "2. 0", "1000002.0", "-2.0",   "+2.0"}) {
        EXPECT_EQ(negotiate(hello(bad)).ec, errc::bad_version) << '"' << bad << '"';
    }
}

TEST(Handshake, VersionCheckedBeforeFrameSize) {
    EXPECT_EQ(negotiate(hello("3.0", 10)).ec, errc::bad_version);
}

TEST(Handshake, WrongTypedKnownKey) {
    struct bad_case {
        const char* key;
        value v;
    };
    const bad_case cases[] = {
        {"supported-versions", value::from_uint32(2)},
        {"supported-versions", value::from_binary("2.0")},
        {"max-frame-size", value::from_string("16380")},
        {"max-frame-size", value::null()},
        {"capabilities", value::from_bool(true)},
        {"healthcheck", value::from_uint32(1)},
        {"healthcheck", value::from_string("true")},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.key);
        bytes p = hello();
        const bytes extra = kv_payload({{c.key, c.v}});
        p.insert(p.end(), extra.begin(), extra.end());
        const outcome o = negotiate(p);
        EXPECT_EQ(o.ec, errc::bad_kv_type);
        EXPECT_EQ(o.fields.bad_key, c.key);
    }
    EXPECT_EQ(static_cast<int>(spop::to_status(errc::bad_kv_type)), 4);
}

TEST(Handshake, UnknownKeysAreSkipped) {
    const std::array<std::uint8_t, 16> v6{};
    bytes p =
        kv_payload({{"x-future", value::from_ipv6(v6)}, {"engine-id", value::from_uint32(7)}});
    const bytes h = hello();
    p.insert(p.end(), h.begin(), h.end());
    const bytes tail = kv_payload({{"zzz", value::from_binary("\x01\x02")}});
    p.insert(p.end(), tail.begin(), tail.end());
    const outcome o = negotiate(p);
    EXPECT_EQ(o.ec, errc::ok);
    EXPECT_TRUE(o.fields.engine_id.empty()) << "a non-string engine-id is ignored";
}

TEST(Handshake, KeysMatchExactly) {
    // Prefixes and extensions of known keys are unknown keys.
    const bytes p = kv_payload({{"supported-versions", value::from_string("2.0")},
                                {"max-frame-size2", value::from_uint32(16380)},
                                {"max-frame", value::from_uint32(16380)},
                                {"capabilities", value::from_string("")}});
    EXPECT_EQ(negotiate(p).ec, errc::no_frame_size);
    const bytes hc = kv_payload({{"supported-versions", value::from_string("2.0")},
                                 {"max-frame-size", value::from_uint32(16380)},
                                 {"capabilities", value::from_string("")},
                                 {"healthcheckX", value::from_bool(true)}});
    const outcome o = negotiate(hc);
    EXPECT_EQ(o.ec, errc::ok);
    EXPECT_FALSE(o.n.healthcheck);
}

TEST(Handshake, HealthcheckFalse) {
    bytes p = hello();
    const bytes extra = kv_payload({{"healthcheck", value::from_bool(false)}});
    p.insert(p.end(), extra.begin(), extra.end());
    const outcome o = negotiate(p);
    EXPECT_EQ(o.ec, errc::ok);
    EXPECT_FALSE(o.n.healthcheck);
}

TEST(Handshake, ParseErrorsPassThrough) {
    bytes p = hello();
    p.pop_back();
    EXPECT_EQ(negotiate(p).ec, errc::truncated);
    const bytes bad = unhex("01 61 0c");
    EXPECT_EQ(negotiate(bad).ec, errc::bad_data_type);
    const bytes overflow = unhex("01 61 03 ffffffffffffffffff7f");
    EXPECT_EQ(negotiate(overflow).ec, errc::varint_overflow);
}

TEST(Handshake, ListContains) {
    EXPECT_TRUE(spop::list_contains("pipelining", "pipelining"));
    EXPECT_TRUE(spop::list_contains("pipelining,async", "async"));
    EXPECT_TRUE(spop::list_contains(" async , pipelining ", "pipelining"));
    EXPECT_TRUE(spop::list_contains(",,pipelining", "pipelining"));
    EXPECT_FALSE(spop::list_contains("pipelining2", "pipelining"));
    EXPECT_FALSE(spop::list_contains("xpipelining", "pipelining"));
    EXPECT_FALSE(spop::list_contains("pipe,lining", "pipelining"));
    EXPECT_FALSE(spop::list_contains("", "pipelining"));
    EXPECT_FALSE(spop::list_contains("pipelining", ""));
    static_assert(spop::list_contains("a,b", "b"));
    static_assert(spop::offers_version_2_0(" 2.0 "));
    static_assert(spop::offers_version_2_0("2.1"));
    static_assert(!spop::offers_version_2_0("3.0"));
}

TEST(Handshake, DisconnectFields) {
    spop::disconnect_fields d;
    const bytes p = payload_of(vec::v8_disc_idle);
    ASSERT_TRUE(spop::parse_kv_list(p, d));
    EXPECT_TRUE(d.has_status);
    EXPECT_EQ(d.status_code, 2u);
    EXPECT_EQ(d.message, "a timeout occurred");
    // Oversized codes clamp; a binary message is accepted; other keys are ignored.
    spop::disconnect_fields big;
    const bytes q = kv_payload({{"status-code", value::from_uint64(std::uint64_t{1} << 40)},
                                {"message", value::from_binary("bye")},
                                {"other", value::from_string("x")}});
    ASSERT_TRUE(spop::parse_kv_list(q, big));
    EXPECT_EQ(big.status_code, 0xFFFFFFFFu);
    EXPECT_EQ(big.message, "bye");
    spop::disconnect_fields none;
    ASSERT_TRUE(spop::parse_kv_list(std::span<const std::uint8_t>{}, none));
    EXPECT_FALSE(none.has_status);
}

} // namespace
