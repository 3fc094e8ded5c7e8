#!/usr/bin/env python3
"""Regenerates the seed corpora in tests/fuzz/corpus/<harness>/ (python3 stdlib only).

Seeds come from the hex vectors of shared/reference PROTOCOL-NOTES.md §11 and CAPTURES.md
(copied below), plus a few synthetic frames built with the small encoder in this file. The
encoder is checked against the captured vectors first, so the synthetic seeds use the same
wire format.

    python3 tests/fuzz/make_corpus.py            # rewrite every corpus directory
    python3 tests/fuzz/make_corpus.py --check    # exit 1 if the committed files differ

Input layouts (see each harness's header comment):
    fuzz_connection  <options:u8> <seed:u8> <stream from HAProxy...>
    fuzz_kv          <options:u8> <KV-LIST payload or raw frames...>
    fuzz_notify      <NOTIFY payload>
    fuzz_roundtrip   <NOTIFY or KV-LIST payload, or a typed value / varints>
"""

import argparse
import hashlib
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def unhex(s):
    return bytes.fromhex("".join(s.split()))


# --- vectors (PROTOCOL-NOTES §11, CAPTURES.md) ---------------------------------------------

V1_HELLO_34 = unhex(
    "0000007b 01 00000001 00 00"
    "12 737570706f727465642d76657273696f6e73 08 03 322e30"
    "0e 6d61782d6672616d652d73697a65 03 fcf006"
    "0c 6361706162696c6974696573 08 0a 706970656c696e696e67"
    "09 656e67696e652d6964 08 24"
    "62633235303236322d666565632d343431312d616565372d363939646365666161323266")
# CAPTURES §1, HAProxy 2.6.12 (V2 layout: "pipelining,async").
V2_HELLO_26 = unhex(
    "00000081 01 00000001 00 00"
    "12 737570706f727465642d76657273696f6e73 08 03 322e30"
    "0e 6d61782d6672616d652d73697a65 03 fcf006"
    "0c 6361706162696c6974696573 08 10 706970656c696e696e672c6173796e63"
    "09 656e67696e652d6964 08 24"
    "35346639396134352d303237362d343636332d393134652d386466343563313433323539")
V3_HEALTHCHECK = unhex(
    "0000004e0100000001000012737570706f727465642d76657273696f6e730803322e300e6d61782d6672616d"
    "652d73697a6503fcf0060c6361706162696c697469657308000b6865616c7468636865636b11")
V4_AGENT_HELLO = unhex(
    "00000040 65 00000001 00 00 07 76657273696f6e 08 03 322e30 0e 6d61782d6672616d652d73697a65"
    " 03 fcf006 0c 6361706162696c6974696573 08 0a 706970656c696e696e67")
AGENT_HELLO_NOPIPE = unhex(
    "00000036 65 00000001 00 00 07 76657273696f6e 08 03 322e30 0e 6d61782d6672616d652d73697a65"
    " 03 fcf006 0c 6361706162696c6974696573 08 00")
V5_NOTIFY_34 = unhex(
    "00000020 03 00000001 01 01 0f 636865636b2d636c69656e742d6970 01 02 6970 06 7f000001")
V5_NOTIFY_26 = unhex(
    "00000020 03 00000001 00 01 0f 636865636b2d636c69656e742d6970 01 02 6970 06 7f000001")
NOTIFY_SID_241 = unhex(
    "00000021 03 00000001 f100 01 0f 636865636b2d636c69656e742d6970 01 02 6970 06 7f000001")
V6_NOTIFY_UNNAMED = unhex(
    "0000001e 03 00000001 01 01 0f 636865636b2d636c69656e742d6970 01 00 06 7f000001")
V7_ACK_42 = unhex("00000015 67 00000001 01 01 01 03 01 08 69705f73636f7265 03 2a")
V7_ACK_EMPTY = unhex("00000007 67 00000001 01 01")
V7_ACK_SET_UNSET = unhex(
    "00000021 67 00000001 01 01 01 03 01 08 69705f73636f7265 03 2a 02 02 01 08 69705f73636f7265")
V7_ACK_INT32_NEG5 = unhex(
    "0000001e 67 00000001 01 01 01 03 01 08 69705f73636f7265 02 fbf0fefefefefefefe0e")
V8_DISC_NORMAL = unhex(
    "00000025 02 00000001 0000 0b 7374617475732d636f6465 03 00 07 6d657373616765 08 06"
    " 6e6f726d616c")
V8_DISC_IDLE = unhex(
    "00000031 02 00000001 0000 0b 7374617475732d636f6465 03 02 07 6d657373616765 08 12"
    " 612074696d656f7574206f63637572726564")
