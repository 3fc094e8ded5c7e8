// A connection under test: a service that records every NOTIFY and answers SET-VAR
// sess.ip_score = 42 (PROTOCOL-NOTES V7), its pool, and helpers to drain the output.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <spop/connection.hpp>

#include "frames.hpp"
#include "hex.hpp"
#include "recorder.hpp"

namespace spop_test {

struct scoring_service {
    static constexpr std::size_t max_ack_size = 64;

    bool score = true;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ids;
    std::vector<std::vector<std::string>> messages;

    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        recorder rec;
        const spop::result r = req.parse(rec);
        if (!r) return r.ec;
        ids.emplace_back(req.stream_id, req.frame_id);
        messages.push_back(std::move(rec.events));
        if (score) ack.set_var(spop::var_scope::sess, "ip_score", spop::value::from_uint32(42));
        return spop::errc::ok;
    }
};
static_assert(spop::service<scoring_service>);

struct conn_harness {
    explicit conn_harness(const spop::connection_config& c = {})
        : cfg(c), pool(spop::buffer_size_for(cfg.limits.max_frame_size)), conn(svc, pool, cfg) {}

    spop::connection_config cfg;
    spop::buffer_pool pool;
    scoring_service svc;
    spop::connection<scoring_service> conn;

    /// Bytes feed() did not take (back-pressure), kept and fed again first, as an embedder must.
    bytes held;

    /// New bytes from the peer: after whatever is still held.
    spop::feed_result feed(std::span<const std::uint8_t> in) {
        if (held.empty()) {
            const spop::feed_result r = conn.feed(in);
            held.assign(in.begin() + static_cast<std::ptrdiff_t>(r.consumed), in.end());
            return r;
        }
        held.insert(held.end(), in.begin(), in.end());
        return pump();
    }
    spop::feed_result feed(std::string_view hex) {
        return feed(std::span<const std::uint8_t>(unhex(hex)));
    }

    /// Feeds the held bytes again, when the connection wants them.
    spop::feed_result pump() {
        if (held.empty() || !conn.takes_input()) return {};
        const spop::feed_result r = conn.feed(held);
        held.erase(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(r.consumed));
        return r;
    }

    /// `n` bytes of the output were sent; then held input is fed again if it can be.
    spop::feed_result consume(std::size_t n) {
        spop::feed_result r = conn.consume_output(n);
        const spop::feed_result p = pump();
        r.frames += p.frames;
        r.notifies += p.notifies;
        return r;
    }

    /// Copies everything output() holds and marks it sent.
    bytes drain() {
        const auto out = conn.output();
        bytes b(out.begin(), out.end());
        (void)consume(b.size());
        return b;
    }
};

/// The ACK the scoring service produces for (sid, fid).
inline bytes scored_ack(std::uint64_t sid, std::uint64_t fid) {
    return make_frame(spop::frame_type::ack, spop::flag_fin, sid, fid,
                      unhex("01 03 01 08 69705f73636f7265 03 2a"));
}

} // namespace spop_test
