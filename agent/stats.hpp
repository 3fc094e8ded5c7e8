// The agent's per-worker counters: the engine's (spop::server::worker_stats) and the reputation
// service's (iprep::service_stats, whose render_metrics() adds its families to /metrics). Each
// worker is the only writer of its own block.
#pragma once

#include <spop/server/stats.hpp>

#include "iprep/stats.hpp"

namespace agent {

using spop::server::counter;
using spop::server::latency_bounds_us;
using spop::server::latency_slots;
using spop::server::status_slot;
using spop::server::status_slots;

struct alignas(64) worker_stats : spop::server::worker_stats, iprep::service_stats {};

static_assert(spop::server::prometheus::has_service_metrics<worker_stats>);

} // namespace agent
