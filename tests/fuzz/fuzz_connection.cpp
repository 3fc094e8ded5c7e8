// fuzz_connection: the sans-IO connection core driven like an event loop would, on arbitrary
// bytes.
//
// Input layout:
//   byte 0   options
//     bit  0    prepend a valid HAPROXY-HELLO (V1, HAProxy 3.4) to the stream, so half of the
//               inputs start established and reach the NOTIFY paths at once
//     bits 1-2  our max-frame-size: 16380, 256, 1024, 4096
//     bit  3    we announce pipelining
//     bit  4    service: 0 = score_service (SET-VAR sess.ip_score, declares max_ack_size),
//                        1 = echo_service (echoes every argument, no max_ack_size)
//     bit  5    connection_config::noop_on_empty_ack
//     bit  6    end of stream: on_peer_eof() at a random point; from then on only the bytes
//               already offered to feed() (the embedder's held ones) are fed
//     bit  7    lifecycle events: occasional shutdown(), close_with(timeout | bad_data_type),
//               on_peer_closed()
//   byte 1   schedule seed, and
//     bit  3    slow reader: consume_output() is rare, so ACKs pile up (back-pressure)
//     bits 4-5  the largest feed(): 16384 (default_feed_chunk), 2048, 512, 64 (the buffers are
//               the same whatever the chunk size: feed() takes only what it can answer)
//     bits 6-7  both set: allocation-failure mode, every nothrow operator new (what
//               buffer_pool::acquire() uses) fails with probability 1/4
//   byte 2.. the byte stream "from HAProxy"
// A PRNG seeded from bytes 0-1 interleaves feed() of 1..4, 1..64, 1..2048 or all remaining bytes
// (each from an exactly-sized heap copy, at most max_chunk) with consume_output() of 0, a few,
// some or all bytes. Like an embedder, the harness keeps what feed() did not consume and feeds
// it again first; sometimes it feeds while takes_input() is false, which must take nothing.
//
// Invariants (abort on violation):
//   - output() only grows at its end until consumed; bytes handed out never move or change;
//   - the bytes sent form whole frames: an optional AGENT-HELLO first, ACKs echoing the ids of
//     the NOTIFYs the service saw (same order), at most one AGENT-DISCONNECT, last; every
//     frame has flags == FIN and fits the max-frame-size; payloads are well-formed;
//   - once closing, the total output never grows (only what was queued goes out), and it ends
//     with AGENT-DISCONNECT unless the peer closed, an allocation failed, or it was a health
//     check;
//   - at most 2 pool blocks in use, buffered_bytes() <= 2 blocks, 0 once closed and drained;
//   - never status 13 (input_overflow) unless an allocation failed: back-pressure pushes back,
//     it does not disconnect; feed() takes everything unless it stops taking input;
//   - after end of stream, once every received byte was fed and the output sent,
//     should_close();
//   - pool.in_use() == 0 after the connection is destroyed (no leaked block).
#include <cstring>
#include <new>
#include <optional>

#include "fuzz_common.hpp"

namespace {
bool g_oom_mode = false;
std::uint64_t g_oom_state = 0;
std::size_t g_alloc_failures = 0;
} // namespace

// buffer_pool allocates its blocks with the nothrow operator new; this replacement can make it
// fail. Everything else (std containers, libFuzzer) uses the throwing form and is unaffected.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    if (g_oom_mode) {
        g_oom_state = g_oom_state * 6364136223846793005ull + 1442695040888963407ull;
        if ((g_oom_state >> 62) == 0) {
            ++g_alloc_failures;
            return nullptr;
        }
    }
    try {
        return ::operator new(n);
    } catch (...) {
        return nullptr;
    }
}

