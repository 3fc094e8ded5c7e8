// A recording handler for both parsers (KV-LIST and NOTIFY): logs every callback as one line
// and can stop at the Nth callback (beast's test_parser fail-at-N idea, rapidjson's
// stop-at-every-callback tests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <spop/kv.hpp>
#include <spop/notify.hpp>

#include "hex.hpp"

namespace spop_test {

struct recorder {
    static constexpr std::size_t never = std::numeric_limits<std::size_t>::max();

    /// Every callback, in order: `msg "name" N`, `arg "name" <value>`, `end`, `kv "key" <value>`.
    std::vector<std::string> events;
    /// 0-based index of the callback that returns action::stop.
    std::size_t stop_at = never;
    /// When set, every view handed to a callback must lie inside this buffer (zero-copy check).
    std::span<const std::uint8_t> bounds{};
    bool views_in_bounds = true;

    recorder() = default;
    explicit recorder(std::size_t stop, std::span<const std::uint8_t> in = {})
        : stop_at(stop), bounds(in) {}

    spop::action on_message(std::string_view name, std::uint8_t nb_args) {
        check(name);
        return push("msg " + quote(name) + " " + std::to_string(nb_args));
    }
    spop::action on_arg(std::string_view name, const spop::value& v) {
        check(name);
        check(v.bytes);
        return push("arg " + quote(name) + " " + describe(v));
    }
    spop::action on_message_end() { return push("end"); }
    spop::action on_kv(std::string_view key, const spop::value& v) {
        check(key);
        check(v.bytes);
        return push("kv " + quote(key) + " " + describe(v));
    }

  private:
    spop::action push(std::string e) {
        events.push_back(std::move(e));
        return events.size() - 1 == stop_at ? spop::action::stop : spop::action::proceed;
    }
    void check(std::string_view s) {
        if (bounds.empty() || s.empty()) return;
        const auto* b = reinterpret_cast<const char*>(bounds.data());
        if (s.data() < b || s.data() + s.size() > b + bounds.size()) views_in_bounds = false;
    }
};
static_assert(spop::kv_handler<recorder>);
static_assert(spop::notify_handler<recorder>);

} // namespace spop_test
