// Every hex vector of PROTOCOL-NOTES §11 (V1..V9) and CAPTURES.md §1-§5, as whole frames.
// Abbreviated vectors ("0b…65") are written out in full.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "hex.hpp"

namespace spop_test::vec {

// --- PROTOCOL-NOTES §11 --------------------------------------------------------------------

/// V1 HAPROXY-HELLO, 3.4.0.
inline constexpr std::string_view v1_hello_34 =
    "0000007b 01 00000001 00 00"
    "12 737570706f727465642d76657273696f6e73 08 03 322e30"
    "0e 6d61782d6672616d652d73697a65 03 fcf006"
    "0c 6361706162696c6974696573 08 0a 706970656c696e696e67"
    "09 656e67696e652d6964 08 24 "
    "62633235303236322d666565632d343431312d616565372d363939646365666161323266";

/// V3 health-check HELLO (2.6.12 and 3.4.0).
inline constexpr std::string_view v3_healthcheck =
    "0000004e0100000001000012737570706f727465642d76657273696f6e730803322e300e6d61782d6672616d"
    "652d73697a6503fcf0060c6361706162696c697469657308000b6865616c7468636865636b11";

/// V4 AGENT-HELLO with pipelining (= CAPTURES §2 `-c pipelining`).
inline constexpr std::string_view v4_agent_hello =
    "00000040 65 00000001 00 00 07 76657273696f6e 08 03 322e30 0e 6d61782d6672616d652d73697a65"
    " 03 fcf006 0c 6361706162696c6974696573 08 0a 706970656c696e696e67";

/// V5 NOTIFY check-client-ip, args ip=src, 3.4.0 sid 1 fid 1 (= CAPTURES §3 3.4.0).
inline constexpr std::string_view v5_notify_34 =
    "00000020 03 00000001 01 01 0f 636865636b2d636c69656e742d6970 01 02 6970 06 7f000001";
/// V5 as 2.6.12 sends it: sid 0 (= CAPTURES §3 2.6.12).
inline constexpr std::string_view v5_notify_26 =
    "00000020 03 00000001 00 01 0f 636865636b2d636c69656e742d6970 01 02 6970 06 7f000001";
/// V6 the same with `args src` (unnamed argument).
inline constexpr std::string_view v6_notify_unnamed =
    "0000001e 03 00000001 01 01 0f 636865636b2d636c69656e742d6970 01 00 06 7f000001";

/// V7 ACK SET-VAR sess ip_score = UINT32 42, sid 1 fid 1.
inline constexpr std::string_view v7_ack_42 =
    "00000015 67 00000001 01 01 01 03 01 08 69705f73636f7265 03 2a";
/// V7 empty ACK.
inline constexpr std::string_view v7_ack_empty = "00000007 67 00000001 01 01";
/// V7 SET then UNSET-VAR sess ip_score.
inline constexpr std::string_view v7_ack_set_unset =
    "00000021 67 00000001 01 01 01 03 01 08 69705f73636f7265 03 2a 02 02 01 08 69705f73636f7265";
/// V7 INT32 -5.
inline constexpr std::string_view v7_ack_int32_neg5 =
    "0000001e 67 00000001 01 01 01 03 01 08 69705f73636f7265 02 fbf0fefefefefefefe0e";

/// V8 2.6 soft-stop, 0 "normal".
inline constexpr std::string_view v8_disc_normal =
    "00000025 02 00000001 0000 0b 7374617475732d636f6465 03 00 07 6d657373616765 08 06 "
    "6e6f726d616c";
/// V8 2.6 idle timeout, 2 "a timeout occurred" (= CAPTURES §5, HAProxy side).
inline constexpr std::string_view v8_disc_idle =
    "00000031 02 00000001 0000 0b 7374617475732d636f6465 03 02 07 6d657373616765 08 12 "
    "612074696d656f7574206f63637572726564";
/// V8 3.4 and 2.6 bad version, 8 "unsupported version".
inline constexpr std::string_view v8_disc_bad_version =
    "00000032 02 00000001 0000 0b 7374617475732d636f6465 03 08 07 6d657373616765 08 13 "
    "756e737570706f727465642076657273696f6e";
/// V8 agent reply, 0 with an empty message.
inline constexpr std::string_view v8_agent_disc_empty =
    "0000001f 66 00000001 0000 0b 7374617475732d636f6465 03 00 07 6d657373616765 08 00";

/// V9 fragmented NOTIFY (2.6.12, mfs 300 + fragmentation): "h" is a 600-byte STRING of 'x'.
inline bytes v9_f1() {
    bytes b = unhex("00000113 03 00000000 02 01 0f 636865636b2d636c69656e742d6970 02 02 6970 06 "
                    "7f000001 01 68 08 f816");
    b.insert(b.end(), 238, 'x');
    return b;
}
inline bytes v9_f2() {
    bytes b = unhex("00000113 00 00000000 02 01");
    b.insert(b.end(), 268, 'x');
    return b;
}
inline bytes v9_f3() {
    bytes b = unhex("00000065 00 00000001 02 01");
    b.insert(b.end(), 94, 'x');
    return b;
}

// --- CAPTURES.md -----------------------------------------------------------------------------

/// §1 HAPROXY-HELLO 2.6.12 (133 bytes; also what V2 describes).
inline constexpr std::string_view cap_hello_26 =
    "000000810100000001000012737570706f727465642d76657273696f6e730803322e300e6d61782d6672616d"
    "652d73697a6503fcf0060c6361706162696c69746965730810706970656c696e696e672c6173796e6309656e"
    "67696e652d6964082435346639396134352d303237362d343636332d393134652d3864663435633134333235"
    "39";
/// §1 HAPROXY-HELLO 3.4.0 (127 bytes).
inline constexpr std::string_view cap_hello_34 =
    "0000007b0100000001000012737570706f727465642d76657273696f6e730803322e300e6d61782d6672616d"
    "652d73697a6503fcf0060c6361706162696c6974696573080a706970656c696e696e6709656e67696e652d69"
    "64082431626431653461352d623039652d346432622d616664322d366633383237306437653431";
/// §2 AGENT-HELLO of the reference agent, no pipelining (58 bytes).
inline constexpr std::string_view cap_agent_hello_default =
    "00000036650000000100000776657273696f6e0803322e300e6d61782d6672616d652d73697a6503fcf0060c"
    "6361706162696c69746965730800";
/// §2 AGENT-HELLO with `-c pipelining` (68 bytes).
inline constexpr std::string_view cap_agent_hello_pipelining =
    "00000040650000000100000776657273696f6e0803322e300e6d61782d6672616d652d73697a6503fcf0060c"
    "6361706162696c6974696573080a706970656c696e696e67";
/// §3 NOTIFY 2.6.12 (sid 0) and 3.4.0 (sid 1).
inline constexpr std::string_view cap_notify_26 =
    "00000020030000000100010f636865636b2d636c69656e742d697001026970067f000001";
inline constexpr std::string_view cap_notify_34 =
    "00000020030000000101010f636865636b2d636c69656e742d697001026970067f000001";
/// §3 NOTIFY with a two-byte stream-id (241).
inline constexpr std::string_view cap_notify_sid241 =
    "000000210300000001f100010f636865636b2d636c69656e742d697001026970067f000001";
/// §4 ACK sess ip_score = UINT32 83, for the 2.6 NOTIFY (sid 0) and the 3.4 one (sid 1).
inline constexpr std::string_view cap_ack_26 = "00000015670000000100010103010869705f73636f72650353";
inline constexpr std::string_view cap_ack_34 =
    "00000015 67 00000001 01 01 01 03 01 08 69 70 5f 73 63 6f 72 65 03 53";
/// §5 HAPROXY-DISCONNECT idle timeout, and the agent's reply with the same KV list.
inline constexpr std::string_view cap_disc_idle =
    "00000031020000000100000b7374617475732d636f64650302076d6573736167650812612074696d656f757420"
    "6f63637572726564";
inline constexpr std::string_view cap_agent_disc_idle =
    "00000031660000000100000b7374617475732d636f64650302076d6573736167650812612074696d656f757420"
    "6f63637572726564";

struct named {
    std::string name;
    bytes frame;

