// Frame-level test helpers: split a byte stream into whole frames, build frames and KV payloads,
// read DISCONNECT frames, and collect ACK action lists (over spop/actions.hpp).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spop/actions.hpp>
#include <spop/data.hpp>
#include <spop/frame.hpp>
#include <spop/handshake.hpp>
#include <spop/kv.hpp>
#include <spop/writer.hpp>

#include "hex.hpp"

namespace spop_test {

/// A frame copied out of a stream.
struct parsed_frame {
    spop::frame_type type{};
    std::uint32_t flags = 0;
    std::uint64_t stream_id = 0;
    std::uint64_t frame_id = 0;
    bytes payload;
    bytes raw; ///< the whole frame, length prefix included

    [[nodiscard]] std::span<const std::uint8_t> payload_span() const noexcept { return payload; }
};

/// Splits `in` into whole frames. `*rest` gets the number of trailing bytes that do not form a
/// whole frame (0 for a well-formed stream); `*ec` the first split error (ok when none).
inline std::vector<parsed_frame> split_frames(std::span<const std::uint8_t> in,
                                              std::size_t* rest = nullptr, spop::errc* ec = nullptr,
                                              std::uint32_t mfs = spop::max_max_frame_size) {
    std::vector<parsed_frame> out;
    if (ec) *ec = spop::errc::ok;
    while (!in.empty()) {
        spop::frame f;
        const spop::result r = spop::split_frame(in, mfs, f);
        if (!r) {
            if (ec && r.ec != spop::errc::need_more) *ec = r.ec;
            break;
        }
        parsed_frame p;
        p.type = f.type;
        p.flags = f.flags;
        p.stream_id = f.stream_id;
        p.frame_id = f.frame_id;
        p.payload.assign(f.payload.begin(), f.payload.end());
        p.raw.assign(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(r.consumed));
        out.push_back(std::move(p));
        in = in.subspan(r.consumed);
    }
    if (rest) *rest = in.size();
    return out;
}

/// True when `in` is a sequence of whole frames with nothing left over.
inline bool whole_frames(std::span<const std::uint8_t> in) {
    std::size_t rest = 0;
    spop::errc ec{};
    (void)split_frames(in, &rest, &ec);
    return rest == 0 && ec == spop::errc::ok;
}

/// A KV-LIST payload from (key, value) pairs, encoded with encode_name/encode_value.
inline bytes kv_payload(std::initializer_list<std::pair<std::string_view, spop::value>> kvs) {
    bytes out;
    for (const auto& [k, v] : kvs) {
        std::uint8_t buf[64 * 1024];
        std::uint8_t* p = spop::encode_name(k, buf, buf + sizeof buf);
        p = spop::encode_value(v, p, buf + sizeof buf);
        out.insert(out.end(), buf, p);
    }
    return out;
}

/// A frame with any header (including invalid ones) around `payload`.
inline bytes make_frame(spop::frame_type type, std::uint32_t flags, std::uint64_t sid,
                        std::uint64_t fid, std::span<const std::uint8_t> payload) {
    bytes out(spop::frame_header_size(sid, fid));
    spop::encode_frame_header_unchecked(type, flags, sid, fid, out.data());
    out.insert(out.end(), payload.begin(), payload.end());
    spop::store_be32(out.data(), static_cast<std::uint32_t>(out.size() - spop::frame_length_size));
    return out;
}
inline bytes make_frame(std::uint8_t raw_type, std::uint32_t flags, std::uint64_t sid,
                        std::uint64_t fid, std::span<const std::uint8_t> payload) {
    return make_frame(static_cast<spop::frame_type>(raw_type), flags, sid, fid, payload);
}

/// A HAPROXY-HELLO like HAProxy 3.x sends, with the given pairs.
inline bytes make_hello(std::initializer_list<std::pair<std::string_view, spop::value>> kvs) {
    return make_frame(spop::frame_type::haproxy_hello, spop::flag_fin, 0, 0, kv_payload(kvs));
}

/// The DISCONNECT fields, read strictly: exactly `status-code` (UINT32) then `message` (STRING).
struct disconnect_info {
    bool well_formed = false;
    std::uint32_t status = 0;
    std::string message;
};

inline disconnect_info read_disconnect(const parsed_frame& f) {
    struct strict {
        int n = 0;
        bool good = true;
        disconnect_info* out;
        spop::action on_kv(std::string_view k, const spop::value& v) {
            if (n == 0 && k == "status-code" && v.type == spop::data_type::uint32) {
                out->status = static_cast<std::uint32_t>(v.integer);
            } else if (n == 1 && k == "message" && v.type == spop::data_type::string) {
                out->message.assign(v.bytes);
            } else {
                good = false;
            }
            ++n;
            return spop::action::proceed;
        }
    };
    disconnect_info info;
    strict h{0, true, &info};
    const spop::result r = spop::parse_kv_list(f.payload_span(), h);
    info.well_formed = r.ec == spop::errc::ok && h.good && h.n == 2 && f.stream_id == 0 &&
                       f.frame_id == 0 && f.flags == spop::flag_fin;
    return info;
}

/// One action of an ACK frame.
struct ack_action {
    spop::action_type type{};
    spop::var_scope scope{};
    std::string name;
    std::string value; ///< describe() of the value; empty for UNSET-VAR
};

/// The outcome of walking an ACK payload.
struct ack_parse {
    std::vector<ack_action> actions; ///< the actions before the first error, in wire order
    std::string error;               ///< empty when the whole payload was valid
    spop::errc ec = spop::errc::ok;
    std::size_t offset = 0; ///< payload size, or where spop::parse_actions() found the error
};

/// spop::parse_actions() (strict: SET-VAR with NB-ARGS 3, UNSET-VAR with 2, scopes 0..4),
/// collected into owned strings; `error` is spop::message() of the failure.
inline ack_parse parse_ack_payload(std::span<const std::uint8_t> payload) {
    struct collect {
        std::vector<ack_action>* out;
        spop::action on_set_var(spop::var_scope s, std::string_view n, const spop::value& v) {
            out->push_back({spop::action_type::set_var, s, std::string(n), describe(v)});
            return spop::action::proceed;
        }
        spop::action on_unset_var(spop::var_scope s, std::string_view n) {
            out->push_back({spop::action_type::unset_var, s, std::string(n), {}});
            return spop::action::proceed;
        }
    };
    ack_parse out;
    collect h{&out.actions};
    const spop::result r = spop::parse_actions(payload, h);
    out.ec = r.ec;
    out.offset = r.consumed;
    if (!r) out.error = std::string(spop::message(r.ec));
    return out;
}

} // namespace spop_test
