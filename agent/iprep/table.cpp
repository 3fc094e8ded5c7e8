#include "table.hpp"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <sys/stat.h>

#include "mmdb.hpp"
#include "value.hpp"

namespace agent::iprep {

std::vector<std::string> sources_config::files() const {
    std::vector<std::string> f;
    for (const auto& l : lists) f.push_back(l.path);
    for (const auto& a : allow) f.push_back(a);
    for (const auto& c : csv) f.push_back(c);
    if (!mmdb.empty()) f.push_back(mmdb);
    return f;
}

std::uint32_t snapshot::lookup(const std::uint8_t* ip, bool is6) const noexcept {
    if (!is6) return v4.lookup(key4(ip));
    static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(ip, mapped, sizeof mapped) == 0) return v4.lookup(key4(ip + 12));
    return v6.lookup(key6(ip));
}

namespace {

std::uint64_t now_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

template <class Key>
bool addr_len_less(const lpm_entry<Key>& a, const lpm_entry<Key>& b) noexcept {
    if (a.addr != b.addr) return a.addr < b.addr;
    return a.len < b.len;
}

template <class Key>
Key last_addr(const lpm_entry<Key>& e) noexcept {
    return e.addr | (e.len == 0 ? ~Key{0} : (~Key{0} >> e.len));
}

/// Leaves in `out` the entries to build from, sorted by (addr, len), unique.
template <class Key>
void prepare(std::vector<lpm_entry<Key>>& listed, std::vector<lpm_entry<Key>>& allow,
             std::vector<lpm_entry<Key>>& out) {
    // Same prefix in several sources: the lowest score wins, then the lowest value (stable).
    std::sort(listed.begin(), listed.end(), [](const auto& a, const auto& b) {
        if (a.addr != b.addr) return a.addr < b.addr;
        if (a.len != b.len) return a.len < b.len;
        const int sa = value_score(a.value), sb = value_score(b.value);
        if (sa != sb) return sa < sb;
        return a.value < b.value;
    });
    listed.erase(std::unique(listed.begin(), listed.end(),
                             [](const auto& a, const auto& b) {
                                 return a.addr == b.addr && a.len == b.len;
                             }),
                 listed.end());
    std::stable_sort(allow.begin(), allow.end(), addr_len_less<Key>);
    allow.erase(std::unique(allow.begin(), allow.end(),
                            [](const auto& a, const auto& b) {
                                return a.addr == b.addr && a.len == b.len;
                            }),
                allow.end());
    out.clear();
    if (allow.empty()) {
        out.swap(listed);
        return;
    }
    // The union of the allow-list as disjoint intervals. A listed prefix inside one of them can
    // never win (an allowed address scores 100 whatever the lists say), so it is dropped; a
    // listed prefix that only overlaps an allowed range is kept and loses to the allowed
    // prefixes by being shorter.
    struct interval {
        Key first, last;
    };
    std::vector<interval> iv;
    for (const auto& a : allow) {
        const Key f = a.addr, l = last_addr(a);
        if (!iv.empty() &&
            (f <= iv.back().last || (iv.back().last != ~Key{0} && f == iv.back().last + 1))) {
            iv.back().last = std::max(iv.back().last, l);
        } else {
            iv.push_back({f, l});
        }
    }
    out.reserve(listed.size() + allow.size());
    for (const auto& e : listed) {
        auto it = std::upper_bound(iv.begin(), iv.end(), e.addr,
                                   [](Key k, const interval& i) { return k < i.first; });
        if (it != iv.begin()) {
            --it;
            if (last_addr(e) <= it->last) continue; // inside an allowed range
        }
        out.push_back(e);
    }
    out.insert(out.end(), allow.begin(), allow.end());
    std::sort(out.begin(), out.end(), addr_len_less<Key>);
    listed.clear();
    listed.shrink_to_fit();
}

} // namespace

std::unique_ptr<snapshot> build_snapshot(entry_sink& listed, entry_sink& allow, load_stats& st) {
    auto snap = std::make_unique<snapshot>();
    {
        std::vector<lpm_entry<std::uint64_t>> v4;
        prepare(listed.v4, allow.v4, v4);
        st.prefixes_v4 = v4.size();
        if (!snap->v4.build(v4)) return nullptr;
    }
    {
        std::vector<lpm_entry<u128>> v6;
        prepare(listed.v6, allow.v6, v6);
        st.prefixes_v6 = v6.size();
        if (!snap->v6.build(v6)) return nullptr;
    }
    st.bytes = snap->v4.memory_bytes() + snap->v6.memory_bytes();
    return snap;
}

std::unique_ptr<snapshot> load_snapshot(const sources_config& cfg, load_stats& st,
                                        parse_error& err) {
    const std::uint64_t t0 = now_ns();
    st = load_stats{};
    entry_sink listed, allow;
    read_limits lim;
    lim.max_file_size = cfg.max_file_size;
    category_pool& pool = category_pool::instance();
    auto note_mtime = [&](const std::string& path) {
        struct stat sb {};
        if (::stat(path.c_str(), &sb) == 0 && sb.st_mtime > st.newest_mtime)
            st.newest_mtime = sb.st_mtime;
    };
    // Each file is streamed into the sinks: memory grows with the entries, not with the files.
    for (const auto& l : cfg.lists) {
        const std::uint32_t v =
            encode_value(outcome_bits::listed, l.score, pool.intern(file_category(l.path)));
        const std::size_t before = listed.size();
        text_parser p(text_parser::format::list, l.path, v, listed);
        if (!parse_file(l.path, p, lim, err)) return nullptr;
        note_mtime(l.path);
        st.list_entries += listed.size() - before;
    }
    for (const auto& a : cfg.allow) {
        const std::uint32_t v =
            encode_value(outcome_bits::allowed, 100, pool.intern(file_category(a)));
        const std::size_t before = allow.size();
        text_parser p(text_parser::format::list, a, v, allow);
        if (!parse_file(a, p, lim, err)) return nullptr;
        note_mtime(a);
        st.allow_entries += allow.size() - before;
    }
    for (const auto& c : cfg.csv) {
        const std::size_t before = listed.size();
        text_parser p(text_parser::format::csv, c, 0, listed);
        if (!parse_file(c, p, lim, err)) return nullptr;
        note_mtime(c);
        st.csv_entries += listed.size() - before;
    }
    if (!cfg.mmdb.empty()) {
        if (!import_mmdb(cfg.mmdb, listed, st.mmdb_networks, cfg.max_file_size, err))
            return nullptr;
        note_mtime(cfg.mmdb);
    }
    auto snap = build_snapshot(listed, allow, st);
    if (!snap) {
        err = {cfg.files().empty() ? std::string("tables") : cfg.files().front(), 0,
               "tables too large (more than 2^31 nodes or leaves)"};
        return nullptr;
    }
    st.build_ns = now_ns() - t0;
    return snap;
}

} // namespace agent::iprep
