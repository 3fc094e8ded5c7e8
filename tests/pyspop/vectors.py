"""The hex vectors of PROTOCOL-NOTES §11 (V1..V9) and CAPTURES.md §1-§5, as whole frames
(length prefix included). The same set as tests/support/vectors.hpp on the C++ side."""

from .codec import h, hs

# --- PROTOCOL-NOTES §11 ------------------------------------------------------------------------

V1_HELLO_34 = h("0000007b 01 00000001 00 00"
                "12" + hs("supported-versions") + "08 03" + hs("2.0") +
                "0e" + hs("max-frame-size") + "03 fcf006"
                "0c" + hs("capabilities") + "08 0a" + hs("pipelining") +
                "09" + hs("engine-id") + "08 24" + hs("bc250262-feec-4411-aee7-699dcefaa22f"))
# V2 layout (2.6: "pipelining,async"), the bytes of CAPTURES §1.
V2_HELLO_26 = h("00000081 01 00000001 00 00"
                "12" + hs("supported-versions") + "08 03" + hs("2.0") +
                "0e" + hs("max-frame-size") + "03 fcf006"
                "0c" + hs("capabilities") + "08 10" + hs("pipelining,async") +
                "09" + hs("engine-id") + "08 24" + hs("54f99a45-0276-4663-914e-8df45c143259"))
V3_HEALTHCHECK = h("0000004e0100000001000012737570706f727465642d76657273696f6e730803322e300e6d61"
                   "782d6672616d652d73697a6503fcf0060c6361706162696c697469657308000b6865616c7468"
                   "636865636b11")
V4_AGENT_HELLO = h("00000040 65 00000001 00 00 07 76657273696f6e 08 03 322e30"
                   " 0e 6d61782d6672616d652d73697a65 03 fcf006"
                   " 0c 6361706162696c6974696573 08 0a 706970656c696e696e67")
V5_NOTIFY_NAMED = h("00000020 03 00000001 01 01 0f" + hs("check-client-ip") + "01 02" + hs("ip") +
                    "06 7f000001")
V5_NOTIFY_26 = h("00000020 03 00000001 00 01 0f" + hs("check-client-ip") + "01 02" + hs("ip") +
                 "06 7f000001")
V6_NOTIFY_UNNAMED = h("0000001e 03 00000001 01 01 0f" + hs("check-client-ip") + "01 00 06 7f000001")
V7_ACK_42 = h("00000015 67 00000001 01 01 01 03 01 08" + hs("ip_score") + "03 2a")
V7_ACK_EMPTY = h("00000007 67 00000001 01 01")
V7_ACK_SET_UNSET = h("00000021 67 00000001 01 01 01 03 01 08 69705f73636f7265 03 2a"
                     " 02 02 01 08 69705f73636f7265")
V7_ACK_INT32_NEG5 = h("0000001e 67 00000001 01 01 01 03 01 08 69705f73636f7265"
                      " 02 fbf0fefefefefefefe0e")
V8_DISC_NORMAL = h("00000025 02 00000001 0000 0b 7374617475732d636f6465 03 00"
                   " 07 6d657373616765 08 06 6e6f726d616c")
V8_DISCONNECT_TIMEOUT = h("00000031 02 00000001 0000 0b" + hs("status-code") + "03 02 07" +
                          hs("message") + "08 12" + hs("a timeout occurred"))
V8_DISC_BAD_VERSION = h("00000032 02 00000001 0000 0b 7374617475732d636f6465 03 08"
                        " 07 6d657373616765 08 13 756e737570706f727465642076657273696f6e")
V8_AGENT_DISC_EMPTY = h("0000001f 66 00000001 0000 0b 7374617475732d636f6465 03 00"
                        " 07 6d657373616765 08 00")
# V9: a NOTIFY fragmented by 2.6.12 (mfs 300 + fragmentation); "h" is a 600-byte STRING of 'x'.
V9_F1 = h("00000113 03 00000000 02 01 0f 636865636b2d636c69656e742d6970 02 02 6970 06"
          " 7f000001 01 68 08 f816") + b"x" * 238