namespace {

using spop::errc;
using spop_fuzz::bytes;

struct ids {
    std::uint64_t sid, fid;
};

/// Finds the client address (argument "ip" or unnamed) and scores it.
struct score_handler {
    std::uint32_t score = 0;
    spop::action on_message(std::string_view, std::uint8_t) noexcept { return spop::action::proceed; }
    spop::action on_arg(std::string_view name, const spop::value& v) noexcept {
        if ((name == "ip" || name.empty()) &&
            (v.type == spop::data_type::ipv4 || v.type == spop::data_type::ipv6)) {
            for (char c : v.bytes) score += static_cast<std::uint8_t>(c);
            score %= 101;
            return spop::action::stop;
        }
        return spop::action::proceed;
    }
    spop::action on_message_end() noexcept { return spop::action::proceed; }
};

/// The "real" service: parse, then SET-VAR sess ip_score. Declares max_ack_size, so the
/// connection keeps only that much room per NOTIFY; the ACK must always fit.
struct score_service {
    static constexpr std::size_t max_ack_size = 64;
    std::vector<ids>* calls;

    errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        calls->push_back({req.stream_id, req.frame_id});
        FUZZ_CHECK((req.flags & spop::flag_fin) != 0);
        score_handler h;
        const spop::result r = req.parse(h);
        if (r.ec != errc::ok && r.ec != errc::stopped) return r.ec;
        FUZZ_CHECK(ack.set_var(spop::var_scope::sess, "ip_score", spop::value::from_uint32(h.score)));
        return errc::ok;
    }
};
static_assert(spop::service<score_service>);

/// Echoes every argument back as a txn variable (NULL as UNSET-VAR) until the ACK is full, then
/// stops the parse. No max_ack_size: the connection reserves a whole frame per NOTIFY.
struct echo_handler {
    spop::ack_writer& ack;
    bool full = false;
    spop::action on_message(std::string_view, std::uint8_t) noexcept { return spop::action::proceed; }
    spop::action on_arg(std::string_view name, const spop::value& v) noexcept {
        const bool ok = v.type == spop::data_type::null ? ack.unset_var(spop::var_scope::txn, name)
                                                        : ack.set_var(spop::var_scope::txn, name, v);
        if (!ok) {
            full = true;
            return spop::action::stop;
        }
        return spop::action::proceed;
    }
    spop::action on_message_end() noexcept { return spop::action::proceed; }
};

struct echo_service {
    std::vector<ids>* calls;
    errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        calls->push_back({req.stream_id, req.frame_id});
        echo_handler h{ack};
        const spop::result r = req.parse(h);
        if (r.ec == errc::stopped) FUZZ_CHECK(h.full);
        return r.ec;
    }
};
static_assert(spop::service<echo_service>);

// V1 HAPROXY-HELLO (HAProxy 3.4.0, PROTOCOL-NOTES §11).
constexpr std::uint8_t hello_v1[] = {
    0x00, 0x00, 0x00, 0x7b, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x12, 0x73, 0x75, 0x70, 0x70,
    0x6f, 0x72, 0x74, 0x65, 0x64, 0x2d, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x73, 0x08, 0x03,
    0x32, 0x2e, 0x30, 0x0e, 0x6d, 0x61, 0x78, 0x2d, 0x66, 0x72, 0x61, 0x6d, 0x65, 0x2d, 0x73, 0x69,
    0x7a, 0x65, 0x03, 0xfc, 0xf0, 0x06, 0x0c, 0x63, 0x61, 0x70, 0x61, 0x62, 0x69, 0x6c, 0x69, 0x74,
    0x69, 0x65, 0x73, 0x08, 0x0a, 0x70, 0x69, 0x70, 0x65, 0x6c, 0x69, 0x6e, 0x69, 0x6e, 0x67, 0x09,
    0x65, 0x6e, 0x67, 0x69, 0x6e, 0x65, 0x2d, 0x69, 0x64, 0x08, 0x24, 0x62, 0x63, 0x32, 0x35, 0x30,
    0x32, 0x36, 0x32, 0x2d, 0x66, 0x65, 0x65, 0x63, 0x2d, 0x34, 0x34, 0x31, 0x31, 0x2d, 0x61, 0x65,
    0x65, 0x37, 0x2d, 0x36, 0x39, 0x39, 0x64, 0x63, 0x65, 0x66, 0x61, 0x61, 0x32, 0x32, 0x66,
};
static_assert(sizeof hello_v1 == 4 + 0x7b);

