// The examples' flag values: a whole decimal number or nothing, so that "-p 12x" or
// "--delay-us abc" is an error rather than atoi()'s 12 or 0. Ranges the engine cannot honour
// (max_frame_size, workers, port) are refused by spop::server::check_ranges at start.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include <spop/server/options.hpp>

namespace example {

/// `v` as a whole number in [lo, hi]; false for anything else.
inline bool to_long(std::string_view v, long lo, long hi, long& out) noexcept {
    long n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc{} || end != v.data() + v.size() || n < lo || n > hi) return false;
    out = n;
    return true;
}

/// The flags every example shares: -p PORT, -n WORKERS, -m MAX_FRAME, -a ADDR, --engine E,
/// --cpus LIST (worker i on the i-th CPU of LIST, round robin).
/// False when `flag` is not one of them or `v` is not a valid value for it.
inline bool server_flag(spop::server::options& o, std::string_view flag, std::string_view v) {
    long n = 0;
    if (flag == "-p" && to_long(v, 1, 65535, n))
        o.port = static_cast<int>(n);
    else if (flag == "-n" && to_long(v, 1, 1024, n))
        o.workers = static_cast<int>(n);
    else if (flag == "-m" && to_long(v, 256, 16777216, n))
        o.max_frame_size = static_cast<std::uint32_t>(n);
    else if (flag == "-a")
        o.addresses.emplace_back(v);
    else if (flag == "--engine" && v == "uring")
        o.engine = spop::server::backend::uring;
    else if (flag == "--engine" && v == "epoll")
        o.engine = spop::server::backend::epoll;
    else if (flag == "--engine" && v == "auto")
        o.engine = spop::server::backend::automatic;
    else if (std::string err; flag == "--cpus" && spop::server::parse_cpu_list(v, o.cpus, err))
        ;
    else
        return false;
    return true;
}

} // namespace example
