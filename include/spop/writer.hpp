// Encoders for the frames an agent sends: AGENT-HELLO, ACK (with its list of actions) and
// AGENT-DISCONNECT. They write into a span the caller allocated beforehand and never allocate.
//
// Limits: a frame must fit in the span *and* its FRAME-LENGTH must not exceed the negotiated
// max-frame-size. The first failure is reported as no_buffer_space, the second as
// exceeds_max_frame_size (checked first, because it is what the peer would reject).
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
    constexpr frame_builder() noexcept = default;

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

  private:
    bool need(std::size_t n) noexcept {
        if (!ok()) return false;
        const auto used = static_cast<std::size_t>(cur_ - begin_);
        if (used + n > max_total_) {
            ec_ = errc::exceeds_max_frame_size;
            return false;
        }
        if (n > static_cast<std::size_t>(end_ - cur_)) {
            ec_ = errc::no_buffer_space;
            return false;
        }
        return true;
    }

    std::uint8_t* begin_ = nullptr;
    std::uint8_t* end_ = nullptr;
    std::uint8_t* cur_ = nullptr;
    std::size_t max_total_ = 0;
    errc ec_ = errc::ok;
};

} // namespace detail

/// Writes an ACK frame: FIN set, the NOTIFY's ids echoed, then a list of actions.
///
/// Each set_var()/unset_var() either appends the whole action or nothing (a failed action is
/// rolled back and the writer remembers the error). finish() patches the length and returns
/// the frame size, or the first error.
///
/// Variable names are sent as given; HAProxy stores them as "<scope>.<var-prefix>.<name>",
/// truncated to 63 characters, and only sets variables it already knows about.
class ack_writer {
  public:
    ack_writer() noexcept = default;
    ack_writer(std::span<std::uint8_t> out, std::uint64_t stream_id, std::uint64_t frame_id,
               std::uint32_t max_frame_size) noexcept
        : b_(out, max_frame_size, frame_type::ack, stream_id, frame_id),
          header_size_(frame_header_size(stream_id, frame_id)) {}

    /// SET-VAR: `01 03 <scope> <NAME> <TYPED-DATA>`. A NULL value makes HAProxy unset it.
    bool set_var(var_scope scope, std::string_view name, const value& v) noexcept {
        std::uint8_t* m = b_.mark();
        if (b_.put_u8(static_cast<std::uint8_t>(action_type::set_var)) && b_.put_u8(3) &&
            b_.put_u8(static_cast<std::uint8_t>(scope)) && b_.put_name(name) && b_.put_value(v))
            return true;
        b_.rollback(m);
        return false;
    }

    /// UNSET-VAR: `02 02 <scope> <NAME>`.
    bool unset_var(var_scope scope, std::string_view name) noexcept {
        std::uint8_t* m = b_.mark();
        if (b_.put_u8(static_cast<std::uint8_t>(action_type::unset_var)) && b_.put_u8(2) &&
            b_.put_u8(static_cast<std::uint8_t>(scope)) && b_.put_name(name))
            return true;
        b_.rollback(m);
        return false;
    }

    /// True when no action has been written yet.
    [[nodiscard]] bool empty() const noexcept { return b_.size() <= header_size_; }
    [[nodiscard]] bool ok() const noexcept { return b_.ok(); }
    [[nodiscard]] errc error() const noexcept { return b_.error(); }
    [[nodiscard]] result finish() noexcept { return b_.finish(); }

  private:
    detail::frame_builder b_;
    std::size_t header_size_ = 0;
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
