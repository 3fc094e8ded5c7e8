// A per-thread free list of fixed-size buffers.
//
// A connection holds an input or output buffer only while it has bytes in it, so an idle
// connection costs a few dozen bytes instead of two max-frame-size buffers. In steady state
// every acquire() is served from the free list: no allocation per frame.
// Not thread-safe by design: one pool per worker, nothing shared.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "frame.hpp"

namespace spop {

/// The receive size of the agent's engines. Any chunk size works with connection::feed(), which
/// takes only what it can answer; this is just a good default for a read buffer.
inline constexpr std::size_t default_feed_chunk = 16 * 1024;

/// The buffer size a connection needs for a given max-frame-size: the output side holds two
/// whole frames (one being sent while the next is written) plus an AGENT-DISCONNECT; the input
/// side never holds more than one frame, because feed() leaves what it cannot answer with the
/// caller.
[[nodiscard]] constexpr std::size_t buffer_size_for(std::uint32_t max_frame_size) noexcept {
    const std::size_t frame = std::size_t{max_frame_size} + frame_length_size;
    return 2 * frame + 512;
}

class buffer_pool {
  public:
    /// `max_cached`: how many released buffers to keep for reuse; more are freed.
    explicit buffer_pool(std::size_t block_size, std::size_t max_cached = 256)
        : block_size_(block_size), max_cached_(max_cached) {
        free_.reserve(max_cached);
    }
    buffer_pool(const buffer_pool&) = delete;
    buffer_pool& operator=(const buffer_pool&) = delete;
    ~buffer_pool() {
        for (std::uint8_t* b : free_) ::operator delete(b);
    }

    /// A block of block_size() bytes, or nullptr when memory is exhausted.
    [[nodiscard]] std::uint8_t* acquire() noexcept {
        ++in_use_;
        if (!free_.empty()) {
            std::uint8_t* b = free_.back();
            free_.pop_back();
            return b;
        }
        ++allocations_;
        auto* b = static_cast<std::uint8_t*>(::operator new(block_size_, std::nothrow));
        if (b == nullptr) --in_use_;
        return b;
    }

    void release(std::uint8_t* b) noexcept {
        if (b == nullptr) return;
        --in_use_;
        if (free_.size() < max_cached_) {
            free_.push_back(b); // never reallocates: capacity reserved up front
        } else {
            ::operator delete(b);
        }
    }

    [[nodiscard]] std::size_t block_size() const noexcept { return block_size_; }
    /// Blocks currently handed out.
    [[nodiscard]] std::size_t in_use() const noexcept { return in_use_; }
    /// Blocks ever allocated from the system (a steady state keeps this flat).
    [[nodiscard]] std::size_t allocations() const noexcept { return allocations_; }
    [[nodiscard]] std::size_t cached() const noexcept { return free_.size(); }

  private:
    std::size_t block_size_;
    std::size_t max_cached_;
    std::size_t in_use_ = 0;
    std::size_t allocations_ = 0;
    std::vector<std::uint8_t*> free_;
};

} // namespace spop
