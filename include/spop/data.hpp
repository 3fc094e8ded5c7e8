// SPOP typed data (SPOE.txt §3.1): a type byte (low nibble = type, high nibble = flags) and a
// body. Decoded values are *views*: strings, binaries and addresses point into the input
// buffer and live exactly as long as it does.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "varint.hpp"

namespace spop {

enum class data_type : std::uint8_t {
    null = 0,
    boolean = 1,
    int32 = 2,
    uint32 = 3,
    int64 = 4,
    uint64 = 5,
    ipv4 = 6,
    ipv6 = 7,
    string = 8,
    binary = 9,
};

inline constexpr std::uint8_t data_type_mask = 0x0F;
inline constexpr std::uint8_t data_flag_true = 0x10;

/// One typed value. For string/binary/ipv4/ipv6 `bytes` views the body (4 or 16 bytes for
/// addresses, network order). Integers keep the raw 64-bit wire value: HAProxy sends every
/// integer sample as INT64 two's complement, so as_int() is the signed reading and as_uint()
/// the unsigned one, whatever the declared width.
struct value {
    data_type type = data_type::null;
    bool boolean = false;
    std::uint64_t integer = 0;
    std::string_view bytes{};

    [[nodiscard]] constexpr std::int64_t as_int() const noexcept {
        return static_cast<std::int64_t>(integer);
    }
    [[nodiscard]] constexpr std::uint64_t as_uint() const noexcept { return integer; }
    [[nodiscard]] constexpr bool is_integer() const noexcept {
        return type == data_type::int32 || type == data_type::uint32 || type == data_type::int64 ||
               type == data_type::uint64;
    }
    [[nodiscard]] std::span<const std::uint8_t> byte_span() const noexcept {
        return {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()};
    }

    // Constructors for encoding. The views must outlive the encode call only.
    static constexpr value null() noexcept { return {}; }
    static constexpr value from_bool(bool b) noexcept { return {data_type::boolean, b, 0, {}}; }
    /// INT32 negatives are sent as 64-bit two's complement (10 bytes): HAProxy reads every
    /// integer as a u64, so a 32-bit two's complement would arrive as 4294967295.
    static constexpr value from_int32(std::int32_t v) noexcept {
        return {
            data_type::int32, false, static_cast<std::uint64_t>(static_cast<std::int64_t>(v)), {}};
    }
    static constexpr value from_uint32(std::uint32_t v) noexcept {
        return {data_type::uint32, false, v, {}};
    }
    static constexpr value from_int64(std::int64_t v) noexcept {
        return {data_type::int64, false, static_cast<std::uint64_t>(v), {}};
    }
    static constexpr value from_uint64(std::uint64_t v) noexcept {
        return {data_type::uint64, false, v, {}};
    }
    /// `addr` views exactly 4 bytes in network order.
    static value from_ipv4(std::span<const std::uint8_t, 4> addr) noexcept {
        return {
            data_type::ipv4, false, 0, {reinterpret_cast<const char*>(addr.data()), addr.size()}};
    }
    /// `addr` views exactly 16 bytes in network order.
    static value from_ipv6(std::span<const std::uint8_t, 16> addr) noexcept {
        return {
            data_type::ipv6, false, 0, {reinterpret_cast<const char*>(addr.data()), addr.size()}};
    }
    static constexpr value from_string(std::string_view s) noexcept {
        return {data_type::string, false, 0, s};
    }
    static constexpr value from_binary(std::string_view b) noexcept {
        return {data_type::binary, false, 0, b};
    }

