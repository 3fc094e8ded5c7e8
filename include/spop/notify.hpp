// LIST-OF-MESSAGES parser: the NOTIFY hot path.
//   { <NAME> <NB-ARGS:u8> { <NAME> <TYPED-DATA> } x NB-ARGS }*
// An unnamed argument (`args src`) has an empty name (a single 00 byte). A NOTIFY may carry zero
// messages; HAProxy 3.1-3.3 could send one with an empty payload.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "data.hpp"

namespace spop {

/// A NOTIFY handler. Every view passed to a callback points into the payload given to
/// parse_notify() and lives exactly as long as that buffer; copy what you keep longer.
///
///   action on_message(std::string_view name, std::uint8_t nb_args)
///     A message starts; `nb_args` arguments follow (HAProxy sends all configured args, NULL
///     when a sample is unavailable).
///   action on_arg(std::string_view name, const value& v)
///     One argument of the current message. `name` is empty for unnamed arguments.
///   action on_message_end()
///     The current message's last argument was delivered.
///
/// Any callback may return action::stop: parse_notify() returns errc::stopped immediately, with
/// `consumed` just past the element that was reported.
template <class H>
concept notify_handler = requires(H& h, std::string_view name, const value& v, std::uint8_t n) {
    { h.on_message(name, n) } -> std::same_as<action>;
    { h.on_arg(name, v) } -> std::same_as<action>;
    { h.on_message_end() } -> std::same_as<action>;
};

/// Accepts everything. Validates a payload without looking at it.
struct null_notify_handler {
    constexpr action on_message(std::string_view, std::uint8_t) noexcept { return action::proceed; }
    constexpr action on_arg(std::string_view, const value&) noexcept { return action::proceed; }
    constexpr action on_message_end() noexcept { return action::proceed; }
};
static_assert(notify_handler<null_notify_handler>);
static_assert(!notify_handler<int>);

/// Parses a whole NOTIFY payload.
/// Returns ok, stopped, truncated, varint_overflow or bad_data_type. `consumed` is the offset
/// reached; on error, the offset of the element (name, count or value) that failed.
template <notify_handler H>
[[nodiscard]] inline result parse_notify(std::span<const std::uint8_t> payload,
                                         H& handler) noexcept {
    const std::uint8_t* p = payload.data();
    const std::uint8_t* const end = p + payload.size();
    const auto offset = [&](const std::uint8_t* at) {
        return static_cast<std::size_t>(at - payload.data());
    };
    while (p != end) {
        std::string_view msg;
        result r = decode_name(p, end, msg);
        if (!r) return {r.ec, offset(p)};
        p += r.consumed;
        if (p == end) return {errc::truncated, offset(p)};
        const std::uint8_t nb_args = *p++;
        if (handler.on_message(msg, nb_args) == action::stop) return {errc::stopped, offset(p)};
        for (unsigned i = 0; i < nb_args; ++i) {
            std::string_view arg;
            r = decode_name(p, end, arg);
            if (!r) return {r.ec, offset(p)};
            const std::uint8_t* vp = p + r.consumed;
            value v;
            r = decode_value(vp, end, v);
            if (!r) return {r.ec, offset(vp)};
            p = vp + r.consumed;
            if (handler.on_arg(arg, v) == action::stop) return {errc::stopped, offset(p)};
        }
        if (handler.on_message_end() == action::stop) return {errc::stopped, offset(p)};
    }
    return {errc::ok, payload.size()};
}

} // namespace spop
