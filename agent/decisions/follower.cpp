#include "decisions/follower.hpp"

#include <charconv>
#include <chrono>
#include <utility>
#include <vector>

#include "iprep/value.hpp"
#include <spop/server/engine.hpp>

#include "log.hpp"

namespace agent::decisions {

namespace {

using redis::get_reply;
using redis::reply_ptr;

std::string_view str(const redisReply* r) noexcept {
    return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                            r->type == REDIS_REPLY_ERROR)
               ? std::string_view(r->str, r->len)
               : std::string_view{};
}
bool is_string(const redisReply* r) noexcept {
    return r != nullptr && r->type == REDIS_REPLY_STRING;
}
bool is_array(const redisReply* r) noexcept {
    return r != nullptr && r->type == REDIS_REPLY_ARRAY;
}

struct stream_id {
    std::uint64_t ms = 0, seq = 0;
    friend bool operator<(const stream_id& a, const stream_id& b) noexcept {
        return a.ms != b.ms ? a.ms < b.ms : a.seq < b.seq;
    }
};

bool parse_id(std::string_view s, stream_id& id) noexcept {
    const std::size_t dash = s.find('-');
    if (dash == std::string_view::npos || s.size() > 41) return false;
    auto [p1, e1] = std::from_chars(s.data(), s.data() + dash, id.ms);
    auto [p2, e2] = std::from_chars(s.data() + dash + 1, s.data() + s.size(), id.seq);
    return e1 == std::errc{} && e2 == std::errc{} && p1 == s.data() + dash &&
           p2 == s.data() + s.size() && dash > 0 && dash + 1 < s.size();
}

/// "why" for a failed command: the context's error or the reply's.
std::string failure(redisContext* c, const redisReply* r, const char* what) {
    if (r == nullptr) return std::string(what) + ": " + (c->err != 0 ? c->errstr : "no reply");
    if (r->type == REDIS_REPLY_ERROR)
        return std::string(what) + ": " + printable(std::string_view(r->str, r->len));
    return std::string(what) + ": unexpected reply type " + std::to_string(r->type);
}

/// hiredis 0.14 allocates an array reply's element table from the announced count before any
/// element arrives, and frees it by walking every slot: "*2147483647" from a broken or hostile
/// server costs 16 GiB of address space and minutes of CPU. This reader refuses counts above
/// max_array_elements (hiredis then reports an out-of-memory error and the connection drops).
/// Set once, before any follower runs.
std::size_t g_max_array_elements = 0;
const redisReplyObjectFunctions* g_default_fns = nullptr;
redisReplyObjectFunctions g_limited_fns;

void* limited_create_array(const redisReadTask* t, int elements) {
    if (elements < 0 || static_cast<std::size_t>(elements) > g_max_array_elements) return nullptr;
    return g_default_fns->createArray(t, elements);
}

void limit_reader(redisContext* c, std::size_t max_elements) {
    if (g_default_fns == nullptr) {
        g_default_fns = c->reader->fn;
        g_limited_fns = *g_default_fns;
        g_limited_fns.createArray = limited_create_array;
        g_max_array_elements = max_elements;
    }
    c->reader->fn = &g_limited_fns;
}

/// Reasons become the category variable. The pool is bounded (iprep::max_categories distinct
/// strings for the process's life): past that, decisions still apply, without a category.
std::uint32_t intern(const std::string& reason) {
    return reason.empty() ? 0u : iprep::category_pool::instance().intern(reason);
}

/// What the follower needs from XINFO STREAM (Redis 7.0+ fields).
struct stream_info {
    bool exists = false;
    stream_id last_generated;
    std::string last_generated_text = "0-0";
    stream_id max_deleted;
    long long entries_added = -1; ///< -1: not reported (Redis < 7.0)
    long long length = 0;
};

/// A missing key ("no such key") is a valid, empty stream; anything else not an array fails.
bool parse_stream_info(const redisReply* r, stream_info& out, std::string& why) {
    out = stream_info{};
    if (r != nullptr && r->type == REDIS_REPLY_ERROR &&
        str(r).find("no such key") != std::string_view::npos)
        return true;
    if (!is_array(r) || r->elements % 2 != 0) {
        why = r != nullptr && r->type == REDIS_REPLY_ERROR
                  ? "XINFO STREAM: " + printable(str(r))
                  : "XINFO STREAM: reply of an unexpected shape";
        return false;
    }
    bool have_last = false;
    for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
        const std::string_view k = str(r->element[i]);
        const redisReply* v = r->element[i + 1];
        if (k == "last-generated-id") {
            have_last = is_string(v) && parse_id(str(v), out.last_generated);
            if (have_last) out.last_generated_text.assign(str(v));
        } else if (k == "max-deleted-entry-id") {
            if (!is_string(v) || !parse_id(str(v), out.max_deleted)) have_last = false;
        } else if (k == "entries-added" && v->type == REDIS_REPLY_INTEGER) {
            out.entries_added = v->integer;
        } else if (k == "length" && v->type == REDIS_REPLY_INTEGER) {
            out.length = v->integer;
        }
    }
    if (!have_last) {
        why = "XINFO STREAM: no valid last-generated-id";
        return false;
    }
    out.exists = true;
    return true;
}

} // namespace