    friend void PrintTo(const named& n, std::ostream* os) { *os << n.name; }
};

/// Every whole frame above (the V9 fragments included).
inline std::vector<named> all() {
    return {
        {"V1Hello34", unhex(v1_hello_34)},
        {"V3Healthcheck", unhex(v3_healthcheck)},
        {"V4AgentHello", unhex(v4_agent_hello)},
        {"V5Notify34", unhex(v5_notify_34)},
        {"V5Notify26", unhex(v5_notify_26)},
        {"V6NotifyUnnamed", unhex(v6_notify_unnamed)},
        {"V7Ack42", unhex(v7_ack_42)},
        {"V7AckEmpty", unhex(v7_ack_empty)},
        {"V7AckSetUnset", unhex(v7_ack_set_unset)},
        {"V7AckInt32Neg5", unhex(v7_ack_int32_neg5)},
        {"V8DiscNormal", unhex(v8_disc_normal)},
        {"V8DiscIdle", unhex(v8_disc_idle)},
        {"V8DiscBadVersion", unhex(v8_disc_bad_version)},
        {"V8AgentDiscEmpty", unhex(v8_agent_disc_empty)},
        {"V9F1", v9_f1()},
        {"V9F2", v9_f2()},
        {"V9F3", v9_f3()},
        {"CapHello26", unhex(cap_hello_26)},
        {"CapHello34", unhex(cap_hello_34)},
        {"CapAgentHelloDefault", unhex(cap_agent_hello_default)},
        {"CapAgentHelloPipelining", unhex(cap_agent_hello_pipelining)},
        {"CapNotify26", unhex(cap_notify_26)},
        {"CapNotify34", unhex(cap_notify_34)},
        {"CapNotifySid241", unhex(cap_notify_sid241)},
        {"CapAck26", unhex(cap_ack_26)},
        {"CapAck34", unhex(cap_ack_34)},
        {"CapDiscIdle", unhex(cap_disc_idle)},
        {"CapAgentDiscIdle", unhex(cap_agent_disc_idle)},
    };
}

} // namespace spop_test::vec
