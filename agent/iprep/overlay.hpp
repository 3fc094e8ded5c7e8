// Live decisions on top of the static tables: an immutable overlay of prefixes, each with a
// score, an absolute expiry (Unix seconds, 0 = none) and a category, built off the hot path by
// the decisions follower and published through reputation_source::publish_overlay() (the same
// atomic exchange and RCU reclamation as the static snapshot).
//
// Expiry is checked at lookup, against CLOCK_REALTIME_COARSE, so a decision stops applying in
// the very second it expires, whatever the follower is doing (Redis down included). A lookup
// whose longest matching decision has expired falls back to the next shorter decision that
// contains it (each record keeps its parent: the longest strictly shorter decision containing
// it), then to the static tables. The follower also republishes without expired records, to
// free them; correctness does not depend on it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "lpm.hpp"
#include "parse.hpp"

namespace agent::iprep {

struct overlay_entry {
    net_prefix prefix;
    int score = 0;              ///< 0..100
    std::int64_t expiry = 0;    ///< absolute Unix seconds; 0 = never
    std::uint32_t category = 0; ///< category_pool id, 0 = none
};

class overlay {
  public:
    struct record {
        std::int64_t expiry;
        std::uint32_t parent; ///< index + 1 of the containing decision, 0 = none
        std::uint32_t category;
        std::int32_t score;
    };
    /// Most decisions in one overlay (values are record indexes + 1 in 25 bits).
    static constexpr std::size_t max_entries = lpm_max_value - 1;

    /// The live decision for `ip` (4 or 16 bytes, network order; IPv4-mapped IPv6 looks in the
    /// IPv4 table) at Unix second `now`, or nullptr.
    [[nodiscard]] const record* lookup(const std::uint8_t* ip, bool v6,
                                       std::int64_t now) const noexcept;
    /// As lookup(), reading the coarse wall clock only when some decision matches.
    [[nodiscard]] const record* lookup_now(const std::uint8_t* ip, bool v6) const noexcept;

    [[nodiscard]] std::size_t size() const noexcept { return recs_.size(); }
    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return v4_.memory_bytes() + v6_.memory_bytes() + recs_.capacity() * sizeof(record);
    }

  private:
    friend std::unique_ptr<overlay> build_overlay(std::vector<overlay_entry>& entries);
    [[nodiscard]] std::uint32_t match(const std::uint8_t* ip, bool v6) const noexcept;
    const record* live(std::uint32_t v, std::int64_t now) const noexcept;

    lpm4_sparse v4_; // rebuilt per change: see lpm4_sparse
    lpm6 v6_;
    std::vector<record> recs_;
};

/// Builds an overlay (sorts `entries`; for a prefix given twice the last one wins). Returns
/// nullptr when there are more than overlay::max_entries entries or memory runs out.
std::unique_ptr<overlay> build_overlay(std::vector<overlay_entry>& entries);

/// The current Unix second from CLOCK_REALTIME_COARSE (a vDSO read, no system call).
[[nodiscard]] std::int64_t coarse_unix_now() noexcept;

} // namespace agent::iprep
