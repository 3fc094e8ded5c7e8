// fuzz_roundtrip: differential decode -> encode -> decode on arbitrary bytes.
//
// The whole input is treated, in turn, as:
//   1. a NOTIFY payload: parse_notify() -> owned records -> notify_writer (ids derived from the
//      input) -> split_frame() -> parse_notify() again. The records must be equal, the frame
//      header must carry the ids and FIN, and encoding the records a second time must give the
//      same bytes. Since the varint code is bijective and every body is copied verbatim, the
//      re-encoded payload is exactly as long as the original; it differs only in type-byte flag
//      bits (BOOL keeps its value, STRING/BINARY is the low nibble), which is checked too.
//   2. a KV-LIST payload: the same with parse_kv_list() and kv_writer (frame type and flags
//      derived from the input).
//   3. a varint at every offset: decode -> encode gives back the same bytes (no overlong form).
//   4. a typed value at offset 0: decode -> encode -> decode is the same value.
#include <cstring>

#include "fuzz_common.hpp"

namespace {

using spop::errc;
using spop_fuzz::bytes;

/// Compares an original payload with its re-encoding: equal except in the flag nibble of type
/// bytes. `type_positions` lists the offsets of the type bytes in the re-encoded payload.
void check_same_but_flags(std::span<const std::uint8_t> orig, std::span<const std::uint8_t> enc,
                          const std::vector<std::size_t>& type_positions) {
    FUZZ_CHECK(orig.size() == enc.size());
    std::size_t t = 0;
    for (std::size_t i = 0; i < orig.size(); ++i) {
        if (t < type_positions.size() && type_positions[t] == i) {
            ++t;
            const std::uint8_t o = orig[i];
            const std::uint8_t e = enc[i];
            FUZZ_CHECK((o & 0x0F) == (e & 0x0F));
            if ((o & 0x0F) == 1) FUZZ_CHECK(((o & 0x10) != 0) == ((e & 0x10) != 0)); // BOOL value
            else FUZZ_CHECK((e & 0xF0) == 0);
            continue;
        }
        FUZZ_CHECK(orig[i] == enc[i]);
    }
    FUZZ_CHECK(t == type_positions.size());
}

/// Offset of each typed value in an encoded NOTIFY payload, from the records.
std::vector<std::size_t> notify_type_positions(const std::vector<spop_fuzz::owned_message>& msgs) {
    std::vector<std::size_t> pos;
    std::size_t off = 0;
    for (const auto& m : msgs) {
        off += spop::varint_size(m.name.size()) + m.name.size() + 1;
        for (const auto& a : m.args) {
            off += spop::varint_size(a.name.size()) + a.name.size();
            pos.push_back(off);
            off += spop::value_size(a.v.view());
        }
    }
    return pos;
}

std::vector<std::size_t> kv_type_positions(const std::vector<spop_fuzz::owned_kv>& kvs) {
    std::vector<std::size_t> pos;
    std::size_t off = 0;
    for (const auto& kv : kvs) {
        off += spop::varint_size(kv.key.size()) + kv.key.size();
        pos.push_back(off);
        off += spop::value_size(kv.v.view());
    }
    return pos;
}

bytes encode_notify(const std::vector<spop_fuzz::owned_message>& msgs, std::uint64_t sid,
                    std::uint64_t fid, std::size_t payload_size) {
    bytes out(spop::frame_header_size(sid, fid) + payload_size);
    spop::notify_writer w(out, sid, fid, spop::max_max_frame_size);
    for (const auto& m : msgs) {
        FUZZ_CHECK(w.message(m.name, m.nb_args));
        for (const auto& a : m.args) FUZZ_CHECK(w.arg(a.name, a.v.view()));
    }
    const spop::result r = w.finish();
    FUZZ_CHECK(r.ec == errc::ok);
    FUZZ_CHECK(r.consumed == out.size());
    // One byte less must not fit: the writer reports no_buffer_space, never overflows.
    if (!out.empty()) {
        bytes small(out.size() - 1);
        spop::notify_writer ws(small, sid, fid, spop::max_max_frame_size);
        for (const auto& m : msgs) {
            if (!ws.message(m.name, m.nb_args)) break;
            for (const auto& a : m.args)
                if (!ws.arg(a.name, a.v.view())) break;
        }
        FUZZ_CHECK(ws.finish().ec == errc::no_buffer_space);
    }
    return out;
}

void roundtrip_notify(std::span<const std::uint8_t> payload, std::uint64_t h) {
    spop_fuzz::notify_recorder rec;
    rec.base = payload.data();
    rec.size = payload.size();
    const spop::result r = spop::parse_notify(payload, rec);
    if (!r) return;
    for (const auto& m : rec.msgs) FUZZ_CHECK(m.ended);

    const std::uint64_t sid = h;
    const std::uint64_t fid = h >> 29;
    const bytes enc = encode_notify(rec.msgs, sid, fid, payload.size());

    spop::frame fr;
    const spop::result sr = spop::split_frame(enc, spop::max_max_frame_size, fr);
    FUZZ_CHECK(sr.ec == errc::ok && sr.consumed == enc.size());
    FUZZ_CHECK(fr.type == spop::frame_type::notify);
    FUZZ_CHECK(fr.flags == spop::flag_fin);
    FUZZ_CHECK(fr.stream_id == sid && fr.frame_id == fid);
    check_same_but_flags(payload, fr.payload, notify_type_positions(rec.msgs));

    spop_fuzz::notify_recorder again;
    again.base = fr.payload.data();
    again.size = fr.payload.size();
    const spop::result r2 = spop::parse_notify(fr.payload, again);
    FUZZ_CHECK(r2.ec == errc::ok && r2.consumed == fr.payload.size());
    FUZZ_CHECK(again.msgs == rec.msgs);

    const bytes enc2 = encode_notify(again.msgs, sid, fid, fr.payload.size());
    FUZZ_CHECK(enc2 == enc);
}

bytes encode_kv(const std::vector<spop_fuzz::owned_kv>& kvs, spop::frame_type type,
                std::uint32_t flags, std::size_t payload_size) {
    bytes out(spop::frame_header_size(0, 0) + payload_size);
    spop::kv_writer w(out, spop::max_max_frame_size, type, flags);
    for (const auto& kv : kvs) FUZZ_CHECK(w.put(kv.key, kv.v.view()));
    const spop::result r = w.finish();
    FUZZ_CHECK(r.ec == errc::ok);
    FUZZ_CHECK(r.consumed == out.size());
    if (!kvs.empty()) {
        // One byte short: every pair but the last fits, the last put() fails, and the writer
        // remembers the failure (finish() reports it) while the bytes before it are intact.
        bytes small(out.size() - 1);
        spop::kv_writer ws(small, spop::max_max_frame_size, type, flags);
        for (std::size_t i = 0; i + 1 < kvs.size(); ++i) FUZZ_CHECK(ws.put(kvs[i].key, kvs[i].v.view()));
        FUZZ_CHECK(!ws.put(kvs.back().key, kvs.back().v.view()));
        FUZZ_CHECK(ws.finish().ec == errc::no_buffer_space);
        const std::size_t kept = out.size() - spop::varint_size(kvs.back().key.size()) -
                                 kvs.back().key.size() - spop::value_size(kvs.back().v.view());
        FUZZ_CHECK(std::memcmp(small.data() + 4, out.data() + 4, kept - 4) == 0);
    }
    return out;
}

void roundtrip_kv(std::span<const std::uint8_t> payload, std::uint64_t h) {
    spop_fuzz::kv_recorder rec;
    rec.base = payload.data();
    rec.size = payload.size();
    const spop::result r = spop::parse_kv_list(payload, rec);
    if (!r) return;

    static constexpr spop::frame_type types[] = {
        spop::frame_type::haproxy_hello, spop::frame_type::haproxy_disconnect,
        spop::frame_type::agent_hello, spop::frame_type::agent_disconnect};
    const spop::frame_type type = types[h & 3];
    const auto flags = static_cast<std::uint32_t>((h & 4) ? (h >> 32) : spop::flag_fin);
    const bytes enc = encode_kv(rec.kvs, type, flags, payload.size());

    spop::frame fr;
    const spop::result sr = spop::split_frame(enc, spop::max_max_frame_size, fr);
    FUZZ_CHECK(sr.ec == errc::ok && sr.consumed == enc.size());
    FUZZ_CHECK(fr.type == type);
    FUZZ_CHECK(fr.flags == flags);
    FUZZ_CHECK(fr.stream_id == 0 && fr.frame_id == 0);
    check_same_but_flags(payload, fr.payload, kv_type_positions(rec.kvs));

    spop_fuzz::kv_recorder again;
    again.base = fr.payload.data();
    again.size = fr.payload.size();
    const spop::result r2 = spop::parse_kv_list(fr.payload, again);
    FUZZ_CHECK(r2.ec == errc::ok && r2.consumed == fr.payload.size());
    FUZZ_CHECK(again.kvs == rec.kvs);

    const bytes enc2 = encode_kv(again.kvs, type, flags, fr.payload.size());
    FUZZ_CHECK(enc2 == enc);
}

void roundtrip_varints(std::span<const std::uint8_t> in) {
    for (std::size_t i = 0; i < in.size(); ++i) {
        std::uint64_t v = 0;
        const spop::result r = spop::decode_varint(in.data() + i, in.data() + in.size(), v);
        if (r.ec == errc::need_more) {
            FUZZ_CHECK(r.consumed == 0);
            continue;
        }
        if (r.ec == errc::varint_overflow) {
            FUZZ_CHECK(r.consumed <= spop::max_varint_size);
            continue;
        }
        FUZZ_CHECK(r.ec == errc::ok);
        FUZZ_CHECK(r.consumed >= 1 && r.consumed <= spop::max_varint_size);
        FUZZ_CHECK(spop::varint_size(v) == r.consumed);
        std::uint8_t out[spop::max_varint_size];
        std::uint8_t* end = spop::encode_varint(v, out, out + sizeof out);
        FUZZ_CHECK(end == out + r.consumed);
        FUZZ_CHECK(std::memcmp(out, in.data() + i, r.consumed) == 0);
        // One byte short never fits.
        FUZZ_CHECK(spop::encode_varint(v, out, out + r.consumed - 1) == nullptr);
    }
}

void roundtrip_value(std::span<const std::uint8_t> in) {
    spop::value v;
    const spop::result r = spop::decode_value(in.data(), in.data() + in.size(), v);
    if (!r) {
        FUZZ_CHECK(r.ec == errc::truncated || r.ec == errc::varint_overflow ||
                   r.ec == errc::bad_data_type);
        return;
    }
    FUZZ_CHECK(r.consumed <= in.size());
    FUZZ_CHECK(spop::value_size(v) == r.consumed);
    spop_fuzz::check_value_shape(v, in.data(), in.size());
    bytes out(r.consumed);
    std::uint8_t* end = spop::encode_value(v, out.data(), out.data() + out.size());
    FUZZ_CHECK(end == out.data() + out.size());
    spop::value w;
    const spop::result r2 = spop::decode_value(out.data(), out.data() + out.size(), w);
    FUZZ_CHECK(r2.ec == errc::ok && r2.consumed == out.size());
    FUZZ_CHECK(spop_fuzz::owned_value::of(w) == spop_fuzz::owned_value::of(v));
    if (r.consumed > 0) {
        bytes small(r.consumed - 1);
        FUZZ_CHECK(spop::encode_value(v, small.data(), small.data() + small.size()) == nullptr);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> in(data, size);
    const std::uint64_t h = spop_fuzz::fnv1a(data, size);
    roundtrip_notify(in, h);
    roundtrip_kv(in, h);
    roundtrip_varints(in);
    roundtrip_value(in);
    return 0;
}
