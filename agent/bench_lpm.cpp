// LPM benchmark: lookup time at 1M prefixes (IPv4 and IPv6), table build time and memory per
// prefix. Run:  build/agent/bench_lpm  (or meson test --benchmark lpm)
//
// Prefix sets (fixed seed):
//   IPv4 1M: 50% /32 (blocklist hosts), 30% /24, 20% uniform /8../31; addresses uniform.
//   IPv6 1M: inside 2000::/3; 30% /48, 20% /32, 20% /64, 10% /128, 20% uniform /16../128.
// Queries: 1M addresses in random order, either "hit" (inside a random prefix of the set) or
// "random" (uniform over the space, mostly the short prefixes or no match), so caches do not
// hold the working set. Counters: bytes_per_prefix, table_MiB, nodes, leaves.
//
// Lookup_*_Hit/Random measure the raw table's throughput (independent lookups overlap in the
// CPU), Lookup_*_Latency one lookup at a time (each key depends on the previous result);
// Source_* go through reputation_source::lookup (the read
// section, the snapshot pointer, IPv4-mapped detection and decoding), which is what a worker
// pays per NOTIFY.
//
// Live decisions (overlay.hpp): Decisions4_* go through reputation_source::lookup with the same
// 1M IPv4 list prefixes and 100k live decisions on top (70% /32, 30% /24, half with an expiry a
// day away, so the coarse clock is read on a match): ListHit queries hit list prefixes (and few
// decisions), DecisionHit queries hit a decision. BuildOverlay is what the follower pays per
// published change at that many decisions.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "iprep/lpm.hpp"
#include "iprep/overlay.hpp"
#include "iprep/reputation.hpp"
#include "iprep/table.hpp"
#include "iprep/value.hpp"

using namespace agent;
using namespace agent::iprep;

namespace {

constexpr std::size_t n_prefixes = 1'000'000;
constexpr std::size_t n_queries = 1 << 20;

entry_sink make_v4(std::size_t n) {
    std::mt19937_64 rng(4);
    entry_sink s;
    s.v4.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned r = static_cast<unsigned>(rng() % 100);
        unsigned len = r < 50 ? 32 : r < 80 ? 24 : 8 + static_cast<unsigned>(rng() % 24);
        net_prefix p;
        p.len = static_cast<std::uint8_t>(len);
        p.v4 = static_cast<std::uint32_t>(rng()) & (len == 0 ? 0u : ~0u << (32 - len));
        s.add(p, encode_value(outcome_bits::listed, static_cast<int>(rng() % 101), 0));
    }
    return s;
}

entry_sink make_v6(std::size_t n) {
    std::mt19937_64 rng(6);
    entry_sink s;
    s.v6.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned r = static_cast<unsigned>(rng() % 100);
        unsigned len = r < 30   ? 48
                       : r < 50 ? 32
                       : r < 70 ? 64
                       : r < 80 ? 128
                                : 16 + static_cast<unsigned>(rng() % 113);
        u128 a = (static_cast<u128>(rng()) << 64) | rng();
        a = (a >> 3) | (static_cast<u128>(1) << 125); // 2000::/3
        net_prefix p;
        p.v6 = true;
        p.len = static_cast<std::uint8_t>(len);
        p.v6addr = a & (~u128{0} << (128 - len));
        s.add(p, encode_value(outcome_bits::listed, static_cast<int>(rng() % 101), 0));
    }
    return s;
}

struct fixture {
    reputation_source rep;          ///< owns the snapshot
    const snapshot* snap = nullptr; ///< the published snapshot, for raw table lookups
    load_stats st;
    std::vector<std::uint64_t> q4_hit, q4_rand;
    std::vector<u128> q6_hit, q6_rand;
    std::vector<std::array<std::uint8_t, 16>> b4_hit, b6_hit;
};