V8_DISC_BAD_VERSION = unhex(
    "00000032 02 00000001 0000 0b 7374617475732d636f6465 03 08 07 6d657373616765 08 13"
    " 756e737570706f727465642076657273696f6e")
V8_AGENT_DISC_EMPTY = unhex(
    "0000001f 66 00000001 0000 0b 7374617475732d636f6465 03 00 07 6d657373616765 08 00")
V9_F1 = unhex("00000113 03 00000000 02 01 0f 636865636b2d636c69656e742d6970 02 02 6970 06"
              " 7f000001 01 68 08 f816") + b"x" * 238
V9_F2 = unhex("00000113 00 00000000 02 01") + b"x" * 268
V9_F3 = unhex("00000065 00 00000001 02 01") + b"x" * 94

# §2 varint table: (value, encoding).
VARINTS = [
    (0, "00"), (239, "ef"), (240, "f000"), (2287, "ff7f"), (2288, "f08000"),
    (16380, "fcf006"), (264431, "ffff7f"), (264432, "f0808000"),
    (2**32 - 1, "fff0fefe7e"), (2**63 - 1, "fff0fefefefefefefe06"),
    (2**64 - 1, "fff0fefefefefefefe0e"),
]


# --- a small encoder (PROTOCOL-NOTES §1-§4) ---------------------------------------------------

def varint(v):
    if v < 240:
        return bytes([v])
    out = [(v & 0xFF) | 0xF0]
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def name(s):
    b = s.encode() if isinstance(s, str) else s
    return varint(len(b)) + b


def v_null(): return b"\x00"
def v_bool(b): return b"\x11" if b else b"\x01"
def v_int32(v): return b"\x02" + varint(v & 0xFFFFFFFFFFFFFFFF)
def v_uint32(v): return b"\x03" + varint(v)
def v_int64(v): return b"\x04" + varint(v & 0xFFFFFFFFFFFFFFFF)
def v_uint64(v): return b"\x05" + varint(v)
def v_ipv4(a): return b"\x06" + bytes(a)
def v_ipv6(a): return b"\x07" + bytes(a)
def v_str(s): return b"\x08" + name(s)
def v_bin(b): return b"\x09" + name(b)


def frame(ftype, payload, sid=0, fid=0, flags=1):
    body = bytes([ftype]) + struct.pack(">I", flags) + varint(sid) + varint(fid) + payload
    return struct.pack(">I", len(body)) + body


def kv(*pairs):
    return b"".join(name(k) + v for k, v in pairs)


def message(msg, *args):
    return name(msg) + bytes([len(args)]) + b"".join(name(a) + v for a, v in args)


def split_payload(f):
    """Payload of a frame, decoding the two varint ids properly."""
    def dec(p):
        b0 = f[p]
        if b0 < 240:
            return p + 1
        p += 1
        while f[p] >= 128:
            p += 1
        return p + 1
    p = dec(9)
    p = dec(p)
    return f[p:]


HELLO_PAYLOAD_34 = split_payload(V1_HELLO_34)
HELLO_PAYLOAD_26 = split_payload(V2_HELLO_26)
HC_PAYLOAD = split_payload(V3_HEALTHCHECK)

IPV6_DOC = bytes.fromhex("20010db8000000000000000000000001")
ALL_TYPES_MSG = message(
    "all-types",
    ("n", v_null()), ("t", v_bool(True)), ("f", v_bool(False)),
    ("i32", v_int32(42)), ("u32", v_uint32(16380)), ("i64", v_int64(-1)),
    ("u64", v_uint64(2**64 - 1)), ("ip4", v_ipv4([192, 0, 2, 1])), ("ip6", v_ipv6(IPV6_DOC)),
    ("s", v_str("abc")), ("e", v_str("")), ("b", v_bin(b"\x00\xff")))
FLAGGED_MSG = (name("flags") + bytes([4]) + name("sf") + b"\x18\x01z" + name("bt") + b"\xf1" +
               name("bf") + b"\xe1" + name("if") + b"\x42\x05")
CHECK_IP = message("check-client-ip", ("ip", v_ipv4([127, 0, 0, 1])))
CHECK_IP6 = message("check-client-ip", ("", v_ipv6(IPV6_DOC)))
MULTI_MSG = CHECK_IP + message("log-request", ("method", v_str("GET")), ("path", v_str("/")),
                               ("h", v_null())) + message("empty")


