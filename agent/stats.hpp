// The agent's per-worker counters: the engine's (spop::server::worker_stats) plus the reputation
// service's. Each worker is the only writer of its own block.
#pragma once

#include <spop/server/stats.hpp>

namespace agent {

using spop::server::counter;
using spop::server::latency_bounds_us;
using spop::server::latency_slots;
using spop::server::status_slot;
using spop::server::status_slots;

struct alignas(64) worker_stats : spop::server::worker_stats {
    counter lookups_listed;
    counter lookups_allowed;
    counter lookups_default;
    counter ack_actions_dropped; // SET-VAR actions left out of an ACK that could not hold them
};

} // namespace agent
