// The concept a service implements: what the agent does with each NOTIFY.
//
// A service is a small class, not a fork of the engine: the connection core hands it each
// NOTIFY and an ack_writer that encodes straight into the connection's output buffer.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include "handshake.hpp"
#include "notify.hpp"
#include "ticket.hpp"
#include "writer.hpp"

namespace spop {

/// What a service's optional connection hooks are told (see `service` below). Views are valid
/// during the call only.
struct connection_event {
    std::uint64_t id = 0;         ///< the connection's number, unique per worker
    std::string_view peer{};      ///< "addr:port", "[v6]:port", "unix", or empty
    std::string_view engine_id{}; ///< on_hello: HAProxy's engine-id (empty when not sent)
    const negotiated* settings{}; ///< on_hello: max-frame-size, pipelining, health check
    void* state = nullptr;        ///< the service's per-connection state, if it declares one

    /// The per-connection state, typed: `ev.state_as<my_service::connection_state>()`.
    template <class T>
    [[nodiscard]] T& state_as() const noexcept {
        return *static_cast<T*>(state);
    }
};

/// Why the engine answers a deferred NOTIFY in its ticket holder's place (see on_fallback in
/// `service` below).
enum class fallback_reason : std::uint8_t {
    expired,  ///< the ticket was not completed within the deadline (deferred_timeout_ms)
    dropped,  ///< the ticket was destroyed without complete()
    stopping, ///< graceful stop: the last second of the shutdown timeout came first
};

/// A deferred NOTIFY the engine answers itself. Valid during the on_fallback() call only.
struct fallback_event {
    std::uint64_t stream_id = 0;
    std::uint64_t frame_id = 0;
    fallback_reason reason = fallback_reason::expired;
    void* conn_state = nullptr; ///< the connection's S::connection_state (spop::server)

    template <class T>
    [[nodiscard]] T& state() const noexcept {
        return *static_cast<T*>(conn_state);
    }
};

/// One NOTIFY, as handed to a service. `payload` views the receive buffer (or the connection's
/// reassembly buffer) and is valid only during the on_notify() call.
struct notify_request {
    std::uint64_t stream_id = 0;
    std::uint64_t frame_id = 0;
    std::uint32_t flags = 0;
    std::span<const std::uint8_t> payload{};
    // Set by the connection when its embedder supports deferred answers (ticket.hpp).
    deferral* deferrer = nullptr;
    std::uint64_t conn_tag = 0;
    std::uint32_t max_frame_size = 0;
    bool* deferred = nullptr;
    void* conn_state = nullptr; ///< the connection's S::connection_state, if the embedder keeps one

    /// The per-connection state the embedder keeps for a service that declares
    /// `using connection_state = T;` (spop::server does; a bare connection has none: check
    /// `conn_state != nullptr` if the service may run without it).
    template <class T>
    [[nodiscard]] T& state() const noexcept {
        return *static_cast<T*>(conn_state);
    }

    /// Runs parse_notify() over the payload.
    template <notify_handler H>
    [[nodiscard]] result parse(H& handler) const noexcept {
        return parse_notify(payload, handler);
    }

    /// Answer later: returns a ticket, and the connection sends no ACK now (whatever was written
    /// to the ack_writer is discarded). Empty when the embedder has no deferral or no ticket
    /// free: then answer now. At most one ticket per NOTIFY. Copy what you need from the
    /// payload before returning: its views die with on_notify().
    [[nodiscard]] ticket defer() const noexcept {
        if (deferrer == nullptr || deferred == nullptr || *deferred) return {};
        ticket t = deferrer->open(conn_tag, stream_id, frame_id, max_frame_size);
        if (t) *deferred = true;
        return t;
    }
};

/// A service.
///
///   errc on_notify(const notify_request& req, ack_writer& ack)
///     Called once per NOTIFY, in arrival order, on the connection's thread. Write the ACK's
///     actions with `ack`; the connection finishes the frame (ids echoed, FIN set) and queues
///     it. Return errc::ok (or errc::stopped), also after stopping a parse on purpose. Any
///     other errc ends the connection: no ACK for this NOTIFY, AGENT-DISCONNECT with
///     to_status(e) after the ACKs already queued, then a close. A parse error (truncated,
///     varint_overflow, bad_data_type: the frame was malformed) is status 4; errc::timeout
///     would be 2, errc::shutdown 0. If the NOTIFY was deferred, its ticket still answers
///     first, and the AGENT-DISCONNECT waits for it.
///     Must not throw, block or allocate per call.
///
///     A service may also answer later: see notify_request::defer() and ticket.hpp.
///
///   Optional hooks (each detected at compile time; spop::server calls them, a bare
///   connection calls on_hello only):
///     void on_connect(const connection_event&)   a connection was accepted
///     void on_hello(const connection_event&)     its HAPROXY-HELLO was accepted (engine-id,
///                                                negotiated settings; also for health checks)
///     void on_close(const connection_event&)     it is gone (after its last byte)
///     void on_turn_end()                         spop::server only: once per worker turn,
///                                                after every NOTIFY of the turn, before the
///                                                worker sleeps. For a deferring service that
///                                                batches: hand what on_notify collected to
///                                                other threads (a pool, a Redis pipeline) in
///                                                one go, one wakeup per turn instead of one
///                                                per NOTIFY. Same thread as on_notify; called
///                                                on idle turns too, so keep it cheap then.
///     using connection_state = T;                a T per connection (default-constructed at
///                                                accept), in every event and notify_request
///     void on_fallback(const fallback_event&, ack_writer& ack)
///                                                spop::server only: a deferred NOTIFY that
///                                                the engine answers itself (its ticket
///                                                expired, was dropped unanswered, or the
///                                                server is stopping). Write the fallback's
///                                                actions with `ack` (say, a fail-open score);
///                                                nothing written gives the no-op ACK. Same
///                                                thread as on_notify; the NOTIFY's payload is
///                                                gone, so keep what the fallback needs (in
///                                                connection_state, for example). Room: one
///                                                options::deferred_ack_bytes. Must not block.
///
///   static constexpr bool defers = true           (optional)
///     Declares that the service defers answers: the connection then also stops taking input
///     while its embedder has no ticket free (back-pressure instead of synchronous fallbacks).
///
///   static constexpr std::size_t max_ack_size   (optional)
///     A promise: no ACK this service writes is larger (whole frame, header included). The
///     connection answers a NOTIFY only when its output buffer has that much room (capped at
///     the negotiated max-frame-size), and otherwise stops taking input until the peer reads
///     (back-pressure). Without it, a whole negotiated frame is kept free for every ACK, which
///     is always safe. A service whose ACK grows with the NOTIFY (one action per message, long
///     names) must not declare a bound it cannot keep: the promise decides when input pauses,
///     and an ACK larger than the room left then loses the actions that do not fit.
template <class S>
concept service = requires(S& s, const notify_request& req, ack_writer& ack) {
    { s.on_notify(req, ack) } -> std::same_as<errc>;
};

/// ACKs every NOTIFY with no action (the connection adds its no-op, see connection_config).
struct null_service {
    static constexpr std::size_t max_ack_size = 64;
    errc on_notify(const notify_request& req, ack_writer&) noexcept {
        null_notify_handler h;
        const result r = req.parse(h);
        return r.ec;
    }
};
static_assert(service<null_service>);
static_assert(!service<int>);

} // namespace spop
