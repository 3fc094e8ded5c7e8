#include "decisions/entry.hpp"

#include <arpa/inet.h>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace agent::decisions {

std::string format_prefix(const iprep::net_prefix& p) {
    char buf[INET6_ADDRSTRLEN + 8];
    if (p.v6) {
        std::uint8_t b[16];
        for (int i = 0; i < 16; ++i) b[i] = static_cast<std::uint8_t>(p.v6addr >> (8 * (15 - i)));
        inet_ntop(AF_INET6, b, buf, INET6_ADDRSTRLEN);
    } else {
        in_addr a{};
        a.s_addr = htonl(p.v4);
        inet_ntop(AF_INET, &a, buf, INET6_ADDRSTRLEN);
    }
    std::string s(buf);
    s += '/';
    s += std::to_string(p.len);
    return s;
}

std::string printable(std::string_view s) {
    std::string out;
    const std::size_t n = s.size() < 64 ? s.size() : 64;
    for (std::size_t i = 0; i < n; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char b[5];
            std::snprintf(b, sizeof b, "\\x%02x", c);
            out += b;
        }
    }
    if (s.size() > n) out += "...(" + std::to_string(s.size()) + " bytes)";
    return out;
}

bool normalize_prefix(std::string_view in, iprep::net_prefix& out, std::string& canonical,
                      std::string& why) {
    if (in.size() > max_prefix_bytes) {
        why = "prefix longer than " + std::to_string(max_prefix_bytes) + " bytes";
        return false;
    }
    if (!iprep::parse_prefix(in, out, why)) return false;
    canonical = format_prefix(out);
    return true;
}

bool parse_stored_prefix(std::string_view in, iprep::net_prefix& out, std::string& why) {
    std::string canon;
    if (!normalize_prefix(in, out, canon, why)) return false;
    if (canon != in) {
        why = "prefix '" + printable(in) + "' is not in canonical form '" + canon + "'";
        return false;
    }
    return true;
}

bool valid_reason(std::string_view r) noexcept {
    if (r.size() > max_reason_bytes) return false;
    for (const char ch : r) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c >= 0x7f) return false;
    }
    return true;
}

namespace {

template <class T>
bool parse_dec(std::string_view s, T lo, T hi, T& out) {
    if (s.empty() || s.size() > 20 || s.front() == '+' || s.front() == '-') return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size() && out >= lo && out <= hi;
}

bool parse_score(std::string_view s, int& out, std::string& why) {
    if (!parse_dec(s, 0, 100, out)) {
        why = "score '" + printable(s) + "' is not 0..100";
        return false;
    }
    return true;
}

bool parse_expiry(std::string_view s, std::int64_t& out, std::string& why) {
    if (!parse_dec<std::int64_t>(s, 0, max_expiry, out)) {
        why = "expiry '" + printable(s) + "' is not Unix seconds (0 = never)";
        return false;
    }
    return true;
}

bool check_reason(std::string_view r, std::string& why) {
    if (r.size() > max_reason_bytes) {
        why = "reason longer than " + std::to_string(max_reason_bytes) + " bytes";
        return false;
    }
    if (!valid_reason(r)) {
        why = "reason '" + printable(r) + "' is not printable ASCII";
        return false;
    }
    return true;
}

} // namespace

bool parse_value(std::string_view v, decision& d, std::string& why) {
    if (v.size() > max_value_bytes) {
        why = "value longer than " + std::to_string(max_value_bytes) + " bytes";
        return false;
    }
    const std::size_t s1 = v.find(' ');
    if (s1 == std::string_view::npos) {
        why = "value '" + printable(v) + "' is not 'SCORE EXPIRY REASON'";
        return false;
    }
    const std::size_t s2 = v.find(' ', s1 + 1);
    const std::string_view score = v.substr(0, s1);
    const std::string_view expiry =
        v.substr(s1 + 1, s2 == std::string_view::npos ? std::string_view::npos : s2 - s1 - 1);
    const std::string_view reason = s2 == std::string_view::npos ? "" : v.substr(s2 + 1);
    int sc = 0;
    std::int64_t ex = 0;
    if (!parse_score(score, sc, why) || !parse_expiry(expiry, ex, why) ||
        !check_reason(reason, why))
        return false;
    d.score = sc;
    d.expiry = ex;
    d.reason.assign(reason);
    return true;
}

std::string format_value(const decision& d) {
    return std::to_string(d.score) + " " + std::to_string(d.expiry) + " " + d.reason;
}

bool parse_event(std::span<const std::pair<std::string_view, std::string_view>> fields, event& e,
                 std::string& why) {
    if (fields.size() * 2 > max_event_fields) {
        why = "more than " + std::to_string(max_event_fields) + " fields";
        return false;
    }
    const std::string_view* opv = nullptr;
    const std::string_view* prefix = nullptr;
    const std::string_view* score = nullptr;
    const std::string_view* expiry = nullptr;
    const std::string_view* reason = nullptr;
    for (const auto& [name, value] : fields) {
        const std::string_view** slot = name == "op"       ? &opv
                                        : name == "prefix" ? &prefix
                                        : name == "score"  ? &score
                                        : name == "expiry" ? &expiry
                                        : name == "reason" ? &reason
                                                           : nullptr;
        if (slot == nullptr) continue;
        if (*slot != nullptr) {
            why = "field '" + std::string(name) + "' given twice";
            return false;
        }
        *slot = &value;
    }
    if (opv == nullptr) {
        why = "no 'op' field";
        return false;
    }
    event out;
    if (*opv == "resync") {
        out.kind = op::resync;
        e = std::move(out);
        return true;
    }
    if (*opv == "add")
        out.kind = op::add;
    else if (*opv == "del")
        out.kind = op::del;
    else {
        why = "unknown op '" + printable(*opv) + "' (add, del or resync)";
        return false;
    }
    if (prefix == nullptr) {
        why = "no 'prefix' field";
        return false;
    }
    if (!parse_stored_prefix(*prefix, out.d.prefix, why)) return false;
    out.prefix.assign(*prefix);
    if (out.kind == op::add) {
        if (score == nullptr || expiry == nullptr) {
            why = "an add needs 'score' and 'expiry'";
            return false;
        }
        if (!parse_score(*score, out.d.score, why) || !parse_expiry(*expiry, out.d.expiry, why))
            return false;
        if (reason != nullptr) {
            if (!check_reason(*reason, why)) return false;
            out.d.reason.assign(*reason);
        }
    }
    e = std::move(out);
    return true;
}

} // namespace agent::decisions