/// A well-formed LIST-OF-ACTIONS (what an ACK carries): SET-VAR / UNSET-VAR, valid scopes.
bool valid_actions(std::span<const std::uint8_t> payload, std::size_t& count) {
    const std::uint8_t* p = payload.data();
    const std::uint8_t* const end = p + payload.size();
    count = 0;
    while (p != end) {
        if (end - p < 3) return false;
        const std::uint8_t type = p[0], nb = p[1], scope = p[2];
        p += 3;
        if (scope > 4) return false;
        if (!((type == 1 && nb == 3) || (type == 2 && nb == 2))) return false;
        std::string_view name;
        spop::result r = spop::decode_name(p, end, name);
        if (!r) return false;
        p += r.consumed;
        if (type == 1) {
            spop::value v;
            r = spop::decode_value(p, end, v);
            if (!r) return false;
            p += r.consumed;
        }
        ++count;
    }
    return true;
}

struct kv_map {
    std::vector<spop_fuzz::owned_kv> kvs;
    spop::action on_kv(std::string_view k, const spop::value& v) {
        kvs.push_back({std::string(k), spop_fuzz::owned_value::of(v)});
        return spop::action::proceed;
    }
    const spop_fuzz::owned_value* get(std::string_view k) const {
        for (const auto& kv : kvs)
            if (kv.key == k) return &kv.v;
        return nullptr;
    }
};

template <class S>
struct harness {
    spop::connection_config cfg;
    std::size_t max_chunk = spop::default_feed_chunk;
    bool slow_reader = false; // rarely consume output
    bool events = false;
    bool eof_events = false;
    bool eof = false;          // on_peer_eof() was called
    std::size_t received = 0;  // end of the bytes offered to feed() so far

    std::vector<ids> calls;
    S svc{&calls};

    bytes sent;                             // every byte "written to the socket"
    const std::uint8_t* pending_ptr = nullptr;
    bytes pending;                          // output() as last seen and not yet consumed
    std::optional<std::size_t> closed_total; // total output when closing was first seen
    bool peer_closed = false;
    bool shut = false;
    std::uint64_t notifies = 0;
    std::size_t pos_ = 0; // input bytes consumed by the connection

    void run(std::span<const std::uint8_t> input, std::uint64_t seed) {
        spop::buffer_pool pool(spop::buffer_size_for(cfg.limits.max_frame_size), 4);
        {
            spop::connection<S> c(svc, pool, cfg);
            drive(c, pool, input, seed);
            drain(c, pool);
            if (eof && pos_ == received && !peer_closed) FUZZ_CHECK(c.should_close());
            if (c.state() == spop::conn_state::closing || c.state() == spop::conn_state::closed) {
                FUZZ_CHECK(c.should_close());
                FUZZ_CHECK(c.buffered_bytes() == 0);
                FUZZ_CHECK(pool.in_use() == 0);
            }
            validate(c);
        }
        FUZZ_CHECK(pool.in_use() == 0);
    }