def self_check():
    for v, h in VARINTS:
        assert varint(v) == bytes.fromhex(h), (v, h)
    assert frame(3, CHECK_IP, 1, 1) == V5_NOTIFY_34
    assert frame(3, CHECK_IP, 0, 1) == V5_NOTIFY_26
    assert frame(3, CHECK_IP, 241, 1) == NOTIFY_SID_241
    assert frame(3, message("check-client-ip", ("", v_ipv4([127, 0, 0, 1]))), 1, 1) == V6_NOTIFY_UNNAMED
    assert frame(0x65, kv(("version", v_str("2.0")), ("max-frame-size", v_uint32(16380)),
                          ("capabilities", v_str("pipelining")))) == V4_AGENT_HELLO
    assert frame(2, kv(("status-code", v_uint32(0)), ("message", v_str("normal")))) == V8_DISC_NORMAL
    assert frame(0x66, kv(("status-code", v_uint32(0)), ("message", v_str("")))) == V8_AGENT_DISC_EMPTY
    assert frame(0x67, b"\x01\x03\x01" + name("ip_score") + v_int32(-5), 1, 1) == V7_ACK_INT32_NEG5
    assert frame(1, HELLO_PAYLOAD_34) == V1_HELLO_34
    assert frame(1, HC_PAYLOAD) == V3_HEALTHCHECK
    assert len(V2_HELLO_26) == 4 + 0x81
    assert frame(1, HELLO_PAYLOAD_26) == V2_HELLO_26
    assert len(V9_F1) == 4 + 0x113 and len(V9_F2) == 4 + 0x113 and len(V9_F3) == 4 + 0x65


# --- corpora ---------------------------------------------------------------------------------

def hello(versions="2.0", mfs=16380, caps="pipelining", extra=b"", flags=1, sid=0, fid=0):
    pairs = []
    if versions is not None:
        pairs.append(("supported-versions", v_str(versions)))
    if mfs is not None:
        pairs.append(("max-frame-size", v_uint32(mfs)))
    if caps is not None:
        pairs.append(("capabilities", v_str(caps)))
    return frame(1, kv(*pairs) + extra, sid, fid, flags)


# fuzz_connection option bits (see fuzz_connection.cpp).
PREPEND = 0x01
MFS_16380, MFS_256, MFS_1024, MFS_4096 = 0x00, 0x02, 0x04, 0x06
PIPE = 0x08
ECHO = 0x10
NOOP = 0x20
CONTRACT = 0x40
EVENTS = 0x80
# Seed byte bits: 3 slow reader, 4-5 max_chunk (16384, 2048, 512, 64), 6-7 both set = OOM mode.
SLOW = 0x08
CHUNK_16K, CHUNK_2K, CHUNK_512, CHUNK_64 = 0x00, 0x10, 0x20, 0x30
OOM = 0xC0


