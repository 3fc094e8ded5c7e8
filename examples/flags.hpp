// The examples' flag values: a whole decimal number or nothing, so that "-p 12x" or
// "--delay-us abc" is an error rather than atoi()'s 12 or 0. Ranges the engine cannot honour
// (max_frame_size, workers, port) are refused by spop::server::check_ranges at start.
#pragma once

#include <charconv>
#include <string_view>

namespace example {

/// `v` as a whole number in [lo, hi]; false for anything else.
inline bool to_long(std::string_view v, long lo, long hi, long& out) noexcept {
    long n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc{} || end != v.data() + v.size() || n < lo || n > hi) return false;
    out = n;
    return true;
}

} // namespace example
