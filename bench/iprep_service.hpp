// The benchmarks' stand-in for the agent's IP-reputation service (agent/iprep_service.hpp minus
// the reputation tables and counters): parse `check-client-ip`, answer SET-VAR sess ip_score
// <0..100>. The score is a hash of the address instead of a random draw, so outputs can be
// verified byte for byte before timing.
#pragma once

#include <cstdint>
#include <string_view>

#include <spop/spop.hpp>

namespace spop_bench {

/// A deterministic score in 0..100 (FNV-1a of the address bytes).
[[nodiscard]] inline std::uint32_t score_of(std::string_view addr) noexcept {
    std::uint32_t h = 2166136261u;
    for (const char c : addr) {
        h ^= static_cast<std::uint8_t>(c);
        h *= 16777619u;
    }
    return h % 101;
}

/// Collects the address argument of `check-client-ip`: the one named `ip`, or an unnamed one
/// (`args src`). Other messages and arguments are skipped.
struct ip_handler {
    std::string_view ip{};
    bool in_message = false;

    spop::action on_message(std::string_view name, std::uint8_t) noexcept {
        in_message = name == "check-client-ip";
        return spop::action::proceed;
    }
    spop::action on_arg(std::string_view name, const spop::value& v) noexcept {
        if (in_message && ip.empty() &&
            (v.type == spop::data_type::ipv4 || v.type == spop::data_type::ipv6) &&
            (name == "ip" || name.empty()))
            ip = v.bytes;
        return spop::action::proceed;
    }
    spop::action on_message_end() noexcept {
        in_message = false;
        return spop::action::proceed;
    }
};
static_assert(spop::notify_handler<ip_handler>);

/// Writes the ip_score action for `ip` (does nothing when no address was found).
inline void write_score(spop::ack_writer& ack, std::string_view ip) noexcept {
    if (!ip.empty())
        ack.set_var(spop::var_scope::sess, "ip_score", spop::value::from_uint32(score_of(ip)));
}

/// The service the connection benchmarks and the loadgen's built-in agent run.
struct iprep_service {
    /// header (4 + 5 + two 10-byte varints) + SET-VAR (3 + 9 + 6) fits in 64.
    static constexpr std::size_t max_ack_size = 64;

    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        ip_handler h;
        const spop::result r = req.parse(h);
        if (!r) return r.ec;
        write_score(ack, h.ip);
        return spop::errc::ok;
    }
};
static_assert(spop::service<iprep_service>);

} // namespace spop_bench
