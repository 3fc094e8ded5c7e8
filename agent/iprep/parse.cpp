#include "parse.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

#include "value.hpp"

namespace agent::iprep {

std::string parse_error::to_string() const {
    std::string s = file;
    if (line != 0) {
        s += ':';
        s += std::to_string(line);
    }
    s += ": ";
    s += message;
    return s;
}

namespace {

bool is_blank(char c) noexcept {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
    return s;
}

/// Cuts a comment: '#' at the start or after a blank (an address never contains '#').
std::string_view strip_comment(std::string_view s) noexcept {
    const std::size_t h = s.find('#');
    return h == std::string_view::npos ? s : s.substr(0, h);
}

std::string printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 60)) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u >= 0x7F || c == '"' || c == '\\') {
            char b[8];
            std::snprintf(b, sizeof b, "\\x%02x", u);
            out += b;
        } else {
            out += c;
        }
    }
    if (s.size() > 60) out += "...";
    return out;
}

constexpr u128 mask128(unsigned len) noexcept {
    return len == 0 ? u128{0} : ~u128{0} << (128 - len);
}
constexpr std::uint32_t mask32(unsigned len) noexcept {
    return len == 0 ? 0u : ~0u << (32 - len);
}

/// Bytes that make a file binary rather than text: C0 controls other than TAB, LF, VT, FF, CR.
constexpr bool is_binary_byte(unsigned char u) noexcept {
    return u < 0x20 && u != '\t' && u != '\n' && u != '\v' && u != '\f' && u != '\r';
}

} // namespace

bool parse_prefix(std::string_view s, net_prefix& out, std::string& why) {
    std::string_view addr = s;
    int len = -1;
    const std::size_t slash = s.find('/');
    if (slash != std::string_view::npos) {
        addr = s.substr(0, slash);
        const std::string_view l = s.substr(slash + 1);
        if (l.empty() || l.size() > 3) {
            why = "bad prefix length in '" + printable(s) + "'";
            return false;
        }
        len = 0;
        for (char c : l) {
            if (c < '0' || c > '9') {
                why = "bad prefix length in '" + printable(s) + "'";
                return false;
            }
            len = len * 10 + (c - '0');
        }
    }
    if (addr.empty() || addr.size() > 45) {
        why = "bad address '" + printable(s) + "'";
        return false;
    }
    char buf[48];
    std::memcpy(buf, addr.data(), addr.size());
    buf[addr.size()] = '\0';
    const bool v6 = addr.find(':') != std::string_view::npos;
    if (!v6) {
        in_addr a{};
        if (inet_pton(AF_INET, buf, &a) != 1) {
            why = "bad address '" + printable(s) + "'";
            return false;
        }
        if (len > 32) {
            why = "prefix length above 32 in '" + printable(s) + "'";
            return false;
        }
        out.v6 = false;
        out.len = static_cast<std::uint8_t>(len < 0 ? 32 : len);
        out.v4 = ntohl(a.s_addr) & mask32(out.len);
        return true;
    }
    in6_addr a6{};
    if (inet_pton(AF_INET6, buf, &a6) != 1) {
        why = "bad address '" + printable(s) + "'";
        return false;
    }
    if (len > 128) {
        why = "prefix length above 128 in '" + printable(s) + "'";
        return false;
    }
    const unsigned plen = len < 0 ? 128u : static_cast<unsigned>(len);
    const std::uint8_t* b = a6.s6_addr;
    static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (plen >= 96 && std::memcmp(b, mapped, 12) == 0) {
        out.v6 = false;
        out.len = static_cast<std::uint8_t>(plen - 96);
        out.v4 = ((std::uint32_t{b[12]} << 24) | (std::uint32_t{b[13]} << 16) |
                  (std::uint32_t{b[14]} << 8) | b[15]) &
                 mask32(out.len);
        return true;
    }
    out.v6 = true;
    out.len = static_cast<std::uint8_t>(plen);
    out.v6addr = key6(b) & mask128(plen);
    return true;
}

void entry_sink::add(const net_prefix& p, std::uint32_t value) {
    if (p.v6)
        v6.push_back({p.v6addr, p.len, value});
    else
        v4.push_back({key4(p.v4), p.len, value});
}

