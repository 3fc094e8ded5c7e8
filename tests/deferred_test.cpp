// Deferred answers in the sans-IO core (ticket.hpp, connection::deliver): out-of-order
// completion, fallbacks for dropped tickets, misuse, completion after close, in-flight limits,
// ticket exhaustion as back-pressure, and graceful stop / end of stream waiting for tickets.
// The deferral here is single-threaded; spop::server's is the cross-thread one.
#include <spop/connection.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "support/frames.hpp"
#include "support/hex.hpp"
#include "support/vectors.hpp"

namespace {

using spop::conn_state;
using spop::errc;
using spop::frame_type;
using spop_test::bytes;
namespace vec = spop_test::vec;

/// A pool of tickets, each with its own ACK buffer, like an engine's per-worker pool.
struct test_deferral final : spop::deferral {
    struct slot {
        std::array<std::uint8_t, 512> buf{};
        spop::ack_writer w;
        std::uint64_t sid = 0, fid = 0;
        std::uint32_t mfs = 0;
        bool busy = false;
        bool finished = false;
        bool abandoned = false;
    };
    explicit test_deferral(std::size_t n) : slots(n) {}
    std::vector<slot> slots;
    std::vector<std::uint32_t> done; // finished, not delivered yet (completion order)
    int misuse = 0;

    spop::ticket open(std::uint64_t, std::uint64_t sid, std::uint64_t fid,
                      std::uint32_t mfs) noexcept override {
        for (std::uint32_t i = 0; i < slots.size(); ++i) {
            if (slots[i].busy) continue;
            slots[i] = slot{};
            slots[i].busy = true;
            slots[i].sid = sid;
            slots[i].fid = fid;
            slots[i].mfs = mfs;
            slots[i].w = spop::ack_writer(slots[i].buf, sid, fid, mfs);
            return spop::ticket(this, i);
        }
        return {};
    }
    bool available() const noexcept override {
        for (const auto& s : slots)
            if (!s.busy) return true;
        return false;
    }
    spop::ack_writer& writer(std::uint32_t id) noexcept override { return slots[id].w; }
    void finish(std::uint32_t id, bool abandoned) noexcept override {
        slots[id].finished = true;
        slots[id].abandoned = abandoned;
        done.push_back(id);
    }
    void note_misuse() noexcept override { ++misuse; }

    /// The engine's side: hands finished answers to the connection, in completion order.
    template <class C>
    void pump(C& c) {
        std::vector<std::uint32_t> keep;
        for (std::uint32_t id : done) {
            slot& s = slots[id];
            // The fallback for a dropped ticket: an ACK without actions (the no-op policy
            // fills it), whatever the holder had started to write.
            if (s.abandoned) s.w = spop::ack_writer(s.buf, s.sid, s.fid, s.mfs);
            if (c.deliver(s.w, s.buf))
                s.busy = false;
            else
                keep.push_back(id);
        }
        done = std::move(keep);
    }
};

/// Defers every NOTIFY whose stream-id is a multiple of 3; answers the others at once.
struct mixed_service {
    std::vector<spop::ticket> tickets;
    std::vector<std::uint64_t> deferred_sids;
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        spop::null_notify_handler h;
        if (const spop::result r = req.parse(h); !r) return r.ec;
        if (req.stream_id % 3 == 0) {
            spop::ticket t = req.defer();
            if (t) {
                tickets.push_back(std::move(t));
                deferred_sids.push_back(req.stream_id);
                return errc::ok;
            }
        }
        ack.set_var(spop::var_scope::sess, "sync", spop::value::from_uint32(1));
        return errc::ok;
    }
};

/// Defers everything and declares it, so ticket exhaustion back-pressures.
struct deferring_service {
    static constexpr bool defers = true;
    std::vector<spop::ticket> tickets;
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        spop::ticket t = req.defer();
        if (!t) {
            ack.set_var(spop::var_scope::sess, "fallback", spop::value::from_uint32(0));
            return errc::ok;
        }
        tickets.push_back(std::move(t));
        return errc::ok;
    }
};

bytes notify(std::uint64_t sid, std::uint64_t fid = 1) {
    bytes buf(128);
    spop::notify_writer w(buf, sid, fid, spop::default_max_frame_size);
    w.message("check-client-ip", 1);
    static constexpr std::array<std::uint8_t, 4> ip{127, 0, 0, 1};
    w.arg("ip", spop::value::from_ipv4(ip));
    const spop::result r = w.finish();
    EXPECT_TRUE(r);
    buf.resize(r.consumed);
    return buf;
}

