#include "overlay.hpp"

#include <algorithm>
#include <cstring>
#include <ctime>

namespace agent::iprep {

std::int64_t coarse_unix_now() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return static_cast<std::int64_t>(ts.tv_sec);
}

std::uint32_t overlay::match(const std::uint8_t* ip, bool is6) const noexcept {
    if (!is6) return v4_.lookup(key4(ip));
    static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(ip, mapped, sizeof mapped) == 0) return v4_.lookup(key4(ip + 12));
    return v6_.lookup(key6(ip));
}

const overlay::record* overlay::live(std::uint32_t v, std::int64_t now) const noexcept {
    // Bounded by the prefix length: each parent is strictly shorter.
    while (v != 0) {
        const record& r = recs_[v - 1];
        if (r.expiry == 0 || r.expiry > now) return &r;
        v = r.parent;
    }
    return nullptr;
}

const overlay::record* overlay::lookup(const std::uint8_t* ip, bool is6,
                                       std::int64_t now) const noexcept {
    return live(match(ip, is6), now);
}

const overlay::record* overlay::lookup_now(const std::uint8_t* ip, bool is6) const noexcept {
    const std::uint32_t v = match(ip, is6);
    return v == 0 ? nullptr : live(v, coarse_unix_now());
}

namespace {

template <class Key>
bool contains(const lpm_entry<Key>& outer, const lpm_entry<Key>& inner) noexcept {
    constexpr unsigned bits = sizeof(Key) * 8;
    if (outer.len > inner.len) return false;
    const Key mask = outer.len == 0 ? Key{0} : ~Key{0} << (bits - outer.len);
    return ((outer.addr ^ inner.addr) & mask) == 0;
}

/// Sorted, unique entries whose values are record indexes + 1: sets each record's parent.
template <class Key>
void link_parents(const std::vector<lpm_entry<Key>>& sorted, std::vector<overlay::record>& recs) {
    std::vector<const lpm_entry<Key>*> stack;
    for (const auto& e : sorted) {
        while (!stack.empty() && !contains(*stack.back(), e)) stack.pop_back();
        recs[e.value - 1].parent = stack.empty() ? 0 : stack.back()->value;
        stack.push_back(&e);
    }
}

template <class Key>
void sort_unique(std::vector<lpm_entry<Key>>& v) {
    // Stable: for a duplicate prefix the later entry (the later decision) is kept.
    std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        return a.addr != b.addr ? a.addr < b.addr : a.len < b.len;
    });
    std::vector<lpm_entry<Key>> out;
    out.reserve(v.size());
    for (const auto& e : v) {
        if (!out.empty() && out.back().addr == e.addr && out.back().len == e.len)
            out.back() = e;
        else
            out.push_back(e);
    }
    v.swap(out);
}

} // namespace

std::unique_ptr<overlay> build_overlay(std::vector<overlay_entry>& entries) {
    if (entries.size() > overlay::max_entries) return nullptr;
    auto o = std::make_unique<overlay>();
    o->recs_.resize(entries.size());
    std::vector<lpm_entry<std::uint64_t>> v4;
    std::vector<lpm_entry<u128>> v6;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const overlay_entry& e = entries[i];
        o->recs_[i] = {e.expiry, 0, e.category, e.score};
        const auto value = static_cast<std::uint32_t>(i + 1);
        if (e.prefix.v6)
            v6.push_back({e.prefix.v6addr, e.prefix.len, value});
        else
            v4.push_back({key4(e.prefix.v4), e.prefix.len, value});
    }
    sort_unique(v4);
    sort_unique(v6);
    link_parents(v4, o->recs_);
    link_parents(v6, o->recs_);
    if (!o->v4_.build(v4) || !o->v6_.build(v6)) return nullptr;
    return o;
}

} // namespace agent::iprep
