// The sans-IO connection: bytes in, frames through a service, bytes out.
//
// An embedder (epoll loop, io_uring ring, asio, a test) owns the socket and calls:
//   feed(bytes)          with whatever arrived, in any split (even inside the 4-byte length
//                        prefix) and in chunks of any size. Every complete frame is processed at
//                        once (a batch). It returns how many bytes it took (`consumed`), like
//                        Beast's parser::put(): the span need not outlive the call, but the
//                        bytes past `consumed` are still the embedder's, who keeps them and feeds
//                        them again, first, once wants_input() is true.
//   output()             the bytes to send: whole frames, in order, one contiguous region.
//   consume_output(n)    after n of them were written. Bytes past those already handed to
//                        the kernel may be appended meanwhile, but never moved.
//   wants_input()        false while back-pressured (the peer does not read its ACKs), after
//                        end of stream, or closing: stop reading the socket (TCP then pushes
//                        back on the peer) until it turns true again.
//   takes_input()        feed() would take bytes: the moment to feed again what it refused.
//   should_close()       true once every byte there is to send was sent and nothing more will
//                        come: close the socket.
//   on_peer_eof()        the peer shut its write side (recv returned 0). Everything received
//                        before is still answered and flushed, then should_close() turns true.
//   on_peer_closed()     on RST or a failed send: drop everything, send nothing.
//   shutdown()           graceful stop: answers what was received, then AGENT-DISCONNECT 0.
//   close_with(errc)     e.g. errc::timeout from an idle timer: AGENT-DISCONNECT, then close.
//   set_deferral(d, tag) lets services answer later (ticket.hpp); deliver(ack) then queues a
//                        finished deferred ACK. Deferred NOTIFYs count against the in-flight
//                        limit, and a graceful stop or end of stream waits for them.
//
// Back-pressure is TCP's own: the connection never buffers more input than one partial frame.
// When its output cannot take another ACK it stops consuming (feed() returns less than it was
// given), and the embedder stops reading that socket. Nothing is dropped and no legal peer is
// ever disconnected for sending too fast; memory per connection is two pool blocks at most.
//
// Protocol errors are answered with AGENT-DISCONNECT carrying to_status(error()), then the
// connection closes. Frames are checked against the limit from their length prefix alone,
// before any payload is buffered.
//
// Memory: input and output buffers come from a per-thread buffer_pool and go back to it as soon
// as they are empty, so an idle connection holds none.
//
// Threads: a connection, its service calls and its pool belong to one thread.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "buffer_pool.hpp"
#include "frame.hpp"
#include "handshake.hpp"
#include "service.hpp"
#include "status.hpp"
#include "writer.hpp"

