#!/usr/bin/env python3
"""Regenerates the seed corpora in tests/fuzz/corpus/<harness>/ (python3 stdlib only).

Seeds come from the hex vectors of shared/reference PROTOCOL-NOTES.md §11 and CAPTURES.md
(tests/pyspop/vectors.py), plus a few synthetic frames built with the encoder of tests/pyspop.
The encoder is checked against the captured vectors first, so the synthetic seeds use the same
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
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


sys.path.insert(0, os.path.dirname(HERE))

from pyspop import codec  # noqa: E402
from pyspop import vectors  # noqa: E402

unhex = codec.h

# --- vectors (PROTOCOL-NOTES §11, CAPTURES.md), from tests/pyspop/vectors.py -------------------

V1_HELLO_34 = vectors.V1_HELLO_34
V2_HELLO_26 = vectors.V2_HELLO_26          # CAPTURES §1, HAProxy 2.6.12 ("pipelining,async")
V3_HEALTHCHECK = vectors.V3_HEALTHCHECK
V4_AGENT_HELLO = vectors.V4_AGENT_HELLO
AGENT_HELLO_NOPIPE = vectors.CAP_AGENT_HELLO_DEFAULT
V5_NOTIFY_34 = vectors.V5_NOTIFY_NAMED
V5_NOTIFY_26 = vectors.V5_NOTIFY_26
NOTIFY_SID_241 = vectors.CAP_NOTIFY_SID241
V6_NOTIFY_UNNAMED = vectors.V6_NOTIFY_UNNAMED
V7_ACK_42 = vectors.V7_ACK_42
V7_ACK_EMPTY = vectors.V7_ACK_EMPTY
V7_ACK_SET_UNSET = vectors.V7_ACK_SET_UNSET
V7_ACK_INT32_NEG5 = vectors.V7_ACK_INT32_NEG5
V8_DISC_NORMAL = vectors.V8_DISC_NORMAL
V8_DISC_IDLE = vectors.V8_DISCONNECT_TIMEOUT
V8_DISC_BAD_VERSION = vectors.V8_DISC_BAD_VERSION
V8_AGENT_DISC_EMPTY = vectors.V8_AGENT_DISC_EMPTY
V9_F1, V9_F2, V9_F3 = vectors.V9_F1, vectors.V9_F2, vectors.V9_F3

# §2 varint table: (value, encoding).
VARINTS = vectors.VARINTS


# --- the encoder of tests/pyspop (PROTOCOL-NOTES §1-§4), under this script's short names --------

varint = codec.enc_varint
name = codec.name
v_null, v_bool, v_int32, v_uint32 = codec.t_null, codec.t_bool, codec.t_int32, codec.t_uint32
v_int64, v_uint64, v_ipv4, v_ipv6 = codec.t_int64, codec.t_uint64, codec.t_ipv4, codec.t_ipv6
v_str, v_bin = codec.t_str, codec.t_bin
frame = codec.frame          # frame(ftype, payload, sid=0, fid=0, flags=FIN)
message = codec.message      # message(name, (arg, typed), ...)


def kv(*pairs):
    return codec.kv(pairs)


def split_payload(f):
    """Payload of a frame (after its two varint ids)."""
    return codec.parse_frame(f).payload


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
