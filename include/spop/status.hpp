// SPOP status codes and the library's error enum.
//
// Every way a parse, encode or connection step can fail is one `errc` value, and every `errc`
// maps to exactly one SPOP status code (the number an AGENT-DISCONNECT carries). Keeping the
// mapping in one table is what lets the connection core answer every protocol error with the
// right code without special cases.
#pragma once

#include <cstdint>
#include <string_view>

namespace spop {

/// SPOP status codes as carried in DISCONNECT frames (SPOE.txt §3.5).
enum class status : std::uint32_t {
    normal = 0,
    io_error = 1,
    timeout = 2,
    too_big = 3,
    invalid = 4,
    no_version = 5,
    no_frame_size = 6,
    no_capabilities = 7,
    bad_version = 8,
    bad_frame_size = 9,
    fragmentation_not_supported = 10,
    interlaced_frames = 11,
    frame_id_not_found = 12,
    resource_allocation = 13,
    unknown = 99,
};

/// The exact strings HAProxy puts on the wire for each status (2.6 flt_spoe.c, 3.4 mux_spop.c).
/// Codes HAProxy does not know (14..98, >= 100) map to the "unknown" text.
[[nodiscard]] constexpr std::string_view status_message(status s) noexcept {
    switch (s) {
    case status::normal:
        return "normal";
    case status::io_error:
        return "I/O error";
    case status::timeout:
        return "a timeout occurred";
    case status::too_big:
        return "frame is too big";
    case status::invalid:
        return "invalid frame received";
    case status::no_version:
        return "version value not found";
    case status::no_frame_size:
        return "max-frame-size value not found";
    case status::no_capabilities:
        return "capabilities value not found";
    case status::bad_version:
        return "unsupported version";
    case status::bad_frame_size:
        return "max-frame-size too big or too small";
    case status::fragmentation_not_supported:
        return "fragmentation not supported";
    case status::interlaced_frames:
        return "invalid interlaced frames";
    case status::frame_id_not_found:
        return "frame-id not found";
    case status::resource_allocation:
        return "resource allocation error";
    case status::unknown:
        break;
    }
    return "an unknown error occurred";
}

/// Every outcome of a library call. `ok` and `need_more` are not errors; `stopped` means a
/// handler asked to stop; everything else is terminal for the frame (and, in the connection
/// core, for the connection).
enum class errc : std::uint8_t {
    ok = 0,
    need_more,        ///< resumable: feed more bytes
    stopped,          ///< a handler callback returned action::stop
    varint_overflow,  ///< varint longer than 10 bytes or above 2^64-1
    truncated,        ///< a field runs past the end of its frame
    bad_data_type,    ///< typed-data type 10..15
    frame_too_big,    ///< FRAME-LENGTH above the negotiated max-frame-size
    frame_too_small,  ///< FRAME-LENGTH below 7 (type + flags + two ids), including 0
    unexpected_frame, ///< a frame type not allowed in the current state (NOTIFY before HELLO...)
    bad_frame_type,   ///< an unknown frame type with stream-id 0
    bad_frame_ids,    ///< HELLO/DISCONNECT with stream-id or frame-id != 0
    fragmented_frame, ///< FIN not set: fragmentation was not negotiated
    bad_kv_type,      ///< a known HELLO/DISCONNECT key with a value of the wrong type
    no_version,       ///< HAPROXY-HELLO without supported-versions
    bad_version,      ///< supported-versions offers no 2.x (so not 2.0)
    no_frame_size,    ///< HAPROXY-HELLO without max-frame-size
    bad_frame_size,   ///< max-frame-size out of range
    no_capabilities,  ///< HAPROXY-HELLO without capabilities
    no_buffer_space,  ///< encode: the caller's buffer is too small
    exceeds_max_frame_size, ///< encode: the frame would exceed the negotiated max-frame-size
    input_overflow,         ///< connection: a client kept sending while its ACKs were not read
    nb_args_overflow,       ///< encode: more than 255 arguments in one action or message
    peer_disconnect,        ///< connection: HAProxy sent HAPROXY-DISCONNECT (not a fault)
    shutdown,               ///< connection: the embedder asked for a graceful stop
    timeout,                ///< connection: the embedder's idle timer fired
    bad_action, ///< ACK: unknown action type, wrong NB-ARGS for it, or scope above 4 (res)
};

inline constexpr std::size_t errc_count = static_cast<std::size_t>(errc::bad_action) + 1;

/// The status code an AGENT-DISCONNECT carries for each error.
[[nodiscard]] constexpr status to_status(errc e) noexcept {
    switch (e) {
    case errc::ok:
    case errc::peer_disconnect:
    case errc::shutdown:
        return status::normal;
    case errc::timeout:
        return status::timeout;
    case errc::frame_too_big:
    case errc::exceeds_max_frame_size:
        return status::too_big;
    case errc::need_more:
    case errc::stopped:
    case errc::varint_overflow:
    case errc::truncated:
    case errc::bad_data_type:
    case errc::frame_too_small:
    case errc::unexpected_frame:
    case errc::bad_frame_type:
    case errc::bad_frame_ids:
    case errc::bad_kv_type:
    case errc::bad_action:
        return status::invalid;
    case errc::fragmented_frame:
        return status::fragmentation_not_supported;
    case errc::no_version:
        return status::no_version;
    case errc::bad_version:
        return status::bad_version;
    case errc::no_frame_size:
        return status::no_frame_size;
    case errc::bad_frame_size:
        return status::bad_frame_size;
    case errc::no_capabilities:
        return status::no_capabilities;
    case errc::no_buffer_space:
    case errc::input_overflow:
    case errc::nb_args_overflow:
        return status::resource_allocation;
    }
    return status::unknown;
}

/// A one-line, human-readable description of each error (for logs, not for the wire).
[[nodiscard]] constexpr std::string_view message(errc e) noexcept {
    switch (e) {
    case errc::ok:
        return "success";
    case errc::need_more:
        return "incomplete input, more bytes needed";
    case errc::stopped:
        return "stopped by handler";
    case errc::varint_overflow:
        return "varint longer than 10 bytes or above 2^64-1";
    case errc::truncated:
        return "field runs past the end of the frame";
    case errc::bad_data_type:
        return "reserved typed-data type (10..15)";
    case errc::frame_too_big:
        return "frame length above max-frame-size";
    case errc::frame_too_small:
        return "frame length below the 7-byte minimum";
    case errc::unexpected_frame:
        return "frame type not allowed in this state";
    case errc::bad_frame_type:
        return "unknown frame type with stream-id 0";
    case errc::bad_frame_ids:
        return "HELLO/DISCONNECT with non-zero stream-id or frame-id";
    case errc::fragmented_frame:
        return "FIN flag not set (fragmentation not supported)";
    case errc::bad_kv_type:
        return "known key with a value of the wrong type";
    case errc::no_version:
        return "supported-versions missing from HAPROXY-HELLO";
    case errc::bad_version:
        return "no supported version (only 2.0)";
    case errc::no_frame_size:
        return "max-frame-size missing from HAPROXY-HELLO";
    case errc::bad_frame_size:
        return "max-frame-size out of range";
    case errc::no_capabilities:
        return "capabilities missing from HAPROXY-HELLO";
    case errc::no_buffer_space:
        return "output buffer too small";
    case errc::exceeds_max_frame_size:
        return "frame would exceed max-frame-size";
    case errc::input_overflow:
        return "peer kept sending while not reading replies";
    case errc::nb_args_overflow:
        return "more than 255 arguments";
    case errc::peer_disconnect:
        return "peer sent HAPROXY-DISCONNECT";
    case errc::shutdown:
        return "agent shutting down";
    case errc::timeout:
        return "idle timeout";
    case errc::bad_action:
        return "unknown action type, wrong NB-ARGS or unknown variable scope";
    }
    return "unknown error";
}

/// What a parse or encode call returns: the outcome and how many bytes it consumed (read) or
/// produced (written). `consumed` is meaningful on errors too: it is the offset where the
/// problem was found, relative to the start of the input.
struct [[nodiscard]] result {
    errc ec = errc::ok;
    std::size_t consumed = 0;

    constexpr explicit operator bool() const noexcept { return ec == errc::ok; }
    friend constexpr bool operator==(const result&, const result&) = default;
};

/// What every handler callback returns.
enum class action : std::uint8_t { proceed, stop };

} // namespace spop