def connection_seeds():
    n34, n26 = V5_NOTIFY_34, V5_NOTIFY_26
    notifies = b"".join(frame(3, CHECK_IP, 2 * i + 1, 1) for i in range(8))
    big_sid = frame(3, CHECK_IP, 2**64 - 1, 2**32 - 1)
    all_types = frame(3, ALL_TYPES_MSG + FLAGGED_MSG, 5, 1)
    s = {
        "v5-pipelined": (PREPEND | PIPE | NOOP, 0, n34 * 3 + V6_NOTIFY_UNNAMED),
        "v1-hello-notifies-disc": (PIPE, 1, V1_HELLO_34 + n34 + NOTIFY_SID_241 + V8_DISC_NORMAL),
        "v2-hello-26": (NOOP, 2, V2_HELLO_26 + n26 + n26 + V8_DISC_IDLE),
        "v3-healthcheck": (PIPE, 3, V3_HEALTHCHECK),
        "v3-healthcheck-trailing": (0, 4, V3_HEALTHCHECK + n34),
        "notify-before-hello": (0, 5, n34),
        "disconnect-before-hello": (0, 6, V8_DISC_BAD_VERSION),
        "echo-all-types": (PREPEND | ECHO | NOOP | PIPE, 7, all_types + frame(3, MULTI_MSG, 7, 1)),
        "echo-empty-notify": (PREPEND | ECHO, 8, frame(3, b"", 9, 1) + frame(3, b"", 11, 1)),
        "echo-empty-notify-noop": (PREPEND | ECHO | NOOP, 9, frame(3, b"", 9, 1)),
        "fragmented-v9": (PREPEND | MFS_256, 10, V9_F1 + V9_F2 + V9_F3),
        "unset-and-unknown": (PREPEND | NOOP, 11, frame(0, b"xx", 3, 1) + frame(42, b"", 3, 1) +
                              n34 + frame(42, b"", 0, 0)),
        "too-big-256": (PREPEND | MFS_256, 12, n34 + frame(3, message("m", ("s", v_str("x" * 300))), 3, 1)),
        "too-small": (PREPEND, 13, n34 + b"\x00\x00\x00\x03\x03\x00\x00"),
        "huge-length": (PREPEND, 14, b"\x7f\xff\xff\xff\x03"),
        "shutdown-events": (PREPEND | EVENTS | NOOP, 15, notifies * 4),
        "backpressure-echo-256": (PREPEND | ECHO | MFS_256, 16, b"".join(
            frame(3, MULTI_MSG, i, 1) for i in range(40))),
        "backpressure-contract": (PREPEND | ECHO | MFS_1024 | CONTRACT, 17, b"".join(
            frame(3, MULTI_MSG + ALL_TYPES_MSG, i, 1) for i in range(40))),
        "contract-slow-2k": (PREPEND | MFS_256 | CONTRACT | NOOP, SLOW | CHUNK_2K | 1, n34 * 200),
        "contract-slow-512-echo": (PREPEND | ECHO | MFS_256 | CONTRACT, SLOW | CHUNK_512 | 2,
                                   b"".join(frame(3, MULTI_MSG, i, 1) for i in range(100))),
        "contract-slow-64": (PREPEND | MFS_256 | CONTRACT | PIPE, SLOW | CHUNK_64 | 3, n34 * 200),
        "slow-2k-overflow": (PREPEND | MFS_256 | NOOP, SLOW | CHUNK_2K | 4, n34 * 200),
        "bad-version": (0, 18, hello(versions="1.0") + n34),
        "no-version": (0, 19, hello(versions=None)),
        "no-frame-size": (0, 20, hello(mfs=None)),
        "small-frame-size": (0, 21, hello(mfs=255)),
        "no-capabilities": (0, 22, hello(caps=None)),
        "hello-wrong-type": (0, 23, frame(1, kv(("supported-versions", v_str("2.0")),
                                                 ("max-frame-size", v_str("16380")),
                                                 ("capabilities", v_str(""))))),
        "hello-not-fin": (0, 24, hello(flags=0)),
        "hello-ids": (0, 25, hello(sid=1, fid=1)),
        "hello-mfs-256": (MFS_4096, 26, hello(mfs=256, caps="pipelining,async") + n34 +
                          frame(3, message("m", ("s", v_str("x" * 300))), 3, 1)),
        "double-hello": (PREPEND, 27, V1_HELLO_34),
        "malformed-notify": (PREPEND, 28, n34 + frame(3, b"\x0fcheck-client-ip\x01\x02ip\x06\x7f", 3, 1)),
        "bad-type-notify": (PREPEND | ECHO, 29, frame(3, message("m", ("a", b"\x0c")), 3, 1)),
        "big-ids": (PREPEND | NOOP, 30, big_sid + n34),
        "notify-not-fin": (PREPEND, 31, frame(3, CHECK_IP, 1, 1, flags=0) + n34),
        "disconnect-long-msg": (PREPEND | MFS_256, 32, frame(2, kv(("status-code", v_uint32(99)),
                                                                   ("message", v_str("m" * 300))))),
        "split-everywhere": (PREPEND | PIPE | NOOP | EVENTS, 33, notifies + V8_DISC_NORMAL),
        # Seed byte with both top bits set: allocation-failure mode.
        "oom-hello-notifies": (PIPE | NOOP, OOM | 1, V1_HELLO_34 + notifies * 2),
        "oom-prepend-events": (PREPEND | NOOP | EVENTS, OOM | 2, notifies * 4 + V8_DISC_NORMAL),
        "oom-echo-backpressure": (PREPEND | ECHO | MFS_256, OOM | SLOW | CHUNK_512 | 3, b"".join(
            frame(3, MULTI_MSG, i, 1) for i in range(40))),
    }
    return s


def write_corpus(out, name_, seeds):
    d = os.path.join(out, name_)
    os.makedirs(d, exist_ok=True)
    for label, data in seeds.items():
        with open(os.path.join(d, label), "wb") as f:
            f.write(data)


