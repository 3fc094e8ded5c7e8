#include "limiter.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <poll.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include <spop/server/log.hpp>

#include "script.hpp"

namespace agent::ratelimit {

namespace {

using spop::server::level;
using spop::server::log;

std::uint64_t mono_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

constexpr std::uint64_t ms = 1000000ull;

/// now - t, or 0 when t is later (a worker may push after the thread read the clock).
constexpr std::uint64_t age(std::uint64_t now, std::uint64_t t) noexcept {
    return now > t ? now - t : 0;
}
constexpr std::uint64_t backoff_min_ns = 100 * ms;
constexpr std::uint64_t backoff_max_ns = 2000 * ms;
constexpr std::size_t max_reply_elements = 16;
constexpr std::size_t drain_per_ring = 1024; ///< per worker and turn: a bounded batch

// The reader's array constructor, refusing large arrays (hiredis then reports out of memory,
// which drops the connection). The defaults come from the first reader seen.
void* (*g_default_array)(const redisReadTask*, int) = nullptr;
void* limited_array(const redisReadTask* task, int elements) {
    if (elements < 0 || static_cast<std::size_t>(elements) > max_reply_elements) return nullptr;
    return g_default_array(task, elements);
}
const redisReplyObjectFunctions* limited_functions(const redisReplyObjectFunctions* defaults) {
    static const redisReplyObjectFunctions fns = [defaults] {
        redisReplyObjectFunctions f = *defaults;
        g_default_array = f.createArray;
        f.createArray = &limited_array;
        return f;
    }();
    return &fns;
}

/// AUTH / SELECT (blocking, within the context's timeout): true on a status reply.
bool simple_command(redisContext* c, std::string& err, const char* cmd, const std::string& arg) {
    const char* argv[2] = {cmd, arg.data()};
    const std::size_t len[2] = {std::strlen(cmd), arg.size()};
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, 2, argv, len));
    const bool ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        err = std::string(cmd) + ": " +
              (r == nullptr                   ? std::string(c->errstr)
               : r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len)
                                              : std::string("unexpected reply"));
    if (r != nullptr) freeReplyObject(r);
    return ok;
}

} // namespace

struct limiter::impl {
    gateway& g;
    thread_counters& tc;
    redis::endpoint ep;
    std::string where;
    std::uint64_t budget_ns;
    std::atomic<bool> stop{false};

    redis::context_ptr ctx;
    char sha[41] = {};
    enum class state { unknown, up, down } st = state::unknown;
    std::uint64_t next_attempt_ns = 0;
    std::uint64_t backoff_ns = backoff_min_ns;

    /// Requests sent, waiting for their reply, oldest first (a ring; never more than there are
    /// tickets, so it never fills).
    struct entry {
        request r;
        bool retried = false; ///< sent again as EVAL after NOSCRIPT
    };
    std::unique_ptr<entry[]> fl;
    std::size_t fl_mask = 0, fl_head = 0, fl_tail = 0;
    /// Entries before this one were checked against their deadline (answered with the fail
    /// value when past it; their reply, when it comes, is dropped).
    std::size_t fl_expire = 0;
    /// Since when the oldest outstanding reply is awaited: the connection sent into an empty
    /// queue then, or received a reply then. A budget without any reply: Redis stalls.
    std::uint64_t waiting_since_ns = 0;
    bool out_pending = false; ///< hiredis holds bytes not written yet

    std::unique_ptr<char[]> keybuf{new char[redis_key_room(max_key_bytes)]};

    impl(gateway& gw, redis::endpoint e, std::uint32_t budget_ms)
        : g(gw), tc(gw.redis_counters()), ep(std::move(e)), where(ep.describe()),
          budget_ns(std::uint64_t{budget_ms} * ms) {
        // The workers' rings bound the requests that can be in flight at once.
        std::size_t n = 1;
        const std::size_t want = in_flight_bound();
        while (n < want) n <<= 1;
        fl.reset(new entry[n]);
        fl_mask = n - 1;
    }

    [[nodiscard]] std::size_t in_flight_bound() const noexcept {
        std::size_t sum = 0;
        for (const auto& p : g.ports())
            if (p.r) sum += p.r->capacity();
        return sum == 0 ? 1 : sum;
    }
    [[nodiscard]] std::size_t fl_size() const noexcept { return fl_tail - fl_head; }

