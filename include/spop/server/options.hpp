// spop::server settings: where to listen, how many workers, which I/O backend, and the limits
// every connection gets. Defaults are what an HAProxy operator expects from an SPOA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spop::server {

enum class backend {
    automatic, ///< io_uring when this kernel and process allow it, else epoll (with a warning)
    uring,     ///< io_uring or a start error
    epoll,
};

struct options {
    int port = 12345;
    std::vector<std::string> addresses; ///< IPv4/IPv6 literals; empty (and no unix_path) = 0.0.0.0
    std::string unix_path;              ///< also listen on this Unix socket
    /// The socket file's permission bits (e.g. 0660), set after bind; -1 = as the umask leaves
    /// them. Connecting needs write permission, so an HAProxy running as another user needs
    /// the group's or others' write bit.
    int unix_mode = -1;
    int unix_gid = -1; ///< the socket file's group (chown), -1 = unchanged
    int workers = 1;   ///< threads, one event loop each
    backend engine = backend::automatic;
    int backlog = 4096; ///< HAProxy opens tens of connections at once after a start or reload
    std::uint32_t max_frame_size = 16380; ///< ours; the negotiated one is min(ours, HAProxy's)
    bool pipelining = true;
    std::uint32_t max_connections = 100000; ///< a total over every worker
    std::uint32_t max_in_flight = 1000;     ///< ACKs unsent per connection before back-pressure
    /// Close an established connection (AGENT-DISCONNECT 2) after this long with nothing read
    /// or sent and nothing owed: no output queued, no deferred answer open, no input held back.
    /// 0 = never (HAProxy pools its agent connections and closes them itself).
    std::uint32_t idle_timeout_s = 0;
    std::uint32_t hello_timeout_s = 10;
    std::uint32_t shutdown_timeout_s = 10;
    std::uint32_t drain_idle_s = 1; ///< on stop, serve a connection until idle this long
    // Deferred answers (ticket.hpp): a per-worker pool, allocated at start.
    std::uint32_t max_deferred = 4096;       ///< open tickets per worker; past it, back-pressure
    std::uint32_t deferred_timeout_ms = 400; ///< then the fallback (below HAProxy's usual
                                             ///< `timeout processing` of 500 ms - 1 s)
    /// A deferred ACK's room, whole frame (actions past it drop): 64 .. 4 + 16 MiB.
    std::uint32_t deferred_ack_bytes = 1024;
    /// io_uring only: once a completion is ready, wait up to this many microseconds for more
    /// (one per connection) before serving them, so that one wakeup serves several frames.
    /// Costs at most that much latency per request. 0 = serve each wakeup at once. Needs
    /// kernel 6.12+ (IORING_FEAT_MIN_TIMEOUT); older kernels ignore it with a warning.
    std::uint32_t batch_window_us = 0;
};

} // namespace spop::server
