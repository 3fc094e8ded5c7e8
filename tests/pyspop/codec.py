"""SPOP codec, HAProxy side: what HAProxy sends (HELLO, NOTIFY, DISCONNECT) and how it reads
what the agent sends (AGENT-HELLO, ACK actions, AGENT-DISCONNECT).

Written from /work/shared/reference/PROTOCOL-NOTES.md (frames §1, varints §2 — HAProxy's
"peers" encoding, NOT LEB128 —, typed data §3, KV lists and NOTIFY payloads §4, status
messages §6), independently of include/spop/, so that tests built on it check the C++ codec.

Decoders raise DecodeError (Truncated when more bytes could make the input valid).
"""

import ipaddress
import struct

FIN = 0x00000001
ABORT = 0x00000002

T_UNSET, T_HAPROXY_HELLO, T_HAPROXY_DISCONNECT, T_NOTIFY = 0, 1, 2, 3
T_AGENT_HELLO, T_AGENT_DISCONNECT, T_ACK = 101, 102, 103

D_NULL, D_BOOL, D_INT32, D_UINT32, D_INT64, D_UINT64, D_IPV4, D_IPV6, D_STRING, D_BINARY = range(10)

SCOPE_SESS = 1
ACT_SET_VAR, ACT_UNSET_VAR = 1, 2

# The exact strings HAProxy puts on the wire (PROTOCOL-NOTES §6).
STATUS_MESSAGES = {
    0: "normal",
    1: "I/O error",
    2: "a timeout occurred",
    3: "frame is too big",
    4: "invalid frame received",
    5: "version value not found",
    6: "max-frame-size value not found",
    7: "capabilities value not found",
    8: "unsupported version",
    9: "max-frame-size too big or too small",
    10: "fragmentation not supported",
    11: "invalid interlaced frames",
    12: "frame-id not found",
    13: "resource allocation error",
    99: "an unknown error occurred",
}

U64_MAX = (1 << 64) - 1


class DecodeError(Exception):
    pass


class Truncated(DecodeError):
    pass


def enc_varint(v):
    """PROTOCOL-NOTES §2 ("peers encoding"), not LEB128."""
    if v < 0 or v > U64_MAX:
        raise ValueError("varint out of range: %r" % v)
    if v < 240:
        return bytes([v])
    out = bytearray([(v & 0xFF) | 0xF0])
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def dec_varint(buf, pos):
    """Returns (value, new_pos). Raises Truncated, or DecodeError after 10 bytes."""
    if pos >= len(buf):
        raise Truncated("varint at end of buffer")
    b = buf[pos]
    pos += 1
    if b < 240:
        return b, pos
    x = b
    shift = 4
    n = 1
    while True:
        if n >= 10:
            raise DecodeError("varint longer than 10 bytes")
        if pos >= len(buf):
            raise Truncated("truncated varint")
        b = buf[pos]
        pos += 1
        n += 1
        x += b << shift
        shift += 7
        if b < 128:
            break
    if x > U64_MAX:
        raise DecodeError("varint above 2^64-1")
    return x, pos


def name(s):
    """A bare NAME: varint length + bytes, no type byte (§4, §12.1)."""
    b = s.encode() if isinstance(s, str) else bytes(s)
    return enc_varint(len(b)) + b


def t_null():
    return b"\x00"


def t_bool(v):
    return b"\x11" if v else b"\x01"


def t_uint32(v):
    return bytes([D_UINT32]) + enc_varint(v)


def t_int64(v):
    return bytes([D_INT64]) + enc_varint(v & U64_MAX)


def t_ip(addr):
    ip = ipaddress.ip_address(addr)
    return bytes([D_IPV4 if ip.version == 4 else D_IPV6]) + ip.packed


def t_str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return bytes([D_STRING]) + enc_varint(len(b)) + b


def t_bin(b):
    return bytes([D_BINARY]) + enc_varint(len(b)) + bytes(b)


def kv(items):
    return b"".join(name(k) + v for k, v in items)


def frame(ftype, payload=b"", sid=0, fid=0, flags=FIN, raw_ids=None):
    """One frame with its length prefix. raw_ids replaces the encoded stream-id/frame-id."""
    ids = raw_ids if raw_ids is not None else enc_varint(sid) + enc_varint(fid)
    body = bytes([ftype]) + struct.pack(">I", flags) + ids + payload
    return struct.pack(">I", len(body)) + body