    void drive(spop::connection<S>& c, spop::buffer_pool& pool, std::span<const std::uint8_t> input,
               std::uint64_t seed) {
        spop_fuzz::rng r(seed);
        std::size_t& pos = pos_;
        std::size_t steps = 0;
        const std::size_t max_steps = 8 * input.size() + 64;
        while (pos < (eof ? received : input.size()) && steps++ < max_steps) {
            const std::uint64_t x = r.next();
            unsigned op = x & 15;
            if (slow_reader && op >= 9 && op < 14 && ((x >> 10) & 7) != 0) op = 0; // mostly feed
            if (op < 9) {
                const bool accepting = c.state() == spop::conn_state::awaiting_hello ||
                                       c.state() == spop::conn_state::established;
                if (accepting && !c.takes_input() && ((x >> 12) & 3) != 0) {
                    consume(c, pool, SIZE_MAX); // hold the bytes until ACKs drain
                    continue;
                }
                const std::size_t rem = (eof ? received : input.size()) - pos;
                std::size_t n = 0;
                switch ((x >> 4) & 3) {
                case 0: n = 1 + r.below(4); break;
                case 1: n = 1 + r.below(64); break;
                case 2: n = 1 + r.below(2048); break;
                default: n = rem; break;
                }
                if (n > rem) n = rem;
                if (n > max_chunk) n = max_chunk;
                const bytes chunk(input.begin() + static_cast<std::ptrdiff_t>(pos),
                                  input.begin() + static_cast<std::ptrdiff_t>(pos + n));
                const bool took_input = c.takes_input();
                const spop::feed_result fr = c.feed(chunk);
                FUZZ_CHECK(fr.notifies <= fr.frames);
                FUZZ_CHECK(fr.consumed <= n);
                if (!took_input && accepting) FUZZ_CHECK(fr.consumed == 0 && fr.frames == 0);
                // Less than all only when it stopped taking input (back-pressure).
                if (fr.consumed < n) FUZZ_CHECK(!c.takes_input() && c.input_held());
                notifies += fr.notifies;
                if (pos + n > received) received = pos + n;
                pos += fr.consumed;
                check(c, pool);
            } else if (op < 14) {
                std::size_t n = 0;
                const std::size_t have = c.output().size();
                switch ((x >> 4) & 3) {
                case 0: n = 0; break;
                case 1: n = 1 + r.below(8); break;
                case 2: n = r.below(have + 1); break;
                default: n = (x >> 6) & 1 ? SIZE_MAX : have; break;
                }
                consume(c, pool, n);
            } else if (op == 15 && eof_events && !eof && ((x >> 8) & 3) == 0) {
                // The peer half-closes: what was offered so far is all there will be.
                c.on_peer_eof();
                eof = true;
                if (received < pos) received = pos;
                check(c, pool);
            } else if (op == 14 && events) {
                switch ((x >> 8) & 7) {
                case 0: case 1: case 2: case 3: case 4:
                    c.shutdown();
                    shut = true;
                    break;
                case 5: c.close_with(errc::timeout); break;
                case 6:
                    c.on_peer_closed();
                    peer_closed = true;
                    pending.clear();
                    pending_ptr = nullptr;
                    FUZZ_CHECK(c.state() == spop::conn_state::closed);
                    FUZZ_CHECK(c.output().empty());
                    FUZZ_CHECK(c.buffered_bytes() == 0);
                    break;
                default: c.close_with(errc::bad_data_type); break; // any other embedder reason
                }
                check(c, pool);
            } else {
                consume(c, pool, SIZE_MAX);
            }
        }
    }

    void drain(spop::connection<S>& c, spop::buffer_pool& pool) {
        for (int i = 0; i < 4096 && !c.output().empty(); ++i) consume(c, pool, SIZE_MAX);
        FUZZ_CHECK(c.output().empty());
        // One more empty consume: recycles the output block if nothing is left.
        consume(c, pool, 0);
    }

