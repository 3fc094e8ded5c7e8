// fuzz_kv: the HELLO/DISCONNECT side of the codec on arbitrary bytes.
//
// Input: byte 0 = options, the rest = the bytes under test.
//   bits 0-1  our max-frame-size for negotiate(): 256, 16380, 65532, max_max_frame_size
//   bit  2    we announce pipelining
//   bits 3-5  stop the recording KV handler after that many pairs (0 = never)
//   bits 6-7  split_frame() limit: 7, 256, 16380, 2^32-1
// Checks:
//   - parse_kv_list(): documented result codes, consumed <= size (== size on ok), views inside
//     the payload, a stopping handler sees a prefix of the full run, null handler agrees;
//   - negotiate(): a result consistent with what the KV list holds (the last occurrence of
//     each key wins), negotiated max-frame-size = min(ours, theirs) within [256, ours];
//   - disconnect_fields, list_contains(), offers_version_2_0() on the same bytes;
//   - split_frame() / decode_frame_body() walking the bytes as a stream of frames.
#include "fuzz_common.hpp"

namespace {

using spop::errc;

bool parse_error(errc e) {
    return e == errc::truncated || e == errc::varint_overflow || e == errc::bad_data_type;
}

void check_kv(std::span<const std::uint8_t> payload, std::size_t stop_after) {
    const std::uint8_t* base = payload.data();
    const std::size_t size = payload.size();

    spop_fuzz::kv_recorder full;
    full.base = base;
    full.size = size;
    const spop::result r = spop::parse_kv_list(payload, full);
    FUZZ_CHECK(r.ec == errc::ok || parse_error(r.ec));
    FUZZ_CHECK(r.consumed <= size);
    if (r) FUZZ_CHECK(r.consumed == size);

    spop::null_kv_handler n;
    FUZZ_CHECK(spop::parse_kv_list(payload, n) == r);

    if (stop_after != 0) {
        spop_fuzz::kv_recorder s;
        s.base = base;
        s.size = size;
        s.stop_after = stop_after;
        const spop::result rs = spop::parse_kv_list(payload, s);
        if (full.kvs.size() >= stop_after) {
            FUZZ_CHECK(rs.ec == errc::stopped);
            FUZZ_CHECK(s.kvs.size() == stop_after);
            FUZZ_CHECK(rs.consumed <= r.consumed);
            if (s.kvs.size() == full.kvs.size() && r) FUZZ_CHECK(rs.consumed == size);
        } else {
            FUZZ_CHECK(rs == r);
            FUZZ_CHECK(s.kvs.size() == full.kvs.size());
        }
        for (std::size_t i = 0; i < s.kvs.size(); ++i) FUZZ_CHECK(s.kvs[i] == full.kvs[i]);
    }
}

const spop_fuzz::owned_kv* last_of(const std::vector<spop_fuzz::owned_kv>& kvs,
                                   std::string_view key) {
    const spop_fuzz::owned_kv* found = nullptr;
    for (const auto& kv : kvs)
        if (kv.key == key) found = &kv;
    return found;
}

void check_negotiate(std::span<const std::uint8_t> payload, const spop::agent_limits& ours) {
    spop_fuzz::kv_recorder rec;
    rec.base = payload.data();
    rec.size = payload.size();
    const spop::result pr = spop::parse_kv_list(payload, rec);

    spop::negotiated out;
    spop::hello_fields fields;
    const errc e = spop::negotiate(payload, ours, out, fields);
    FUZZ_CHECK(spop_fuzz::inside(fields.versions, payload.data(), payload.size()));
    FUZZ_CHECK(spop_fuzz::inside(fields.capabilities, payload.data(), payload.size()));
    FUZZ_CHECK(spop_fuzz::inside(fields.engine_id, payload.data(), payload.size()));
    FUZZ_CHECK(spop_fuzz::inside(fields.bad_key, payload.data(), payload.size()));

    if (e == errc::bad_kv_type) {
        FUZZ_CHECK(fields.bad_key == "supported-versions" || fields.bad_key == "max-frame-size" ||
                   fields.bad_key == "capabilities" || fields.bad_key == "healthcheck");
        return;
    }
    FUZZ_CHECK(fields.bad_key.empty());
    if (!pr) {
        FUZZ_CHECK(e == pr.ec);
        return;
    }

    // The whole list parsed and no known key had a bad type: fields hold the last occurrences.
    const auto* ver = last_of(rec.kvs, "supported-versions");
    const auto* mfs = last_of(rec.kvs, "max-frame-size");
    const auto* caps = last_of(rec.kvs, "capabilities");
    const auto* hc = last_of(rec.kvs, "healthcheck");
    FUZZ_CHECK(fields.has_versions == (ver != nullptr));
    FUZZ_CHECK(fields.has_max_frame_size == (mfs != nullptr));
    FUZZ_CHECK(fields.has_capabilities == (caps != nullptr));
    if (ver) FUZZ_CHECK(fields.versions == ver->v.bytes);
    if (mfs) FUZZ_CHECK(fields.max_frame_size == mfs->v.integer);
    if (caps) FUZZ_CHECK(fields.capabilities == caps->v.bytes);
    FUZZ_CHECK(fields.healthcheck == (hc != nullptr && hc->v.boolean));

    errc want = errc::ok;
    if (!ver) want = errc::no_version;
    else if (!spop::offers_version_2_0(ver->v.bytes)) want = errc::bad_version;
    else if (!mfs) want = errc::no_frame_size;
    else if (mfs->v.integer < spop::min_max_frame_size) want = errc::bad_frame_size;
    else if (!caps) want = errc::no_capabilities;
    FUZZ_CHECK(e == want);
    if (e != errc::ok) return;

    FUZZ_CHECK(out.max_frame_size >= spop::min_max_frame_size);
    FUZZ_CHECK(out.max_frame_size <= ours.max_frame_size);
    FUZZ_CHECK(out.max_frame_size ==
               (mfs->v.integer < ours.max_frame_size ? mfs->v.integer : ours.max_frame_size));
    FUZZ_CHECK(out.pipelining == (ours.pipelining && spop::list_contains(caps->v.bytes, "pipelining")));
    FUZZ_CHECK(out.peer_async == spop::list_contains(caps->v.bytes, "async"));
    FUZZ_CHECK(out.healthcheck == fields.healthcheck);
}

void check_disconnect(std::span<const std::uint8_t> payload) {
    spop::disconnect_fields d;
    const spop::result r = spop::parse_kv_list(payload, d);
    FUZZ_CHECK(r.ec == errc::ok || parse_error(r.ec));
    FUZZ_CHECK(spop_fuzz::inside(d.message, payload.data(), payload.size()));
    if (!d.has_status) FUZZ_CHECK(d.status_code == 0);
    // The agent's reply must always encode, whatever the peer sent (message cut to 255).
    std::uint8_t out[spop::max_agent_disconnect_size];
    const spop::result w = spop::encode_agent_disconnect(out, spop::default_max_frame_size,
                                                         d.status_code, d.message);
    FUZZ_CHECK(w.ec == errc::ok);
    FUZZ_CHECK(w.consumed <= sizeof out);
}

void check_split(std::span<const std::uint8_t> in, std::uint32_t limit) {
    std::size_t frames = 0;
    while (!in.empty() && frames < 4096) {
        spop::frame fr;
        const spop::result r = spop::split_frame(in, limit, fr);
        if (in.size() < spop::frame_length_size) {
            FUZZ_CHECK(r.ec == errc::need_more && r.consumed == 0);
            return;
        }
        const std::uint32_t len = spop::load_be32(in.data());
        switch (r.ec) {
        case errc::ok: {
            FUZZ_CHECK(len <= limit && len >= spop::min_frame_length);
            FUZZ_CHECK(r.consumed == spop::frame_length_size + len);
            FUZZ_CHECK(r.consumed <= in.size());
            FUZZ_CHECK(static_cast<std::uint8_t>(fr.type) == in[4]);
            FUZZ_CHECK(fr.flags == spop::load_be32(in.data() + 5));
            FUZZ_CHECK(fr.payload.data() >= in.data() + 11);
            FUZZ_CHECK(fr.payload.data() + fr.payload.size() == in.data() + r.consumed);
            FUZZ_CHECK(fr.payload.size() + spop::frame_header_size(fr.stream_id, fr.frame_id) ==
                       r.consumed);
            // decode_frame_body on the same bytes agrees.
            spop::frame fb;
            const spop::result rb = spop::decode_frame_body(in.subspan(4, len), fb);
            FUZZ_CHECK(rb.ec == errc::ok && rb.consumed == len);
            FUZZ_CHECK(fb.stream_id == fr.stream_id && fb.frame_id == fr.frame_id);
            FUZZ_CHECK(fb.payload.data() == fr.payload.data() && fb.payload.size() == fr.payload.size());
            // Touch the payload (ASan checks the view).
            std::uint64_t sum = 0;
            for (std::uint8_t b : fr.payload) sum += b;
            (void)sum;
            in = in.subspan(r.consumed);
            ++frames;
            continue;
        }
        case errc::need_more:
            FUZZ_CHECK(r.consumed == 0);
            FUZZ_CHECK(len <= limit && len >= spop::min_frame_length);
            FUZZ_CHECK(in.size() - spop::frame_length_size < len);
            return;
        case errc::frame_too_big:
            FUZZ_CHECK(r.consumed == 0 && len > limit);
            return;
        case errc::frame_too_small:
            FUZZ_CHECK(r.consumed == 0 && len < spop::min_frame_length && len <= limit);
            return;
        case errc::truncated:
        case errc::varint_overflow:
            FUZZ_CHECK(len <= limit && len >= spop::min_frame_length);
            FUZZ_CHECK(r.consumed <= spop::frame_length_size + len);
            FUZZ_CHECK(r.consumed <= in.size());
            return;
        default: FUZZ_CHECK(!"split_frame returned an undocumented code"); return;
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t opt = data[0];
    // A heap copy of exactly the bytes under test, so ASan sees any read past them.
    const spop_fuzz::bytes buf(data + 1, data + size);
    const std::span<const std::uint8_t> payload = spop_fuzz::as_span(buf);

    static constexpr std::uint32_t our_mfs[] = {256, spop::default_max_frame_size, 65532,
                                                spop::max_max_frame_size};
    static constexpr std::uint32_t split_limits[] = {7, 256, spop::default_max_frame_size,
                                                     0xFFFFFFFFu};
    spop::agent_limits ours;
    ours.max_frame_size = our_mfs[opt & 3];
    ours.pipelining = (opt & 4) != 0;

    check_kv(payload, (opt >> 3) & 7);
    check_negotiate(payload, ours);
    check_disconnect(payload);

    const std::string_view text(reinterpret_cast<const char*>(buf.data()), buf.size());
    (void)spop::list_contains(text, "pipelining");
    (void)spop::offers_version_2_0(text);

    check_split(payload, split_limits[opt >> 6]);
    return 0;
}