def hello(versions="2.0", mfs=16380, caps="pipelining", engine_id=None, healthcheck=None,
          omit=(), sid=0, fid=0, flags=FIN):
    items = []
    if "supported-versions" not in omit:
        items.append(("supported-versions", t_str(versions)))
    if "max-frame-size" not in omit:
        items.append(("max-frame-size", t_uint32(mfs)))
    if "capabilities" not in omit:
        items.append(("capabilities", t_str(caps)))
    if engine_id is not None:
        items.append(("engine-id", t_str(engine_id)))
    if healthcheck is not None:
        items.append(("healthcheck", t_bool(healthcheck)))
    return frame(T_HAPROXY_HELLO, kv(items), sid, fid, flags)


def notify_payload(messages):
    """messages: [(message_name, [(arg_name, typed_bytes), ...]), ...]"""
    out = bytearray()
    for mname, args in messages:
        out += name(mname) + bytes([len(args)])
        for aname, typed in args:
            out += name(aname) + typed
    return bytes(out)


def notify(sid, fid, messages, flags=FIN):
    return frame(T_NOTIFY, notify_payload(messages), sid, fid, flags)


def ip_msg(addr="127.0.0.1", named=True):
    return ("check-client-ip", [("ip" if named else "", t_ip(addr))])


def haproxy_disconnect(status, message):
    return frame(T_HAPROXY_DISCONNECT, kv([("status-code", t_uint32(status)),
                                           ("message", t_str(message))]))


class Frame:
    __slots__ = ("type", "flags", "sid", "fid", "payload", "raw")

    def __init__(self, ftype, flags, sid, fid, payload, raw):
        self.type, self.flags, self.sid, self.fid, self.payload, self.raw = \
            ftype, flags, sid, fid, payload, raw

    def __repr__(self):
        return "Frame(type=%d flags=%#x sid=%d fid=%d payload=%s)" % (
            self.type, self.flags, self.sid, self.fid, self.payload.hex())


def parse_frame(raw):
    """raw = length prefix + body, exactly one frame."""
    body = raw[4:]
    if len(body) < 7:
        raise DecodeError("frame shorter than 7 bytes: %s" % raw.hex())
    ftype = body[0]
    flags = struct.unpack(">I", body[1:5])[0]
    sid, pos = dec_varint(body, 5)
    fid, pos = dec_varint(body, pos)
    return Frame(ftype, flags, sid, fid, bytes(body[pos:]), bytes(raw))


def dec_typed(buf, pos):
    """Returns ((type, value), new_pos)."""
    if pos >= len(buf):
        raise Truncated("typed data at end")
    b = buf[pos]
    pos += 1
    t = b & 0x0F
    if t == D_NULL:
        return (t, None), pos
    if t == D_BOOL:
        return (t, (b & 0x10) != 0), pos
    if t in (D_INT32, D_UINT32, D_INT64, D_UINT64):
        v, pos = dec_varint(buf, pos)
        return (t, v), pos
    if t in (D_IPV4, D_IPV6):
        n = 4 if t == D_IPV4 else 16
        if pos + n > len(buf):
            raise Truncated("truncated address")
        return (t, ipaddress.ip_address(bytes(buf[pos:pos + n]))), pos + n
    if t in (D_STRING, D_BINARY):
        n, pos = dec_varint(buf, pos)
        if pos + n > len(buf):
            raise Truncated("truncated string")
        v = bytes(buf[pos:pos + n])
        return (t, v.decode("utf-8", "replace") if t == D_STRING else v), pos + n
    raise DecodeError("reserved typed-data type %d" % t)


def dec_name(buf, pos):
    n, pos = dec_varint(buf, pos)
    if pos + n > len(buf):
        raise Truncated("truncated name")
    return bytes(buf[pos:pos + n]).decode("utf-8", "replace"), pos + n


def parse_kv(payload):
    """Returns a list of (key, (type, value))."""
    out = []
    pos = 0
    while pos < len(payload):
        k, pos = dec_name(payload, pos)
        v, pos = dec_typed(payload, pos)
        out.append((k, v))
    return out


