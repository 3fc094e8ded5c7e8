// Test helpers: hex <-> bytes, value descriptions for readable assertion failures.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <spop/data.hpp>

#include "print.hpp"

namespace spop_test {

using bytes = std::vector<std::uint8_t>;

inline int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// Decodes hex, ignoring whitespace. A malformed vector is a bug in the test itself: abort loudly.
inline bytes unhex(std::string_view s) {
    bytes out;
    int hi = -1;
    for (const char c : s) {
        if (c == ' ' || c == '\n' || c == '\t') continue;
        const int d = hex_digit(c);
        if (d < 0) {
            std::fprintf(stderr, "unhex: bad character '%c' in \"%.*s\"\n", c,
                         static_cast<int>(s.size()), s.data());
            std::abort();
        }
        if (hi < 0) {
            hi = d;
        } else {
            out.push_back(static_cast<std::uint8_t>(hi * 16 + d));
            hi = -1;
        }
    }
    if (hi >= 0) {
        std::fprintf(stderr, "unhex: odd number of digits in \"%.*s\"\n",
                     static_cast<int>(s.size()), s.data());
        std::abort();
    }
    return out;
}

/// Lower-case hex without separators (compare these in assertions: the diff is readable).
inline std::string to_hex(std::span<const std::uint8_t> b) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    s.reserve(b.size() * 2);
    for (const std::uint8_t c : b) {
        s.push_back(digits[c >> 4]);
        s.push_back(digits[c & 15]);
    }
    return s;
}
inline std::string to_hex(std::string_view b) {
    return to_hex(
        std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(b.data()), b.size()));
}
/// Normalises a hex literal written with spaces (for comparisons with to_hex()).
inline std::string norm_hex(std::string_view s) {
    return to_hex(unhex(s));
}

inline bytes to_bytes(std::string_view s) {
    return bytes(s.begin(), s.end());
}

inline std::string_view as_view(std::span<const std::uint8_t> b) noexcept {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

inline bytes concat(std::initializer_list<std::span<const std::uint8_t>> parts) {
    bytes out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

inline void append(bytes& to, std::span<const std::uint8_t> b) {
    to.insert(to.end(), b.begin(), b.end());
}

/// A name or string with non-printable bytes escaped.
inline std::string quote(std::string_view s) {
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            out.push_back(ch);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    out.push_back('"');
    return out;
}

/// One line per value: "uint32:16380", "string:\"abc\"", "ipv4:c0000201"...
/// Integers print the reading their declared type suggests (signed for int32/int64).
inline std::string describe(const spop::value& v) {
    using spop::data_type;
    switch (v.type) {
    case data_type::null:
        return "null";
    case data_type::boolean:
        return v.boolean ? "bool:true" : "bool:false";
    case data_type::int32:
        return "int32:" + std::to_string(v.as_int());
    case data_type::uint32:
        return "uint32:" + std::to_string(v.as_uint());
    case data_type::int64:
        return "int64:" + std::to_string(v.as_int());
    case data_type::uint64:
        return "uint64:" + std::to_string(v.as_uint());
    case data_type::ipv4:
        return "ipv4:" + to_hex(v.bytes);
    case data_type::ipv6:
        return "ipv6:" + to_hex(v.bytes);
    case data_type::string:
        return "string:" + quote(v.bytes);
    case data_type::binary:
        return "binary:" + to_hex(v.bytes);
    }
    return "type" + std::to_string(static_cast<int>(v.type));
}

} // namespace spop_test
