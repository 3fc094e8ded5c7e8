// Every hex vector of PROTOCOL-NOTES §11 and CAPTURES.md §1-§5, byte-exact in both directions:
// each is split and parsed (KV, NOTIFY or ACK) into an expected event list, then rebuilt with
// the library's encoders and compared byte for byte.
#include <spop/spop.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "support/frames.hpp"
#include "support/hex.hpp"
#include "support/recorder.hpp"
#include "support/vectors.hpp"

namespace {

using spop::errc;
using spop::frame_type;
using spop::value;
using spop::var_scope;
using spop_test::bytes;
using spop_test::norm_hex;
using spop_test::to_hex;
using spop_test::unhex;
using events = std::vector<std::string>;
namespace vec = spop_test::vec;

constexpr std::uint32_t mfs = spop::default_max_frame_size;
constexpr std::array<std::uint8_t, 4> localhost{127, 0, 0, 1};

struct split_result {
    spop::frame f;
    bool ok = false;
};

split_result split(const bytes& in) {
    split_result s;
    const spop::result r = spop::split_frame(in, mfs, s.f);
    EXPECT_EQ(r, (spop::result{errc::ok, in.size()}));
    s.ok = r.ec == errc::ok;
    return s;
}

events kv_events(std::span<const std::uint8_t> payload) {
    spop_test::recorder rec(spop_test::recorder::never, payload);
    const spop::result r = spop::parse_kv_list(payload, rec);
    EXPECT_EQ(r, (spop::result{errc::ok, payload.size()}));
    EXPECT_TRUE(rec.views_in_bounds);
    return rec.events;
}

events notify_events(std::span<const std::uint8_t> payload) {
    spop_test::recorder rec(spop_test::recorder::never, payload);
    const spop::result r = spop::parse_notify(payload, rec);
    EXPECT_EQ(r, (spop::result{errc::ok, payload.size()}));
    EXPECT_TRUE(rec.views_in_bounds);
    return rec.events;
}

std::string finished(spop::result r, const bytes& buf) {
    EXPECT_EQ(r.ec, errc::ok);
    return to_hex(std::span<const std::uint8_t>(buf).first(r ? r.consumed : 0));
}

// --- HAPROXY-HELLO ---------------------------------------------------------------------------

std::string encode_hello(std::string_view caps, std::string_view engine_id) {
    bytes buf(1024);
    spop::kv_writer w(buf, mfs, frame_type::haproxy_hello);
    EXPECT_TRUE(w.put("supported-versions", value::from_string("2.0")));
    EXPECT_TRUE(w.put("max-frame-size", value::from_uint32(16380)));
    EXPECT_TRUE(w.put("capabilities", value::from_string(caps)));
    EXPECT_TRUE(w.put("engine-id", value::from_string(engine_id)));
    return finished(w.finish(), buf);
}

events hello_events(std::string_view caps, std::string_view engine_id) {
    return {
        "kv \"supported-versions\" string:\"2.0\"",
        "kv \"max-frame-size\" uint32:16380",
        "kv \"capabilities\" string:\"" + std::string(caps) + "\"",
        "kv \"engine-id\" string:\"" + std::string(engine_id) + "\"",
    };
}

void check_hello(std::string_view hex, std::string_view caps, std::string_view engine_id) {
    const bytes in = unhex(hex);
    const split_result s = split(in);
    ASSERT_TRUE(s.ok);
    EXPECT_EQ(s.f.type, frame_type::haproxy_hello);
    EXPECT_EQ(s.f.flags, spop::flag_fin);
    EXPECT_EQ(s.f.stream_id, 0u);
    EXPECT_EQ(s.f.frame_id, 0u);
    EXPECT_EQ(kv_events(s.f.payload), hello_events(caps, engine_id));
    EXPECT_EQ(encode_hello(caps, engine_id), to_hex(in));
}

TEST(Vectors, V1HaproxyHello34) {
    check_hello(vec::v1_hello_34, "pipelining", "bc250262-feec-4411-aee7-699dcefaa22f");
}
TEST(Vectors, CapturesHaproxyHello26) {
    // Also V2: V1 with capabilities "pipelining,async".
    check_hello(vec::cap_hello_26, "pipelining,async", "54f99a45-0276-4663-914e-8df45c143259");
}
TEST(Vectors, CapturesHaproxyHello34) {
    check_hello(vec::cap_hello_34, "pipelining", "1bd1e4a5-b09e-4d2b-afd2-6f38270d7e41");
}

TEST(Vectors, V3HealthcheckHello) {
    const bytes in = unhex(vec::v3_healthcheck);
    ASSERT_EQ(in.size(), 82u);
    const split_result s = split(in);
    ASSERT_TRUE(s.ok);
    EXPECT_EQ(s.f.type, frame_type::haproxy_hello);
    EXPECT_EQ(kv_events(s.f.payload), (events{
                                          "kv \"supported-versions\" string:\"2.0\"",
                                          "kv \"max-frame-size\" uint32:16380",
                                          "kv \"capabilities\" string:\"\"",
                                          "kv \"healthcheck\" bool:true",
                                      }));
    bytes buf(256);
    spop::kv_writer w(buf, mfs, frame_type::haproxy_hello);
    w.put("supported-versions", value::from_string("2.0"));
    w.put("max-frame-size", value::from_uint32(16380));
    w.put("capabilities", value::from_string(""));
    w.put("healthcheck", value::from_bool(true));
    EXPECT_EQ(finished(w.finish(), buf), to_hex(in));
}

// --- AGENT-HELLO -----------------------------------------------------------------------------

void check_agent_hello(std::string_view hex, std::string_view caps) {
    const bytes in = unhex(hex);
    const split_result s = split(in);
    ASSERT_TRUE(s.ok);
    EXPECT_EQ(s.f.type, frame_type::agent_hello);
    EXPECT_EQ(s.f.flags, spop::flag_fin);
    EXPECT_EQ(kv_events(s.f.payload),
              (events{
                  "kv \"version\" string:\"2.0\"",
                  "kv \"max-frame-size\" uint32:16380",
                  "kv \"capabilities\" string:\"" + std::string(caps) + "\"",
              }));
    bytes buf(256);
    EXPECT_EQ(finished(spop::encode_agent_hello(buf, 16380, caps), buf), to_hex(in));
}

TEST(Vectors, V4AgentHello) {
    check_agent_hello(vec::v4_agent_hello, "pipelining");
}
TEST(Vectors, CapturesAgentHelloPipelining) {
    EXPECT_EQ(norm_hex(vec::cap_agent_hello_pipelining), norm_hex(vec::v4_agent_hello));
    check_agent_hello(vec::cap_agent_hello_pipelining, "pipelining");
}
TEST(Vectors, CapturesAgentHelloDefault) {
    check_agent_hello(vec::cap_agent_hello_default, "");
}

// --- NOTIFY ----------------------------------------------------------------------------------

void check_notify(std::string_view hex, std::uint64_t sid, std::string_view arg_name) {
    const bytes in = unhex(hex);
    const split_result s = split(in);
    ASSERT_TRUE(s.ok);
    EXPECT_EQ(s.f.type, frame_type::notify);
    EXPECT_EQ(s.f.flags, spop::flag_fin);
    EXPECT_EQ(s.f.stream_id, sid);
    EXPECT_EQ(s.f.frame_id, 1u);
    EXPECT_EQ(notify_events(s.f.payload), (events{
                                              "msg \"check-client-ip\" 1",
                                              "arg \"" + std::string(arg_name) + "\" ipv4:7f000001",
                                              "end",
                                          }));
    bytes buf(256);
    spop::notify_writer w(buf, sid, 1, mfs);
    EXPECT_TRUE(w.message("check-client-ip", 1));
    EXPECT_TRUE(w.arg(arg_name, value::from_ipv4(localhost)));
    EXPECT_EQ(finished(w.finish(), buf), to_hex(in));
}

TEST(Vectors, V5Notify34) {
    check_notify(vec::v5_notify_34, 1, "ip");
}
TEST(Vectors, V5Notify26StreamIdZero) {
    check_notify(vec::v5_notify_26, 0, "ip");
}
TEST(Vectors, V6NotifyUnnamedArg) {
    check_notify(vec::v6_notify_unnamed, 1, "");
}
TEST(Vectors, CapturesNotify26) {
    check_notify(vec::cap_notify_26, 0, "ip");
}
TEST(Vectors, CapturesNotify34) {
    check_notify(vec::cap_notify_34, 1, "ip");
}
TEST(Vectors, CapturesNotifyTwoByteStreamId) {
    check_notify(vec::cap_notify_sid241, 241, "ip");
}

// --- ACK -------------------------------------------------------------------------------------

struct expected_action {
    spop::action_type type;
    var_scope scope;
    const char* name;
    const char* value;
};

void check_ack(std::string_view hex, std::uint64_t sid,
               const std::vector<expected_action>& expected,
               const std::function<void(spop::ack_writer&)>& write) {
    const bytes in = unhex(hex);
    const split_result s = split(in);
    ASSERT_TRUE(s.ok);
    EXPECT_EQ(s.f.type, frame_type::ack);
    EXPECT_EQ(s.f.flags, spop::flag_fin);
    EXPECT_EQ(s.f.stream_id, sid);
    EXPECT_EQ(s.f.frame_id, 1u);
    const spop_test::ack_parse p = spop_test::parse_ack_payload(s.f.payload);
    EXPECT_EQ(p.error, "");
    ASSERT_EQ(p.actions.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(p.actions[i].type, expected[i].type);
        EXPECT_EQ(p.actions[i].scope, expected[i].scope);
        EXPECT_EQ(p.actions[i].name, expected[i].name);
        EXPECT_EQ(p.actions[i].value, expected[i].value);
    }
    bytes buf(256);
    spop::ack_writer w(buf, sid, 1, mfs);
    write(w);
    EXPECT_EQ(finished(w.finish(), buf), to_hex(in));
}

constexpr auto set = spop::action_type::set_var;
constexpr auto unset = spop::action_type::unset_var;

TEST(Vectors, V7AckSetVar42) {
    check_ack(vec::v7_ack_42, 1, {{set, var_scope::sess, "ip_score", "uint32:42"}},
              [](spop::ack_writer& w) {
                  EXPECT_TRUE(w.set_var(var_scope::sess, "ip_score", value::from_uint32(42)));
              });
}

TEST(Vectors, V7EmptyAck) {
    check_ack(vec::v7_ack_empty, 1, {}, [](spop::ack_writer& w) { EXPECT_TRUE(w.empty()); });
}

TEST(Vectors, V7AckSetThenUnset) {
    check_ack(
        vec::v7_ack_set_unset, 1,
        {{set, var_scope::sess, "ip_score", "uint32:42"}, {unset, var_scope::sess, "ip_score", ""}},
        [](spop::ack_writer& w) {
            EXPECT_TRUE(w.set_var(var_scope::sess, "ip_score", value::from_uint32(42)));
            EXPECT_TRUE(w.unset_var(var_scope::sess, "ip_score"));
        });
}

TEST(Vectors, V7AckInt32Negative) {
    check_ack(vec::v7_ack_int32_neg5, 1, {{set, var_scope::sess, "ip_score", "int32:-5"}},
              [](spop::ack_writer& w) {
                  EXPECT_TRUE(w.set_var(var_scope::sess, "ip_score", value::from_int32(-5)));
              });
}

TEST(Vectors, CapturesAck26And34) {
    for (const auto& [hex, sid] : {std::pair{vec::cap_ack_26, std::uint64_t{0}},
                                   std::pair{vec::cap_ack_34, std::uint64_t{1}}}) {
        SCOPED_TRACE(sid);
        check_ack(hex, sid, {{set, var_scope::sess, "ip_score", "uint32:83"}},
                  [](spop::ack_writer& w) {
                      EXPECT_TRUE(w.set_var(var_scope::sess, "ip_score", value::from_uint32(83)));
                  });
    }
}

// --- DISCONNECT ------------------------------------------------------------------------------

void check_disconnect(std::string_view hex, frame_type type, std::uint32_t code,
                      std::string_view message) {
    const bytes in = unhex(hex);
    const split_result s = split(in);
    ASSERT_TRUE(s.ok);
    EXPECT_EQ(s.f.type, type);
    EXPECT_EQ(s.f.flags, spop::flag_fin);
    EXPECT_EQ(s.f.stream_id, 0u);
    EXPECT_EQ(s.f.frame_id, 0u);
    EXPECT_EQ(kv_events(s.f.payload), (events{
                                          "kv \"status-code\" uint32:" + std::to_string(code),
                                          "kv \"message\" string:\"" + std::string(message) + "\"",
                                      }));
    bytes buf(512);
    if (type == frame_type::agent_disconnect) {
        EXPECT_EQ(finished(spop::encode_agent_disconnect(buf, mfs, code, message), buf),
                  to_hex(in));
    } else {
        spop::kv_writer w(buf, mfs, type);
        EXPECT_TRUE(w.put("status-code", value::from_uint32(code)));
        EXPECT_TRUE(w.put("message", value::from_string(message)));
        EXPECT_EQ(finished(w.finish(), buf), to_hex(in));
    }
}

/// The same frame as the agent would send it (type 0x66).
bytes as_agent(std::string_view hex) {
    bytes b = unhex(hex);
    b[4] = static_cast<std::uint8_t>(frame_type::agent_disconnect);
    return b;
}

TEST(Vectors, V8DisconnectNormal) {
    check_disconnect(vec::v8_disc_normal, frame_type::haproxy_disconnect, 0, "normal");
    // The agent's standard-status encoder produces HAProxy's wire message.
    bytes buf(512);
    EXPECT_EQ(finished(spop::encode_agent_disconnect(buf, mfs, spop::status::normal), buf),
              to_hex(as_agent(vec::v8_disc_normal)));
}

TEST(Vectors, V8DisconnectIdleTimeout) {
    check_disconnect(vec::v8_disc_idle, frame_type::haproxy_disconnect, 2, "a timeout occurred");
    EXPECT_EQ(norm_hex(vec::v8_disc_idle), norm_hex(vec::cap_disc_idle));
}

TEST(Vectors, V8DisconnectBadVersion) {
    check_disconnect(vec::v8_disc_bad_version, frame_type::haproxy_disconnect, 8,
                     "unsupported version");
    bytes buf(512);
    EXPECT_EQ(finished(spop::encode_agent_disconnect(buf, mfs, spop::status::bad_version), buf),
              to_hex(as_agent(vec::v8_disc_bad_version)));
}

TEST(Vectors, V8AgentDisconnectEmptyMessage) {
    check_disconnect(vec::v8_agent_disc_empty, frame_type::agent_disconnect, 0, "");
}

TEST(Vectors, CapturesDisconnectIdleAndAgentReply) {
    check_disconnect(vec::cap_disc_idle, frame_type::haproxy_disconnect, 2, "a timeout occurred");
    check_disconnect(vec::cap_agent_disc_idle, frame_type::agent_disconnect, 2,
                     "a timeout occurred");
    bytes buf(512);
    EXPECT_EQ(finished(spop::encode_agent_disconnect(buf, mfs, spop::status::timeout), buf),
              norm_hex(vec::cap_agent_disc_idle));
}

// --- V9 fragmented NOTIFY (2.x) --------------------------------------------------------------

TEST(Vectors, V9FragmentedNotify) {
    const bytes frags[] = {vec::v9_f1(), vec::v9_f2(), vec::v9_f3()};
    const frame_type types[] = {frame_type::notify, frame_type::unset, frame_type::unset};
    const std::uint32_t flags[] = {0, 0, spop::flag_fin};
    bytes payload;
    for (std::size_t i = 0; i < 3; ++i) {
        SCOPED_TRACE(i);
        const split_result s = split(frags[i]);
        ASSERT_TRUE(s.ok);
        EXPECT_EQ(s.f.type, types[i]);
        EXPECT_EQ(s.f.flags, flags[i]);
        EXPECT_EQ(s.f.stream_id, 2u);
        EXPECT_EQ(s.f.frame_id, 1u);
        // Each fragment re-encodes from its fields.
        EXPECT_EQ(to_hex(spop_test::make_frame(s.f.type, s.f.flags, 2, 1, s.f.payload)),
                  to_hex(frags[i]));
        payload.insert(payload.end(), s.f.payload.begin(), s.f.payload.end());
    }
    // The first fragment alone ends inside the "h" string: truncated, at that argument.
    {
        const split_result s = split(frags[0]);
        spop::null_notify_handler h;
        EXPECT_EQ(spop::parse_notify(s.f.payload, h).ec, errc::truncated);
    }
    // Reassembled, the payload parses; "h" carries 600 bytes split across the three frames.
    EXPECT_EQ(notify_events(payload), (events{
                                          "msg \"check-client-ip\" 2",
                                          "arg \"ip\" ipv4:7f000001",
                                          "arg \"h\" string:\"" + std::string(600, 'x') + "\"",
                                          "end",
                                      }));
    bytes buf(1024);
    spop::notify_writer w(buf, 2, 1, 1000);
    EXPECT_TRUE(w.message("check-client-ip", 2));
    EXPECT_TRUE(w.arg("ip", value::from_ipv4(localhost)));
    EXPECT_TRUE(w.arg("h", value::from_string(std::string(600, 'x'))));
    const spop::result r = w.finish();
    ASSERT_TRUE(r);
    EXPECT_EQ(to_hex(std::span<const std::uint8_t>(buf).subspan(11, r.consumed - 11)),
              to_hex(payload));
}

TEST(Vectors, CorpusIsComplete) {
    // Guard against a vector silently dropped from the shared corpus.
    EXPECT_EQ(vec::all().size(), 28u);
}

} // namespace
