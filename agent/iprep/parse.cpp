#include "parse.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
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

/// Calls f(line_number, line_without_comment) for each non-empty line; stops when f is false.
template <class F>
bool for_each_line(std::string_view text, F&& f) {
    std::size_t lineno = 0;
    while (!text.empty()) {
        const std::size_t nl = text.find('\n');
        std::string_view line = nl == std::string_view::npos ? text : text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        ++lineno;
        line = trim(strip_comment(line));
        if (line.empty()) continue;
        if (!f(lineno, line)) return false;
    }
    return true;
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

bool parse_list(std::string_view text, std::string_view file, std::uint32_t value, entry_sink& out,
                parse_error& err) {
    return for_each_line(text, [&](std::size_t lineno, std::string_view line) {
        net_prefix p;
        std::string why;
        std::size_t blank = 0;
        while (blank < line.size() && !is_blank(line[blank])) ++blank;
        if (blank != line.size()) {
            err = {std::string(file), lineno,
                   "expected one address or CIDR per line, got '" + printable(line) + "'"};
            return false;
        }
        if (!parse_prefix(line, p, why)) {
            err = {std::string(file), lineno, why};
            return false;
        }
        out.add(p, value);
        return true;
    });
}

bool parse_csv(std::string_view text, std::string_view file, entry_sink& out, parse_error& err) {
    category_pool& pool = category_pool::instance();
    return for_each_line(text, [&](std::size_t lineno, std::string_view line) {
        auto fail = [&](std::string msg) {
            err = {std::string(file), lineno, std::move(msg)};
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
        std::string why;
        if (!parse_prefix(ip, p, why)) return fail(why);
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
        const std::uint32_t id = pool.intern(cat);
        if (id == 0) return fail("too many distinct categories (the process keeps at most 65535)");
        out.add(p, encode_value(outcome_bits::listed, suricata_to_score(s), id));
        return true;
    });
}

bool read_file(const std::string& path, std::string& out, parse_error& err) {
    out.clear();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = {path, 0, std::string("cannot open: ") + std::strerror(errno)};
        return false;
    }
    struct stat st {};
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        ::close(fd);
        err = {path, 0, "is a directory"};
        return false;
    }
    if (st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
    char buf[65536];
    while (true) {
        const ssize_t r = ::read(fd, buf, sizeof buf);
        if (r == 0) break;
        if (r < 0) {
            if (errno == EINTR) continue;
            err = {path, 0, std::string("read error: ") + std::strerror(errno)};
            ::close(fd);
            return false;
        }
        out.append(buf, static_cast<std::size_t>(r));
    }
    ::close(fd);
    return true;
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
