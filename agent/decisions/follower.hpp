// The live-decisions follower: one thread of its own (hiredis's blocking API, never on a worker)
// that loads every decision from Redis, then follows the change stream, and publishes the set
// as an overlay on the reputation tables (iprep::reputation_source::publish_overlay). Workers
// never wait on it: they read whichever overlay was published last.
//
// Protocol (layout in entry.hpp and docs/decisions.md):
//   sync    XINFO STREAM <stream> (its last-generated-id and entries-added), then
//           HSCAN <hash> in pages of ~1000 -> the whole set, which replaces the previous one.
//           Not atomic, and it need not be: every change after that position is replayed
//           from the stream next, in order, and changes are idempotent. HSCAN rather than
//           HGETALL: a million decisions do not block Redis for a second or make a reply of
//           hundreds of MiB.
//   follow  XINFO STREAM <stream>; XREAD COUNT 1000 BLOCK 500 STREAMS <stream> <last id>
//           (pipelined: Redis runs one client's pipelined commands back to back) -> the
//           changes after <last id>, applied in order, one overlay published per batch. The
//           follower counts the entries it reads; if XINFO shows that entries after <last id>
//           are gone (trimmed by XADD MAXLEN, or XDEL: entries-added, length and
//           max-deleted-entry-id), it syncs again instead of missing them. An op=resync entry
//           also makes it sync again.
//   failure Any error (connection, timeout, a reply of an unexpected shape) drops the
//           connection; the last published overlay keeps serving; reconnection backs off from
//           100 ms to 5 s; every (re)connection starts with a sync.
// One log line per state change: connected+synced, lost (with the reason), and while Redis
// stays unreachable nothing more (attempts are logged at debug level).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "decisions/entry.hpp"
#include "decisions/stats.hpp"
#include "iprep/reputation.hpp"
#include "redis/url.hpp"

namespace agent::decisions {

struct follower_config {
    redis::endpoint endpoint;
    std::string hash_key{default_hash_key};
    std::string stream_key{default_stream_key};
    std::size_t max_decisions = 1000000; ///< more are refused (counted, logged)
    unsigned block_ms = 500;             ///< XREAD BLOCK; also the stop latency
    unsigned batch = 1000;               ///< XREAD COUNT
};

class follower {
  public:
    follower(iprep::reputation_source& rep, follower_config cfg, follower_stats& st);
    ~follower();
    follower(const follower&) = delete;
    follower& operator=(const follower&) = delete;

    void start();
    /// Waits until the first sync is published or `timeout_ms` passes; true if synced.
    bool wait_first_sync(unsigned timeout_ms);
    void stop();

  private:
    enum class state : std::uint8_t { init, up, down };
    struct live {
        int score;
        std::int64_t expiry;
        std::uint32_t category; ///< the reason, interned (iprep::category_pool); 0 = none
        iprep::net_prefix prefix;
    };

    void run();
    bool sync(redisContext* c, std::string& why);
    /// Returns false on a connection-level failure (why set); true when a sync is needed.
    bool follow(redisContext* c, std::string& why);
    void apply(const event& e);
    void publish();
    void prune_expired();
    void sleep_ms(unsigned ms);
    void set_state(state s, const char* why);

    iprep::reputation_source& rep_;
    follower_config cfg_;
    follower_stats& st_;
    std::unordered_map<std::string, live> set_;
    std::string last_id_ = "0-0";
    long long position_ = 0;       ///< entries-added ordinal of last_id_
    std::int64_t next_expiry_ = 0; ///< earliest expiry in set_ (0 = none)
    state state_ = state::init;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::condition_variable cv_;
    bool synced_once_ = false;
};

} // namespace agent::decisions
