// Shared helpers for the libFuzzer harnesses: a check macro that aborts (libFuzzer reports it as
// a crash and saves the input), owned copies of decoded values, and recording handlers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <spop/spop.hpp>

/// Invariant check that survives NDEBUG: prints the condition, then aborts.
#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__,    \
                         #cond);                                                              \
            std::abort();                                                                     \
        }                                                                                     \
    } while (0)

namespace spop_fuzz {

using bytes = std::vector<std::uint8_t>;

inline std::span<const std::uint8_t> as_span(const bytes& b) noexcept { return {b.data(), b.size()}; }

/// True if `v` views memory entirely inside [base, base + size).
inline bool inside(std::string_view v, const std::uint8_t* base, std::size_t size) noexcept {
    if (v.empty()) return true;
    const auto* p = reinterpret_cast<const std::uint8_t*>(v.data());
    return p >= base && p <= base + size && v.size() <= static_cast<std::size_t>(base + size - p);
}

/// A decoded value that owns its bytes. Equality is semantic: the decoder already reduced the
/// type byte to its low nibble (STRING vs BINARY) and BOOL to its value.
struct owned_value {
    spop::data_type type = spop::data_type::null;
    bool boolean = false;
    std::uint64_t integer = 0;
    std::string bytes;

    static owned_value of(const spop::value& v) {
        return {v.type, v.boolean, v.integer, std::string(v.bytes)};
    }
    [[nodiscard]] spop::value view() const noexcept {
        return spop::value{type, boolean, integer, std::string_view(bytes)};
    }
    friend bool operator==(const owned_value&, const owned_value&) = default;
};

struct owned_arg {
    std::string name;
    owned_value v;
    friend bool operator==(const owned_arg&, const owned_arg&) = default;
};

struct owned_message {
    std::string name;
    std::uint8_t nb_args = 0;
    std::vector<owned_arg> args;
    bool ended = false;
    friend bool operator==(const owned_message&, const owned_message&) = default;
};

/// Checks what every decoded value must satisfy, whatever the input.
inline void check_value_shape(const spop::value& v, const std::uint8_t* base, std::size_t size) {
    FUZZ_CHECK(static_cast<unsigned>(v.type) <= static_cast<unsigned>(spop::data_type::binary));
    FUZZ_CHECK(inside(v.bytes, base, size));
    switch (v.type) {
    case spop::data_type::ipv4: FUZZ_CHECK(v.bytes.size() == 4); break;
    case spop::data_type::ipv6: FUZZ_CHECK(v.bytes.size() == 16); break;
    case spop::data_type::string:
    case spop::data_type::binary: break;
    default: FUZZ_CHECK(v.bytes.empty()); break;
    }
    if (v.type != spop::data_type::boolean) FUZZ_CHECK(!v.boolean);
    if (!v.is_integer()) FUZZ_CHECK(v.integer == 0);
}

/// Records a NOTIFY payload as owned messages, checking the callback protocol on the way
/// (on_arg only inside a message, exactly nb_args of them before on_message_end).
struct notify_recorder {
    const std::uint8_t* base = nullptr;
    std::size_t size = 0;
    std::vector<owned_message> msgs;
    bool in_message = false;

    spop::action on_message(std::string_view name, std::uint8_t nb_args) {
        FUZZ_CHECK(!in_message);
        FUZZ_CHECK(inside(name, base, size));
        msgs.push_back({std::string(name), nb_args, {}, false});
        in_message = true;
        return spop::action::proceed;
    }
    spop::action on_arg(std::string_view name, const spop::value& v) {
        FUZZ_CHECK(in_message);
        FUZZ_CHECK(inside(name, base, size));
        check_value_shape(v, base, size);
        owned_message& m = msgs.back();
        FUZZ_CHECK(m.args.size() < m.nb_args);
        m.args.push_back({std::string(name), owned_value::of(v)});
        return spop::action::proceed;
    }
    spop::action on_message_end() {
        FUZZ_CHECK(in_message);
        owned_message& m = msgs.back();
        FUZZ_CHECK(m.args.size() == m.nb_args);
        m.ended = true;
        in_message = false;
        return spop::action::proceed;
    }
};
static_assert(spop::notify_handler<notify_recorder>);

struct owned_kv {
    std::string key;
    owned_value v;
    friend bool operator==(const owned_kv&, const owned_kv&) = default;
};

/// Records a KV-LIST; optionally stops after `stop_after` pairs.
struct kv_recorder {
    const std::uint8_t* base = nullptr;
    std::size_t size = 0;
    std::vector<owned_kv> kvs;
    std::size_t stop_after = SIZE_MAX;

    spop::action on_kv(std::string_view key, const spop::value& v) {
        FUZZ_CHECK(inside(key, base, size));
        check_value_shape(v, base, size);
        kvs.push_back({std::string(key), owned_value::of(v)});
        return kvs.size() >= stop_after ? spop::action::stop : spop::action::proceed;
    }
};
static_assert(spop::kv_handler<kv_recorder>);

/// FNV-1a, to derive deterministic parameters (ids, flags) from the input.
inline std::uint64_t fnv1a(const std::uint8_t* p, std::size_t n) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (std::size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/// A tiny deterministic PRNG (xorshift64*), seeded from the input.
struct rng {
    std::uint64_t s;
    explicit rng(std::uint64_t seed) noexcept : s(seed ? seed : 0x9E3779B97F4A7C15ull) {}
    std::uint64_t next() noexcept {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
    /// Uniform-ish in [0, n); n > 0.
    std::size_t below(std::size_t n) noexcept { return static_cast<std::size_t>(next() % n); }
};

} // namespace spop_fuzz
