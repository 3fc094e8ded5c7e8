// Parsers for the reputation file formats. A file is read as a stream, through a fixed read
// buffer, line by line: memory is bounded by the entries collected, never by the file. A bad
// line stops the parse (and the read) with its file, line number and reason.
//
// Text rules, for both formats:
//   - a UTF-8 byte order mark (EF BB BF) at the very start of the file is skipped;
//   - a control byte other than TAB, LF, VT, FF and CR (a NUL, for example) means binary
//     content: the parse stops at that line without reading the rest of the file;
//   - a line is at most max_line_bytes (4096) bytes, comments included;
//   - a file is at most read_limits::max_file_size bytes (--max-file-size), checked with
//     fstat() before reading and again while reading (a file can grow while it is read).
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

inline constexpr std::size_t max_line_bytes = 4096;
inline constexpr std::uint64_t default_max_file_size = std::uint64_t{512} << 20;

struct read_limits {
    std::uint64_t max_file_size = default_max_file_size;
    std::size_t buffer_size = 65536; ///< bytes per read(); small values exercise chunking in tests
    std::size_t max_line = max_line_bytes;
};

/// A line-by-line parser of one list or CSV file, fed with chunks of any size (a line may span
/// any number of chunks). Memory: one partial line (at most `max_line` bytes) plus the entries
/// added to the sink.
class text_parser {
  public:
    enum class format : std::uint8_t { list, csv };
    /// A list file (every prefix gets `value`) or a CSV file (its own values). `file` names
    /// the source in errors; `out` must outlive the parser.
    text_parser(format f, std::string_view file, std::uint32_t value, entry_sink& out,
                std::size_t max_line = max_line_bytes);

    /// Parses the complete lines of `chunk` and keeps the rest for the next call. False on the
    /// first error (err set); the parser must not be fed after that.
    bool feed(std::string_view chunk, parse_error& err);
    /// End of input: parses a last line without a line feed.
    bool finish(parse_error& err);
    /// Lines seen so far (complete ones).
    [[nodiscard]] std::size_t lines() const noexcept { return lineno_; }

  private:
    bool dispatch(std::string_view line, parse_error& err);
    bool fail(std::string msg, parse_error& err);

    format fmt_;
    std::string file_;
    std::uint32_t value_;
    entry_sink& out_;
    std::size_t max_line_;
    std::size_t lineno_ = 0;
    std::string carry_; ///< the current line's bytes from earlier chunks
};

/// Reads `path` with `lim` into `p` (then p.finish()). On failure sets err and returns false
/// as soon as the problem is seen. `bytes_read` (optional) tells how much was read.
bool parse_file(const std::string& path, text_parser& p, const read_limits& lim, parse_error& err,
                std::uint64_t* bytes_read = nullptr);

/// Checks `path` against the size limit with stat() (for sources read by other means, such as
/// a MaxMind DB). False with err set if it cannot be stat'ed, is a directory or is too large.
bool check_file_size(const std::string& path, std::uint64_t max_file_size, parse_error& err);

/// The error message of a file over the size limit.
[[nodiscard]] std::string too_large_message(std::uint64_t size, std::uint64_t limit, bool growing);

/// "123", "64K", "512M", "2G" (binary multiples, case-insensitive, optional trailing "B" or
/// "iB") to bytes. False on anything else, zero, or overflow.
bool parse_size(std::string_view s, std::uint64_t& out);
/// Bytes as parse_size reads them: "512M" when it divides evenly, else the plain number.
[[nodiscard]] std::string format_size(std::uint64_t bytes);

/// A list text: every prefix gets `value`. Returns false on the first bad line.
bool parse_list(std::string_view text, std::string_view file, std::uint32_t value, entry_sink& out,
                parse_error& err);

/// Suricata score (0..127, higher = worse) to the agent's 0..100 (100 = trusted).
[[nodiscard]] constexpr int suricata_to_score(int s) noexcept {
    return 100 - (s * 100 + 63) / 127;
}

/// A CSV text; categories are interned in category_pool. Returns false on the first bad line.
bool parse_csv(std::string_view text, std::string_view file, entry_sink& out, parse_error& err);

/// The file's name without directories and without its last extension ("a/b/c.netset" -> "c"),
/// truncated to 64 bytes: the category reported for --list and --allow files.
[[nodiscard]] std::string file_category(std::string_view path);

} // namespace agent::iprep
