// What a table leaf holds: the outcome, the score and the category id packed in 25 bits, and
// the process-wide pool of category strings those ids point into.
//
// Categories are interned once and never freed, so a lookup result's string_view stays valid
// after the snapshot it came from has been retired; the worker copies it into the ACK after
// the lookup returns. The pool is bounded (max_categories distinct strings over the process
// lifetime, 65 bytes each, about 4 MiB at worst).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace agent::iprep {

inline constexpr std::size_t category_max_len = 64; // = reputation_max_category
inline constexpr std::uint32_t max_categories = 65535;

enum class outcome_bits : std::uint32_t { listed = 1, allowed = 2 };

[[nodiscard]] constexpr std::uint32_t encode_value(outcome_bits o, int score,
                                                   std::uint32_t category) noexcept {
    return (static_cast<std::uint32_t>(o) << 23) | (static_cast<std::uint32_t>(score) << 16) |
           (category & 0xFFFFu);
}
[[nodiscard]] constexpr std::uint32_t value_outcome(std::uint32_t v) noexcept {
    return (v >> 23) & 3u;
}
[[nodiscard]] constexpr int value_score(std::uint32_t v) noexcept {
    return static_cast<int>((v >> 16) & 0x7Fu);
}
[[nodiscard]] constexpr std::uint32_t value_category(std::uint32_t v) noexcept {
    return v & 0xFFFFu;
}

class category_pool {
  public:
    static category_pool& instance() noexcept;
    category_pool() = default;
    ~category_pool() {
        for (auto* c : chunks_) delete[] c;
    }
    category_pool(const category_pool&) = delete;
    category_pool& operator=(const category_pool&) = delete;

    /// Returns the id of `s` (1..max_categories), adding it if new; 0 if the pool is full.
    /// `s` is truncated to category_max_len bytes. Off the hot path (takes a mutex).
    std::uint32_t intern(std::string_view s);

    /// The string for an id from intern(); empty for 0. Lock-free: an entry never changes once
    /// its id has been handed out, and a snapshot using the id is published after it.
    [[nodiscard]] std::string_view get(std::uint32_t id) const noexcept {
        if (id == 0 || id > max_categories) return {};
        const entry* chunk = chunks_[(id - 1) / chunk_entries];
        if (chunk == nullptr) return {};
        const entry& e = chunk[(id - 1) % chunk_entries];
        return {e.s, e.len};
    }

    [[nodiscard]] std::size_t size() const;

  private:
    struct entry {
        std::uint8_t len = 0;
        char s[category_max_len]{};
    };
    static constexpr std::uint32_t chunk_entries = 1024;
    static constexpr std::uint32_t nchunks = (max_categories + chunk_entries - 1) / chunk_entries;

    mutable std::mutex mu_;
    std::unordered_map<std::string, std::uint32_t> ids_;
    std::uint32_t next_ = 1;
    entry* chunks_[nchunks]{};
};

} // namespace agent::iprep
