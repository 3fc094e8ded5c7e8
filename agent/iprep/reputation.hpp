// Where scores come from besides randomness: reputation tables (lists, allow-lists, CSV,
// MaxMind DB), built off the hot path and swapped in atomically. Workers read the current
// snapshot without locks and without a virtual call.
//
// Snapshot lifetime: the reloader publishes a new snapshot with one atomic exchange, then
// frees the old one only after every lookup that might still read it has finished (see
// rcu.hpp: per-thread sequence numbers written only by their own worker, and
// membarrier() on the reloader's side). If a worker stayed inside a lookup for longer than
// the timeout (it cannot, short of being stopped by a debugger), the old snapshot is kept on a
// retired list and freed at a later publish instead of being freed under the worker's feet.
//
// A lookup result's category points into the process-wide category pool (value.hpp), not into
// the snapshot, so it stays valid after the lookup returns.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "overlay.hpp"
#include "rcu.hpp"
#include "table.hpp"
#include "value.hpp"

namespace agent::iprep {

inline constexpr std::size_t reputation_max_category = category_max_len;

/// `decided`: a live decision (overlay.hpp) matched; it overrides list entries, not the
/// allow-list.
enum class lookup_outcome : std::uint8_t { unlisted, listed, allowed, decided };

struct lookup_result {
    lookup_outcome outcome = lookup_outcome::unlisted;
    int score = 0;
    std::string_view category{}; ///< at most reputation_max_category bytes; never dangles
};

/// The tables the service consults. With no snapshot published every address is unlisted and
/// the service falls back to --default-score (random by default).
class reputation_source {
  public:
    reputation_source() noexcept { rcu::init(); }
    ~reputation_source() {
        delete cur_.load(std::memory_order_acquire);
        for (const auto* s : retired_) delete s;
        delete overlay_.load(std::memory_order_acquire);
        for (const auto* o : retired_overlays_) delete o;
    }
    reputation_source(const reputation_source&) = delete;
    reputation_source& operator=(const reputation_source&) = delete;

    /// `ip` is 4 or 16 bytes in network order. Wait-free: a few loads, no allocation.
    /// Precedence: allow-list, then a live decision (overlay), then the static tables.
    [[nodiscard]] lookup_result lookup(const std::uint8_t* ip, bool v6) const noexcept {
        std::uint32_t v = 0;
        int dscore = -1;
        std::uint32_t dcat = 0;
        {
            rcu::read_guard g;
            const snapshot* s = cur_.load(std::memory_order_acquire);
            if (s != nullptr) v = s->lookup(ip, v6);
            const overlay* d = overlay_.load(std::memory_order_acquire);
            if (d != nullptr &&
                value_outcome(v) != static_cast<std::uint32_t>(outcome_bits::allowed)) {
                if (const overlay::record* r = d->lookup_now(ip, v6)) {
                    dscore = r->score;
                    dcat = r->category;
                }
            }
        }
        if (dscore >= 0)
            return {lookup_outcome::decided, dscore, category_pool::instance().get(dcat)};
        const std::uint32_t o = value_outcome(v);
        if (o == 0) return {};
        return {o == static_cast<std::uint32_t>(outcome_bits::allowed) ? lookup_outcome::allowed
                                                                       : lookup_outcome::listed,
                value_score(v), category_pool::instance().get(value_category(v))};
    }

    /// Makes `next` the snapshot every worker sees from now on (nullptr = no tables), then
    /// frees the previous one once no lookup can still be reading it. Not for the hot path:
    /// it may wait a few microseconds (a membarrier and the lookups in progress).
    void publish(std::unique_ptr<snapshot> next) {
        std::lock_guard<std::mutex> lk(publish_mu_);
        const snapshot* old = cur_.exchange(next.release(), std::memory_order_seq_cst);
        if (old != nullptr) retired_.push_back(old);
        if (retired_.empty()) return;
        if (rcu::synchronize()) {
            for (const auto* s : retired_) delete s;
            retired_.clear();
        }
    }

    /// As publish(), for the live decisions' overlay (nullptr = none).
    void publish_overlay(std::unique_ptr<overlay> next) {
        std::lock_guard<std::mutex> lk(publish_mu_);
        const overlay* old = overlay_.exchange(next.release(), std::memory_order_seq_cst);
        if (old != nullptr) retired_overlays_.push_back(old);
        if (retired_overlays_.empty()) return;
        if (rcu::synchronize()) {
            for (const auto* o : retired_overlays_) delete o;
            retired_overlays_.clear();
        }
    }

    [[nodiscard]] bool loaded() const noexcept {
        return cur_.load(std::memory_order_acquire) != nullptr;
    }
    /// Snapshots waiting to be freed (0 in normal operation).
    [[nodiscard]] std::size_t retired() const {
        std::lock_guard<std::mutex> lk(publish_mu_);
        return retired_.size() + retired_overlays_.size();
    }

  private:
    std::atomic<const snapshot*> cur_{nullptr};
    mutable std::mutex publish_mu_;
    std::vector<const snapshot*> retired_;
    std::atomic<const overlay*> overlay_{nullptr};
    std::vector<const overlay*> retired_overlays_;
};

} // namespace agent::iprep