def parse_actions(payload):
    """ACK payload -> [("set", scope, name, (type, value)) | ("unset", scope, name)]."""
    out = []
    pos = 0
    while pos < len(payload):
        if pos + 3 > len(payload):
            raise Truncated("truncated action")
        act, nb, scope = payload[pos], payload[pos + 1], payload[pos + 2]
        pos += 3
        if act == ACT_SET_VAR and nb == 3:
            vname, pos = dec_name(payload, pos)
            val, pos = dec_typed(payload, pos)
            out.append(("set", scope, vname, val))
        elif act == ACT_UNSET_VAR and nb == 2:
            vname, pos = dec_name(payload, pos)
            out.append(("unset", scope, vname))
        else:
            raise DecodeError("bad action %d with %d args" % (act, nb))
    return out



def split_frames(data, allow_partial=False):
    """A byte stream -> [Frame]; a trailing partial frame is an error unless allow_partial."""
    out = []
    pos = 0
    while len(data) - pos >= 4:
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        if len(data) - pos < 4 + n:
            break
        out.append(parse_frame(data[pos:pos + 4 + n]))
        pos += 4 + n
    if pos != len(data) and not allow_partial:
        raise AssertionError("trailing partial frame: %s" % data[pos:pos + 32].hex())
    return out


def hello_fields(f):
    """AGENT-HELLO -> dict key -> (type, value); duplicates are an error."""
    items = parse_kv(f.payload)
    d = {}
    for k, v in items:
        if k in d:
            raise AssertionError("duplicate key %r in AGENT-HELLO" % k)
        d[k] = v
    return d


def disconnect_fields(f):
    """A DISCONNECT frame -> ((type, status-code) or None, (type, message) or None)."""
    d = dict(parse_kv(f.payload))
    return d.get("status-code"), d.get("message")


def plain(typed):
    """(type, value) -> a plain Python value: None, bool, int, str (addresses as text), bytes."""
    t, v = typed
    if t in (D_IPV4, D_IPV6):
        return str(v)
    if t == D_INT32 and v is not None and v >= 1 << 63:
        return v - (1 << 64)
    if t == D_INT64 and v is not None and v >= 1 << 63:
        return v - (1 << 64)
    return v


def set_vars(payload):
    """ACK payload of SET-VAR actions only -> {name: plain value}; other actions are errors."""
    out = {}
    for a in parse_actions(payload):
        if a[0] != "set":
            raise DecodeError("unexpected action %r" % (a,))
        out[a[2]] = plain(a[3])
    return out


# --- more encoders: every typed-data type, and the agent's frames (for fakes and self-tests) ---

def t_int32(v):
    return bytes([D_INT32]) + enc_varint(v & U64_MAX)


def t_uint64(v):
    return bytes([D_UINT64]) + enc_varint(v)


def t_ipv4(packed):
    return bytes([D_IPV4]) + bytes(packed)


def t_ipv6(packed):
    return bytes([D_IPV6]) + bytes(packed)


def message(mname, *args):
    """One NOTIFY message: message(name, (arg_name, typed_bytes), ...)."""
    return notify_payload([(mname, list(args))])


def set_var(scope, vname, typed):
    return bytes([ACT_SET_VAR, 3, scope]) + name(vname) + typed


def unset_var(scope, vname):
    return bytes([ACT_UNSET_VAR, 2, scope]) + name(vname)


def ack(sid, fid, actions=b"", flags=FIN):
    return frame(T_ACK, actions, sid, fid, flags)


def agent_hello(version="2.0", mfs=16380, caps="pipelining"):
    return frame(T_AGENT_HELLO, kv([("version", t_str(version)), ("max-frame-size", t_uint32(mfs)),
                                    ("capabilities", t_str(caps))]))


def agent_disconnect(status, message_=None):
    return frame(T_AGENT_DISCONNECT, kv([
        ("status-code", t_uint32(status)),
        ("message", t_str(STATUS_MESSAGES.get(status, "") if message_ is None else message_))]))


def h(s):
    """Hex with blanks and newlines -> bytes."""
    return bytes.fromhex("".join(s.split()))


def hs(s):
    return s.encode().hex()