fixture& get() {
    static fixture* f = [] {
        auto* fx = new fixture;
        entry_sink listed = make_v4(n_prefixes);
        entry_sink v6 = make_v6(n_prefixes);
        listed.v6 = std::move(v6.v6);
        // Keep copies of the prefixes for hit queries (build_snapshot consumes the sink).
        const auto p4 = listed.v4;
        const auto p6 = listed.v6;
        entry_sink allow;
        auto built = build_snapshot(listed, allow, fx->st);
        fx->snap = built.get();
        fx->rep.publish(std::move(built));
        std::mt19937_64 rng(99);
        for (std::size_t i = 0; i < n_queries; ++i) {
            const auto& e4 = p4[rng() % p4.size()];
            const std::uint64_t host4 =
                e4.len >= 32 ? 0 : (rng() & ((std::uint64_t{1} << (32 - e4.len)) - 1)) << 32;
            fx->q4_hit.push_back(e4.addr | host4);
            fx->q4_rand.push_back((rng() & 0xFFFFFFFFull) << 32);
            const auto& e6 = p6[rng() % p6.size()];
            const u128 r6 = (static_cast<u128>(rng()) << 64) | rng();
            const u128 host6 = e6.len >= 128 ? 0 : r6 & (~u128{0} >> e6.len);
            fx->q6_hit.push_back(e6.addr | host6);
            fx->q6_rand.push_back((r6 >> 3) | (static_cast<u128>(1) << 125));
        }
        for (std::size_t i = 0; i < n_queries; ++i) {
            std::array<std::uint8_t, 16> b{};
            const auto v4 = static_cast<std::uint32_t>(fx->q4_hit[i] >> 32);
            b[0] = static_cast<std::uint8_t>(v4 >> 24);
            b[1] = static_cast<std::uint8_t>(v4 >> 16);
            b[2] = static_cast<std::uint8_t>(v4 >> 8);
            b[3] = static_cast<std::uint8_t>(v4);
            fx->b4_hit.push_back(b);
            for (int k = 0; k < 16; ++k)
                b[static_cast<std::size_t>(k)] =
                    static_cast<std::uint8_t>(fx->q6_hit[i] >> (120 - 8 * k));
            fx->b6_hit.push_back(b);
        }
        return fx;
    }();
    return *f;
}

void table_counters(benchmark::State& state, std::size_t bytes, std::size_t prefixes,
                    std::size_t nodes, std::size_t leaves, std::size_t tails) {
    state.counters["prefixes"] = static_cast<double>(prefixes);
    state.counters["table_MiB"] = static_cast<double>(bytes) / (1024.0 * 1024.0);
    state.counters["bytes_per_prefix"] = static_cast<double>(bytes) / static_cast<double>(prefixes);
    state.counters["nodes"] = static_cast<double>(nodes);
    state.counters["leaves"] = static_cast<double>(leaves);
    state.counters["tail_entries"] = static_cast<double>(tails);
}

