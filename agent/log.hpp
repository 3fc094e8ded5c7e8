// The agent logs through the server library's logger (one key=value line per event).
#pragma once

#include <spop/server/log.hpp>

namespace agent {
using spop::server::g_log_level;
using spop::server::level;
using spop::server::log;
using spop::server::log_enabled;
using spop::server::rate_limiter;
} // namespace agent