namespace {

bool list_line(std::string_view line, std::uint32_t value, entry_sink& out, std::string& why) {
    std::size_t blank = 0;
    while (blank < line.size() && !is_blank(line[blank])) ++blank;
    if (blank != line.size()) {
        why = "expected one address or CIDR per line, got '" + printable(line) + "'";
        return false;
    }
    net_prefix p;
    if (!parse_prefix(line, p, why)) return false;
    out.add(p, value);
    return true;
}

bool csv_line(std::string_view line, entry_sink& out, std::string& why) {
    auto fail = [&](std::string msg) {
        why = std::move(msg);
        return false;
    };
    const std::size_t c1 = line.find(',');
    const std::size_t c2 = c1 == std::string_view::npos ? c1 : line.find(',', c1 + 1);
    if (c2 == std::string_view::npos || line.find(',', c2 + 1) != std::string_view::npos)
        return fail("expected 'ip-or-cidr,category,score', got '" + printable(line) + "'");
    const std::string_view ip = trim(line.substr(0, c1));
    const std::string_view cat = trim(line.substr(c1 + 1, c2 - c1 - 1));
    const std::string_view sc = trim(line.substr(c2 + 1));
    net_prefix p;
    if (!parse_prefix(ip, p, why)) return false;
    if (cat.empty()) return fail("empty category");
    if (cat.size() > category_max_len)
        return fail("category longer than 64 bytes: '" + printable(cat) + "'");
    for (char c : cat) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7F || c == '"' || c == '\'' || c == '\\')
            return fail("bad character in category '" + printable(cat) + "'");
    }
    if (sc.empty() || sc.size() > 3) return fail("bad score '" + printable(sc) + "' (0..127)");
    int s = 0;
    for (char c : sc) {
        if (c < '0' || c > '9') return fail("bad score '" + printable(sc) + "' (0..127)");
        s = s * 10 + (c - '0');
    }
    if (s > 127) return fail("score " + std::to_string(s) + " out of range 0..127");
    const std::uint32_t id = category_pool::instance().intern(cat);
    if (id == 0) return fail("too many distinct categories (the process keeps at most 65535)");
    out.add(p, encode_value(outcome_bits::listed, suricata_to_score(s), id));
    return true;
}

} // namespace

text_parser::text_parser(format f, std::string_view file, std::uint32_t value, entry_sink& out,
                         std::size_t max_line)
    : fmt_(f), file_(file), value_(value), out_(out), max_line_(max_line) {}

bool text_parser::fail(std::string msg, parse_error& err) {
    err = {file_, lineno_, std::move(msg)};
    return false;
}

bool text_parser::dispatch(std::string_view line, parse_error& err) {
    ++lineno_;
    if (lineno_ == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
    line = trim(strip_comment(line));
    if (line.empty()) return true;
    std::string why;
    const bool ok =
        fmt_ == format::list ? list_line(line, value_, out_, why) : csv_line(line, out_, why);
    return ok || fail(std::move(why), err);
}

bool text_parser::feed(std::string_view chunk, parse_error& err) {
    const char* const p = chunk.data();
    const std::size_t n = chunk.size();
    std::size_t start = 0; // first byte of the current line in this chunk
    for (std::size_t i = 0; i < n; ++i) {
        const auto u = static_cast<unsigned char>(p[i]);
        if (u == '\n') {
            bool ok;
            if (carry_.empty()) {
                ok = dispatch(std::string_view(p + start, i - start), err);
            } else {
                carry_.append(p + start, i - start);
                ok = dispatch(carry_, err);
                carry_.clear();
            }
            if (!ok) return false;
            start = i + 1;
        } else if (is_binary_byte(u)) {
            char b[8];
            std::snprintf(b, sizeof b, "0x%02x", u);
            ++lineno_;
            return fail("binary content (byte " + std::string(b) + " at column " +
                            std::to_string(carry_.size() + (i - start) + 1) + "): not a text file",
                        err);
        } else if (carry_.size() + (i - start) >= max_line_) {
            // Refused as soon as it is too long: a file without line feeds is never buffered.
            ++lineno_;
            return fail("line longer than " + std::to_string(max_line_) + " bytes", err);
        }
    }
    carry_.append(p + start, n - start);
    return true;
}

bool text_parser::finish(parse_error& err) {
    if (carry_.empty()) return true;
    const bool ok = dispatch(carry_, err);
    carry_.clear();
    return ok;
}

bool parse_list(std::string_view text, std::string_view file, std::uint32_t value, entry_sink& out,
                parse_error& err) {
    text_parser p(text_parser::format::list, file, value, out);
    return p.feed(text, err) && p.finish(err);
}

bool parse_csv(std::string_view text, std::string_view file, entry_sink& out, parse_error& err) {
    text_parser p(text_parser::format::csv, file, 0, out);
    return p.feed(text, err) && p.finish(err);
}

std::string format_size(std::uint64_t bytes) {
    static constexpr char units[] = {'T', 'G', 'M', 'K'};
    for (int i = 0; i < 4; ++i) {
        const unsigned shift = 40 - 10 * static_cast<unsigned>(i);
        const std::uint64_t m = std::uint64_t{1} << shift;
        if (bytes >= m && bytes % m == 0) return std::to_string(bytes >> shift) + units[i];
    }
    return std::to_string(bytes);
}

bool parse_size(std::string_view s, std::uint64_t& out) {
    std::size_t i = 0;
    std::uint64_t v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        if (v > (UINT64_MAX - 9) / 10) return false;
        v = v * 10 + static_cast<std::uint64_t>(s[i] - '0');
        ++i;
    }
    if (i == 0) return false;
    std::string_view suffix = s.substr(i);
    unsigned shift = 0;
    if (!suffix.empty()) {
        switch (suffix.front()) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        case 't':
        case 'T':
            shift = 40;
            break;
        case 'b':
        case 'B':
            break;
        default:
            return false;
        }
        if (shift != 0) suffix.remove_prefix(1);
        if (!(suffix.empty() || suffix == "B" || suffix == "b" ||
              (shift != 0 && (suffix == "iB" || suffix == "ib"))))
            return false;
    }
    if (v == 0 || v > (UINT64_MAX >> shift)) return false;
    out = v << shift;
    return true;
}

