// Zero allocations on the hot path: global operator new/delete are replaced in this binary by
// counting versions; a steady-state NOTIFY -> ACK loop through the connection, and
// parse_notify + ack_writer alone, must not allocate at all after warm-up.
#include <spop/spop.hpp>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "support/counting_new.hpp"
#include "support/hex.hpp"
#include "support/vectors.hpp"

namespace {

using spop::errc;
using spop::value;
using spop_test::bytes;
using spop_test::unhex;
using spop_test_alloc::alloc_window;

/// A service that looks at the arguments and answers without allocating.
struct scoring {
    static constexpr std::size_t max_ack_size = 64;
    std::size_t notifies = 0;
    std::uint64_t checksum = 0;

    struct handler {
        std::uint64_t* sum;
        spop::action on_message(std::string_view name, std::uint8_t n) noexcept {
            *sum += name.size() + n;
            return spop::action::proceed;
        }
        spop::action on_arg(std::string_view name, const value& v) noexcept {
            *sum += name.size() + v.bytes.size() + v.integer;
            return spop::action::proceed;
        }
        spop::action on_message_end() noexcept { return spop::action::proceed; }
    };

    errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        handler h{&checksum};
        const spop::result r = req.parse(h);
        if (!r) return r.ec;
        ++notifies;
        ack.set_var(spop::var_scope::sess, "ip_score", value::from_uint32(42));
        return errc::ok;
    }
};
static_assert(spop::service<scoring>);

bytes notify_frame(std::uint64_t sid) {
    bytes buf(128);
    const std::array<std::uint8_t, 4> ip{10, 0, 0, 1};
    spop::notify_writer w(buf, sid, 1, spop::default_max_frame_size);
    w.message("check-client-ip", 1);
    w.arg("ip", value::from_ipv4(ip));
    const spop::result r = w.finish();
    buf.resize(r.consumed);
    return buf;
}

TEST(Alloc, CountingIsActive) {
    // The replacement must really be in effect, or the zero checks below prove nothing.
    alloc_window w;
    // Direct operator calls: unlike new-expressions, the compiler may not elide them.
    void* p = ::operator new(16);
    ::operator delete(p);
    void* q = ::operator new[](32, std::nothrow);
    ::operator delete[](q);
    w.stop();
    EXPECT_GE(w.news(), 2u);
    EXPECT_GE(w.deletes(), 1u);
}

TEST(Alloc, SteadyStateConnectionLoopAllocatesNothing) {
    spop::connection_config cfg;
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    scoring svc;
    spop::connection<scoring> conn(svc, pool, cfg);

    // A batch of 20 pipelined NOTIFYs, 3.x-style odd stream-ids.
    bytes batch;
    for (std::uint64_t i = 0; i < 20; ++i) spop_test::append(batch, notify_frame(2 * i + 1));

    (void)conn.feed(unhex(spop_test::vec::v1_hello_34));
    ASSERT_EQ(conn.state(), spop::conn_state::established);
    conn.consume_output(conn.output().size());

    // Warm-up: one whole batch and one split mid-frame, so every buffer has been acquired once.
    (void)conn.feed(batch);
    conn.consume_output(conn.output().size());
    (void)conn.feed(std::span<const std::uint8_t>(batch).first(50));
    (void)conn.feed(std::span<const std::uint8_t>(batch).subspan(50));
    conn.consume_output(conn.output().size());
    const std::size_t warm_notifies = svc.notifies;
    const std::size_t pool_allocs = pool.allocations();

    std::size_t acks_bytes = 0, not_whole = 0;
    constexpr std::size_t loops = 10000 / 20;
    {
        alloc_window w;
        for (std::size_t i = 0; i < loops; ++i) {
            // Vary the split point, including inside a length prefix, to exercise reassembly.
            const std::size_t cut = (i * 7) % batch.size();
            (void)conn.feed(std::span<const std::uint8_t>(batch).first(cut));
            (void)conn.feed(std::span<const std::uint8_t>(batch).subspan(cut));
            const auto out = conn.output();
            acks_bytes += out.size();
            if (out.size() % 25 != 0) ++not_whole;
            // A short write first, then the rest.
            conn.consume_output(out.size() / 3);
            conn.consume_output(conn.output().size());
        }
        w.stop();
        EXPECT_EQ(w.news(), 0u) << "operator new called in the steady state";
        EXPECT_EQ(w.deletes(), 0u) << "operator delete called in the steady state";
    }
    EXPECT_EQ(svc.notifies - warm_notifies, loops * 20);
    EXPECT_EQ(acks_bytes, loops * 20 * 25) << "every ACK is V7-sized (25 bytes)";
    EXPECT_EQ(not_whole, 0u);
    EXPECT_EQ(pool.allocations(), pool_allocs) << "the pool never went back to the system";
    EXPECT_EQ(conn.state(), spop::conn_state::established);
}

