// Encoders for the frames an agent sends: AGENT-HELLO, ACK (with its list of actions) and
// AGENT-DISCONNECT. They write into a span the caller allocated beforehand and never allocate.
//
// Limits: a frame must fit in the span *and* its FRAME-LENGTH must not exceed the negotiated
// max-frame-size. The first failure is reported as no_buffer_space, the second as
// exceeds_max_frame_size (checked first, because it is what the peer would reject).
// The exception is an ACK's actions: one that does not fit is left out and the ACK is still
// produced (see ack_writer).
// A frame is always written whole, in one contiguous region: HAProxy 3.2 resets a connection
// whose AGENT-HELLO arrives split, so never hand out partial frames.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "data.hpp"
#include "frame.hpp"

namespace spop {

/// Variable scopes for SET-VAR / UNSET-VAR.
enum class var_scope : std::uint8_t { proc = 0, sess = 1, txn = 2, req = 3, res = 4 };

enum class action_type : std::uint8_t { set_var = 1, unset_var = 2 };

namespace detail {

/// A frame under construction: [begin, cursor) written. Every write is checked against both
/// limits before it happens: the negotiated max-frame-size first (what the peer would reject),
/// then the caller's buffer.
class frame_builder {
  public:
    /// A builder with nowhere to write: refuses everything, finish() fails.
    constexpr frame_builder() noexcept : ec_(errc::no_buffer_space) {}

    /// Starts a frame in `out`; its FRAME-LENGTH may not exceed `max_frame_size`.
    frame_builder(std::span<std::uint8_t> out, std::uint32_t max_frame_size, frame_type type,
                  std::uint64_t sid, std::uint64_t fid) noexcept
        : begin_(out.data()), end_(out.data() + out.size()), cur_(out.data()),
          max_total_(frame_length_size + std::size_t{max_frame_size}) {
        if (need(frame_header_size(sid, fid)))
            cur_ = encode_frame_header_unchecked(type, flag_fin, sid, fid, begin_);
    }

    [[nodiscard]] bool ok() const noexcept { return ec_ == errc::ok; }
    [[nodiscard]] errc error() const noexcept { return ec_; }

    bool put_u8(std::uint8_t b) noexcept {
        if (!need(1)) return false;
        *cur_++ = b;
        return true;
    }
    bool put_name(std::string_view n) noexcept {
        if (!need(varint_size(n.size()) + n.size())) return false;
        cur_ = encode_name(n, cur_, end_);
        return true;
    }
    bool put_value(const value& v) noexcept {
        if (!need(value_size(v))) return false;
        cur_ = encode_value(v, cur_, end_);
        return true;
    }

    /// Position to roll back to if a multi-part item fails half way.
    [[nodiscard]] std::uint8_t* mark() const noexcept { return cur_; }
    void rollback(std::uint8_t* m) noexcept { cur_ = m; }
    /// Rolls back to `m` *and* forgets the error, so that later items may still be written.
    /// Only for items that are optional to the frame (ACK actions): `m` must be a mark taken
    /// after the frame header was written.
    void discard(std::uint8_t* m) noexcept {
        cur_ = m;
        ec_ = errc::ok;
    }

    /// Patches the length prefix; returns the whole frame's size.
    [[nodiscard]] result finish() noexcept {
        if (!ok()) return {ec_, 0};
        const auto total = static_cast<std::size_t>(cur_ - begin_);
        store_be32(begin_, static_cast<std::uint32_t>(total - frame_length_size));
        return {errc::ok, total};
    }

    [[nodiscard]] std::size_t size() const noexcept {
        return static_cast<std::size_t>(cur_ - begin_);
    }
    /// Writes must leave `n` bytes under both limits until this is set back to 0.
    void hold_back(std::size_t n) noexcept { held_ = n; }

  private:
    bool need(std::size_t n) noexcept {
        if (!ok()) return false;
        const auto used = static_cast<std::size_t>(cur_ - begin_);
        if (used + n + held_ > max_total_) {
            ec_ = errc::exceeds_max_frame_size;
            return false;
        }
        if (n + held_ > static_cast<std::size_t>(end_ - cur_)) {
            ec_ = errc::no_buffer_space;
            return false;
        }
        return true;
    }