namespace spop {

enum class conn_state : std::uint8_t {
    awaiting_hello, ///< the first frame must be HAPROXY-HELLO
    established,    ///< NOTIFY frames are served
    closing,        ///< a last frame (AGENT-DISCONNECT or health-check AGENT-HELLO) is queued
    closed,         ///< nothing more to do
};

struct connection_config {
    agent_limits limits{};
    /// An ACK with no action stalls HAProxy 3.1.0 until its processing timeout (fixed in
    /// 3.1.x/3.2). When set, such an ACK gets a harmless UNSET-VAR of `noop_var` instead: HAProxy
    /// ignores unset requests for variables it does not know.
    bool noop_on_empty_ack = true;
    /// At most this many ACKs queued and not yet sent before the connection stops taking
    /// NOTIFYs (back-pressure); 0 = bounded only by the output buffer. HAProxy keeps at most
    /// 20 NOTIFYs in flight (3.x) or max-waiting-frames (2.x), so only floods reach it.
    std::uint32_t max_queued_acks = 0;
    std::string_view noop_var = "spop_noop";
    var_scope noop_scope = var_scope::txn;
};

/// What one feed() (or consume_output()) did. feed()'s `consumed` must not be ignored: the
/// bytes past it were not taken and must be fed again later.
struct feed_result {
    std::size_t consumed = 0;   ///< bytes of the input taken (all of them unless back-pressured)
    std::uint32_t frames = 0;   ///< complete frames processed
    std::uint32_t notifies = 0; ///< NOTIFY frames answered with an ACK
    std::uint32_t deferred = 0; ///< NOTIFY frames whose answer was deferred (a ticket)
};

template <service S>
class connection {
  public:
    /// `pool` must hand out blocks of at least buffer_size_for(cfg.limits.max_frame_size).
    connection(S& svc, buffer_pool& pool, const connection_config& cfg) noexcept
        : svc_(svc), pool_(pool), cfg_(&cfg), limit_(cfg.limits.max_frame_size) {
        neg_.max_frame_size = cfg.limits.max_frame_size;
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { release_buffers(); }

    [[nodiscard]] conn_state state() const noexcept { return state_; }
    /// Why the connection is closing (ok while healthy; peer_disconnect, shutdown... otherwise).
    [[nodiscard]] errc error() const noexcept { return error_; }
    /// The settings agreed in the handshake (valid once established).
    [[nodiscard]] const negotiated& settings() const noexcept { return neg_; }
    /// The status code of a HAPROXY-DISCONNECT, when error() == peer_disconnect.
    [[nodiscard]] std::uint32_t peer_status() const noexcept { return peer_status_; }
    [[nodiscard]] bool is_healthcheck() const noexcept { return neg_.healthcheck; }
    /// ACKs queued in the output buffer since it was last empty: answered, but not yet all
    /// handed to the peer.
    [[nodiscard]] std::uint32_t queued_acks() const noexcept { return queued_acks_; }

    /// Read more from the socket: not back-pressured, no end of stream yet, not closing.
    [[nodiscard]] bool wants_input() const noexcept { return takes_input() && !eof_; }
    /// feed() would take bytes now. Bytes it refused earlier are fed again when this is true
    /// (also after end of stream, when wants_input() stays false).
    [[nodiscard]] bool takes_input() const noexcept { return !paused_ && !failing_ && accepting(); }
    /// Input is thrown away from now on (closing, or a protocol error waiting for the answers
    /// of the NOTIFYs deferred before it): an embedder need not keep any.
    [[nodiscard]] bool discards_input() const noexcept { return failing_ || !accepting(); }
    [[nodiscard]] bool should_close() const noexcept {
        if (state_ == conn_state::closed) return true;
        if (out_head_ != out_tail_) return false;
        if (state_ == conn_state::closing) return true;
        // End of stream: once every frame received before it is answered and sent.
        return eof_ && !paused_ && !caller_holds_ && deferred_ == 0;
    }
    [[nodiscard]] std::span<const std::uint8_t> output() const noexcept {
        return {out_ + out_head_, out_tail_ - out_head_};
    }
    /// Bytes held in buffers right now (0 for an idle connection).
    [[nodiscard]] std::size_t buffered_bytes() const noexcept {
        return (in_ ? pool_.block_size() : 0) + (out_ ? pool_.block_size() : 0);
    }
    /// True while the embedder holds received bytes not fed yet (back-pressure).
    [[nodiscard]] bool input_held() const noexcept { return caller_holds_; }
    /// For an embedder that keeps bytes without offering them to feed() (it stopped reading but
    /// the kernel delivered more): a graceful stop or end of stream then waits for them.
    /// feed() keeps the flag itself when it refuses bytes, and from its `more_held` argument.
    void set_input_held() noexcept {
        if (accepting()) caller_holds_ = true;
    }
    /// NOTIFYs deferred and not delivered yet.
    [[nodiscard]] std::uint32_t deferred_count() const noexcept { return deferred_; }

    /// Who this connection is, for the service's hooks and per-connection state (service.hpp):
    /// `peer` must outlive the connection, `state` is handed to the service as is.
    void set_context(std::uint64_t id, std::string_view peer, void* state) noexcept {
        id_ = id;
        peer_ = peer;
        state_ptr_ = state;
    }
    /// The same, as the hooks get it.
    [[nodiscard]] connection_event event() const noexcept {
        connection_event ev;
        ev.id = id_;
        ev.peer = peer_;
        ev.state = state_ptr_;
        return ev;
    }

    /// Lets the service defer answers through `d` (ticket.hpp). `tag` identifies this
    /// connection to `d` (e.g. a slot and generation). `d` must outlive the connection.
    void set_deferral(deferral* d, std::uint64_t tag) noexcept {
        deferral_ = d;
        tag_ = tag;
    }

    /// Queues the ACK of a deferred NOTIFY: `ack` was written into `frame_buf` (the span it was
    /// built on); an ACK without actions gets the no-op policy. Returns false when the output
    /// buffer has no room now (deliver again after consume_output()); true when queued, or
    /// dropped because the connection is closing or closed (nothing may follow a DISCONNECT).
    [[nodiscard]] bool deliver(ack_writer& ack, std::span<const std::uint8_t> frame_buf) noexcept {
        if (!accepting()) {
            if (deferred_ != 0) --deferred_;
            return true;
        }
        if (ack.empty() && cfg_->noop_on_empty_ack) ack.unset_var(cfg_->noop_scope, cfg_->noop_var);
        const result w = ack.finish();
        if (!w) {
            --deferred_;
            if (failing_ && deferred_ == 0) finish_failure();
            else fail(w.ec);
            return true;
        }
        if (!ensure_output()) {
            // Out of memory: nothing could ever drain, so do not wait for it (as output_room()).
            if (deferred_ != 0) --deferred_;
            state_ = conn_state::closed;
            error_ = errc::input_overflow;
            release_buffers();
            return true;
        }
        if (pool_.block_size() - out_tail_ < w.consumed + max_agent_disconnect_size) return false;
        std::memcpy(out_ + out_tail_, frame_buf.data(), w.consumed);
        out_tail_ += static_cast<std::uint32_t>(w.consumed);
        ++queued_acks_;
        --deferred_;
        if (failing_ && deferred_ == 0) return finish_failure(), true;
        maybe_finish_shutdown();
        return true;
    }

    /// After the embedder freed tickets: a connection that stopped taking input only for want
    /// of one resumes (answering the frame it had waiting). Does nothing otherwise.
    feed_result retry_input() noexcept {
        feed_result res;
        if (paused_ && out_head_ == out_tail_) resume(res);
        maybe_finish_shutdown();
        return res;
    }

    /// Processes every complete frame in `in` and keeps a trailing partial frame. Takes less
    /// than all of `in` only when back-pressured: then `consumed` stops before the first frame it
    /// could not answer, and the rest stays the caller's. A closing connection takes (and
    /// discards) everything. `more_held`: the caller holds further received bytes after `in`
    /// (a graceful stop or end of stream then waits for them).
    [[nodiscard]] feed_result feed(std::span<const std::uint8_t> in,
                                   bool more_held = false) noexcept {
        feed_result res;
        if (!accepting() || failing_) {
            res.consumed = in.size();
            return res;
        }
        if (paused_) {
            caller_holds_ = caller_holds_ || !in.empty() || more_held;
            return res;
        }
        const std::uint8_t* const begin = in.data();
        const std::uint8_t* p = begin;
        std::size_t n = in.size();
        // `held` = bytes left in the caller's hands when we stop early.
        const auto stop = [&]() noexcept {
            res.consumed = static_cast<std::size_t>(p - begin);
            caller_holds_ = n != 0 || more_held;
        };
        if (in_len_ != 0) {
            // Finish the partial frame in the reassembly buffer, taking only its own bytes.
            if (in_len_ < frame_length_size) {
                const std::size_t take = min(frame_length_size - in_len_, n);
                append(p, take);
                p += take;
                n -= take;
                if (in_len_ < frame_length_size) return done(res, in.size(), more_held);
            }
            const std::uint32_t len = load_be32(in_);
            if (const errc e = check_frame_length(len, limit_); e != errc::ok) {
                fail(e);
                return done(res, in.size(), more_held);
            }
            const std::size_t total = frame_length_size + len;
            const std::size_t take = min(total - in_len_, n);
            append(p, take);
            p += take;
            n -= take;
            if (in_len_ < total) return done(res, in.size(), more_held);
            if (!output_room()) {
                // The frame waits in the reassembly buffer; resume() answers it first.
                if (accepting()) paused_ = true;
                stop();
                return res;
            }
            process(in_, total, res);
            free_input();
            if (!accepting() || failing_) return done(res, in.size(), more_held);
        }
        while (n >= frame_length_size) {
            const std::uint32_t len = load_be32(p);
            if (const errc e = check_frame_length(len, limit_); e != errc::ok) {
                fail(e);
                return done(res, in.size(), more_held);
            }
            const std::size_t total = frame_length_size + len;
            if (n < total) break;
            if (!output_room()) {
                if (accepting()) paused_ = true;
                stop();
                return res;
            }
            process(p, total, res);
            p += total;
            n -= total;
            if (!accepting() || failing_) return done(res, in.size(), more_held);
        }
        if (n != 0) {
            // A partial frame: always fits, its length was checked (or is still unknown).
            if (!ensure_input()) return done(res, in.size(), more_held);
            append(p, n);
        }
        return done(res, in.size(), more_held);
    }

    /// `n` bytes of output() were sent. When everything was, the buffer is recycled and a
    /// back-pressured connection answers the frame it had waiting; if the embedder holds bytes
    /// that feed() refused, takes_input() turning true is the signal to feed them again.
    feed_result consume_output(std::size_t n) noexcept {
        feed_result res;
        out_head_ += static_cast<std::uint32_t>(min(n, out_tail_ - out_head_));
        if (out_head_ != out_tail_) return res;
        out_head_ = out_tail_ = 0;
        queued_acks_ = 0;
        if (paused_) resume(res);
        maybe_finish_shutdown();
        if (out_head_ == out_tail_) {
            pool_.release(out_);
            out_ = nullptr;
        }
        return res;
    }

    /// Graceful stop: every complete NOTIFY already received (including bytes the embedder still
    /// holds) is answered, then AGENT-DISCONNECT 0 "normal" is queued and the connection closes.
    void shutdown() noexcept {
        if (!accepting()) return;
        shutdown_pending_ = true;
        maybe_finish_shutdown();
    }

    /// The peer shut its write side. Frames already received are answered (feed the bytes you
    /// still hold as usual, in order: a frame may continue in them). A partial frame left at the
    /// end can never complete; it is freed with the connection.
    void on_peer_eof() noexcept { eof_ = true; }

    /// Ends the connection with AGENT-DISCONNECT to_status(e) (e.g. errc::timeout).
    void close_with(errc e) noexcept { fail(e); }

    /// The peer closed (EOF or RST): drop everything, send nothing.
    void on_peer_closed() noexcept {
        state_ = conn_state::closed;
        release_buffers();
    }

  private:
    static constexpr std::size_t min(std::size_t a, std::size_t b) noexcept {
        return a < b ? a : b;
    }

    [[nodiscard]] bool accepting() const noexcept {
        return state_ == conn_state::awaiting_hello || state_ == conn_state::established;
    }

    [[nodiscard]] std::size_t ack_reserve() const noexcept {
        const std::size_t whole = frame_length_size + std::size_t{neg_.max_frame_size};
        if constexpr (requires { S::max_ack_size; }) {
            return S::max_ack_size < whole ? S::max_ack_size : whole;
        } else {
            return whole;
        }
    }

    /// Room for one more reply plus a final AGENT-DISCONNECT.
    [[nodiscard]] bool output_room() noexcept {
        if (!ensure_output()) {
            // Out of memory: nothing could ever drain, so do not wait for it.
            state_ = conn_state::closed;
            error_ = errc::input_overflow;
            release_buffers();
            return false;
        }
        if (cfg_->max_queued_acks != 0 && queued_acks_ + deferred_ >= cfg_->max_queued_acks)
            return false;
        if constexpr (requires { S::defers; }) {
            if (S::defers && deferral_ != nullptr && !deferral_->available()) return false;
        }
        return pool_.block_size() - out_tail_ >= ack_reserve() + max_agent_disconnect_size;
    }

    bool ensure_output() noexcept {
        if (out_ == nullptr) out_ = pool_.acquire();
        return out_ != nullptr;
    }

    [[nodiscard]] std::span<std::uint8_t> output_space() noexcept {
        return {out_ + out_tail_, pool_.block_size() - out_tail_};
    }

    /// Ends a feed() that took every byte it was given.
    feed_result& done(feed_result& res, std::size_t all, bool more_held) noexcept {
        res.consumed = all;
        caller_holds_ = more_held;
        maybe_finish_shutdown();
        return res;
    }

    bool ensure_input() noexcept {
        if (in_ == nullptr) in_ = pool_.acquire();
        if (in_ == nullptr) fail(errc::input_overflow); // allocation failure: status 13
        return in_ != nullptr;
    }

    void append(const std::uint8_t* p, std::size_t n) noexcept {
        if (n == 0 || !ensure_input()) return;
        std::memcpy(in_ + in_len_, p, n);
        in_len_ += static_cast<std::uint32_t>(n);
    }

    /// After the output drained: answer the frame that waited in the reassembly buffer.
    void resume(feed_result& res) noexcept {
        paused_ = false;
        if (in_len_ < frame_length_size) return;
        const std::size_t total = frame_length_size + std::size_t{load_be32(in_)};
        if (in_len_ < total) return; // a partial frame: wait for its bytes
        if (!output_room()) {
            if (accepting()) paused_ = true;
            return;
        }
        process(in_, total, res);
        if (accepting()) free_input();
    }

    void maybe_finish_shutdown() noexcept {
        if (shutdown_pending_ && !paused_ && !caller_holds_ && deferred_ == 0) finish_shutdown();
    }

    void process(const std::uint8_t* f, std::size_t total, feed_result& res) noexcept {
        frame fr;
        const result r = decode_frame_body({f + frame_length_size, total - frame_length_size}, fr);
        if (!r) return fail(r.ec);
        ++res.frames;
        if (state_ == conn_state::awaiting_hello) {
            if (fr.type == frame_type::haproxy_hello) return on_hello(fr);
            if (fr.type == frame_type::haproxy_disconnect) return on_peer_disconnect(fr);
            return fail(errc::unexpected_frame);
        }
        switch (fr.type) {
        case frame_type::notify:
            return on_notify(fr, res);
        case frame_type::haproxy_disconnect:
            return on_peer_disconnect(fr);
        case frame_type::haproxy_hello:
            return fail(errc::unexpected_frame);
        case frame_type::unset:
            // A 2.x fragment continuation or abort. We never announce fragmentation, so none is
            // expected; skipping it is what PROTOCOL-NOTES §10 recommends.
            return;
        default:
            // Unknown types: fatal on the connection level (stream-id 0), skipped otherwise,
            // as HAProxy 3.x treats the agent's unknown frames.
            if (fr.stream_id == 0) return fail(errc::bad_frame_type);
            return;
        }
    }

    void on_hello(const frame& fr) noexcept {
        if (!fr.fin()) return fail(errc::fragmented_frame);
        if (fr.stream_id != 0 || fr.frame_id != 0) return fail(errc::bad_frame_ids);
        hello_fields fields;
        const errc e = negotiate(fr.payload, cfg_->limits, neg_, fields);
        if (e != errc::ok) return fail(e);
        const result w = encode_agent_hello(output_space(), neg_.max_frame_size,
                                            announced_capabilities(cfg_->limits));
        if (!w) return fail(w.ec);
        out_tail_ += static_cast<std::uint32_t>(w.consumed); // within a pool block
        limit_ = neg_.max_frame_size;
        if constexpr (requires(S & s, const connection_event& ev) { s.on_hello(ev); }) {
            connection_event ev = event();
            ev.engine_id = fields.engine_id;
            ev.settings = &neg_;
            svc_.on_hello(ev);
        }
        if (neg_.healthcheck) {
            // 3.x health checks parse to the end of their receive buffer: nothing may follow
            // the AGENT-HELLO, not even an AGENT-DISCONNECT.
            state_ = conn_state::closing;
            release_input();
            return;
        }
        state_ = conn_state::established;
    }

    void on_notify(const frame& fr, feed_result& res) noexcept {
        if (!fr.fin()) return fail(errc::fragmented_frame);
        bool deferred = false;
        const notify_request req{fr.stream_id,
                                 fr.frame_id,
                                 fr.flags,
                                 fr.payload,
                                 deferral_,
                                 tag_,
                                 neg_.max_frame_size,
                                 deferral_ ? &deferred : nullptr,
                                 state_ptr_};
        const std::span<std::uint8_t> space = output_space();
        // The reply may not eat into the room kept for a final AGENT-DISCONNECT.
        ack_writer ack(space.first(space.size() - max_agent_disconnect_size), fr.stream_id,
                       fr.frame_id, neg_.max_frame_size);
        const errc e = svc_.on_notify(req, ack);
        if (deferred) {
            // The ticket answers later (deliver()); even a parse error is its holder's now.
            ++deferred_;
            ++res.deferred;
            if (e != errc::ok && e != errc::stopped) fail(e);
            return;
        }
        if (e != errc::ok && e != errc::stopped) return fail(e);
        if (ack.empty() && cfg_->noop_on_empty_ack) ack.unset_var(cfg_->noop_scope, cfg_->noop_var);
        const result w = ack.finish();
        if (!w) return fail(w.ec);
        out_tail_ += static_cast<std::uint32_t>(w.consumed);
        ++queued_acks_;
        ++res.notifies;
    }

    void on_peer_disconnect(const frame& fr) noexcept {
        disconnect_fields d;
        (void)parse_kv_list(fr.payload, d); // echo what we could read; it is goodbye anyway
        peer_status_ = d.status_code;
        error_ = errc::peer_disconnect;
        // Echo HAProxy's status and message: the reason then lands in HAProxy's SPOE logs.
        queue_disconnect(d.status_code, d.message);
    }

    void finish_shutdown() noexcept {
        shutdown_pending_ = false;
        if (!accepting() || failing_) return;
        error_ = errc::shutdown;
        queue_disconnect(static_cast<std::uint32_t>(status::normal),
                         status_message(status::normal));
    }

    void fail(errc e) noexcept {
        if (!accepting() || failing_) return;
        error_ = e;
        if (deferred_ != 0) {
            // NOTIFYs received before the error are still answered (their tickets complete or
            // expire); then the AGENT-DISCONNECT. Nothing more is read meanwhile.
            failing_ = true;
            release_input();
            return;
        }
        const status s = to_status(e);
        queue_disconnect(static_cast<std::uint32_t>(s), status_message(s));
    }

    void finish_failure() noexcept {
        failing_ = false;
        const errc e = error_;
        error_ = errc::ok; // fail() records it again
        fail(e);
    }


    void queue_disconnect(std::uint32_t code, std::string_view msg) noexcept {
        state_ = conn_state::closing;
        release_input();
        if (!ensure_output()) {
            state_ = conn_state::closed;
            return;
        }
        const result w = encode_agent_disconnect(output_space(), limit_, code, msg);
        if (w) out_tail_ += static_cast<std::uint32_t>(w.consumed);
    }

    /// The reassembly buffer back to the pool (its frame was answered); the pause and the
    /// embedder's held bytes are a different matter and stay as they are.
    void free_input() noexcept {
        pool_.release(in_);
        in_ = nullptr;
        in_len_ = 0;
    }

    /// Everything about input, for a connection that reads no more (closing, closed).
    void release_input() noexcept {
        free_input();
        paused_ = false;
        caller_holds_ = false;
    }

    void release_buffers() noexcept {
        release_input();
        pool_.release(out_);
        out_ = nullptr;
        out_head_ = out_tail_ = 0;
        queued_acks_ = 0;
    }

    S& svc_;
    buffer_pool& pool_;
    const connection_config* cfg_;
    std::uint8_t* in_ = nullptr;
    std::uint8_t* out_ = nullptr;
    std::uint32_t in_len_ = 0; ///< bytes of one (partial, or waiting) frame in in_
    std::uint32_t out_head_ = 0, out_tail_ = 0;
    std::uint32_t limit_;
    std::uint32_t peer_status_ = 0;
    std::uint32_t queued_acks_ = 0; ///< ACKs in the output buffer since it was last empty
    std::uint32_t deferred_ = 0;    ///< NOTIFYs answered by a ticket, not delivered yet
    deferral* deferral_ = nullptr;
    std::uint64_t tag_ = 0;
    std::uint64_t id_ = 0;
    std::string_view peer_{};
    void* state_ptr_ = nullptr;
    negotiated neg_{};
    conn_state state_ = conn_state::awaiting_hello;
    errc error_ = errc::ok;
    bool paused_ = false;       ///< an ACK would not fit: input stops until the output drains
    bool caller_holds_ = false; ///< feed() left bytes with the embedder (back-pressure)
    bool eof_ = false;          ///< the peer shut its write side
    bool failing_ = false;      ///< a protocol error waits for the deferred answers before it
    bool shutdown_pending_ = false;
};

} // namespace spop
