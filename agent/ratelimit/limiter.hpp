// The Redis thread of the shared rate limits: takes the workers' check-rate requests
// (gateway.hpp), counts them in Redis with one script call each (script.hpp), pipelined, and
// completes their tickets from this thread.
//
// One thread per agent and one connection to Redis. Requests are written as soon as they
// arrive, without waiting for earlier replies: every turn of the loop writes everything the
// workers queued since the last turn in one write (a batch), so under load one round trip
// carries many requests. Replies come back in order and complete the oldest request.
//
// Deadlines: every request is answered within `budget_ms` of its push (main.cpp takes 3/4 of
// the engine's deferred deadline, so the engine's own fallback never has to fire):
//   - Redis down (refused, reset, protocol garbage): requests are answered at once with the
//     fail value (reason="down"); reconnects back off from 100 ms to 2 s;
//   - a request whose reply has not come within the budget (an overloaded Redis) gets the fail
//     value (reason="timeout"); its reply is dropped when it comes, the connection stays;
//   - no reply at all for a whole budget while requests wait (a stalled Redis, a dead path):
//     every request in flight gets the fail value, the connection is dropped and retried;
//   - a connection attempt blocks this thread: each of its steps (connect, AUTH, SELECT,
//     SCRIPT LOAD) is bounded by budget_ms / 4, so the attempt by one budget. Requests pushed
//     meanwhile are answered after it, those past their budget with the fail value.
// One log line per state change (event=rate_redis_up / event=rate_redis_down reason=...).
//
// Hostile replies: hiredis parses; the reader is limited to arrays of 16 elements (a
// "*2000000000" header cannot make it allocate gigabytes), a reply nobody asked for drops the
// connection, and a reply of the wrong shape answers that request with the fail value.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "../redis/url.hpp"
#include "gateway.hpp"

namespace agent::ratelimit {

class limiter {
  public:
    /// `g` (enabled) must outlive the limiter.
    limiter(gateway& g, redis::endpoint ep, std::uint32_t budget_ms);
    ~limiter();
    limiter(const limiter&) = delete;
    limiter& operator=(const limiter&) = delete;

    void start();
    /// Stops the thread: requests still queued or in flight get the fail value
    /// (reason="stopping"). Call once the workers no longer push.
    void stop();

  private:
    struct impl;
    std::unique_ptr<impl> p_;
    std::thread th_;
};

} // namespace agent::ratelimit
