// The counting algorithm: a sliding-window counter, atomic in Redis as one Lua script (one
// round trip, EVALSHA; EVAL when Redis answers NOSCRIPT).
//
// Two fixed windows per key, <base>:<n> for window number n = floor(now_ms / window_ms); the
// count is the current window's counter plus the previous window's, weighted by how much of it
// the sliding window still covers:
//     rate = cur + ceil(prev * (window - elapsed) / window)
// (rounded up, so that a burst that straddles a window boundary is never under-counted). Every
// request is counted, also those over the limit (as HAProxy's sc_http_req_rate does): a client
// that keeps hammering stays over. Time is Redis's (TIME), so agents with skewed clocks agree.
// Each counter expires 2 windows after its first increment (PEXPIRE), so Redis holds at most
// two small counters per active key and forgets idle keys by itself.
//
// Redis keys: "spop:rate:{<key>}:<window_ms>:<n>". The key is stored as given (binary-safe);
// braces make it the hash tag, so both counters of a key share a Redis Cluster slot.
//
// Reply: an array of two integers {rate, over_limit (0 or 1)}; parse_reply() checks its shape.
#pragma once

#include <hiredis/hiredis.h>

#include <cstdint>
#include <cstring>
#include <string_view>

namespace agent::ratelimit {

inline constexpr std::string_view count_script = R"lua(
local w = tonumber(ARGV[2])
local lim = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = math.floor(now / w)
local cur_key = KEYS[1] .. ':' .. n
local cur = redis.call('INCR', cur_key)
if cur == 1 then redis.call('PEXPIRE', cur_key, 2 * w) end
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (n - 1)) or '0')
local rate = cur
if prev > 0 then
  rate = rate + math.floor((prev * (w - (now - n * w)) + w - 1) / w)
end
local over = 0
if rate > lim then over = 1 end
return {rate, over}
)lua";

inline constexpr std::string_view key_prefix = "spop:rate:{";

/// Room for the Redis key of a `max_key` key: prefix, key, "}:", the window in ms (10 digits).
[[nodiscard]] constexpr std::size_t redis_key_room(std::size_t max_key) noexcept {
    return key_prefix.size() + max_key + 2 + 10;
}

/// Writes "spop:rate:{<key>}:<window_ms>" into `out` (at least redis_key_room(key.size())
/// bytes); returns its length.
inline std::size_t redis_key(char* out, std::string_view key, std::uint32_t window_ms) noexcept {
    char* p = out;
    std::memcpy(p, key_prefix.data(), key_prefix.size());
    p += key_prefix.size();
    std::memcpy(p, key.data(), key.size());
    p += key.size();
    *p++ = '}';
    *p++ = ':';
    char digits[10];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + window_ms % 10);
        window_ms /= 10;
    } while (window_ms != 0);
    while (n > 0) *p++ = digits[--n];
    return static_cast<std::size_t>(p - out);
}

enum class reply_kind {
    count,    ///< rate and over are set
    noscript, ///< the script is not loaded (Redis restarted, SCRIPT FLUSH): send EVAL
    error,    ///< an error reply, or a reply of another shape
};

struct count_reply {
    reply_kind kind = reply_kind::error;
    std::uint64_t rate = 0;
    bool over = false;
};

/// Reads the script's reply. Anything but an array of two non-negative integers, the second
/// 0 or 1, is an error (a Redis that answers garbage cannot make the agent misbehave).
[[nodiscard]] inline count_reply parse_reply(const redisReply* r) noexcept {
    count_reply out;
    if (r == nullptr) return out;
    if (r->type == REDIS_REPLY_ERROR) {
        if (r->str != nullptr && r->len >= 8 && std::memcmp(r->str, "NOSCRIPT", 8) == 0)
            out.kind = reply_kind::noscript;
        return out;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element == nullptr) return out;
    const redisReply* a = r->element[0];
    const redisReply* b = r->element[1];
    if (a == nullptr || b == nullptr || a->type != REDIS_REPLY_INTEGER ||
        b->type != REDIS_REPLY_INTEGER || a->integer < 0 || (b->integer != 0 && b->integer != 1))
        return out;
    out.kind = reply_kind::count;
    out.rate = static_cast<std::uint64_t>(a->integer);
    out.over = b->integer == 1;
    return out;
}

/// SCRIPT LOAD's reply: the script's SHA1 as 40 hex digits; false for anything else.
[[nodiscard]] inline bool parse_sha(const redisReply* r, char (&sha)[41]) noexcept {
    if (r == nullptr || r->type != REDIS_REPLY_STRING || r->len != 40 || r->str == nullptr)
        return false;
    for (std::size_t i = 0; i < 40; ++i) {
        const char c = r->str[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        sha[i] = c;
    }
    sha[40] = '\0';
    return true;
}

} // namespace agent::ratelimit