follower::follower(iprep::reputation_source& rep, follower_config cfg, follower_stats& st)
    : rep_(rep), cfg_(std::move(cfg)), st_(st) {
    st_.configured.store(true);
}

follower::~follower() {
    stop();
}

void follower::start() {
    thread_ = std::thread([this] { run(); });
}

bool follower::wait_first_sync(unsigned timeout_ms) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [this] { return synced_once_; });
}

void follower::stop() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_.store(true);
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void follower::sleep_ms(unsigned ms) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, std::chrono::milliseconds(ms), [this] { return stop_.load(); });
}

void follower::set_state(state s, const char* why) {
    const state old = state_;
    state_ = s;
    st_.connected.store(s == state::up, std::memory_order_relaxed);
    if (s == state::down) {
        st_.disconnects.fetch_add(1, std::memory_order_relaxed);
        if (old == state::up)
            log(level::warn,
                "event=decisions_lost redis=%s reason=\"%s\" serving=%zu action=reconnecting",
                cfg_.endpoint.describe().c_str(), why, set_.size());
        else if (old == state::init)
            log(level::warn,
                "event=decisions_unreachable redis=%s reason=\"%s\" serving=%zu "
                "action=retrying",
                cfg_.endpoint.describe().c_str(), why, set_.size());
        else
            log(level::debug, "event=decisions_retry_failed reason=\"%s\"", why);
    }
}