    friend constexpr bool operator==(const value&, const value&) = default;
};

/// Decodes a NAME (varint length + bytes, no type byte) from [p, end).
/// ok / truncated (length runs past end) / varint_overflow. On need_more from the varint the
/// name is truncated too: names only appear inside complete frames.
[[nodiscard]] inline result decode_name(const std::uint8_t* p, const std::uint8_t* end,
                                        std::string_view& out) noexcept {
    std::uint64_t len = 0;
    const result r = decode_varint(p, end, len);
    if (r.ec == errc::need_more) return {errc::truncated, 0};
    if (!r) return r;
    if (len > static_cast<std::uint64_t>(end - p) - r.consumed)
        return {errc::truncated, r.consumed};
    out = std::string_view(reinterpret_cast<const char*>(p + r.consumed),
                           static_cast<std::size_t>(len));
    return {errc::ok, r.consumed + static_cast<std::size_t>(len)};
}

/// Decodes one typed value from [p, end), which must be the rest of a complete frame.
/// Errors: truncated, varint_overflow, bad_data_type (types 10..15).
[[nodiscard]] inline result decode_value(const std::uint8_t* p, const std::uint8_t* end,
                                         value& out) noexcept {
    if (p == end) return {errc::truncated, 0};
    const std::uint8_t tb = *p;
    const auto type = static_cast<data_type>(tb & data_type_mask);
    out.type = type;
    out.boolean = false;
    out.integer = 0;
    out.bytes = {};
    switch (type) {
    case data_type::null:
        return {errc::ok, 1};
    case data_type::boolean:
        out.boolean = (tb & data_flag_true) != 0;
        return {errc::ok, 1};
    case data_type::int32:
    case data_type::uint32:
    case data_type::int64:
    case data_type::uint64: {
        const result r = decode_varint(p + 1, end, out.integer);
        if (r.ec == errc::need_more) return {errc::truncated, 1};
        if (!r) return {r.ec, 1 + r.consumed};
        return {errc::ok, 1 + r.consumed};
    }
    case data_type::ipv4:
    case data_type::ipv6: {
        const std::size_t n = type == data_type::ipv4 ? 4 : 16;
        if (static_cast<std::size_t>(end - p) - 1 < n) return {errc::truncated, 1};
        out.bytes = std::string_view(reinterpret_cast<const char*>(p + 1), n);
        return {errc::ok, 1 + n};
    }
    case data_type::string:
    case data_type::binary: {
        const result r = decode_name(p + 1, end, out.bytes);
        if (!r) return {r.ec, 1 + r.consumed};
        return {errc::ok, 1 + r.consumed};
    }
    }
    return {errc::bad_data_type, 0};
}

/// Bytes needed to encode `v`.
[[nodiscard]] constexpr std::size_t value_size(const value& v) noexcept {
    switch (v.type) {
    case data_type::null:
    case data_type::boolean:
        return 1;
    case data_type::int32:
    case data_type::uint32:
    case data_type::int64:
    case data_type::uint64:
        return 1 + varint_size(v.integer);
    case data_type::ipv4:
        return 5;
    case data_type::ipv6:
        return 17;
    case data_type::string:
    case data_type::binary:
        return 1 + varint_size(v.bytes.size()) + v.bytes.size();
    }
    return 1;
}

/// Encodes `v` into [out, end); returns one past the last byte, or nullptr when it does not fit.
/// An ipv4/ipv6 value whose view is not exactly 4/16 bytes is encoded as NULL, never read past.
inline std::uint8_t* encode_value(const value& v, std::uint8_t* out, std::uint8_t* end) noexcept {
    if (static_cast<std::size_t>(end - out) < value_size(v)) return nullptr;
    switch (v.type) {
    case data_type::null:
        *out++ = 0;
        return out;
    case data_type::boolean:
        *out++ = static_cast<std::uint8_t>(1 | (v.boolean ? data_flag_true : 0));
        return out;
    case data_type::int32:
    case data_type::uint32:
    case data_type::int64:
    case data_type::uint64:
        *out++ = static_cast<std::uint8_t>(v.type);
        return encode_varint_unchecked(v.integer, out);
    case data_type::ipv4:
    case data_type::ipv6: {
        const std::size_t n = v.type == data_type::ipv4 ? 4 : 16;
        if (v.bytes.size() != n) {
            *out++ = 0;
            return out;
        }
        *out++ = static_cast<std::uint8_t>(v.type);
        std::memcpy(out, v.bytes.data(), n);
        return out + n;
    }
    case data_type::string:
    case data_type::binary:
        *out++ = static_cast<std::uint8_t>(v.type);
        out = encode_varint_unchecked(v.bytes.size(), out);
        if (!v.bytes.empty()) std::memcpy(out, v.bytes.data(), v.bytes.size());
        return out + v.bytes.size();
    }
    return nullptr;
}

/// Encodes a NAME (varint length + bytes, no type byte). nullptr when it does not fit.
inline std::uint8_t* encode_name(std::string_view name, std::uint8_t* out,
                                 std::uint8_t* end) noexcept {
    const std::size_t need = varint_size(name.size()) + name.size();
    if (static_cast<std::size_t>(end - out) < need) return nullptr;
    out = encode_varint_unchecked(name.size(), out);
    if (!name.empty()) std::memcpy(out, name.data(), name.size());
    return out + name.size();
}

} // namespace spop