template <class Trie, class Key>
void run_lookups(benchmark::State& state, const Trie& t, const std::vector<Key>& q) {
    std::size_t i = 0;
    std::uint64_t sum = 0;
    for (auto _ : state) {
        sum += t.lookup(q[i]);
        i = (i + 1) & (n_queries - 1);
    }
    benchmark::DoNotOptimize(sum);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

/// Each lookup's key depends on the previous result (which is never >= 2^31, so the index only
/// advances): no overlap between lookups, i.e. latency rather than throughput.
template <class Trie, class Key>
void run_dependent(benchmark::State& state, const Trie& t, const std::vector<Key>& q) {
    std::size_t i = 0;
    for (auto _ : state) {
        const std::uint32_t v = t.lookup(q[i]);
        i = (i + 1 + (v >> 31)) & (n_queries - 1);
    }
    benchmark::DoNotOptimize(i);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void BM_Lookup4_Hit(benchmark::State& state) {
    auto& f = get();
    run_lookups(state, f.snap->v4, f.q4_hit);
    table_counters(state, f.snap->v4.memory_bytes(), f.st.prefixes_v4, f.snap->v4.node_count(),
                   f.snap->v4.leaf_count(), f.snap->v4.tail_count());
}
void BM_Lookup4_Random(benchmark::State& state) {
    auto& f = get();
    run_lookups(state, f.snap->v4, f.q4_rand);
}
void BM_Lookup6_Hit(benchmark::State& state) {
    auto& f = get();
    run_lookups(state, f.snap->v6, f.q6_hit);
    table_counters(state, f.snap->v6.memory_bytes(), f.st.prefixes_v6, f.snap->v6.node_count(),
                   f.snap->v6.leaf_count(), f.snap->v6.tail_count());
}
void BM_Lookup6_Random(benchmark::State& state) {
    auto& f = get();
    run_lookups(state, f.snap->v6, f.q6_rand);
}

void BM_Lookup4_Latency(benchmark::State& state) {
    auto& f = get();
    run_dependent(state, f.snap->v4, f.q4_hit);
}
void BM_Lookup6_Latency(benchmark::State& state) {
    auto& f = get();
    run_dependent(state, f.snap->v6, f.q6_hit);
}

/// Through reputation_source::lookup, as a worker calls it.
void source_lookups(benchmark::State& state, bool v6) {
    auto& f = get();
    const reputation_source* rep = &f.rep;
    const auto& q = v6 ? f.b6_hit : f.b4_hit;
    std::size_t i = 0;
    std::uint64_t sum = 0;
    for (auto _ : state) {
        const lookup_result r = rep->lookup(q[i].data(), v6);
        sum += static_cast<std::uint64_t>(r.score) + r.category.size();
        i = (i + 1) & (n_queries - 1);
    }
    benchmark::DoNotOptimize(sum);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
void BM_Source4_Hit(benchmark::State& state) {
    source_lookups(state, false);
}
void BM_Source6_Hit(benchmark::State& state) {
    source_lookups(state, true);
}

std::vector<overlay_entry> make_decisions(std::size_t n) {
    std::mt19937_64 rng(15);
    std::vector<overlay_entry> v;
    v.reserve(n);
    const std::int64_t later = coarse_unix_now() + 86400;
    for (std::size_t i = 0; i < n; ++i) {
        net_prefix p;
        p.len = rng() % 10 < 7 ? 32 : 24;
        p.v4 = static_cast<std::uint32_t>(rng()) & (~0u << (32 - p.len));
        v.push_back({p, static_cast<int>(rng() % 101), i % 2 == 0 ? 0 : later, 0});
    }
    return v;
}

struct decisions_fixture {
    reputation_source rep;
    std::vector<std::array<std::uint8_t, 16>> list_hit, decision_hit;
};

decisions_fixture& get_decisions() {
    static decisions_fixture* f = [] {
        auto* fx = new decisions_fixture;
        entry_sink listed = make_v4(n_prefixes), allow;
        load_stats st;
        fx->rep.publish(build_snapshot(listed, allow, st));
        auto d = make_decisions(100'000);
        const auto copy = d;
        fx->rep.publish_overlay(build_overlay(d));
        fx->list_hit = get().b4_hit;
        std::mt19937_64 rng(16);
        for (std::size_t i = 0; i < n_queries; ++i) {
            const auto& e = copy[rng() % copy.size()].prefix;
            const std::uint32_t a =
                e.v4 | (e.len >= 32 ? 0u : static_cast<std::uint32_t>(rng()) & (~0u >> e.len));
            fx->decision_hit.push_back(
                {static_cast<std::uint8_t>(a >> 24), static_cast<std::uint8_t>(a >> 16),
                 static_cast<std::uint8_t>(a >> 8), static_cast<std::uint8_t>(a)});
        }
        return fx;
    }();
    return *f;
}

void decision_lookups(benchmark::State& state, bool decision_hits) {
    auto& f = get_decisions();
    const reputation_source* rep = &f.rep;
    const auto& q = decision_hits ? f.decision_hit : f.list_hit;
    std::size_t i = 0;
    std::uint64_t sum = 0, decided = 0;
    for (auto _ : state) {
        const lookup_result r = rep->lookup(q[i].data(), false);
        sum += static_cast<std::uint64_t>(r.score) + r.category.size();
        decided += r.outcome == lookup_outcome::decided;
        i = (i + 1) & (n_queries - 1);
    }
    benchmark::DoNotOptimize(sum);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
    state.counters["decided_pct"] =
        100.0 * static_cast<double>(decided) / static_cast<double>(state.iterations());
}
void BM_Decisions4_ListHit(benchmark::State& state) {
    decision_lookups(state, false);
}
void BM_Decisions4_DecisionHit(benchmark::State& state) {
    decision_lookups(state, true);
}

void BM_BuildOverlay(benchmark::State& state) {
    const auto src = make_decisions(static_cast<std::size_t>(state.range(0)));
    std::size_t bytes = 0;
    for (auto _ : state) {
        state.PauseTiming();
        auto v = src;
        state.ResumeTiming();
        auto o = build_overlay(v);
        bytes = o->memory_bytes();
        state.PauseTiming();
        o.reset();
        state.ResumeTiming();
    }
    state.counters["overlay_MiB"] = static_cast<double>(bytes) / (1024.0 * 1024.0);
}

/// Build time from parsed entries: sort, deduplicate, allow-list filter, Poptrie construction.
void BM_Build4(benchmark::State& state) {
    const entry_sink src = make_v4(static_cast<std::size_t>(state.range(0)));
    load_stats st;
    std::size_t bytes = 0, nodes = 0, leaves = 0, tails = 0;
    for (auto _ : state) {
        state.PauseTiming();
        entry_sink listed = src, allow;
        state.ResumeTiming();
        auto s = build_snapshot(listed, allow, st);
        bytes = s->v4.memory_bytes();
        nodes = s->v4.node_count();
        leaves = s->v4.leaf_count();
        tails = s->v4.tail_count();
        state.PauseTiming();
        s.reset();
        state.ResumeTiming();
    }
    table_counters(state, bytes, st.prefixes_v4, nodes, leaves, tails);
}
void BM_Build6(benchmark::State& state) {
    const entry_sink src = make_v6(static_cast<std::size_t>(state.range(0)));
    load_stats st;
    std::size_t bytes = 0, nodes = 0, leaves = 0, tails = 0;
    for (auto _ : state) {
        state.PauseTiming();
        entry_sink listed = src, allow;
        state.ResumeTiming();
        auto s = build_snapshot(listed, allow, st);
        bytes = s->v6.memory_bytes();
        nodes = s->v6.node_count();
        leaves = s->v6.leaf_count();
        tails = s->v6.tail_count();
        state.PauseTiming();
        s.reset();
        state.ResumeTiming();
    }
    table_counters(state, bytes, st.prefixes_v6, nodes, leaves, tails);
}

} // namespace

BENCHMARK(BM_Lookup4_Hit);
BENCHMARK(BM_Lookup4_Random);
BENCHMARK(BM_Lookup6_Hit);
BENCHMARK(BM_Lookup6_Random);
BENCHMARK(BM_Lookup4_Latency);
BENCHMARK(BM_Lookup6_Latency);
BENCHMARK(BM_Source4_Hit);
BENCHMARK(BM_Source6_Hit);
BENCHMARK(BM_Decisions4_ListHit);
BENCHMARK(BM_Decisions4_DecisionHit);
BENCHMARK(BM_BuildOverlay)->Arg(10'000)->Arg(100'000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Build4)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_Build6)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->Iterations(2);

BENCHMARK_MAIN();