template <class S>
struct rig {
    explicit rig(std::size_t tickets, spop::connection_config c = {})
        : cfg(c), pool(spop::buffer_size_for(cfg.limits.max_frame_size)), d(tickets),
          conn(svc, pool, cfg) {
        conn.set_deferral(&d, 7);
        const bytes hello = spop_test::unhex(vec::v1_hello_34);
        EXPECT_EQ(conn.feed(hello).consumed, hello.size());
        (void)conn.consume_output(conn.output().size());
    }
    spop::connection_config cfg;
    spop::buffer_pool pool;
    test_deferral d;
    S svc;
    spop::connection<S> conn;

    bytes drain() {
        const auto o = conn.output();
        bytes b(o.begin(), o.end());
        (void)conn.consume_output(b.size());
        return b;
    }
};

std::vector<spop_test::parsed_frame> frames_of(const bytes& b) {
    std::size_t rest = 1;
    auto f = spop_test::split_frames(b, &rest);
    EXPECT_EQ(rest, 0u);
    return f;
}

TEST(Deferred, OutOfOrderCompletionEchoesIds) {
    rig<mixed_service> r(64);
    bytes in;
    for (std::uint64_t sid = 1; sid <= 30; ++sid) spop_test::append(in, notify(sid, sid + 100));
    const spop::feed_result fr = r.conn.feed(in);
    EXPECT_EQ(fr.consumed, in.size());
    EXPECT_EQ(fr.deferred, 10u);
    EXPECT_EQ(fr.notifies, 20u);
    EXPECT_EQ(r.conn.deferred_count(), 10u);
    EXPECT_EQ(frames_of(r.drain()).size(), 20u) << "the synchronous ACKs leave at once";
    // Complete in reverse order, each with its own value.
    for (auto it = r.svc.tickets.rbegin(); it != r.svc.tickets.rend(); ++it) {
        const std::uint64_t sid = r.svc.deferred_sids[static_cast<std::size_t>(
            std::distance(r.svc.tickets.begin(), std::prev(it.base())))];
        it->complete([&](spop::ack_writer& a) {
            a.set_var(spop::var_scope::txn, "late",
                      spop::value::from_uint32(static_cast<std::uint32_t>(sid)));
        });
        EXPECT_FALSE(*it);
    }
    r.d.pump(r.conn);
    const auto frames = frames_of(r.drain());
    ASSERT_EQ(frames.size(), 10u);
    for (std::size_t i = 0; i < frames.size(); ++i) {
        const std::uint64_t sid = 30 - 3 * i;
        EXPECT_EQ(frames[i].type, frame_type::ack);
        EXPECT_EQ(frames[i].stream_id, sid);
        EXPECT_EQ(frames[i].frame_id, sid + 100);
    }
    EXPECT_EQ(r.conn.deferred_count(), 0u);
}

TEST(Deferred, DroppedTicketGetsTheNoOpFallback) {
    rig<mixed_service> r(4);
    (void)r.conn.feed(notify(3));
    ASSERT_EQ(r.svc.tickets.size(), 1u);
    r.svc.tickets.clear(); // dropped without complete()
    ASSERT_EQ(r.d.done.size(), 1u);
    EXPECT_TRUE(r.d.slots[0].abandoned);
    r.d.pump(r.conn);
    const auto frames = frames_of(r.drain());
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].stream_id, 3u);
    EXPECT_FALSE(frames[0].payload.empty()) << "never an empty ACK (HAProxy 3.1.0 stalls)";
}

TEST(Deferred, SecondCompletionIsANoOpAndCounted) {
    rig<mixed_service> r(4);
    (void)r.conn.feed(notify(3));
    spop::ticket t = std::move(r.svc.tickets.at(0));
    t.complete();
    t.complete();
    t.complete([](spop::ack_writer&) { ADD_FAILURE() << "must not run"; });
    EXPECT_EQ(r.d.misuse, 2);
    r.d.pump(r.conn);
    EXPECT_EQ(frames_of(r.drain()).size(), 1u);
}

TEST(Deferred, CompletionAfterCloseIsDropped) {
    rig<mixed_service> r(4);
    (void)r.conn.feed(notify(3));
    r.conn.on_peer_closed();
    r.svc.tickets.at(0).complete();
    r.d.pump(r.conn);
    EXPECT_TRUE(r.d.done.empty());
    EXPECT_TRUE(r.conn.output().empty());
    EXPECT_EQ(r.pool.in_use(), 0u);
}