    // Answers -----------------------------------------------------------------------------------
    void fail(request& r, fail_reason why, std::uint64_t now) noexcept {
        tc.fails[static_cast<int>(why)].add();
        const config& c = g.cfg();
        r.t.complete([&c](spop::ack_writer& a) { write_fail(a, c); });
        tc.observe_ns(age(now, r.enqueued_ns));
    }
    void answer(request& r, const count_reply& cr, std::uint64_t now) noexcept {
        tc.answered.add();
        if (cr.over) tc.over.add();
        const answer_vars& v = g.cfg().vars;
        r.t.complete([&](spop::ack_writer& a) { write_count(a, v, cr.rate, cr.over); });
        tc.observe_ns(age(now, r.enqueued_ns));
    }

    /// Every request in flight still waiting gets the fail value; the queue is emptied.
    void fail_in_flight(fail_reason why, std::uint64_t now) noexcept {
        while (fl_head != fl_tail) {
            request& r = fl[fl_head++ & fl_mask].r;
            if (r.t) fail(r, why, now);
        }
        fl_expire = fl_head;
        tc.inflight.sub(tc.inflight.get());
    }

    /// Requests past their budget get the fail value now; the connection stays (a slow Redis
    /// is not a dead one) and their replies are dropped when they come. Returns the next
    /// deadline, 0 if none. (An entry resent after NOSCRIPT keeps its first push time behind
    /// younger ones: its deadline is seen when the scan reaches it.)
    std::uint64_t expire(std::uint64_t now) noexcept {
        if (fl_expire - fl_head > fl_tail - fl_head) fl_expire = fl_head;
        while (fl_expire != fl_tail) {
            request& r = fl[fl_expire & fl_mask].r;
            if (r.t) {
                if (age(now, r.enqueued_ns) < budget_ns) return r.enqueued_ns + budget_ns;
                fail(r, fail_reason::timeout, now);
            }
            ++fl_expire;
        }
        return 0;
    }

    // Connection --------------------------------------------------------------------------------
    void set_down(const char* reason, std::uint64_t now) {
        if (ctx) {
            ctx.reset();
            tc.disconnects.add();
        }
        out_pending = false;
        tc.up.sub(tc.up.get());
        fail_in_flight(fail_reason::down, now);
        if (st != state::down)
            log(level::warn,
                "event=rate_redis_down redis=%s reason=\"%s\" retry_in_ms=%llu fail=%s",
                where.c_str(), reason, static_cast<unsigned long long>(backoff_ns / ms),
                g.cfg().fail == fail_policy::open ? "open" : "closed");
        st = state::down;
        next_attempt_ns = now + backoff_ns;
        backoff_ns = backoff_ns * 2 > backoff_max_ns ? backoff_max_ns : backoff_ns * 2;
    }

    void try_connect(std::uint64_t now) {
        // Each step (connect, AUTH, SELECT, SCRIPT LOAD) gets a quarter of the budget, so that
        // the whole attempt, during which nothing is answered, stays within one budget.
        const std::uint64_t step = budget_ns / 4;
        timeval tv{static_cast<time_t>(step / 1000000000ull),
                   static_cast<suseconds_t>((step % 1000000000ull) / 1000)};
        std::string err;
        // Connect only, then limit the reader before the first reply is read (AUTH included).
        redis::endpoint bare = ep;
        bare.password.clear();
        bare.db = 0;
        redis::context_ptr c = redis::connect(bare, tv, err);
        if (c) {
            c->reader->fn =
                const_cast<redisReplyObjectFunctions*>(limited_functions(c->reader->fn));
            if ((!ep.password.empty() && !simple_command(c.get(), err, "AUTH", ep.password)) ||
                (ep.db != 0 && !simple_command(c.get(), err, "SELECT", std::to_string(ep.db))))
                c.reset();
        }
        if (c) {
            auto* r = static_cast<redisReply*>(
                redisCommand(c.get(), "SCRIPT LOAD %b", count_script.data(), count_script.size()));
            if (!parse_sha(r, sha)) {
                err = r == nullptr                   ? std::string("SCRIPT LOAD: ") + c->errstr
                      : r->type == REDIS_REPLY_ERROR ? "SCRIPT LOAD: " + std::string(r->str, r->len)
                                                     : "SCRIPT LOAD: unexpected reply";
                c.reset();
            }
            if (r != nullptr) freeReplyObject(r);
        }
        if (c) {
            const int fl_flags = fcntl(c->fd, F_GETFL);
            if (fl_flags < 0 || fcntl(c->fd, F_SETFL, fl_flags | O_NONBLOCK) < 0) {
                err = std::string("fcntl: ") + std::strerror(errno);
                c.reset();
            }
        }
        if (!c) {
            tc.connect_failures.add();
            for (char& ch : err)
                if (ch == '"' || ch == '\n' || ch == '\r') ch = ' ';
            set_down(err.c_str(), now);
            return;
        }
        c->flags &= ~REDIS_BLOCK;
        ctx = std::move(c);
        tc.connects.add();
        tc.up.add();
        backoff_ns = backoff_min_ns;
        log(level::info, "event=rate_redis_up redis=%s", where.c_str());
        st = state::up;
    }

