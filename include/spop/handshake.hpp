// HELLO negotiation (SPOE.txt §3.2.4-3.2.5, PROTOCOL-NOTES §5).
//
// HAPROXY-HELLO keys: supported-versions (STRING), max-frame-size (UINT32), capabilities
// (STRING), engine-id (STRING), healthcheck (BOOL). Keys are matched exactly; unknown keys are
// skipped. The agent answers with version "2.0" only, max-frame-size = min(ours, theirs), and
// the capabilities it really implements: `pipelining`, never `async` or `fragmentation`.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "frame.hpp"
#include "kv.hpp"

namespace spop {

/// What the agent is willing to do.
struct agent_limits {
    /// Our largest acceptable FRAME-LENGTH, in [256, max_max_frame_size].
    std::uint32_t max_frame_size = default_max_frame_size;
    /// Announce `pipelining` (several NOTIFY in flight per connection).
    bool pipelining = true;
};

/// The outcome of a successful handshake.
struct negotiated {
    std::uint32_t max_frame_size = default_max_frame_size;
    bool pipelining = false;  ///< both sides announced it
    bool healthcheck = false; ///< `option spop-check` probe: answer, send nothing more, close
    /// HAProxy 2.6-3.0 announce `async`; 3.1+ never do. A hint of the peer's generation only.
    bool peer_async = false;
};

/// Calls `pred` on each item of a comma-separated list, spaces around items trimmed; true as
/// soon as one item satisfies it.
template <class Pred>
[[nodiscard]] constexpr bool any_list_item(std::string_view list, Pred pred) noexcept {
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        std::string_view item = list.substr(0, comma);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (pred(item)) return true;
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

/// True if `token` appears in a comma-separated list (spaces around items allowed). A token
/// only counts when it is the whole item: "pipelining2" does not match "pipelining".
[[nodiscard]] constexpr bool list_contains(std::string_view list, std::string_view token) noexcept {
    return any_list_item(list, [token](std::string_view item) { return item == token; });
}

/// One supported-versions item read as HAProxy's spoe_str_to_vsn reads a version: spaces, a
/// non-zero major, '.', a minor of 0..999 (by value: "2.0000" is 2.0), spaces. Returns
/// 1000 * major + minor, or -1 when the item is not a version.
[[nodiscard]] constexpr long version_value(std::string_view item) noexcept {
    const auto space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
    std::size_t i = 0;
    while (i < item.size() && space(item[i])) ++i;
    long major = 0, minor = 0;
    std::size_t digits = 0;
    for (; i < item.size() && item[i] >= '0' && item[i] <= '9'; ++i, ++digits) {
        if (digits == 6) return -1; // no real version has a major of a million
        major = major * 10 + (item[i] - '0');
    }
    if (digits == 0 || major == 0 || i == item.size() || item[i] != '.') return -1;
    ++i;
    digits = 0;
    for (; i < item.size() && item[i] >= '0' && item[i] <= '9'; ++i, ++digits) {
        minor = minor * 10 + (item[i] - '0');
        if (minor > 999) return -1;
    }
    if (digits == 0) return -1;
    while (i < item.size() && space(item[i])) ++i;
    return i == item.size() ? major * 1000 + minor : -1;
}

/// True if the list offers version 2.0. SPOE.txt 3.2.4: "when a major version is announced by
/// HAProxy, it means it also support all previous minor versions", so any 2.x item includes 2.0
/// ("2.0", " 2.00 ", "2.1", "3.0, 2.0"); "1.5" and "3.0" alone do not.
[[nodiscard]] constexpr bool offers_version_2_0(std::string_view list) noexcept {
    return any_list_item(list, [](std::string_view item) {
        const long v = version_value(item);
        return v >= 2000 && v <= 2999;
    });
}

/// Collects the HAPROXY-HELLO keys. Views point into the HELLO payload.
struct hello_fields {
    bool has_versions = false;
    bool has_max_frame_size = false;
    bool has_capabilities = false;
    bool healthcheck = false;
    std::string_view versions{};
    std::uint64_t max_frame_size = 0;
    std::string_view capabilities{};
    std::string_view engine_id{};
    /// The first known key whose value had the wrong type (empty if none).
    std::string_view bad_key{};

    action on_kv(std::string_view key, const value& v) noexcept {
        if (key == "supported-versions") {
            if (v.type != data_type::string) return bad(key);
            has_versions = true;
            versions = v.bytes;
        } else if (key == "max-frame-size") {
            if (!v.is_integer()) return bad(key);
            has_max_frame_size = true;
            max_frame_size = v.integer;
        } else if (key == "capabilities") {
            if (v.type != data_type::string) return bad(key);
            has_capabilities = true;
            capabilities = v.bytes;
        } else if (key == "healthcheck") {
            if (v.type != data_type::boolean) return bad(key);
            healthcheck = v.boolean;
        } else if (key == "engine-id") {
            if (v.type == data_type::string) engine_id = v.bytes;
        }
        return action::proceed;
    }

  private:
    action bad(std::string_view key) noexcept {
        bad_key = key;
        return action::stop;
    }
};
static_assert(kv_handler<hello_fields>);

/// Validates HAPROXY-HELLO fields against our limits.
/// Errors, in the order checked: no_version (5), bad_version (8), no_frame_size (6),
/// bad_frame_size (9: HAProxy's value below 256), no_capabilities (7).
[[nodiscard]] constexpr errc negotiate(const hello_fields& h, const agent_limits& ours,
                                       negotiated& out) noexcept {
    if (!h.has_versions) return errc::no_version;
    if (!offers_version_2_0(h.versions)) return errc::bad_version;
    if (!h.has_max_frame_size) return errc::no_frame_size;
    if (h.max_frame_size < min_max_frame_size) return errc::bad_frame_size;
    if (!h.has_capabilities) return errc::no_capabilities;
    const std::uint64_t mfs =
        h.max_frame_size < ours.max_frame_size ? h.max_frame_size : ours.max_frame_size;
    out.max_frame_size = static_cast<std::uint32_t>(mfs);
    out.pipelining = ours.pipelining && list_contains(h.capabilities, "pipelining");
    out.peer_async = list_contains(h.capabilities, "async");
    out.healthcheck = h.healthcheck;
    return errc::ok;
}

/// Parses a HAPROXY-HELLO payload and negotiates. Parse errors come back as they are
/// (truncated, varint_overflow, bad_data_type); a known key of the wrong type as bad_kv_type.
[[nodiscard]] inline errc negotiate(std::span<const std::uint8_t> hello_payload,
                                    const agent_limits& ours, negotiated& out,
                                    hello_fields& fields) noexcept {
    const result r = parse_kv_list(hello_payload, fields);
    if (r.ec == errc::stopped) return errc::bad_kv_type;
    if (!r) return r.ec;
    return negotiate(fields, ours, out);
}

/// The capabilities string an agent announces for the given limits.
[[nodiscard]] constexpr std::string_view announced_capabilities(const agent_limits& ours) noexcept {
    return ours.pipelining ? std::string_view("pipelining") : std::string_view();
}

/// Collects a DISCONNECT's status-code and message. Views point into the payload.
struct disconnect_fields {
    bool has_status = false;
    std::uint32_t status_code = 0;
    std::string_view message{};

    action on_kv(std::string_view key, const value& v) noexcept {
        if (key == "status-code" && v.is_integer()) {
            has_status = true;
            status_code =
                v.integer > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(v.integer);
        } else if (key == "message" &&
                   (v.type == data_type::string || v.type == data_type::binary)) {
            message = v.bytes;
        }
        return action::proceed;
    }
};
static_assert(kv_handler<disconnect_fields>);

} // namespace spop
