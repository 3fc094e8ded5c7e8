// LIST-OF-ACTIONS parser: the HAProxy side of an ACK (PROTOCOL-NOTES §4).
//   { <ACTION:u8> <NB-ARGS:u8> <args...> }*
//   SET-VAR   = 01 03 <scope:u8> <NAME> <TYPED-DATA>
//   UNSET-VAR = 02 02 <scope:u8> <NAME>
// HAProxy silently stops at the first malformed action; a load generator wants to know, so
// every deviation is an error here.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include <spop/data.hpp>
#include <spop/status.hpp>
#include <spop/writer.hpp>

namespace spop_bench {

enum class ack_errc : std::uint8_t {
    ok = 0,
    truncated,   ///< an action runs past the end of the frame
    bad_action,  ///< action type other than SET-VAR (1) / UNSET-VAR (2)
    bad_nb_args, ///< NB-ARGS is not exactly 3 (SET-VAR) or 2 (UNSET-VAR)
    bad_scope,   ///< scope above 4 (res)
    bad_value,   ///< malformed typed data or name
    stopped,     ///< the handler asked to stop
};

[[nodiscard]] constexpr std::string_view message(ack_errc e) noexcept {
    switch (e) {
    case ack_errc::ok:
        return "ok";
    case ack_errc::truncated:
        return "action truncated";
    case ack_errc::bad_action:
        return "unknown action type";
    case ack_errc::bad_nb_args:
        return "wrong NB-ARGS for the action";
    case ack_errc::bad_scope:
        return "unknown variable scope";
    case ack_errc::bad_value:
        return "malformed variable name or value";
    case ack_errc::stopped:
        return "stopped by handler";
    }
    return "unknown";
}

struct [[nodiscard]] ack_result {
    ack_errc ec = ack_errc::ok;
    std::size_t consumed = 0; ///< offset reached; on error, the offset of the failing action
    constexpr explicit operator bool() const noexcept { return ec == ack_errc::ok; }
};

/// An ACK handler.
///   action on_set_var(var_scope, std::string_view name, const value& v)
///   action on_unset_var(var_scope, std::string_view name)
/// Views point into the payload. Returning action::stop ends the parse with ack_errc::stopped.
template <class H>
concept ack_handler = requires(H& h, spop::var_scope s, std::string_view n, const spop::value& v) {
    { h.on_set_var(s, n, v) } -> std::same_as<spop::action>;
    { h.on_unset_var(s, n) } -> std::same_as<spop::action>;
};

template <ack_handler H>
[[nodiscard]] constexpr ack_result parse_actions(std::span<const std::uint8_t> payload,
                                                 H& handler) noexcept {
    const std::uint8_t* p = payload.data();
    const std::uint8_t* const end = p + payload.size();
    while (p != end) {
        const auto at = static_cast<std::size_t>(p - payload.data());
        if (end - p < 3) return {ack_errc::truncated, at};
        const std::uint8_t type = p[0];
        const std::uint8_t nb = p[1];
        const std::uint8_t scope = p[2];
        if (type != static_cast<std::uint8_t>(spop::action_type::set_var) &&
            type != static_cast<std::uint8_t>(spop::action_type::unset_var))
            return {ack_errc::bad_action, at};
        const bool set = type == static_cast<std::uint8_t>(spop::action_type::set_var);
        if (nb != (set ? 3 : 2)) return {ack_errc::bad_nb_args, at};
        if (scope > static_cast<std::uint8_t>(spop::var_scope::res))
            return {ack_errc::bad_scope, at};
        p += 3;
        std::string_view name;
        spop::result r = spop::decode_name(p, end, name);
        if (r.ec == spop::errc::truncated) return {ack_errc::truncated, at};
        if (!r) return {ack_errc::bad_value, at};
        p += r.consumed;
        spop::action a;
        if (set) {
            spop::value v;
            r = spop::decode_value(p, end, v);
            if (r.ec == spop::errc::truncated) return {ack_errc::truncated, at};
            if (!r) return {ack_errc::bad_value, at};
            p += r.consumed;
            a = handler.on_set_var(static_cast<spop::var_scope>(scope), name, v);
        } else {
            a = handler.on_unset_var(static_cast<spop::var_scope>(scope), name);
        }
        if (a == spop::action::stop)
            return {ack_errc::stopped, static_cast<std::size_t>(p - payload.data())};
    }
    return {ack_errc::ok, payload.size()};
}

/// Picks `SET-VAR sess ip_score <integer>` out of an ACK. Other actions are accepted and ignored
/// (an agent may add a no-op UNSET-VAR); a second ip_score or a non-integer one is flagged.
struct ip_score_handler {
    bool has_score = false;
    bool bad = false;
    std::int64_t score = -1;

    spop::action on_set_var(spop::var_scope s, std::string_view name,
                            const spop::value& v) noexcept {
        if (s != spop::var_scope::sess || name != "ip_score") return spop::action::proceed;
        if (has_score || !v.is_integer()) bad = true;
        has_score = true;
        score = v.as_int();
        return spop::action::proceed;
    }
    spop::action on_unset_var(spop::var_scope, std::string_view) noexcept {
        return spop::action::proceed;
    }

    /// A valid reputation answer: exactly one integer ip_score in 0..100.
    [[nodiscard]] bool valid() const noexcept {
        return has_score && !bad && score >= 0 && score <= 100;
    }
};
static_assert(ack_handler<ip_score_handler>);

} // namespace spop_bench