    // Requests ----------------------------------------------------------------------------------
    void send(entry& e) {
        const request& r = e.r;
        char lim[12], win[12];
        const int nl = std::snprintf(lim, sizeof lim, "%u", r.limit);
        const int nw = std::snprintf(win, sizeof win, "%u", r.window_ms);
        const std::size_t nk = redis_key(keybuf.get(), {r.key, r.key_len}, r.window_ms);
        const char* argv[6];
        std::size_t len[6];
        if (!e.retried) {
            argv[0] = "EVALSHA";
            len[0] = 7;
            argv[1] = sha;
            len[1] = 40;
        } else {
            argv[0] = "EVAL";
            len[0] = 4;
            argv[1] = count_script.data();
            len[1] = count_script.size();
        }
        argv[2] = "1";
        len[2] = 1;
        argv[3] = keybuf.get();
        len[3] = nk;
        argv[4] = lim;
        len[4] = static_cast<std::size_t>(nl);
        argv[5] = win;
        len[5] = static_cast<std::size_t>(nw);
        redisAppendCommandArgv(ctx.get(), 6, argv, len);
        out_pending = true;
        tc.commands.add();
    }

    /// Takes what the workers queued: sent when connected, answered at once otherwise.
    std::size_t take_new(std::uint64_t now) {
        std::size_t total = 0;
        for (auto& p : g.ports_mut()) {
            total += p.r->drain(
                [&](request& r) {
                    if (!ctx) return fail(r, fail_reason::down, now);
                    // Full only of answered requests whose replies are late: as good as stalled.
                    if (age(now, r.enqueued_ns) >= budget_ns || fl_size() > fl_mask)
                        return fail(r, fail_reason::timeout, now);
                    if (fl_head == fl_tail) waiting_since_ns = now;
                    entry& e = fl[fl_tail++ & fl_mask];
                    e.r.t = std::move(r.t);
                    e.r.enqueued_ns = r.enqueued_ns;
                    e.r.limit = r.limit;
                    e.r.window_ms = r.window_ms;
                    e.r.key_len = r.key_len;
                    std::memcpy(e.r.key, r.key, r.key_len);
                    e.retried = false;
                    send(e);
                },
                drain_per_ring);
        }
        return total;
    }

    /// Writes what hiredis holds; false on an error (the connection is dropped).
    bool flush(std::uint64_t now) {
        if (!ctx || !out_pending) return true;
        int done = 0;
        if (redisBufferWrite(ctx.get(), &done) != REDIS_OK) {
            set_down(ctx->errstr[0] != '\0' ? ctx->errstr : "write error", now);
            return false;
        }
        out_pending = done == 0;
        return true;
    }

