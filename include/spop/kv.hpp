// KV-LIST parser for HELLO and DISCONNECT payloads: { <NAME> <TYPED-DATA> }* until the end of
// the frame. Names carry no type byte (PROTOCOL-NOTES §4).
#pragma once

#include <concepts>
#include <span>
#include <string_view>

#include "data.hpp"

namespace spop {

/// A HELLO/DISCONNECT handler.
///
///   action on_kv(std::string_view key, const value& v)
///     Called once per pair, in wire order. `key` and any view inside `v` point into the
///     payload passed to parse_kv_list() and stay valid exactly as long as that buffer.
///     Return action::stop to end the parse early; parse_kv_list() then returns
///     errc::stopped with `consumed` just past this pair.
template <class H>
concept kv_handler = requires(H& h, std::string_view key, const value& v) {
    { h.on_kv(key, v) } -> std::same_as<action>;
};

/// Accepts every pair. Useful to validate a payload.
struct null_kv_handler {
    constexpr action on_kv(std::string_view, const value&) noexcept { return action::proceed; }
};
static_assert(kv_handler<null_kv_handler>);

/// Parses a whole KV-LIST payload.
/// Returns ok, stopped, truncated, varint_overflow or bad_data_type; `consumed` is the offset
/// reached (on error, the offset of the element that failed).
template <kv_handler H>
[[nodiscard]] inline result parse_kv_list(std::span<const std::uint8_t> payload,
                                          H& handler) noexcept {
    const std::uint8_t* p = payload.data();
    const std::uint8_t* const end = p + payload.size();
    const auto offset = [&](const std::uint8_t* at) {
        return static_cast<std::size_t>(at - payload.data());
    };
    while (p != end) {
        std::string_view key;
        result r = decode_name(p, end, key);
        if (!r) return {r.ec, offset(p)};
        const std::uint8_t* vp = p + r.consumed;
        value v;
        r = decode_value(vp, end, v);
        if (!r) return {r.ec, offset(p)};
        p = vp + r.consumed;
        if (handler.on_kv(key, v) == action::stop) return {errc::stopped, offset(p)};
    }
    return {errc::ok, payload.size()};
}

} // namespace spop
