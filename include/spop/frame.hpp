// SPOP frame header (SPOE.txt §3.2):
//   <FRAME-LENGTH:u32be> <TYPE:u8> <FLAGS:u32be> <STREAM-ID:varint> <FRAME-ID:varint> <PAYLOAD>
// FRAME-LENGTH counts everything after itself. The length prefix is untrusted: split_frame()
// checks it against the limit before the caller buffers a single payload byte.
#pragma once

#include <cstdint>
#include <span>

#include "varint.hpp"

namespace spop {

enum class frame_type : std::uint8_t {
    unset = 0, ///< 2.x fragment continuation / abort; never sent unless fragmentation was agreed
    haproxy_hello = 1,
    haproxy_disconnect = 2,
    notify = 3,
    agent_hello = 101,
    agent_disconnect = 102,
    ack = 103,
};

inline constexpr std::uint32_t flag_fin = 0x00000001;
inline constexpr std::uint32_t flag_abort = 0x00000002;

/// Bytes of the length prefix.
inline constexpr std::size_t frame_length_size = 4;
/// The smallest FRAME-LENGTH: type + flags + 1-byte stream-id + 1-byte frame-id.
inline constexpr std::uint32_t min_frame_length = 7;
/// HAProxy's range for max-frame-size: [256, tune.bufsize-4]; 16380 with the default buffer.
inline constexpr std::uint32_t min_max_frame_size = 256;
inline constexpr std::uint32_t default_max_frame_size = 16380;
/// Our own ceiling for a configured max-frame-size (HAProxy's tune.bufsize is rarely > 1 MiB).
inline constexpr std::uint32_t max_max_frame_size = 16u * 1024u * 1024u;

/// A decoded frame. `payload` views the input buffer and is valid as long as it is.
struct frame {
    frame_type type{};
    std::uint32_t flags = 0;
    std::uint64_t stream_id = 0;
    std::uint64_t frame_id = 0;
    std::span<const std::uint8_t> payload{};

    [[nodiscard]] constexpr bool fin() const noexcept { return (flags & flag_fin) != 0; }
    [[nodiscard]] constexpr bool abort() const noexcept { return (flags & flag_abort) != 0; }
};

[[nodiscard]] constexpr std::uint32_t load_be32(const std::uint8_t* p) noexcept {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           std::uint32_t{p[3]};
}

constexpr void store_be32(std::uint8_t* p, std::uint32_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 24);
    p[1] = static_cast<std::uint8_t>(v >> 16);
    p[2] = static_cast<std::uint8_t>(v >> 8);
    p[3] = static_cast<std::uint8_t>(v);
}

/// Checks a FRAME-LENGTH value against the limit. The cheap first gate on untrusted input.
[[nodiscard]] constexpr errc check_frame_length(std::uint32_t len,
                                                std::uint32_t max_frame_size) noexcept {
    if (len > max_frame_size) return errc::frame_too_big;
    if (len < min_frame_length) return errc::frame_too_small;
    return errc::ok;
}

/// Decodes the part of a frame after the length prefix: `body` is exactly FRAME-LENGTH bytes.
/// Errors: frame_too_small, varint_overflow, truncated (ids run past the frame).
[[nodiscard]] constexpr result decode_frame_body(std::span<const std::uint8_t> body,
                                                 frame& out) noexcept {
    if (body.size() < min_frame_length) return {errc::frame_too_small, 0};
    const std::uint8_t* p = body.data();
    const std::uint8_t* const end = p + body.size();
    out.type = static_cast<frame_type>(p[0]);
    out.flags = load_be32(p + 1);
    p += 5;
    result r = decode_varint(p, end, out.stream_id);
    if (r.ec == errc::need_more) return {errc::truncated, 5};
    if (!r) return {r.ec, 5 + r.consumed};
    p += r.consumed;
    r = decode_varint(p, end, out.frame_id);
    if (r.ec == errc::need_more)
        return {errc::truncated, static_cast<std::size_t>(p - body.data())};
    if (!r) return {r.ec, static_cast<std::size_t>(p - body.data()) + r.consumed};
    p += r.consumed;
    out.payload = {p, end};
    return {errc::ok, body.size()};
}

/// Takes one complete frame off the front of `in`.
/// - ok: `out` is the frame, `consumed` = 4 + FRAME-LENGTH;
/// - need_more: `in` holds less than one frame (the length, if readable, was within limits);
/// - frame_too_big / frame_too_small: the length prefix alone is unacceptable (consumed 0);
/// - varint_overflow / truncated: the ids are malformed.
[[nodiscard]] constexpr result split_frame(std::span<const std::uint8_t> in,
                                           std::uint32_t max_frame_size, frame& out) noexcept {
    if (in.size() < frame_length_size) return {errc::need_more, 0};
    const std::uint32_t len = load_be32(in.data());
    if (const errc e = check_frame_length(len, max_frame_size); e != errc::ok) return {e, 0};
    if (in.size() - frame_length_size < len) return {errc::need_more, 0};
    const result r = decode_frame_body(in.subspan(frame_length_size, len), out);
    if (!r) return {r.ec, frame_length_size + r.consumed};
    return {errc::ok, frame_length_size + len};
}

/// Size of the header (length prefix included) for the given ids.
[[nodiscard]] constexpr std::size_t frame_header_size(std::uint64_t sid,
                                                      std::uint64_t fid) noexcept {
    return frame_length_size + 5 + varint_size(sid) + varint_size(fid);
}

/// Writes a frame header with a zero length; the caller patches the length with store_be32 once
/// the payload is written. `out` must have room for frame_header_size(sid, fid).
constexpr std::uint8_t* encode_frame_header_unchecked(frame_type type, std::uint32_t flags,
                                                      std::uint64_t sid, std::uint64_t fid,
                                                      std::uint8_t* out) noexcept {
    store_be32(out, 0);
    out[4] = static_cast<std::uint8_t>(type);
    store_be32(out + 5, flags);
    out = encode_varint_unchecked(sid, out + 9);
    return encode_varint_unchecked(fid, out);
}

} // namespace spop