    std::uint8_t* begin_ = nullptr;
    std::uint8_t* end_ = nullptr;
    std::uint8_t* cur_ = nullptr;
    std::size_t max_total_ = 0;
    std::size_t held_ = 0;
    errc ec_ = errc::ok;
};

} // namespace detail

/// HAProxy's limit on a variable's full name: it builds "<scope>.<var-prefix>.<name>" (for
/// example "sess.iprep.ip_score") in a 64-byte buffer. A SET-VAR/UNSET-VAR whose full name
/// reaches 64 bytes is silently dropped since HAProxy 3.5 (commit 23a2811b6, backported to
/// every stable branch); older unpatched versions truncate it to 63 bytes and read past that
/// stack buffer. The writer cannot check this (it does not know `option var-prefix`): keep
/// len(scope) + 1 + len(var-prefix) + 1 + len(name) below this, e.g. when validating
/// configured names. Scope names are "proc", "sess", "txn", "req", "res".
inline constexpr std::size_t haproxy_max_var_full_name = 63;

/// Bytes one SET-VAR action takes in an ACK payload, for sizing: action type, NB-ARGS, scope,
/// NAME and the typed value.
[[nodiscard]] constexpr std::size_t set_var_size(std::string_view name, const value& v) noexcept {
    return 3 + varint_size(name.size()) + name.size() + value_size(v);
}
/// The same for UNSET-VAR.
[[nodiscard]] constexpr std::size_t unset_var_size(std::string_view name) noexcept {
    return 3 + varint_size(name.size()) + name.size();
}
/// FRAME-LENGTH of an ACK with no action and the largest possible ids (two 10-byte varints):
/// what an ACK costs before its actions, whatever NOTIFY it answers.
inline constexpr std::size_t max_ack_header_length = 1 + 4 + 10 + 10;

/// Writes an ACK frame: FIN set, the NOTIFY's ids echoed, then a list of actions.
///
/// An ACK is always produced: actions are optional to it, so an action that does not fit is
/// left out whole (rolled back, never half written), counted in dropped(), and the writer
/// carries on; a later, smaller action may still fit. finish() then patches the length and
/// returns a valid ACK holding every action that fitted, in the order written. Writing the
/// most important actions first is the caller's job.
///
/// "Fits" means both limits hold after the action: the frame's FRAME-LENGTH stays within the
/// negotiated max-frame-size given to the constructor (what the peer would reject), and the
/// whole frame, length prefix included, stays within the span `out` (the caller's buffer).
/// drop_reason() tells which limit refused the last dropped action.
///
/// Only the frame header is mandatory: if `out` cannot hold it (or the writer is
/// default-constructed) ok() is false, every action is refused without being counted, and
/// finish() returns that error.
///
/// Variable names are sent as given; see haproxy_max_var_full_name for HAProxy's limit on the
/// full name, and note that HAProxy only sets variables it already knows about (unless
/// `option force-set-var`).
///
/// No allocation, no exception: it writes into `out` only.
class ack_writer {
  public:
    ack_writer() noexcept = default;
    ack_writer(std::span<std::uint8_t> out, std::uint64_t stream_id, std::uint64_t frame_id,
               std::uint32_t max_frame_size) noexcept
        : b_(out, max_frame_size, frame_type::ack, stream_id, frame_id),
          header_size_(frame_header_size(stream_id, frame_id)) {}

    /// SET-VAR: `01 03 <scope> <NAME> <TYPED-DATA>`. A NULL value makes HAProxy unset it.
    /// Returns false if the action was left out.
    bool set_var(var_scope scope, std::string_view name, const value& v) noexcept {
        if (!b_.ok()) return false;
        std::uint8_t* m = b_.mark();
        if (b_.put_u8(static_cast<std::uint8_t>(action_type::set_var)) && b_.put_u8(3) &&
            b_.put_u8(static_cast<std::uint8_t>(scope)) && b_.put_name(name) && b_.put_value(v))
            return true;
        return drop(m);
    }

    /// UNSET-VAR: `02 02 <scope> <NAME>`. Returns false if the action was left out.
    bool unset_var(var_scope scope, std::string_view name) noexcept {
        if (!b_.ok()) return false;
        std::uint8_t* m = b_.mark();
        if (b_.put_u8(static_cast<std::uint8_t>(action_type::unset_var)) && b_.put_u8(2) &&
            b_.put_u8(static_cast<std::uint8_t>(scope)) && b_.put_name(name))
            return true;
        return drop(m);
    }

    /// Keeps `n` bytes free (under the max-frame-size and in the buffer) for actions that will
    /// be written after reserve(0): until then an action fits only if it leaves them. For an
    /// answer that must not be crowded out by less important actions written before it, such as
    /// a deferred answer's own result (set_var_size() sizes it).
    void reserve(std::size_t n) noexcept { b_.hold_back(n); }

    /// True when no action has been written yet.
    [[nodiscard]] bool empty() const noexcept { return b_.size() <= header_size_; }
    /// False only when the frame header did not fit: then finish() fails with error().
    [[nodiscard]] bool ok() const noexcept { return b_.ok(); }
    [[nodiscard]] errc error() const noexcept { return b_.error(); }
    /// Actions left out because they did not fit.
    [[nodiscard]] std::size_t dropped() const noexcept { return dropped_; }
    /// Why the last action was left out: exceeds_max_frame_size or no_buffer_space (ok if none
    /// was). The max-frame-size is checked first.
    [[nodiscard]] errc drop_reason() const noexcept { return drop_reason_; }
    /// Bytes written so far, length prefix included.
    [[nodiscard]] std::size_t size() const noexcept { return b_.size(); }
    [[nodiscard]] result finish() noexcept { return b_.finish(); }

