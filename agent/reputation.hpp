// Where scores come from besides randomness: reputation tables (lists, allow-lists, CSV,
// MaxMind DB), built off the hot path and swapped in atomically. Workers read the current
// snapshot without locks and without a virtual call.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

namespace agent {

inline constexpr std::size_t reputation_max_category = 64;

enum class lookup_outcome : std::uint8_t { unlisted, listed, allowed };

struct lookup_result {
    lookup_outcome outcome = lookup_outcome::unlisted;
    int score = 0;
    std::string_view category{}; ///< at most reputation_max_category bytes; lives with the snapshot
};

/// The tables the service consults. With no list configured every address is unlisted and
/// the service falls back to --default-score (random by default).
class reputation_source {
  public:
    /// `ip` is 4 or 16 bytes in network order.
    [[nodiscard]] lookup_result lookup(const std::uint8_t*, bool) const noexcept { return {}; }
};

} // namespace agent
