// LIST-OF-ACTIONS parser: the HAProxy side of an ACK, the mirror of ack_writer.
//   { <ACTION:u8> <NB-ARGS:u8> <args...> }*
//   SET-VAR   = 01 03 <scope:u8> <NAME> <TYPED-DATA>
//   UNSET-VAR = 02 02 <scope:u8> <NAME>
// HAProxy silently stops at the first malformed action (PROTOCOL-NOTES §4), which hides an
// agent's bug behind a missing variable. This parser is for the other side of the test: load
// generators, synthetic clients and tests, which want to know, so every deviation is an error.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "data.hpp"
#include "status.hpp"
#include "writer.hpp"

namespace spop {

/// An ACK handler. Every view passed to a callback (the name and any view inside the value)
/// points into the payload given to parse_actions() and lives exactly as long as that buffer;
/// copy what you keep longer.
///
///   action on_set_var(var_scope scope, std::string_view name, const value& v)
///     One SET-VAR, in wire order. A NULL value is passed as is (HAProxy treats it as an unset).
///   action on_unset_var(var_scope scope, std::string_view name)
///     One UNSET-VAR.
///
/// Names are passed as sent, empty ones included; HAProxy's limit on the full variable name
/// (haproxy_max_var_full_name) is the caller's to check. Either callback may return
/// action::stop: parse_actions() then returns errc::stopped with `consumed` just past the action
/// that was reported.
template <class H>
concept action_handler = requires(H& h, var_scope s, std::string_view name, const value& v) {
    { h.on_set_var(s, name, v) } -> std::same_as<action>;
    { h.on_unset_var(s, name) } -> std::same_as<action>;
};

/// Accepts every action. Validates an ACK payload without looking at it.
struct null_action_handler {
    constexpr action on_set_var(var_scope, std::string_view, const value&) noexcept {
        return action::proceed;
    }
    constexpr action on_unset_var(var_scope, std::string_view) noexcept { return action::proceed; }
};
static_assert(action_handler<null_action_handler>);
static_assert(!action_handler<int>);

/// Parses a whole ACK payload (the bytes after the frame header), strictly. No allocation, no
/// exception; the handler is called before the next action is read, so the actions before an
/// error have been delivered.
///
/// Returns
///   ok              every action was valid and delivered; `consumed` == payload.size()
///   stopped         a callback returned action::stop; `consumed` is just past that action
///   bad_action      an action type other than SET-VAR (1) or UNSET-VAR (2), NB-ARGS other than
///                   3 (SET-VAR) or 2 (UNSET-VAR), or a scope above 4 (res)
///   truncated       an action runs past the end of the payload
///   varint_overflow a name length or an integer value over 10 bytes or above 2^64-1
///   bad_data_type   a value of the reserved types 10..15
/// On error, `consumed` is the offset of the byte or field that failed: the type, NB-ARGS or
/// scope byte for bad_action, the NAME or TYPED-DATA field otherwise (the first missing byte's
/// offset when the 3-byte action header itself is cut).
template <action_handler H>
[[nodiscard]] inline result parse_actions(std::span<const std::uint8_t> payload,
                                          H& handler) noexcept {
    const std::uint8_t* p = payload.data();
    const std::uint8_t* const end = p + payload.size();
    const auto offset = [&](const std::uint8_t* at) {
        return static_cast<std::size_t>(at - payload.data());
    };
    constexpr auto set_var = static_cast<std::uint8_t>(action_type::set_var);
    constexpr auto unset_var = static_cast<std::uint8_t>(action_type::unset_var);
    while (p != end) {
        const std::uint8_t type = *p;
        if (type != set_var && type != unset_var) return {errc::bad_action, offset(p)};
        if (++p == end) return {errc::truncated, offset(p)};
        if (*p != (type == set_var ? 3 : 2)) return {errc::bad_action, offset(p)};
        if (++p == end) return {errc::truncated, offset(p)};
        if (*p > static_cast<std::uint8_t>(var_scope::res)) return {errc::bad_action, offset(p)};
        const auto scope = static_cast<var_scope>(*p++);
        std::string_view name;
        result r = decode_name(p, end, name);
        if (!r) return {r.ec, offset(p)};
        p += r.consumed;
        action a;
        if (type == set_var) {
            value v;
            r = decode_value(p, end, v);
            if (!r) return {r.ec, offset(p)};
            p += r.consumed;
            a = handler.on_set_var(scope, name, v);
        } else {
            a = handler.on_unset_var(scope, name);
        }
        if (a == action::stop) return {errc::stopped, offset(p)};
    }
    return {errc::ok, payload.size()};
}

} // namespace spop
