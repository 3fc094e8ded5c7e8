// spop::server::prometheus: a service's families through the Stats hook, the prefix, the extra
// callback and the order of the page; and the agent's page (engine, iprep hook, reload
// statistics) as a well-formed exposition. In a file of its own: reputation_test.cpp replaces
// operator new to count allocations, which makes GCC 12 warn (-Wmismatched-new-delete) about
// the vectors inlined here.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <spop/server/prometheus.hpp>

#include "../metrics.hpp"

using namespace agent;

namespace {

/// Structure of a text exposition: every family declared (HELP then TYPE) once, before its
/// samples, and every sample line `name[{labels}] value` in a declared family.
void check_exposition(const std::string& m) {
    std::vector<std::string> declared;
    std::string current; // the family whose samples may follow
    std::size_t samples = 0;
    for (std::size_t pos = 0; pos < m.size();) {
        const std::size_t nl = m.find('\n', pos);
        ASSERT_NE(nl, std::string::npos) << "last line without a newline";
        const std::string line = m.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.rfind("# HELP ", 0) == 0) continue;
        if (line.rfind("# TYPE ", 0) == 0) {
            current = line.substr(7, line.find(' ', 7) - 7);
            for (const auto& d : declared) EXPECT_NE(d, current) << "declared twice: " << current;
            declared.push_back(current);
            continue;
        }
        const std::size_t end = line.find_first_of("{ ");
        ASSERT_NE(end, std::string::npos) << line;
        const std::string name = line.substr(0, end);
        const bool ok = name == current || name == current + "_bucket" ||
                        name == current + "_sum" || name == current + "_count";
        EXPECT_TRUE(ok) << "sample outside its family (" << current << "): " << line;
        ++samples;
    }
    EXPECT_GT(samples, 0u);
}

/// Blocks with a service's own counters and the hook that renders them.
struct widget_stats : spop::server::worker_stats {
    spop::server::counter widgets;
    static void render_metrics(spop::server::prometheus::writer& w,
                               std::span<const widget_stats* const> workers) {
        std::uint64_t n = 0;
        for (const auto* s : workers) n += s->widgets.get();
        w.one("widgets_total", "counter", "Widgets made.", n);
        w.header("worker_widgets_total", "counter", "Widgets made, per worker.");
        for (std::size_t i = 0; i < workers.size(); ++i)
            w.worker_sample("worker_widgets_total", i, "kind=\"a\"", workers[i]->widgets.get());
    }
};
static_assert(spop::server::prometheus::has_service_metrics<widget_stats>);
static_assert(!spop::server::prometheus::has_service_metrics<spop::server::worker_stats>);
static_assert(spop::server::prometheus::has_service_metrics<agent::worker_stats>);

} // namespace

TEST(Prometheus, ServiceHookPrefixAndExtra) {
    namespace prom = spop::server::prometheus;
    widget_stats a, b;
    a.acks.add(1);
    b.acks.add(2);
    a.widgets.add(3);
    b.widgets.add(2);
    b.conns_current.sub(); // read between another thread's sub and add: shown as 0
    const std::array<const widget_stats*, 2> ws{&a, &b};
    std::string m;
    prom::writer w(m, "my_");
    prom::render(w, std::span<const widget_stats* const>(ws),
                 prom::process_info{1500, "epoll", "1.0\"x\\"},
                 [](prom::writer& pw) { pw.one("extra_things", "gauge", "Extra.", 9); });
    auto at = [&](const std::string& line) {
        const std::size_t p = m.find("\n" + line + "\n");
        EXPECT_NE(p, std::string::npos) << line << "\n---\n" << m;
        return p;
    };
    at("my_acks_total 3");
    at("my_connections 0");
    at("my_worker_connections{worker=\"1\"} 0");
    const std::size_t widgets = at("my_widgets_total 5");
    at("my_worker_widgets_total{worker=\"1\",kind=\"a\"} 2");
    const std::size_t extra = at("my_extra_things 9");
    const std::size_t workers = at("my_workers 2");
    at("my_start_time_seconds 1.5");
    at("my_build_info{version=\"1.0\\\"x\\\\\",engine=\"epoll\"} 1");
    // The engine's families, then the hook's, then `extra`, then the process's.
    EXPECT_LT(at("my_worker_acks_total{worker=\"0\"} 1"), widgets);
    EXPECT_LT(widgets, extra);
    EXPECT_LT(extra, workers);
    EXPECT_EQ(m.find("spop_agent_"), std::string::npos);
    check_exposition(m);

    // Without a hook, with the default prefix.
    spop::server::worker_stats plain;
    plain.notify_frames.add(4);
    const std::array<const spop::server::worker_stats*, 1> ps{&plain};
    const std::string p = prom::render(std::span<const spop::server::worker_stats* const>(ps),
                                       prom::process_info{0, "io_uring", "t"});
    EXPECT_NE(p.find("\nspop_agent_frames_received_total{type=\"notify\"} 4\n"), std::string::npos)
        << p;
    EXPECT_EQ(p.find("lookups"), std::string::npos);
    check_exposition(p);

    // Straight from server::stats(): the hook found, the default prefix.
    std::vector<std::unique_ptr<widget_stats>> blocks;
    blocks.push_back(std::make_unique<widget_stats>());
    blocks.push_back(std::make_unique<widget_stats>());
    blocks[1]->widgets.add(6);
    blocks[0]->hello_frames.add(1);
    const std::string q = prom::render(blocks, prom::process_info{0, "epoll", "t"});
    EXPECT_NE(q.find("\nspop_agent_widgets_total 6\n"), std::string::npos) << q;
    EXPECT_NE(q.find("\nspop_agent_frames_sent_total{type=\"agent-hello\"} 1\n"), std::string::npos)
        << q;
    EXPECT_NE(q.find("\nspop_agent_workers 2\n"), std::string::npos) << q;
    check_exposition(q);
}

TEST(Metrics, AgentPageIsWellFormed) {
    worker_stats a, b;
    a.lookups_default.add(2);
    b.ack_actions_dropped.add(3);
    iprep::reload_stats rs;
    metrics_sources src;
    src.workers = {&a, &b};
    src.reload = &rs;
    src.engine = "io_uring";
    src.version = "t";
    const std::string m = render_metrics(src);
    check_exposition(m);
    EXPECT_NE(m.find("\nspop_agent_ack_actions_dropped_total 3\n"), std::string::npos) << m;
    EXPECT_NE(m.find("\nspop_agent_worker_lookups_total{worker=\"0\",outcome=\"default\"} 2\n"),
              std::string::npos)
        << m;
    // Without reload statistics, no reputation-data families.
    src.reload = nullptr;
    const std::string n = render_metrics(src);
    check_exposition(n);
    EXPECT_EQ(n.find("spop_agent_reloads_total"), std::string::npos);
    EXPECT_NE(n.find("spop_agent_lookups_total"), std::string::npos);
}
