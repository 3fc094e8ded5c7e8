// HAProxy's variable-length integer ("peers encoding", include/haproxy/intops.h).
//
// NOT LEB128: the first byte carries values < 240 directly, and a first byte >= 240 starts a
// sequence whose continuation bits are *part of the value* (the encoder subtracts them back
// out). The code is bijective, so there is no overlong form to reject; the only failures are a
// truncated buffer and a sequence longer than 10 bytes or above 2^64-1.
#pragma once

#include <cstddef>
#include <cstdint>

#include "status.hpp"

namespace spop {

/// The longest encoding: 2^64-1 takes 10 bytes.
inline constexpr std::size_t max_varint_size = 10;

/// Bytes needed to encode `v`.
[[nodiscard]] constexpr std::size_t varint_size(std::uint64_t v) noexcept {
    if (v < 240) return 1;
    std::size_t n = 1;
    v = (v - 240) >> 4;
    while (v >= 128) {
        ++n;
        v = (v - 128) >> 7;
    }
    return n + 1;
}

/// Writes `v` at `out`, which must have room for varint_size(v) bytes. Returns one past the
/// last byte written.
constexpr std::uint8_t* encode_varint_unchecked(std::uint64_t v, std::uint8_t* out) noexcept {
    if (v < 240) {
        *out++ = static_cast<std::uint8_t>(v);
        return out;
    }
    *out++ = static_cast<std::uint8_t>(v | 0xF0);
    v = (v - 240) >> 4;
    while (v >= 128) {
        *out++ = static_cast<std::uint8_t>(v | 0x80);
        v = (v - 128) >> 7;
    }
    *out++ = static_cast<std::uint8_t>(v);
    return out;
}

/// Encodes `v` into [out, end). Returns one past the last byte, or nullptr if it does not fit.
constexpr std::uint8_t* encode_varint(std::uint64_t v, std::uint8_t* out,
                                      std::uint8_t* end) noexcept {
    if (static_cast<std::size_t>(end - out) < varint_size(v)) return nullptr;
    return encode_varint_unchecked(v, out);
}

/// Decodes one varint from [p, end).
/// - ok: `out` holds the value, `consumed` the bytes read (1..10);
/// - need_more: the buffer ended inside the varint (nothing is consumed);
/// - varint_overflow: more than 10 bytes, or a value above 2^64-1.
[[nodiscard]] constexpr result decode_varint(const std::uint8_t* p, const std::uint8_t* end,
                                             std::uint64_t& out) noexcept {
    if (p == end) return {errc::need_more, 0};
    std::uint64_t v = p[0];
    if (v < 240) {
        out = v;
        return {errc::ok, 1};
    }
    unsigned shift = 4;
    for (std::size_t i = 1; i < max_varint_size; ++i) {
        if (p + i == end) return {errc::need_more, 0};
        const std::uint64_t b = p[i];
        // The 10th byte is at shift 60: only its low 4 bits fit in 64 bits, and the sum must
        // not wrap. Checking both rejects everything above 2^64-1.
        const std::uint64_t add = b << shift;
        if (shift > 0 && (add >> shift) != b) return {errc::varint_overflow, i};
        if (v + add < v) return {errc::varint_overflow, i};
        v += add;
        if (b < 128) {
            out = v;
            return {errc::ok, i + 1};
        }
        shift += 7;
    }
    return {errc::varint_overflow, max_varint_size};
}

} // namespace spop
