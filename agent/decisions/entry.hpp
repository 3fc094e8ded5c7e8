// Live decisions as stored in Redis (docs/decisions.md is the reference for other writers):
//
//   HASH   spop:decisions      field = canonical prefix ("198.51.100.7/32", "2001:db8::/32"),
//                              value = "SCORE EXPIRY REASON" (REASON may be empty or hold spaces)
//   STREAM spop:decisions:log  one entry per change, written in the same MULTI/EXEC or Lua
//                              script as the hash: op=add prefix=P score=S expiry=E [reason=R],
//                              op=del prefix=P, or op=resync (every agent reloads the hash).
//
// This file is the parsing and formatting of those entries, with no Redis client in it: the
// follower (follower.hpp), spop-decide and the unit tests share it. Every parser validates the
// whole entry before returning true, so a malformed entry is skipped whole, never applied
// half-way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "iprep/parse.hpp"

namespace agent::decisions {

inline constexpr std::string_view default_hash_key = "spop:decisions";
inline constexpr std::string_view default_stream_key = "spop:decisions:log";
/// Writers trim the stream to about this many entries (XADD MAXLEN ~).
inline constexpr unsigned default_stream_maxlen = 100000;

/// "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128" is 49 bytes.
inline constexpr std::size_t max_prefix_bytes = 49;
/// Reasons are exported as the category variable (iprep::category_max_len bytes).
inline constexpr std::size_t max_reason_bytes = 64;
/// "100 " + 20 digits + " " + reason.
inline constexpr std::size_t max_value_bytes = 4 + 20 + 1 + max_reason_bytes;
/// Fields (names and values) in one stream entry; more is malformed.
inline constexpr std::size_t max_event_fields = 32;
/// 9999-12-31T23:59:59Z: larger expiries are refused (they are typos, or hostile).
inline constexpr std::int64_t max_expiry = 253402300799;

struct decision {
    iprep::net_prefix prefix;
    int score = 0;           ///< 0..100 (100 = trusted, as every agent score)
    std::int64_t expiry = 0; ///< absolute Unix seconds; 0 = never expires
    std::string reason;      ///< printable ASCII, at most max_reason_bytes
};

enum class op : std::uint8_t { add, del, resync };

struct event {
    op kind = op::add;
    std::string prefix; ///< canonical text (add, del)
    decision d;         ///< add: all of it; del: prefix only
};

/// The canonical text of a prefix: inet_ntop of the network address, "/", the length.
[[nodiscard]] std::string format_prefix(const iprep::net_prefix& p);

/// Parses a prefix written by a person ("198.51.100.7", "2001:DB8::1/32"; host bits are
/// cleared) and gives its canonical text. For spop-decide.
bool normalize_prefix(std::string_view in, iprep::net_prefix& out, std::string& canonical,
                      std::string& why);

/// Parses a prefix as stored: it must be exactly the canonical text (so that one prefix has
/// one hash field, and add/del by any writer name the same field).
bool parse_stored_prefix(std::string_view in, iprep::net_prefix& out, std::string& why);

/// True for a reason the agent accepts: at most max_reason_bytes of printable ASCII.
[[nodiscard]] bool valid_reason(std::string_view r) noexcept;

/// Parses a hash value "SCORE EXPIRY REASON" into d.score, d.expiry, d.reason.
bool parse_value(std::string_view v, decision& d, std::string& why);
/// The hash value for d.
[[nodiscard]] std::string format_value(const decision& d);

/// Parses a stream entry's fields (name, value pairs in order). Unknown field names are
/// ignored (writers may add their own, e.g. origin); a known field given twice is malformed.
bool parse_event(std::span<const std::pair<std::string_view, std::string_view>> fields, event& e,
                 std::string& why);

/// Printable form of untrusted bytes for a log line: at most 64 bytes, others as \xNN.
[[nodiscard]] std::string printable(std::string_view s);

} // namespace agent::decisions