    /// Sends `n` bytes of output (clamped), as a socket write would.
    void consume(spop::connection<S>& c, spop::buffer_pool& pool, std::size_t n) {
        const std::span<const std::uint8_t> out = c.output();
        const std::size_t k = n < out.size() ? n : out.size();
        sent.insert(sent.end(), out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k));
        // What must still be there, unmoved, after the call.
        bytes rest(out.begin() + static_cast<std::ptrdiff_t>(k), out.end());
        const std::uint8_t* rest_ptr = out.data() + k;
        const spop::feed_result fr = c.consume_output(n);
        FUZZ_CHECK(fr.notifies <= fr.frames);
        notifies += fr.notifies;
        if (rest.empty()) {
            pending.clear();
            pending_ptr = nullptr;
        } else {
            pending = std::move(rest);
            pending_ptr = rest_ptr;
        }
        check(c, pool);
    }

    void check(spop::connection<S>& c, spop::buffer_pool& pool) {
        const std::span<const std::uint8_t> out = c.output();
        // Bytes handed out earlier are neither moved nor changed; new ones only at the end.
        if (!pending.empty()) {
            FUZZ_CHECK(out.data() == pending_ptr);
            FUZZ_CHECK(out.size() >= pending.size());
            FUZZ_CHECK(std::memcmp(out.data(), pending.data(), pending.size()) == 0);
        }
        pending.assign(out.begin(), out.end());
        pending_ptr = out.empty() ? nullptr : out.data();

        FUZZ_CHECK(pool.in_use() <= 2);
        FUZZ_CHECK(c.buffered_bytes() <= 2 * pool.block_size());
        FUZZ_CHECK(out.size() <= pool.block_size());

        const spop::conn_state st = c.state();
        const bool closing = st == spop::conn_state::closing || st == spop::conn_state::closed;
        const std::size_t total = sent.size() + out.size();
        if (closing) {
            FUZZ_CHECK(!c.wants_input());
            if (!closed_total) closed_total = total;
            FUZZ_CHECK(total <= *closed_total);
            if (!peer_closed) FUZZ_CHECK(total == *closed_total);
            if (st == spop::conn_state::closing && !c.is_healthcheck())
                FUZZ_CHECK(c.error() != errc::ok);
        } else {
            FUZZ_CHECK(c.error() == errc::ok);
            if (!eof) FUZZ_CHECK(!c.should_close());
        }
        if (eof) FUZZ_CHECK(!c.wants_input());
        // A peer that merely lags is pushed back, never disconnected with 13.
        if (g_alloc_failures == 0) FUZZ_CHECK(c.error() != errc::input_overflow);
        if (closing || !eof)
            FUZZ_CHECK(c.should_close() == (st == spop::conn_state::closed ||
                                            (st == spop::conn_state::closing && out.empty())));
        else if (c.should_close())
            FUZZ_CHECK(out.empty() && !c.input_held());
    }

    void validate(spop::connection<S>& c) {
        const std::uint32_t ours = cfg.limits.max_frame_size;
        std::span<const std::uint8_t> in(sent);
        std::size_t index = 0, acks = 0;
        bool hello = false, disconnect = false;
        while (!in.empty()) {
            spop::frame fr;
            const spop::result r = spop::split_frame(in, ours, fr);
            if (r.ec == errc::need_more && peer_closed) break; // cut by on_peer_closed()
            FUZZ_CHECK(r.ec == errc::ok);
            FUZZ_CHECK(fr.flags == spop::flag_fin);
            FUZZ_CHECK(!disconnect); // nothing after AGENT-DISCONNECT
            FUZZ_CHECK(!(hello && c.is_healthcheck())); // nothing after a health-check reply
            const std::uint32_t len = spop::load_be32(in.data());
            kv_map kv;
            switch (fr.type) {
            case spop::frame_type::agent_hello: {
                FUZZ_CHECK(index == 0);
                FUZZ_CHECK(fr.stream_id == 0 && fr.frame_id == 0);
                FUZZ_CHECK(spop::parse_kv_list(fr.payload, kv).ec == errc::ok);
                const auto* ver = kv.get("version");
                const auto* mfs = kv.get("max-frame-size");
                const auto* caps = kv.get("capabilities");
                FUZZ_CHECK(ver && ver->type == spop::data_type::string && ver->bytes == "2.0");
                FUZZ_CHECK(mfs && mfs->type == spop::data_type::uint32);
                FUZZ_CHECK(mfs->integer == c.settings().max_frame_size);
                FUZZ_CHECK(mfs->integer >= spop::min_max_frame_size && mfs->integer <= ours);
                FUZZ_CHECK(caps && caps->type == spop::data_type::string);
                FUZZ_CHECK(caps->bytes == (cfg.limits.pipelining ? "pipelining" : ""));
                hello = true;
                break;
            }
            case spop::frame_type::ack: {
                FUZZ_CHECK(hello);
                FUZZ_CHECK(len <= c.settings().max_frame_size);
                FUZZ_CHECK(acks < calls.size());
                FUZZ_CHECK(fr.stream_id == calls[acks].sid && fr.frame_id == calls[acks].fid);
                std::size_t n = 0;
                FUZZ_CHECK(valid_actions(fr.payload, n));
                if (cfg.noop_on_empty_ack) FUZZ_CHECK(n > 0);
                ++acks;
                break;
            }
            case spop::frame_type::agent_disconnect: {
                FUZZ_CHECK(fr.stream_id == 0 && fr.frame_id == 0);
                if (hello) FUZZ_CHECK(len <= c.settings().max_frame_size);
                FUZZ_CHECK(spop::parse_kv_list(fr.payload, kv).ec == errc::ok);
                const auto* code = kv.get("status-code");
                const auto* msg = kv.get("message");
                FUZZ_CHECK(code && code->type == spop::data_type::uint32);
                FUZZ_CHECK(msg && msg->type == spop::data_type::string);
                FUZZ_CHECK(msg->bytes.size() <= spop::max_disconnect_message);
                if (c.error() == errc::peer_disconnect) {
                    FUZZ_CHECK(code->integer == c.peer_status());
                } else {
                    FUZZ_CHECK(c.error() != errc::ok);
                    const spop::status s = spop::to_status(c.error());
                    FUZZ_CHECK(code->integer == static_cast<std::uint32_t>(s));
                    FUZZ_CHECK(msg->bytes == spop::status_message(s));
                }
                disconnect = true;
                break;
            }
            default: FUZZ_CHECK(!"agent sent a frame type it must never send"); break;
            }
            in = in.subspan(r.consumed);
            ++index;
        }
        FUZZ_CHECK(acks <= calls.size());
        if (peer_closed) FUZZ_CHECK(acks <= notifies);
        else FUZZ_CHECK(acks == notifies);
        const bool closing =
            c.state() == spop::conn_state::closing || c.state() == spop::conn_state::closed;
        if (disconnect || (hello && c.is_healthcheck())) FUZZ_CHECK(closing);
        // Every way of closing says goodbye, except: the peer went away, the pool could not
        // hand out a buffer, or a health check (answered with AGENT-HELLO alone).
        if (closing && !peer_closed && g_alloc_failures == 0) {
            if (c.is_healthcheck() && c.error() == errc::ok) FUZZ_CHECK(hello && !disconnect && index == 1);
            else FUZZ_CHECK(disconnect);
        }
    }
};