std::string too_large_message(std::uint64_t size, std::uint64_t limit, bool growing) {
    if (growing)
        return "grew past --max-file-size " + format_size(limit) + " while being read (more than " +
               std::to_string(limit) + " bytes)";
    return "file is " + std::to_string(size) + " bytes, larger than --max-file-size " +
           format_size(limit) + " (" + std::to_string(limit) + " bytes)";
}

namespace {

/// Opens and fstat()s `path`: a directory or a file over the limit is refused here, before
/// anything is read. Returns the descriptor, or -1 with err set.
int open_checked(const std::string& path, std::uint64_t limit, parse_error& err) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = {path, 0, std::string("cannot open: ") + std::strerror(errno)};
        return -1;
    }
    struct stat st {};
    if (fstat(fd, &st) != 0) {
        err = {path, 0, std::string("cannot stat: ") + std::strerror(errno)};
        ::close(fd);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        ::close(fd);
        err = {path, 0, "is a directory"};
        return -1;
    }
    // st_size is 0 for pipes and /proc files: the limit is then enforced while reading.
    if (st.st_size > 0 && static_cast<std::uint64_t>(st.st_size) > limit) {
        ::close(fd);
        err = {path, 0, too_large_message(static_cast<std::uint64_t>(st.st_size), limit, false)};
        return -1;
    }
    return fd;
}

} // namespace

bool check_file_size(const std::string& path, std::uint64_t max_file_size, parse_error& err) {
    const int fd = open_checked(path, max_file_size, err);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}

bool parse_file(const std::string& path, text_parser& p, const read_limits& lim, parse_error& err,
                std::uint64_t* bytes_read) {
    std::uint64_t total = 0;
    if (bytes_read != nullptr) *bytes_read = 0;
    const int fd = open_checked(path, lim.max_file_size, err);
    if (fd < 0) return false;
    const std::size_t bufsize = lim.buffer_size == 0 ? 65536 : lim.buffer_size;
    const std::unique_ptr<char[]> buf(new char[bufsize]);
    bool ok = true;
    while (ok) {
        const ssize_t r = ::read(fd, buf.get(), bufsize);
        if (r == 0) break;
        if (r < 0) {
            if (errno == EINTR) continue;
            err = {path, 0, std::string("read error: ") + std::strerror(errno)};
            ok = false;
            break;
        }
        total += static_cast<std::uint64_t>(r);
        if (total > lim.max_file_size) {
            err = {path, 0, too_large_message(total, lim.max_file_size, true)};
            ok = false;
            break;
        }
        ok = p.feed(std::string_view(buf.get(), static_cast<std::size_t>(r)), err);
    }
    ::close(fd);
    if (bytes_read != nullptr) *bytes_read = total;
    return ok && p.finish(err);
}

std::string file_category(std::string_view path) {
    const std::size_t sl = path.rfind('/');
    if (sl != std::string_view::npos) path.remove_prefix(sl + 1);
    const std::size_t dot = path.rfind('.');
    if (dot != std::string_view::npos && dot != 0) path = path.substr(0, dot);
    if (path.size() > category_max_len) path = path.substr(0, category_max_len);
    std::string out(path);
    for (char& c : out) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7F || c == '"' || c == '\\') c = '_';
    }
    return out;
}

// ---- category pool ---------------------------------------------------------------------------

category_pool& category_pool::instance() noexcept {
    static category_pool pool;
    return pool;
}

std::uint32_t category_pool::intern(std::string_view s) {
    if (s.size() > category_max_len) s = s.substr(0, category_max_len);
    std::lock_guard<std::mutex> lk(mu_);
    const auto it = ids_.find(std::string(s));
    if (it != ids_.end()) return it->second;
    if (next_ > max_categories) return 0;
    const std::uint32_t id = next_;
    const std::uint32_t c = (id - 1) / chunk_entries;
    if (chunks_[c] == nullptr) chunks_[c] = new entry[chunk_entries];
    entry& e = chunks_[c][(id - 1) % chunk_entries];
    std::memcpy(e.s, s.data(), s.size());
    e.len = static_cast<std::uint8_t>(s.size());
    ids_.emplace(std::string(s), id);
    ++next_;
    return id;
}

std::size_t category_pool::size() const {
    std::lock_guard<std::mutex> lk(mu_);
    return ids_.size();
}

} // namespace agent::iprep