void follower::run() {
    unsigned backoff = 100;
    const timeval tv{2, 0}; // connect and reply timeout; above block_ms
    while (!stop_.load()) {
        std::string why;
        redis::context_ptr c = redis::connect(cfg_.endpoint, tv, why);
        if (!c) {
            set_state(state::down, why.c_str());
            sleep_ms(backoff);
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        // Replies are pages (HSCAN, XREAD COUNT 1000): far below this, which only stops a
        // broken server from announcing billions of elements.
        limit_reader(c.get(), 4 * cfg_.max_decisions + 1024);
        bool ok = sync(c.get(), why);
        while (ok && !stop_.load()) {
            if (state_ != state::up) {
                set_state(state::up, "");
                log(level::info, "event=decisions_synced redis=%s decisions=%zu last_id=%s",
                    cfg_.endpoint.describe().c_str(), set_.size(), last_id_.c_str());
            }
            backoff = 100;
            if (follow(c.get(), why))
                ok = sync(c.get(), why); // a sync was asked for
            else
                ok = why.empty();
        }
        if (stop_.load()) break;
        set_state(state::down, why.c_str());
        sleep_ms(backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

bool follower::sync(redisContext* c, std::string& why) {
    const std::string& s = cfg_.stream_key;
    const std::string& h = cfg_.hash_key;
    // The stream's position first, then the hash in pages (HSCAN: no multi-second HGETALL
    // blocking Redis, no reply of hundreds of MiB). Not atomic, and it need not be: every
    // change after that position is replayed from the stream afterwards, in order, and a
    // change is idempotent, so a field the scan saw already changed ends up the same.
    reply_ptr r(static_cast<redisReply*>(redisCommand(c, "XINFO STREAM %b", s.data(), s.size())));
    if (!r) {
        why = failure(c, nullptr, "XINFO STREAM");
        return false;
    }
    stream_info info;
    if (!parse_stream_info(r.get(), info, why)) {
        why += " (is the key a stream?)";
        return false;
    }
    std::unordered_map<std::string, live> next;
    const std::int64_t now = iprep::coarse_unix_now();
    std::uint64_t malformed = 0, refused = 0;
    std::string cursor = "0";
    // Bounds for a server that never ends the scan: elements and calls.
    const std::size_t max_elements = 4 * cfg_.max_decisions + 1024;
    std::size_t elements = 0, calls = 0;
    do {
        r.reset(static_cast<redisReply*>(redisCommand(c, "HSCAN %b %b COUNT 1000", h.data(),
                                                      h.size(), cursor.data(), cursor.size())));
        if (!is_array(r.get()) || r->elements != 2 || !is_string(r->element[0]) ||
            r->element[0]->len == 0 || r->element[0]->len > 20 || !is_array(r->element[1]) ||
            r->element[1]->elements % 2 != 0) {
            why = is_array(r.get()) ? "HSCAN: reply of an unexpected shape"
                                    : failure(c, r.get(), "HSCAN (is the key a hash?)");
            return false;
        }
        cursor.assign(str(r->element[0]));
        const redisReply* page = r->element[1];
        elements += page->elements;
        if (elements > max_elements || ++calls > max_elements / 10 + 1000) {
            why = "HSCAN: more than " + std::to_string(max_elements) + " elements or calls";
            return false;
        }
        for (std::size_t i = 0; i + 1 < page->elements; i += 2) {
            const redisReply* k = page->element[i];
            const redisReply* v = page->element[i + 1];
            std::string err;
            decision d;
            if (!is_string(k) || !is_string(v)) {
                err = "non-string field";
            } else if (parse_stored_prefix(str(k), d.prefix, err) && parse_value(str(v), d, err)) {
                std::string key(str(k));
                if (d.expiry != 0 && d.expiry <= now) { // expired: nothing to serve
                    next.erase(key);
                    continue;
                }
                auto it = next.find(key);
                if (it == next.end() && next.size() >= cfg_.max_decisions) {
                    ++refused;
                    continue;
                }
                next.insert_or_assign(std::move(key),
                                      live{d.score, d.expiry, intern(d.reason), d.prefix});
                continue;
            }
            ++malformed;
            log(level::warn,
                "event=decision_malformed source=hash key=%s field=\"%s\" reason=\"%s\"", h.c_str(),
                printable(str(k)).c_str(), err.c_str());
        }
    } while (cursor != "0" && !stop_.load());
    if (stop_.load()) {
        why = "stopping";
        return false;
    }
    const std::string id = info.last_generated_text;
    if (refused != 0)
        log(level::warn, "event=decisions_refused source=hash count=%llu max=%zu",
            static_cast<unsigned long long>(refused), cfg_.max_decisions);
    st_.malformed.fetch_add(malformed, std::memory_order_relaxed);
    st_.refused.fetch_add(refused, std::memory_order_relaxed);
    set_.swap(next);
    last_id_ = id;
    position_ = info.entries_added < 0 ? 0 : info.entries_added;
    st_.syncs.fetch_add(1, std::memory_order_relaxed);
    st_.last_contact_ms.store(wall_ms(), std::memory_order_relaxed);
    publish();
    {
        std::lock_guard<std::mutex> lk(mu_);
        synced_once_ = true;
    }
    cv_.notify_all();
    return true;
}

bool follower::follow(redisContext* c, std::string& why) {
    why.clear();
    const std::string& s = cfg_.stream_key;
    redisAppendCommand(c, "XINFO STREAM %b", s.data(), s.size());
    redisAppendCommand(c, "XREAD COUNT %u BLOCK %u STREAMS %b %b", cfg_.batch, cfg_.block_ms,
                       s.data(), s.size(), last_id_.data(), last_id_.size());
    reply_ptr info = get_reply(c);
    if (!info) {
        why = failure(c, nullptr, "XINFO STREAM");
        return false;
    }
    reply_ptr rd = get_reply(c);
    if (!rd) {
        why = failure(c, nullptr, "XREAD");
        return false;
    }
    st_.last_contact_ms.store(wall_ms(), std::memory_order_relaxed);
    // A gap: entries after the one this agent read last were deleted (XDEL) or trimmed
    // (XADD MAXLEN) before it could read them. position_ is the ordinal (entries-added) of
    // last_id_; the first entry still present has ordinal entries-added - length + 1 (or
    // less, with XDEL holes: then only a needless resync). A stream recreated since (fewer
    // entries ever added than this agent read) also resyncs.
    stream_id pos;
    (void)parse_id(last_id_, pos);
    stream_info si;
    if (!parse_stream_info(info.get(), si, why)) return false;
    if (si.exists && si.entries_added >= 0) {
        const long long first = si.entries_added - si.length + 1;
        const char* gap = pos < si.max_deleted           ? "deleted"
                          : first > position_ + 1        ? "trimmed"
                          : si.entries_added < position_ ? "recreated"
                                                         : nullptr;
        if (gap != nullptr) {
            log(level::warn,
                "event=decisions_gap cause=%s last_id=%s entries_added=%lld length=%lld "
                "action=resync",
                gap, last_id_.c_str(), si.entries_added, si.length);
            return true;
        }
    }
    if (rd->type == REDIS_REPLY_NIL) { // BLOCK timed out: nothing new
        prune_expired();
        return false;
    }
    // [[stream, [[id, [f, v, ...]], ...]]]
    if (!is_array(rd.get()) || rd->elements != 1 || !is_array(rd->element[0]) ||
        rd->element[0]->elements != 2 || !is_array(rd->element[0]->element[1])) {
        why = failure(c, rd.get(), "XREAD");
        if (is_array(rd.get())) why = "XREAD: reply of an unexpected shape";
        return false;
    }
    const redisReply* entries = rd->element[0]->element[1];
    bool resync = false;
    std::size_t applied = 0;
    std::vector<std::pair<std::string_view, std::string_view>> fields;
    for (std::size_t i = 0; i < entries->elements; ++i) {
        const redisReply* e = entries->element[i];
        stream_id sid;
        if (!is_array(e) || e->elements != 2 || !is_string(e->element[0]) ||
            !parse_id(str(e->element[0]), sid) || !(pos < sid)) {
            // Without a valid, increasing id the position cannot move on safely.
            why = "XREAD: entry without a valid increasing id";
            return false;
        }
        last_id_.assign(str(e->element[0]));
        pos = sid;
        ++position_;
        const redisReply* f = e->element[1];
        std::string err;
        event ev;
        bool ok = is_array(f) && f->elements % 2 == 0;
        if (!ok) err = "fields are not name/value pairs";
        if (ok) {
            fields.clear();
            for (std::size_t j = 0; ok && j + 1 < f->elements; j += 2) {
                if (!is_string(f->element[j]) || !is_string(f->element[j + 1])) {
                    ok = false;
                    err = "non-string field";
                    break;
                }
                if (fields.size() * 2 >= max_event_fields) break; // parse_event refuses it
                fields.emplace_back(str(f->element[j]), str(f->element[j + 1]));
            }
            if (ok && f->elements > max_event_fields) {
                ok = false;
                err = "more than " + std::to_string(max_event_fields) + " fields";
            }
            if (ok) ok = parse_event(fields, ev, err);
        }
        if (!ok) {
            st_.malformed.fetch_add(1, std::memory_order_relaxed);
            log(level::warn, "event=decision_malformed source=stream id=%s reason=\"%s\"",
                last_id_.c_str(), err.c_str());
            continue;
        }
        if (ev.kind == op::resync) {
            log(level::info, "event=decisions_resync_requested id=%s", last_id_.c_str());
            resync = true;
            break;
        }
        apply(ev);
        ++applied;
        st_.last_event_ms.store(static_cast<std::int64_t>(sid.ms), std::memory_order_relaxed);
    }
    if (applied != 0) {
        st_.events.fetch_add(applied, std::memory_order_relaxed);
        prune_expired();
        publish();
        st_.last_applied_ms.store(wall_ms(), std::memory_order_relaxed);
    } else {
        prune_expired();
    }
    return resync;
}

void follower::apply(const event& e) {
    if (e.kind == op::del) {
        set_.erase(e.prefix);
        return;
    }
    if (e.d.expiry != 0 && e.d.expiry <= iprep::coarse_unix_now()) {
        set_.erase(e.prefix); // an add that is already over replaces the prefix with nothing
        return;
    }
    auto it = set_.find(e.prefix);
    if (it == set_.end() && set_.size() >= cfg_.max_decisions) {
        st_.refused.fetch_add(1, std::memory_order_relaxed);
        log(level::warn, "event=decisions_refused source=stream prefix=%s max=%zu",
            e.prefix.c_str(), cfg_.max_decisions);
        return;
    }
    set_[e.prefix] = {e.d.score, e.d.expiry, intern(e.d.reason), e.d.prefix};
}

void follower::prune_expired() {
    const std::int64_t now = iprep::coarse_unix_now();
    if (next_expiry_ == 0 || next_expiry_ > now) return;
    std::erase_if(
        set_, [now](const auto& kv) { return kv.second.expiry != 0 && kv.second.expiry <= now; });
    publish();
}

void follower::publish() {
    const auto t0 = static_cast<std::int64_t>(spop::server::mono_ns());
    std::vector<iprep::overlay_entry> v;
    v.reserve(set_.size());
    std::int64_t next = 0;
    for (const auto& [key, d] : set_) {
        v.push_back({d.prefix, d.score, d.expiry, d.category});
        if (d.expiry != 0 && (next == 0 || d.expiry < next)) next = d.expiry;
    }
    next_expiry_ = next;
    const auto t1 = static_cast<std::int64_t>(spop::server::mono_ns());
    auto o = iprep::build_overlay(v);
    const auto t2 = static_cast<std::int64_t>(spop::server::mono_ns());
    if (!o) {
        log(level::error, "event=decisions_publish_failed decisions=%zu reason=\"out of memory\"",
            v.size());
        return;
    }
    rep_.publish_overlay(std::move(o));
    const auto t3 = static_cast<std::int64_t>(spop::server::mono_ns());
    // Where a slow propagation goes (debug: -d).
    if (t3 - t0 > 5000000)
        log(level::debug,
            "event=decisions_publish_slow decisions=%zu collect_ms=%.1f build_ms=%.1f "
            "swap_ms=%.1f",
            v.size(), static_cast<double>(t1 - t0) / 1e6, static_cast<double>(t2 - t1) / 1e6,
            static_cast<double>(t3 - t2) / 1e6);
    st_.decisions.store(set_.size(), std::memory_order_relaxed);
    st_.publishes.fetch_add(1, std::memory_order_relaxed);
}

} // namespace agent::decisions