TEST(Alloc, ParseNotifyAndAckWriterAllocateNothing) {
    const bytes frame = unhex(spop_test::vec::v5_notify_34);
    std::vector<std::uint8_t> out(1024);
    std::uint64_t sum = 0;
    std::size_t ok = 0;
    {
        alloc_window w;
        for (int i = 0; i < 10000; ++i) {
            spop::frame f;
            if (!spop::split_frame(frame, spop::default_max_frame_size, f)) continue;
            scoring::handler h{&sum};
            if (!spop::parse_notify(f.payload, h)) continue;
            spop::ack_writer ack(out, f.stream_id, f.frame_id, spop::default_max_frame_size);
            ack.set_var(spop::var_scope::sess, "ip_score", value::from_uint32(42));
            ack.unset_var(spop::var_scope::txn, "spop_noop");
            if (ack.finish()) ++ok;
        }
        w.stop();
        EXPECT_EQ(w.news(), 0u);
        EXPECT_EQ(w.deletes(), 0u);
    }
    EXPECT_EQ(ok, 10000u);
    EXPECT_NE(sum, 0u);
}

TEST(Alloc, HandshakeAndDisconnectAllocateNothing) {
    spop::connection_config cfg;
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    scoring svc;
    const bytes hello = unhex(spop_test::vec::v1_hello_34);
    const bytes disc = unhex(spop_test::vec::v8_disc_idle);
    {
        // Warm the pool with one full connection lifetime.
        spop::connection<scoring> conn(svc, pool, cfg);
        (void)conn.feed(hello);
        (void)conn.feed(disc);
        conn.consume_output(conn.output().size());
    }
    alloc_window w;
    for (int i = 0; i < 100; ++i) {
        spop::connection<scoring> conn(svc, pool, cfg);
        (void)conn.feed(hello);
        conn.consume_output(conn.output().size());
        (void)conn.feed(disc);
        conn.consume_output(conn.output().size());
    }
    w.stop();
    EXPECT_EQ(w.news(), 0u);
}

