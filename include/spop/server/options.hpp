// spop::server settings: where to listen, how many workers, which I/O backend, and the limits
// every connection gets. Defaults are what an HAProxy operator expects from an SPOA.
#pragma once

#include <charconv>
#include <cstdint>
#include <sched.h>
#include <string>
#include <string_view>
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
    /// Pin worker i to CPU cpus[i % cpus.size()] before it builds its service (parse_cpu_list()
    /// reads "0-3,8"). Threads a service starts in its factory inherit that CPU, so a hand-off
    /// between a worker and its own helper thread (a deferred answer) is a switch on one core
    /// rather than a wakeup of another, idle one. Empty (the default): the scheduler places
    /// the workers. Every CPU must be in the process's affinity mask (taskset, cgroup cpuset).
    std::vector<int> cpus;
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

/// A CPU list as taskset -c and cpusets write it ("0-3,8,10-11") into `out`, in its order:
/// decimal CPU numbers below CPU_SETSIZE and ascending ranges, each CPU at most once. false and
/// a one-line reason otherwise (`out` is then unspecified).
inline bool parse_cpu_list(std::string_view s, std::vector<int>& out, std::string& err) {
    out.clear();
    const auto number = [&](std::string_view t, int& n) {
        const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
        return !t.empty() && t.front() != '-' && t.front() != '+' && ec == std::errc{} &&
               end == t.data() + t.size() && n < CPU_SETSIZE;
    };
    if (s.empty()) return err = "empty CPU list", false;
    std::vector<bool> seen(CPU_SETSIZE);
    for (std::size_t pos = 0; pos <= s.size();) {
        std::size_t comma = s.find(',', pos);
        if (comma == std::string_view::npos) comma = s.size();
        const std::string_view item = s.substr(pos, comma - pos);
        const std::size_t dash = item.find('-');
        int lo = 0, hi = 0;
        if (dash == std::string_view::npos ? !number(item, lo)
                                           : !number(item.substr(0, dash), lo) ||
                                                 !number(item.substr(dash + 1), hi) || hi < lo) {
            err = "invalid CPU list entry \"" + std::string(item) + "\" (N or N-M, N <= M < " +
                  std::to_string(CPU_SETSIZE) + ")";
            return false;
        }
        if (dash == std::string_view::npos) hi = lo;
        for (int c = lo; c <= hi; ++c) {
            if (seen[static_cast<std::size_t>(c)])
                return err = "CPU " + std::to_string(c) + " listed twice", false;
            seen[static_cast<std::size_t>(c)] = true;
            out.push_back(c);
        }
        pos = comma + 1;
    }
    return true;
}

/// The list as parse_cpu_list() reads it, runs of consecutive CPUs as ranges: "0-3,8".
inline std::string cpu_list_text(const std::vector<int>& cpus) {
    std::string t;
    for (std::size_t i = 0; i < cpus.size();) {
        std::size_t j = i;
        while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
        t += (t.empty() ? "" : ",") + std::to_string(cpus[i]);
        if (j > i) t += (j == i + 1 ? "," : "-") + std::to_string(cpus[j]);
        i = j + 1;
    }
    return t;
}

} // namespace spop::server