TEST(Deferred, AnEmptyTicketsWriterNeverReachesAnotherNotifysAnswer) {
    // A moved-from handle still names its old slot; once that slot answers another NOTIFY, a
    // write through the stale handle must not land in that other ACK.
    rig<mixed_service> r(1);
    (void)r.conn.feed(notify(3));
    spop::ticket held = std::move(r.svc.tickets.at(0));
    spop::ticket stale = std::move(held);
    ASSERT_FALSE(held.operator bool());
    ASSERT_TRUE(stale);
    spop::ticket moved_from = std::move(held); // empty into empty
    stale.complete();
    r.d.pump(r.conn);
    ASSERT_EQ(frames_of(r.drain()).size(), 1u);

    (void)r.conn.feed(notify(6)); // takes the same, only slot
    ASSERT_EQ(r.svc.tickets.size(), 2u);
    spop::ticket& live = r.svc.tickets.at(1);
    ASSERT_TRUE(live);
    EXPECT_FALSE(r.svc.tickets.at(0).ack().set_var(spop::var_scope::txn, "stale",
                                                   spop::value::from_bool(true)));
    EXPECT_FALSE(stale.ack().unset_var(spop::var_scope::txn, "stale"));
    EXPECT_FALSE(moved_from.ack().ok());
    spop::ticket never_opened;
    EXPECT_FALSE(
        never_opened.ack().set_var(spop::var_scope::txn, "stale", spop::value::from_uint32(1)));
    EXPECT_EQ(r.d.misuse, 3) << "the three with a deferral behind them are counted";
    live.complete([](spop::ack_writer& a) {
        a.set_var(spop::var_scope::txn, "mine", spop::value::from_uint32(6));
    });
    r.d.pump(r.conn);
    const auto frames = frames_of(r.drain());
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].stream_id, 6u);
    const std::string_view payload(reinterpret_cast<const char*>(frames[0].payload.data()),
                                   frames[0].payload.size());
    EXPECT_NE(payload.find("mine"), std::string_view::npos);
    EXPECT_EQ(payload.find("stale"), std::string_view::npos) << "a stale handle wrote into it";
}

TEST(Deferred, CountsAgainstTheInFlightLimit) {
    spop::connection_config cfg;
    cfg.max_queued_acks = 4;
    rig<mixed_service> r(64, cfg);
    bytes in;
    for (std::uint64_t i = 1; i <= 8; ++i) spop_test::append(in, notify(3 * i));
    const spop::feed_result fr = r.conn.feed(in);
    EXPECT_EQ(fr.deferred, 4u);
    EXPECT_LT(fr.consumed, in.size()) << "the fifth waits: 4 in flight";
    EXPECT_FALSE(r.conn.takes_input());
    std::size_t pos = fr.consumed;
    std::size_t delivered = 0;
    for (int round = 0; round < 20 && delivered < 8; ++round) {
        for (auto& t : r.svc.tickets)
            if (t) t.complete();
        r.d.pump(r.conn);
        delivered += frames_of(r.drain()).size();
        if (pos < in.size() && r.conn.takes_input())
            pos += r.conn.feed(std::span<const std::uint8_t>(in).subspan(pos)).consumed;
    }
    EXPECT_EQ(pos, in.size());
    EXPECT_EQ(delivered, 8u);
}

TEST(Deferred, TicketExhaustionBackPressuresAServiceThatDefers) {
    rig<deferring_service> r(2);
    bytes in;
    for (std::uint64_t sid = 1; sid <= 5; ++sid) spop_test::append(in, notify(sid));
    spop::feed_result fr = r.conn.feed(in);
    EXPECT_EQ(fr.deferred, 2u);
    EXPECT_EQ(fr.notifies, 0u) << "no synchronous fallback: it waits for a ticket";
    EXPECT_FALSE(r.conn.takes_input());
    std::size_t pos = fr.consumed;
    std::size_t acks = 0;
    for (int round = 0; round < 20 && acks < 5; ++round) {
        for (auto& t : r.svc.tickets)
            if (t) t.complete();
        r.d.pump(r.conn);
        acks += frames_of(r.drain()).size();
        (void)r.conn.retry_input();
        if (pos < in.size() && r.conn.takes_input())
            pos += r.conn.feed(std::span<const std::uint8_t>(in).subspan(pos)).consumed;
    }
    EXPECT_EQ(acks, 5u);
    EXPECT_EQ(pos, in.size());
}