TEST(Alloc, RouterAndTypedGettersAllocateNothing) {
    // Two routed messages with every getter, an unrouted one, and the V5 vector.
    bytes frame(512);
    {
        const std::array<std::uint8_t, 16> ip6{0x20, 0x01, 0x0d, 0xb8};
        spop::notify_writer w(frame, 1, 1, spop::default_max_frame_size);
        w.message("check-client-ip", 4);
        w.arg("ip", value::from_ipv6(ip6));
        w.arg("xff", value::from_string("192.0.2.7"));
        w.arg("port", value::from_int64(443));
        w.arg("", value::from_binary("tls"));
        w.message("skipped", 1);
        w.arg("x", value::from_bool(true));
        w.message("check-ua", 1);
        w.arg("ua", value::from_string("Googlebot/2.1"));
        frame.resize(w.finish().consumed);
    }
    const bytes v5 = unhex(spop_test::vec::v5_notify_34);
    std::vector<std::uint8_t> out(1024);
    std::uint64_t sum = 0;
    spop::router r{
        spop::on("check-client-ip",
                 [&sum](const spop::message_view& m, spop::ack_writer& ack) noexcept {
                     const auto ip = m.ip("ip");
                     sum += ip->size() + m.ip_or_string("xff")->size() +
                            static_cast<std::uint64_t>(m.integer("port").value_or(0)) +
                            m.binary(3)->size() + m.ip(0)->size();
                     for (const spop::argument& a : m) sum += a.name.size();
                     if (ip) ack.set_var(spop::var_scope::sess, "ip_score", ip->to_value());
                 }),
        spop::on("check-ua",
                 [&sum](const spop::message_view& m, spop::ack_writer& ack) noexcept {
                     const auto ua = m.string("ua");
                     sum += ua->size() + (m.boolean("ua").status() == spop::arg_status::wrong_type);
                     ack.set_var(spop::var_scope::txn, "is_bot", value::from_bool(ua.has_value()));
                 }),
    };
    std::size_t ok = 0;
    {
        alloc_window w;
        for (int i = 0; i < 10000; ++i) {
            spop::frame f;
            if (!spop::split_frame(i % 2 ? frame : v5, spop::default_max_frame_size, f)) continue;
            const spop::notify_request req{f.stream_id, f.frame_id, f.flags, f.payload};
            spop::ack_writer ack(out, f.stream_id, f.frame_id, spop::default_max_frame_size);
            if (r.dispatch(req, ack) == errc::ok && !ack.empty() && ack.finish()) ++ok;
        }
        w.stop();
        EXPECT_EQ(w.news(), 0u);
        EXPECT_EQ(w.deletes(), 0u);
    }
    EXPECT_EQ(ok, 10000u);
    // Per rich NOTIFY: ip 16, xff 4, port 443, binary 3, ip(0) 16, names 2+3+4+0, ua 13 + 1.
    // Per V5: ip 4, ip(0) 4, name 2; the other getters answer missing.
    EXPECT_EQ(sum, 5000u * (16 + 4 + 443 + 3 + 16 + 9 + 14) + 5000u * (4 + 4 + 2));
}

} // namespace

namespace {

/// A fixed pool of tickets with fixed storage, as an engine keeps per worker.
struct fixed_deferral final : spop::deferral {
    struct slot {
        std::array<std::uint8_t, 256> buf{};
        spop::ack_writer w;
        bool busy = false;
    };
    std::array<slot, 32> slots{};
    std::array<std::uint32_t, 32> done{};
    std::size_t ndone = 0;
    spop::ticket open(std::uint64_t, std::uint64_t sid, std::uint64_t fid,
                      std::uint32_t mfs) noexcept override {
        for (std::uint32_t i = 0; i < slots.size(); ++i) {
            if (slots[i].busy) continue;
            slots[i].busy = true;
            slots[i].w = spop::ack_writer(slots[i].buf, sid, fid, mfs);
            return spop::ticket(this, i);
        }
        return {};
    }
    bool available() const noexcept override { return true; }
    spop::ack_writer& writer(std::uint32_t id) noexcept override { return slots[id].w; }
    void finish(std::uint32_t id, bool) noexcept override { done[ndone++] = id; }
};

struct deferring {
    std::array<spop::ticket, 32> held{};
    std::size_t n = 0;
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer&) noexcept {
        held[n++] = req.defer();
        return spop::errc::ok;
    }
};

} // namespace