V9_F2 = h("00000113 00 00000000 02 01") + b"x" * 268
V9_F3 = h("00000065 00 00000001 02 01") + b"x" * 94

# §2: (value, encoding).
VARINTS = [
    (0, "00"), (239, "ef"), (240, "f000"), (2287, "ff7f"), (2288, "f08000"),
    (16380, "fcf006"), (264431, "ffff7f"), (264432, "f0808000"),
    (2 ** 32 - 1, "fff0fefe7e"), (2 ** 63 - 1, "fff0fefefefefefefe06"),
    (2 ** 64 - 1, "fff0fefefefefefefe0e"),
]

# --- CAPTURES.md ---------------------------------------------------------------------------------

CAP_HELLO_26 = V2_HELLO_26
CAP_HELLO_34 = h("0000007b0100000001000012737570706f727465642d76657273696f6e730803322e300e6d61782d"
                 "6672616d652d73697a6503fcf0060c6361706162696c6974696573080a706970656c696e696e6709"
                 "656e67696e652d6964082431626431653461352d623039652d346432622d616664322d3666333832"
                 "37306437653431")
CAP_AGENT_HELLO_DEFAULT = h("00000036650000000100000776657273696f6e0803322e300e6d61782d6672616d"
                            "652d73697a6503fcf0060c6361706162696c69746965730800")
CAP_AGENT_HELLO_PIPELINING = V4_AGENT_HELLO
CAP_NOTIFY_SID241 = h("000000210300000001f100010f636865636b2d636c69656e742d697001026970067f000001")
CAP_ACK_26 = h("00000015670000000100010103010869705f73636f72650353")
CAP_ACK_34 = h("00000015 67 00000001 01 01 01 03 01 08 69 70 5f 73 63 6f 72 65 03 53")
CAP_DISC_IDLE = V8_DISCONNECT_TIMEOUT
CAP_AGENT_DISC_IDLE = h("00000031660000000100000b7374617475732d636f64650302076d657373616765081261"
                        "2074696d656f7574206f63637572726564")

# Every whole frame above, by name.
ALL = {
    "V1_HELLO_34": V1_HELLO_34, "V2_HELLO_26": V2_HELLO_26, "V3_HEALTHCHECK": V3_HEALTHCHECK,
    "V4_AGENT_HELLO": V4_AGENT_HELLO, "V5_NOTIFY_NAMED": V5_NOTIFY_NAMED,
    "V5_NOTIFY_26": V5_NOTIFY_26, "V6_NOTIFY_UNNAMED": V6_NOTIFY_UNNAMED, "V7_ACK_42": V7_ACK_42,
    "V7_ACK_EMPTY": V7_ACK_EMPTY, "V7_ACK_SET_UNSET": V7_ACK_SET_UNSET,
    "V7_ACK_INT32_NEG5": V7_ACK_INT32_NEG5, "V8_DISC_NORMAL": V8_DISC_NORMAL,
    "V8_DISCONNECT_TIMEOUT": V8_DISCONNECT_TIMEOUT, "V8_DISC_BAD_VERSION": V8_DISC_BAD_VERSION,
    "V8_AGENT_DISC_EMPTY": V8_AGENT_DISC_EMPTY, "V9_F1": V9_F1, "V9_F2": V9_F2, "V9_F3": V9_F3,
    "CAP_HELLO_34": CAP_HELLO_34, "CAP_AGENT_HELLO_DEFAULT": CAP_AGENT_HELLO_DEFAULT,
    "CAP_NOTIFY_SID241": CAP_NOTIFY_SID241, "CAP_ACK_26": CAP_ACK_26, "CAP_ACK_34": CAP_ACK_34,
    "CAP_AGENT_DISC_IDLE": CAP_AGENT_DISC_IDLE,
}