def build_all():
    corp = {}

    corp["fuzz_connection"] = {
        label: bytes([opt, seed]) + stream for label, (opt, seed, stream) in connection_seeds().items()}

    kv_payloads = {
        "hello-34": HELLO_PAYLOAD_34,
        "hello-26": HELLO_PAYLOAD_26,
        "healthcheck": HC_PAYLOAD,
        "agent-hello": split_payload(V4_AGENT_HELLO),
        "agent-hello-nopipe": split_payload(AGENT_HELLO_NOPIPE),
        "disc-normal": split_payload(V8_DISC_NORMAL),
        "disc-idle": split_payload(V8_DISC_IDLE),
        "disc-bad-version": split_payload(V8_DISC_BAD_VERSION),
        "disc-agent-empty": split_payload(V8_AGENT_DISC_EMPTY),
        "hello-versions-list": kv(("supported-versions", v_str(" 1.0 , 2.00 ")),
                                  ("max-frame-size", v_uint64(65532)),
                                  ("capabilities", v_str("async, pipelining ,fragmentation")),
                                  ("healthcheck", v_bool(False)), ("engine-id", v_bin(b"\x00"))),
        "hello-bad-types": kv(("supported-versions", v_str("2.0")), ("healthcheck", v_str("1"))),
        "hello-small-mfs": kv(("supported-versions", v_str("2.0")), ("max-frame-size", v_int32(255)),
                              ("capabilities", v_str(""))),
        "truncated": HELLO_PAYLOAD_34[:-5],
    }
    # Options byte: bits 0-1 our mfs, bit 2 pipelining, bits 3-5 stop-after, bits 6-7 split limit.
    kvc = {}
    for i, (label, p) in enumerate(sorted(kv_payloads.items())):
        kvc["payload-" + label] = bytes([(i * 0x25) & 0xFF]) + p
    frames = {
        "frames-v1-v5-v8": V1_HELLO_34 + V5_NOTIFY_34 + NOTIFY_SID_241 + V8_DISC_NORMAL,
        "frames-v4-v7": V4_AGENT_HELLO + V7_ACK_42 + V7_ACK_EMPTY + V7_ACK_SET_UNSET + V7_ACK_INT32_NEG5,
        "frames-v9": V9_F1 + V9_F2 + V9_F3,
        "frames-v3-v6": V3_HEALTHCHECK + V6_NOTIFY_UNNAMED + V8_AGENT_DISC_EMPTY,
    }
    for i, (label, f) in enumerate(sorted(frames.items())):
        kvc[label] = bytes([0x80 | (i & 3) | 0x40 * (i & 1)]) + f
    corp["fuzz_kv"] = kvc

    notify_payloads = {
        "v5": split_payload(V5_NOTIFY_34),
        "v6-unnamed": split_payload(V6_NOTIFY_UNNAMED),
        "all-types": ALL_TYPES_MSG,
        "flagged-types": FLAGGED_MSG,
        "multi": MULTI_MSG,
        "ipv6-unnamed": CHECK_IP6,
        "empty": b"",
        "v9-f1-truncated": split_payload(V9_F1),
        "v9-f2-continuation": split_payload(V9_F2),
        "zero-args": message("a") + message("b"),
        "long-name": message("n" * 300, ("v" * 241, v_bin(b"\xaa" * 2300))),
    }
    corp["fuzz_notify"] = dict(notify_payloads)

    rt = {"notify-" + k: v for k, v in notify_payloads.items()}
    rt.update({"kv-" + k: v for k, v in kv_payloads.items()})
    rt["varints"] = b"".join(bytes.fromhex(h) for _, h in VARINTS)
    rt["value-int64-minus1"] = v_int64(-1)
    rt["value-ipv6"] = v_ipv6(IPV6_DOC)
    rt["value-flagged-string"] = b"\x38\x03abc"
    corp["fuzz_roundtrip"] = rt
    return corp


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files")
    ap.add_argument("--out", default=CORPUS, help="output directory (default: %(default)s)")
    args = ap.parse_args()
    self_check()
    corp = build_all()
    if args.check:
        bad = 0
        for h, seeds in corp.items():
            d = os.path.join(args.out, h)
            have = set(os.listdir(d)) if os.path.isdir(d) else set()
            if have != set(seeds):
                print(f"{h}: file set differs: {sorted(have ^ set(seeds))}")
                bad += 1
            for label, data in seeds.items():
                p = os.path.join(d, label)
                if os.path.exists(p) and open(p, "rb").read() != data:
                    print(f"{h}/{label}: content differs")
                    bad += 1
        sys.exit(1 if bad else 0)
    for h, seeds in corp.items():
        d = os.path.join(args.out, h)
        if os.path.isdir(d):
            shutil.rmtree(d)
        write_corpus(args.out, h, seeds)
        digest = hashlib.sha256(b"".join(seeds[k] for k in sorted(seeds))).hexdigest()[:12]
        print(f"{h}: {len(seeds)} seeds ({digest})")


if __name__ == "__main__":
    main()