TEST(Alloc, DeferredNotifyAllocatesNothing) {
    spop::connection_config cfg;
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    fixed_deferral d;
    deferring svc;
    spop::connection<deferring> conn(svc, pool, cfg);
    conn.set_deferral(&d, 1);
    bytes batch;
    for (std::uint64_t i = 0; i < 20; ++i) spop_test::append(batch, notify_frame(2 * i + 1));
    (void)conn.feed(unhex(spop_test::vec::v1_hello_34));
    (void)conn.consume_output(conn.output().size());
    const auto round = [&] {
        svc.n = 0;
        (void)conn.feed(batch);
        for (std::size_t i = svc.n; i-- > 0;)
            svc.held[i].complete([](spop::ack_writer& a) {
                a.set_var(spop::var_scope::sess, "ip_score", spop::value::from_uint32(7));
            });
        for (std::size_t k = 0; k < d.ndone; ++k) {
            auto& s = d.slots[d.done[k]];
            (void)conn.deliver(s.w, s.buf);
            s.busy = false;
        }
        d.ndone = 0;
        const std::size_t out = conn.output().size();
        (void)conn.consume_output(out);
        return out;
    };
    (void)round(); // warm-up
    std::size_t bytes_out = 0;
    {
        alloc_window w;
        for (int i = 0; i < 500; ++i) bytes_out += round();
        w.stop();
        EXPECT_EQ(w.news(), 0u) << "operator new called for a deferred NOTIFY";
        EXPECT_EQ(w.deletes(), 0u);
    }
    EXPECT_EQ(bytes_out, 500u * 20 * 25) << "every deferred ACK delivered, V7-sized";
    EXPECT_EQ(conn.deferred_count(), 0u);
}

// spop/actions.hpp: walking an ACK, every value type included, allocates nothing.
TEST(Alloc, ParseActionsAllocatesNothing) {
    bytes buf(4096);
    spop::ack_writer w(buf, 1, 1, spop::default_max_frame_size);
    const std::array<std::uint8_t, 16> ip6{};
    const std::string big(300, 's'); // past any small-string buffer
    ASSERT_TRUE(w.set_var(spop::var_scope::sess, "ip_score", value::from_uint32(42)));
    ASSERT_TRUE(w.set_var(spop::var_scope::txn, big, value::from_string(big)));
    ASSERT_TRUE(w.set_var(spop::var_scope::req, "b", value::from_binary(big)));
    ASSERT_TRUE(w.set_var(spop::var_scope::res, "i", value::from_int64(-1)));
    ASSERT_TRUE(w.set_var(spop::var_scope::proc, "a", value::from_ipv6(ip6)));
    ASSERT_TRUE(w.set_var(spop::var_scope::sess, "n", value::null()));
    ASSERT_TRUE(w.unset_var(spop::var_scope::sess, "gone"));
    const spop::result fr = w.finish();
    ASSERT_TRUE(fr);
    spop::frame f;
    ASSERT_TRUE(spop::split_frame(std::span<const std::uint8_t>(buf).first(fr.consumed),
                                  spop::default_max_frame_size, f));
    struct counting {
        std::size_t sets = 0, unsets = 0, bytes = 0;
        spop::action on_set_var(spop::var_scope, std::string_view n, const value& v) noexcept {
            ++sets;
            bytes += n.size() + v.bytes.size();
            return spop::action::proceed;
        }
        spop::action on_unset_var(spop::var_scope, std::string_view n) noexcept {
            ++unsets;
            bytes += n.size();
            return spop::action::proceed;
        }
    } h;
    const bytes bad = unhex("02 02 01 01 61 01 03 05 00 00");
    spop::result r, e;
    {
        alloc_window win;
        for (int i = 0; i < 1000; ++i) {
            r = spop::parse_actions(f.payload, h);
            e = spop::parse_actions(bad, h);
        }
        win.stop();
        EXPECT_EQ(win.news(), 0u) << "operator new called while parsing actions";
        EXPECT_EQ(win.deletes(), 0u);
    }
    EXPECT_EQ(r, (spop::result{errc::ok, f.payload.size()}));
    EXPECT_EQ(e.ec, errc::bad_action);
    EXPECT_EQ(h.sets, 6000u);
    EXPECT_EQ(h.unsets, 2000u);
}
