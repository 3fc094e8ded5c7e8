// spop::server logging: one line per event, key=value fields, to stderr. Workers log rarely
// (accept/close at debug, errors rate-limited), so a single write(2) per line keeps lines whole
// without a lock.
#pragma once

#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <unistd.h>

namespace spop::server {

enum class level : int { error = 0, warn = 1, info = 2, debug = 3 };

inline std::atomic<int> g_log_level{static_cast<int>(level::info)};

inline bool log_enabled(level l) noexcept {
    return static_cast<int>(l) <= g_log_level.load(std::memory_order_relaxed);
}

__attribute__((format(printf, 2, 3))) inline void log(level l, const char* fmt, ...) noexcept {
    if (!log_enabled(l)) return;
    static constexpr const char* names[] = {"error", "warn", "info", "debug"};
    char buf[1024];
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm tmv{};
    gmtime_r(&ts.tv_sec, &tmv);
    int n = std::snprintf(buf, sizeof buf, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ",
                          tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday, tmv.tm_hour, tmv.tm_min,
                          tmv.tm_sec, ts.tv_nsec / 1000000, names[static_cast<int>(l)]);
    va_list ap;
    va_start(ap, fmt);
    int m = std::vsnprintf(buf + n, sizeof buf - static_cast<std::size_t>(n) - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    std::size_t len = static_cast<std::size_t>(n) + static_cast<std::size_t>(m);
    if (len > sizeof buf - 2) len = sizeof buf - 2;
    buf[len++] = '\n';
    ssize_t w = ::write(2, buf, len);
    (void)w;
}

/// Lets `burst` events through per second and counts the rest, so a hostile client cannot
/// flood the log. One per worker and event kind: no sharing.
class rate_limiter {
  public:
    explicit rate_limiter(unsigned burst = 10) noexcept : burst_(burst) {}
    /// True if this event may be logged. `suppressed` returns how many were dropped since the
    /// last logged one (to append to the line).
    bool allow(std::uint64_t now_s, unsigned& suppressed) noexcept {
        if (now_s != window_) {
            window_ = now_s;
            used_ = 0;
        }
        if (used_ < burst_) {
            ++used_;
            suppressed = dropped_;
            dropped_ = 0;
            return true;
        }
        ++dropped_;
        return false;
    }

  private:
    unsigned burst_;
    unsigned used_ = 0;
    unsigned dropped_ = 0;
    std::uint64_t window_ = 0;
};

} // namespace spop::server