  private:
    bool drop(std::uint8_t* m) noexcept {
        drop_reason_ = b_.error();
        b_.discard(m);
        ++dropped_;
        return false;
    }

    detail::frame_builder b_;
    std::size_t header_size_ = 0;
    std::size_t dropped_ = 0;
    errc drop_reason_ = errc::ok;
};

/// AGENT-HELLO: version "2.0", the negotiated max-frame-size (UINT32) and capabilities.
/// Always sends all three keys: 2.x rejects a missing max-frame-size (status 6) and the 3.x
/// health check requires capabilities.
[[nodiscard]] inline result encode_agent_hello(std::span<std::uint8_t> out,
                                               std::uint32_t max_frame_size,
                                               std::string_view capabilities) noexcept {
    detail::frame_builder b(out, max_frame_size, frame_type::agent_hello, 0, 0);
    b.put_name("version");
    b.put_value(value::from_string("2.0"));
    b.put_name("max-frame-size");
    b.put_value(value::from_uint32(max_frame_size));
    b.put_name("capabilities");
    b.put_value(value::from_string(capabilities));
    return b.finish();
}

/// HAProxy 2.6 (and the 3.4 health checker) reject a DISCONNECT message over 255 bytes.
inline constexpr std::size_t max_disconnect_message = 255;

/// AGENT-DISCONNECT: status-code (UINT32) and message (STRING, cut to 255 bytes).
[[nodiscard]] inline result encode_agent_disconnect(std::span<std::uint8_t> out,
                                                    std::uint32_t max_frame_size,
                                                    std::uint32_t status_code,
                                                    std::string_view message) noexcept {
    if (message.size() > max_disconnect_message)
        message = message.substr(0, max_disconnect_message);
    // The frame must fit max-frame-size, 256 at least: the status always does, a message
    // echoed from HAProxy may not (a DISCONNECT without its status makes the echo longer than
    // what came in). Shorten the message rather than send no DISCONNECT at all.
    // Fixed part: type, flags, both ids, "status-code" and its UINT32, "message", STRING type.
    const std::size_t fixed = 1 + 4 + 1 + 1 + 12 + 1 + varint_size(status_code) + 8 + 1;
    const std::size_t room = max_frame_size > fixed ? max_frame_size - fixed : 0;
    while (!message.empty() && message.size() + varint_size(message.size()) > room)
        message.remove_suffix(1);
    detail::frame_builder b(out, max_frame_size, frame_type::agent_disconnect, 0, 0);
    b.put_name("status-code");
    b.put_value(value::from_uint32(status_code));
    b.put_name("message");
    b.put_value(value::from_string(message));
    return b.finish();
}

/// The same with the status's standard wire message.
[[nodiscard]] inline result encode_agent_disconnect(std::span<std::uint8_t> out,
                                                    std::uint32_t max_frame_size,
                                                    status s) noexcept {
    return encode_agent_disconnect(out, max_frame_size, static_cast<std::uint32_t>(s),
                                   status_message(s));
}

/// Upper bound of an AGENT-DISCONNECT frame (header + both keys + a 255-byte message).
inline constexpr std::size_t max_agent_disconnect_size =
    4 + 7 + 12 + 6 + 8 + 3 + max_disconnect_message;

/// Writes any KV-LIST frame (HELLO/DISCONNECT in either direction) with stream-id/frame-id 0.
/// Used by the synthetic HAProxy client and by tests; agents use the dedicated encoders above.
class kv_writer {
  public:
    kv_writer(std::span<std::uint8_t> out, std::uint32_t max_frame_size, frame_type type,
              std::uint32_t flags = flag_fin) noexcept
        : b_(out, max_frame_size, type, 0, 0), begin_(out.data()) {
        if (b_.ok() && flags != flag_fin) store_be32(begin_ + 5, flags);
    }
    bool put(std::string_view key, const value& v) noexcept {
        std::uint8_t* m = b_.mark();
        if (b_.put_name(key) && b_.put_value(v)) return true;
        b_.rollback(m);
        return false;
    }
    [[nodiscard]] result finish() noexcept { return b_.finish(); }

  private:
    detail::frame_builder b_;
    std::uint8_t* begin_;
};

/// Writes a NOTIFY frame: the HAProxy side of the protocol, for clients, tests and benchmarks.
/// Call message() with the argument count, then exactly that many arg() calls.
class notify_writer {
  public:
    notify_writer(std::span<std::uint8_t> out, std::uint64_t stream_id, std::uint64_t frame_id,
                  std::uint32_t max_frame_size) noexcept
        : b_(out, max_frame_size, frame_type::notify, stream_id, frame_id) {}
    bool message(std::string_view name, std::uint8_t nb_args) noexcept {
        return b_.put_name(name) && b_.put_u8(nb_args);
    }
    bool arg(std::string_view name, const value& v) noexcept {
        return b_.put_name(name) && b_.put_value(v);
    }
    [[nodiscard]] result finish() noexcept { return b_.finish(); }

  private:
    detail::frame_builder b_;
};

} // namespace spop
