// The load generator's and the codec benchmark's reading of an IP-reputation ACK, on the
// library's action parser (spop/actions.hpp).
#pragma once

#include <cstdint>
#include <string_view>

#include <spop/actions.hpp>

namespace spop_bench {

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
static_assert(spop::action_handler<ip_score_handler>);

} // namespace spop_bench