    /// Reads what arrived and completes the oldest requests.
    void read_replies(std::uint64_t now) {
        if (redisBufferRead(ctx.get()) != REDIS_OK) {
            char why[160];
            std::snprintf(why, sizeof why, "%s",
                          ctx->errstr[0] != '\0' ? ctx->errstr : "read error");
            return set_down(why, now);
        }
        while (ctx) {
            void* raw = nullptr;
            if (redisGetReplyFromReader(ctx.get(), &raw) != REDIS_OK) {
                char why[160];
                std::snprintf(why, sizeof why, "protocol error: %s", ctx->errstr);
                return set_down(why, now);
            }
            if (raw == nullptr) return;
            redisReply* rep = static_cast<redisReply*>(raw);
            if (fl_head == fl_tail) {
                freeReplyObject(rep);
                return set_down("a reply nobody asked for", now);
            }
            const count_reply cr = parse_reply(rep);
            freeReplyObject(rep);
            entry& e = fl[fl_head++ & fl_mask];
            tc.inflight.sub();
            waiting_since_ns = now;
            if (!e.r.t) {
                tc.late_replies.add(); // answered already (its budget ran out)
                continue;
            }
            switch (cr.kind) {
            case reply_kind::count:
                answer(e.r, cr, now);
                break;
            case reply_kind::noscript:
                if (!e.retried) {
                    // Sent again with the script itself (which also caches it in Redis); the
                    // entry moves to the back of the queue, as its reply will.
                    tc.noscript.add();
                    entry& again = fl[fl_tail++ & fl_mask];
                    if (&again != &e) {
                        again.r.t = std::move(e.r.t);
                        again.r.enqueued_ns = e.r.enqueued_ns;
                        again.r.limit = e.r.limit;
                        again.r.window_ms = e.r.window_ms;
                        again.r.key_len = e.r.key_len;
                        std::memcpy(again.r.key, e.r.key, e.r.key_len);
                    }
                    again.retried = true;
                    send(again);
                    tc.inflight.add();
                    break;
                }
                [[fallthrough]];
            case reply_kind::error:
                tc.bad_replies.add();
                fail(e.r, fail_reason::error, now);
                break;
            }
        }
    }

    void run() {
        while (!stop.load(std::memory_order_acquire)) {
            std::uint64_t now = mono_ns();
            if (!ctx && now >= next_attempt_ns) {
                try_connect(now);
                now = mono_ns();
            }
            const std::size_t before = tc.commands.get();
            take_new(now);
            const std::size_t sent = tc.commands.get() - before;
            if (sent != 0) {
                tc.batches.add();
                tc.inflight.add(sent);
                if (sent > tc.max_batch.get()) tc.max_batch.add(sent - tc.max_batch.get());
            }
            flush(now);
            // No reply at all for a whole budget: Redis stalls (or the path to it is gone).
            if (ctx && fl_head != fl_tail && age(now, waiting_since_ns) >= budget_ns) {
                const std::size_t n = fl_size();
                fail_in_flight(fail_reason::timeout, now);
                char why[96];
                std::snprintf(why, sizeof why, "no reply within %llu ms (%zu requests in flight)",
                              static_cast<unsigned long long>(budget_ns / ms), n);
                set_down(why, now);
            }
            const std::uint64_t due = expire(now);
            // Sleep until something happens: a request, a reply, a deadline, a reconnect.
            std::uint64_t wait_ns = 100 * ms;
            if (ctx && fl_head != fl_tail) {
                std::uint64_t next = waiting_since_ns + budget_ns;
                if (due != 0 && due < next) next = due;
                wait_ns = next > now ? next - now : 0;
            } else if (!ctx) {
                wait_ns = next_attempt_ns > now ? next_attempt_ns - now : 0;
            }
            if (wait_ns > 100 * ms) wait_ns = 100 * ms;
            const bool may_sleep = g.prepare_sleep();
            pollfd fds[2] = {{g.event_fd(), POLLIN, 0}, {-1, 0, 0}};
            nfds_t n = 1;
            if (ctx) {
                fds[1] = {ctx->fd, static_cast<short>(POLLIN | (out_pending ? POLLOUT : 0)), 0};
                n = 2;
            }
            const int timeout = may_sleep ? static_cast<int>((wait_ns + ms - 1) / ms) : 0;
            const int rc = ::poll(fds, n, timeout);
            g.woke();
            if (rc <= 0 || n < 2 || !ctx) continue;
            now = mono_ns();
            if (fds[1].revents & POLLOUT) flush(now);
            if (ctx && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) read_replies(now);
        }
        const std::uint64_t now = mono_ns();
        fail_in_flight(fail_reason::stopping, now);
        for (auto& p : g.ports_mut())
            p.r->drain([&](request& r) { fail(r, fail_reason::stopping, now); }, ~std::size_t{0});
        ctx.reset();
        tc.up.sub(tc.up.get());
    }
};

limiter::limiter(gateway& g, redis::endpoint ep, std::uint32_t budget_ms)
    : p_(std::make_unique<impl>(g, std::move(ep), budget_ms)) {}

limiter::~limiter() {
    stop();
}

void limiter::start() {
    th_ = std::thread([this] { p_->run(); });
}

void limiter::stop() {
    if (!th_.joinable()) return;
    p_->stop.store(true, std::memory_order_release);
    p_->g.wake();
    th_.join();
}

} // namespace agent::ratelimit
