// The arguments of a `check-rate` message, read while the NOTIFY is parsed and copied out of it
// (the views die with the receive buffer). No allocation: the key goes into a fixed buffer.
//
//   key     what is counted: STRING or BINARY as is; IPV4/IPV6 as their text form ("192.0.2.7",
//           "2001:db8::1", so that `src` and a header holding the same address share a count);
//           an integer as its decimal text. NULL, BOOL, an empty string: no key.
//   limit   requests allowed per window (1..1e9), an integer or a decimal STRING
//   window  the window in seconds (1..604800), the same types
// Arguments are found by name (`key`, `limit`, `window`) or, unnamed, by position (HAProxy 2.x
// configurations often write `args src`): 1st key, 2nd limit, 3rd window. A limit or window
// that is out of range or not a number is ignored (the --rate-limit / --rate-window default
// applies) and counted. A key longer than max_key_bytes is remembered by its length only: it is
// refused, never sent.
#pragma once

#include <arpa/inet.h>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string_view>

#include <spop/data.hpp>

#include "gateway.hpp"

namespace agent::ratelimit {

struct rate_args {
    bool seen = false;         ///< a check-rate message was read (the first one of a NOTIFY counts)
    bool have_key = false;     ///< a usable key
    bool bad_arg = false;      ///< a limit or window was given but unusable
    std::uint32_t key_len = 0; ///< its real length; the bytes are kept when <= max_key_bytes
    std::uint32_t limit = 0;   ///< 0: not given
    std::uint32_t window_s = 0;
    char key[max_key_bytes];

    [[nodiscard]] bool key_too_long() const noexcept { return key_len > max_key_bytes; }
    [[nodiscard]] std::string_view key_view() const noexcept { return {key, key_len}; }

    /// A new check-rate message starts (everything but `seen` is reset).
    void begin() noexcept {
        have_key = bad_arg = false;
        key_len = limit = window_s = 0;
        pos_ = 0;
    }

    void arg(std::string_view name, const spop::value& v) noexcept {
        const unsigned p = pos_++;
        if (name == "key" || (name.empty() && p == 0)) return set_key(v);
        if (name == "limit" || (name.empty() && p == 1)) return set_number(v, 1, max_limit, limit);
        if (name == "window" || (name.empty() && p == 2))
            return set_number(v, 1, max_window_s, window_s);
        // Other arguments are ignored (room for future ones).
    }

    /// The message ended.
    void end() noexcept { seen = true; }

  private:
    void set_key(const spop::value& v) noexcept {
        have_key = false;
        key_len = 0;
        switch (v.type) {
        case spop::data_type::string:
        case spop::data_type::binary:
            if (v.bytes.empty()) return;
            key_len = static_cast<std::uint32_t>(v.bytes.size() > 0xFFFFFFFFu ? 0xFFFFFFFFu
                                                                              : v.bytes.size());
            if (!key_too_long()) std::memcpy(key, v.bytes.data(), v.bytes.size());
            have_key = true;
            return;
        case spop::data_type::ipv4:
        case spop::data_type::ipv6: {
            const bool v6 = v.type == spop::data_type::ipv6;
            if (inet_ntop(v6 ? AF_INET6 : AF_INET, v.bytes.data(), key, sizeof key) == nullptr)
                return;
            key_len = static_cast<std::uint32_t>(std::strlen(key));
            have_key = true;
            return;
        }
        case spop::data_type::int32:
        case spop::data_type::int64: {
            const auto r = std::to_chars(key, key + sizeof key, v.as_int());
            key_len = static_cast<std::uint32_t>(r.ptr - key);
            have_key = true;
            return;
        }
        case spop::data_type::uint32:
        case spop::data_type::uint64: {
            const auto r = std::to_chars(key, key + sizeof key, v.as_uint());
            key_len = static_cast<std::uint32_t>(r.ptr - key);
            have_key = true;
            return;
        }
        default:
            return; // null, bool: nothing to count
        }
    }

    void set_number(const spop::value& v, std::uint64_t lo, std::uint64_t hi,
                    std::uint32_t& out) noexcept {
        std::uint64_t n = 0;
        if (v.is_integer()) {
            const bool is_signed =
                v.type == spop::data_type::int32 || v.type == spop::data_type::int64;
            if (is_signed && v.as_int() < 0) return void(bad_arg = true);
            n = v.as_uint();
        } else if (v.type == spop::data_type::string) {
            const char* b = v.bytes.data();
            const char* e = b + v.bytes.size();
            const auto r = std::from_chars(b, e, n);
            if (r.ec != std::errc{} || r.ptr != e) return void(bad_arg = true);
        } else if (v.type == spop::data_type::null) {
            return; // HAProxy sends NULL for a sample it could not fetch: the default
        } else {
            return void(bad_arg = true);
        }
        if (n < lo || n > hi) return void(bad_arg = true);
        out = static_cast<std::uint32_t>(n);
    }

    unsigned pos_ = 0;
};

} // namespace agent::ratelimit