template <class S>
void run(std::uint8_t opt, std::uint8_t opt2, std::uint64_t seed,
         std::span<const std::uint8_t> input) {
    static constexpr std::uint32_t mfs[] = {spop::default_max_frame_size, 256, 1024, 4096};
    static constexpr std::size_t chunks[] = {spop::default_feed_chunk, 2048, 512, 64};
    harness<S> h;
    h.max_chunk = chunks[(opt2 >> 4) & 3];
    h.slow_reader = (opt2 & 8) != 0;
    h.cfg.limits.max_frame_size = mfs[(opt >> 1) & 3];
    h.cfg.limits.pipelining = (opt & 8) != 0;
    h.cfg.noop_on_empty_ack = (opt & 32) != 0;
    h.eof_events = (opt & 64) != 0;
    h.events = (opt & 128) != 0;
    h.run(input, seed);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t opt = data[0];
    const std::uint64_t seed = spop_fuzz::fnv1a(data, 2);
    bytes input;
    if (opt & 1) input.assign(std::begin(hello_v1), std::end(hello_v1));
    input.insert(input.end(), data + 2, data + size);
    g_oom_mode = (data[1] & 0xC0) == 0xC0;
    g_oom_state = seed;
    g_alloc_failures = 0;
    if (opt & 16) run<echo_service>(opt, data[1], seed, input);
    else run<score_service>(opt, data[1], seed, input);
    g_oom_mode = false;
    return 0;
}