TEST(Deferred, NoDeferralMeansAnswerNow) {
    spop::connection_config cfg;
    spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size));
    deferring_service svc;
    spop::connection<deferring_service> c(svc, pool, cfg); // no set_deferral
    (void)c.feed(spop_test::unhex(vec::v1_hello_34));
    (void)c.consume_output(c.output().size());
    const spop::feed_result fr = c.feed(notify(1));
    EXPECT_EQ(fr.notifies, 1u);
    EXPECT_EQ(fr.deferred, 0u);
    EXPECT_TRUE(svc.tickets.empty());
}

TEST(Deferred, ShutdownWaitsForTicketsThenDisconnects) {
    rig<mixed_service> r(8);
    (void)r.conn.feed(notify(3));
    (void)r.conn.feed(notify(6));
    r.conn.shutdown();
    EXPECT_EQ(r.conn.state(), conn_state::established) << "two answers still owed";
    r.svc.tickets.at(1).complete();
    r.d.pump(r.conn);
    EXPECT_EQ(r.conn.state(), conn_state::established);
    r.svc.tickets.at(0).complete();
    r.d.pump(r.conn);
    EXPECT_EQ(r.conn.state(), conn_state::closing);
    const auto frames = frames_of(r.drain());
    ASSERT_EQ(frames.size(), 3u);
    EXPECT_EQ(frames[0].stream_id, 6u);
    EXPECT_EQ(frames[1].stream_id, 3u);
    EXPECT_EQ(frames[2].type, frame_type::agent_disconnect);
    EXPECT_TRUE(r.conn.should_close());
}

TEST(Deferred, EndOfStreamWaitsForTickets) {
    rig<mixed_service> r(8);
    (void)r.conn.feed(notify(3));
    r.conn.on_peer_eof();
    EXPECT_FALSE(r.conn.should_close());
    r.svc.tickets.at(0).complete();
    r.d.pump(r.conn);
    EXPECT_FALSE(r.conn.should_close()) << "the ACK is not sent yet";
    EXPECT_EQ(frames_of(r.drain()).size(), 1u);
    EXPECT_TRUE(r.conn.should_close());
}

TEST(Deferred, DeliverWaitsForOutputRoom) {
    spop::connection_config cfg;
    cfg.limits.max_frame_size = 256; // a small output block: 1032 bytes
    cfg.max_queued_acks = 0;
    rig<mixed_service> r(2048, cfg);
    bytes in;
    for (std::uint64_t i = 1; i <= 60; ++i) spop_test::append(in, notify(3 * i));
    std::size_t pos = 0;
    for (int round = 0; round < 100 && pos < in.size(); ++round) {
        pos += r.conn.feed(std::span<const std::uint8_t>(in).subspan(pos)).consumed;
    }
    ASSERT_EQ(r.svc.tickets.size(), 60u);
    for (auto& t : r.svc.tickets) t.complete();
    r.d.pump(r.conn);
    EXPECT_FALSE(r.d.done.empty()) << "60 ACKs do not fit one small block: some wait";
    std::size_t acks = 0;
    for (int round = 0; round < 100 && acks < 60; ++round) {
        acks += frames_of(r.drain()).size();
        r.d.pump(r.conn);
    }
    EXPECT_EQ(acks, 60u);
    EXPECT_TRUE(r.d.done.empty());
}

TEST(Deferred, AProtocolErrorWaitsForTheAnswersBeforeIt) {
    rig<mixed_service> r(8);
    bytes in = notify(3);
    bytes bad = notify(5);
    spop::store_be32(bad.data() + 5, 0); // FIN unset: a fragment, never announced
    spop_test::append(in, bad);
    const spop::feed_result fr = r.conn.feed(in);
    EXPECT_EQ(fr.consumed, in.size());
    EXPECT_EQ(r.conn.state(), conn_state::established) << "the ticket's answer comes first";
    EXPECT_FALSE(r.conn.takes_input());
    EXPECT_TRUE(r.conn.discards_input());
    EXPECT_EQ(r.conn.feed(notify(7)).deferred, 0u) << "nothing is read after the error";
    r.svc.tickets.at(0).complete();
    r.d.pump(r.conn);
    const auto frames = frames_of(r.drain());
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_EQ(frames[0].type, frame_type::ack);
    EXPECT_EQ(frames[0].stream_id, 3u);
    EXPECT_EQ(frames[1].type, frame_type::agent_disconnect);
    EXPECT_EQ(spop_test::read_disconnect(frames[1]).status, 10u);
    EXPECT_EQ(r.conn.error(), errc::fragmented_frame);
    EXPECT_TRUE(r.conn.should_close());
}

} // namespace
