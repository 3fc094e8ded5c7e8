// Parsers for the reputation file formats. They work on a file's whole text, so the unit
// tests feed them strings; a bad line stops the parse with its file, line number and reason.
//
// List (--list, --allow): FireHOL .ipset/.netset compatible.
//     # comment                 lines starting with # (after optional blanks) are ignored
//     192.0.2.1                 an address (= /32 or /128)
//     198.51.100.0/24           a CIDR
//     2001:db8::/32             IPv6
//     203.0.113.7   # note      a trailing comment after blanks is allowed
//   Blank lines and CRLF line ends are accepted. Anything else on a line is an error.
//
// CSV (--csv): Suricata IP reputation lines.
//     ip-or-cidr,category,score
//   Blanks around fields are ignored; # comments and blank lines as above. `category` is 1..64
//   printable characters without blanks, commas, quotes or backslashes. `score` is Suricata's
//   reputation, an integer 0..127 where higher means a worse reputation; it is mapped to the
//   agent's scale (100 = trusted) as  agent = 100 - round(score * 100 / 127).
//
// Addresses: IPv4 dotted quads and any IPv6 text form inet_pton accepts. An IPv4-mapped IPv6
// prefix (::ffff:a.b.c.d/96+n) is stored as the IPv4 prefix a.b.c.d/n. Host bits below the
// prefix length are cleared (10.1.2.3/8 is 10.0.0.0/8).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lpm.hpp"

namespace agent::iprep {

struct parse_error {
    std::string file;
    std::size_t line = 0; ///< 0 when the error is about the whole file
    std::string message;
    /// "FILE:LINE: MESSAGE" (or "FILE: MESSAGE").
    [[nodiscard]] std::string to_string() const;
};

struct net_prefix {
    bool v6 = false;
    std::uint8_t len = 0;
    std::uint32_t v4 = 0; ///< host order, host bits cleared
    u128 v6addr = 0;      ///< MSB = first bit, host bits cleared
};

/// Parses "ADDR" or "ADDR/LEN". On failure returns false and sets `why`.
bool parse_prefix(std::string_view s, net_prefix& out, std::string& why);

/// Entries collected from sources, not yet sorted or deduplicated.
struct entry_sink {
    std::vector<lpm_entry<std::uint64_t>> v4;
    std::vector<lpm_entry<u128>> v6;
    void add(const net_prefix& p, std::uint32_t value);
    [[nodiscard]] std::size_t size() const noexcept { return v4.size() + v6.size(); }
};

/// A list file: every prefix gets `value`. Returns false on the first bad line.
bool parse_list(std::string_view text, std::string_view file, std::uint32_t value, entry_sink& out,
                parse_error& err);

/// Suricata score (0..127, higher = worse) to the agent's 0..100 (100 = trusted).
[[nodiscard]] constexpr int suricata_to_score(int s) noexcept {
    return 100 - (s * 100 + 63) / 127;
}

/// A CSV file; categories are interned in category_pool. Returns false on the first bad line.
bool parse_csv(std::string_view text, std::string_view file, entry_sink& out, parse_error& err);

/// Reads a whole file. On failure sets err (line 0) and returns false.
bool read_file(const std::string& path, std::string& out, parse_error& err);

/// The file's name without directories and without its last extension ("a/b/c.netset" -> "c"),
/// truncated to 64 bytes: the category reported for --list and --allow files.
[[nodiscard]] std::string file_category(std::string_view path);

} // namespace agent::iprep
