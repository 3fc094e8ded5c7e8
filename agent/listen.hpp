// Listening sockets. TCP listeners are opened once per worker with SO_REUSEPORT, so the
// kernel spreads new connections over the workers and no accept is shared; a Unix socket is
// opened once and shared.
#pragma once

#include <string>
#include <sys/socket.h>
#include <vector>

#include "options.hpp"

namespace agent {

struct listen_spec {
    sockaddr_storage addr{};
    socklen_t len = 0;
    std::string desc; ///< "127.0.0.1:12345", "[::]:12345", "unix:/run/agent.sock"
    bool v6only = false;
    bool is_unix = false;
};

/// Turns --address/--port/--unix into socket addresses. false + `err` on a bad address.
bool resolve_listen_specs(const options& o, std::vector<listen_spec>& out, std::string& err);

/// Fails with "address already in use" even when the other listener uses SO_REUSEPORT (which
/// would otherwise let two agents silently share a port).
bool check_port_free(const listen_spec& s, std::string& err);

/// Opens, binds and listens. Returns the fd, or -1 and `err`.
int open_listener(const listen_spec& s, int backlog, bool reuseport, std::string& err);

} // namespace agent
