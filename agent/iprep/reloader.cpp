#include "reloader.hpp"

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <malloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <spop/server/log.hpp>

namespace agent::iprep {

using spop::server::level;
using spop::server::log;
using spop::server::rate_limiter;

namespace {

constexpr int debounce_ms = 250;
constexpr int debounce_max_ms = 2000;

std::int64_t wall_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}
std::int64_t mono_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

/// A log value in double quotes, with quotes, backslashes and control bytes escaped.
std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u == 0x7F) {
            char b[8];
            std::snprintf(b, sizeof b, "\\x%02x", u);
            out += b;
        } else {
            out += c;
        }
    }
    out += '"';
    return out;
}

void split_path(const std::string& path, std::string& dir, std::string& base) {
    const std::string_view p = path;
    const std::size_t sl = p.rfind('/');
    if (sl == std::string_view::npos) {
        dir.assign(".");
        base.assign(p);
    } else {
        dir.assign(sl == 0 ? p.substr(0, 1) : p.substr(0, sl));
        base.assign(p.substr(sl + 1));
    }
}

} // namespace

reloader::reloader(reputation_source& rep, sources_config cfg, reload_stats& st)
    : rep_(rep), cfg_(std::move(cfg)), st_(st) {
    // Loads allocate tens of MB at a time (file text, parsed entries, build arrays). A fixed
    // mmap threshold gives every such block back to the system when it is freed, instead of
    // glibc's adaptive threshold raising itself and keeping them in the heap after a reload.
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    st_.configured.store(!cfg_.empty(), std::memory_order_relaxed);
}

reloader::~reloader() {
    stop();
}

bool reloader::load(parse_error& err, const char* trigger) {
    load_stats ls;
    auto snap = load_snapshot(cfg_, ls, err);
    if (!snap) {
        st_.reloads_failed.fetch_add(1, std::memory_order_relaxed);
        st_.failed_unix_ms.store(wall_ms(), std::memory_order_relaxed);
        return false;
    }
    rep_.publish(std::move(snap));
    // Give the parse and build buffers (and the old tables) back to the system: without this,
    // glibc keeps them in the heap and the agent's RSS stays at its reload peak.
    malloc_trim(0);
    st_.prefixes_v4.store(ls.prefixes_v4, std::memory_order_relaxed);
    st_.prefixes_v6.store(ls.prefixes_v6, std::memory_order_relaxed);
    st_.list_entries.store(ls.list_entries, std::memory_order_relaxed);
    st_.allow_entries.store(ls.allow_entries, std::memory_order_relaxed);
    st_.csv_entries.store(ls.csv_entries, std::memory_order_relaxed);
    st_.mmdb_networks.store(ls.mmdb_networks, std::memory_order_relaxed);
    st_.table_bytes.store(ls.bytes, std::memory_order_relaxed);
    st_.build_ns.store(ls.build_ns, std::memory_order_relaxed);
    st_.newest_mtime.store(ls.newest_mtime, std::memory_order_relaxed);
    st_.loaded_unix_ms.store(wall_ms(), std::memory_order_relaxed);
    st_.reloads_ok.fetch_add(1, std::memory_order_relaxed);
    log(level::info,
        "event=reputation_loaded trigger=%s prefixes_v4=%zu prefixes_v6=%zu list_entries=%zu "
        "allow_entries=%zu csv_entries=%zu mmdb_networks=%zu table_bytes=%zu build_ms=%.1f "
        "retired=%zu",
        trigger, ls.prefixes_v4, ls.prefixes_v6, ls.list_entries, ls.allow_entries, ls.csv_entries,
        ls.mmdb_networks, ls.bytes, static_cast<double>(ls.build_ns) / 1e6, rep_.retired());
    return true;
}

bool reloader::start(std::string& err) {
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) {
        err = std::string("eventfd: ") + std::strerror(errno);
        return false;
    }
    if (!cfg_.empty() && !watch(err)) return false;
    thread_ = std::thread([this] { run(); });
    return true;
}

bool reloader::watch(std::string& err) {
    inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0) {
        err = std::string("inotify_init1: ") + std::strerror(errno);
        return false;
    }
    for (const auto& f : cfg_.files()) {
        std::string dir, base;
        split_path(f, dir, base);
        files_.emplace_back(dir, base);
        bool have = false;
        for (const auto& d : dirs_) have = have || d.dir == dir;
        if (have) continue;
        const int wd = inotify_add_watch(inotify_fd_, dir.c_str(),
                                         IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR);
        if (wd < 0) {
            // Not fatal: SIGHUP still reloads.
            log(level::warn, "event=watch_failed dir=%s error=%s reload=sighup_only",
                quoted(dir).c_str(), quoted(std::strerror(errno)).c_str());
            continue;
        }
        dirs_.push_back({wd, dir});
    }
    return true;
}

void reloader::request() noexcept {
    if (wake_fd_ < 0) return;
    const std::uint64_t one = 1;
    ssize_t w = ::write(wake_fd_, &one, sizeof one);
    (void)w;
}

void reloader::stop() {
    if (thread_.joinable()) {
        stop_.store(true, std::memory_order_relaxed);
        request();
        thread_.join();
    }
    if (inotify_fd_ >= 0) ::close(inotify_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    inotify_fd_ = wake_fd_ = -1;
}

/// Reads pending events; true if one concerns a configured file.
bool reloader::handle_inotify() {
    alignas(inotify_event) char buf[8192];
    bool relevant = false;
    while (true) {
        const ssize_t n = ::read(inotify_fd_, buf, sizeof buf);
        if (n <= 0) break;
        for (char* p = buf; p < buf + n;) {
            const auto* ev = reinterpret_cast<const inotify_event*>(p);
            p += sizeof(inotify_event) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                relevant = true;
                continue;
            }
            if (ev->mask & IN_IGNORED) {
                // The directory went away (or was unmounted): its files now reload on SIGHUP only.
                for (const auto& w : dirs_)
                    if (w.wd == ev->wd)
                        log(level::warn, "event=watch_lost dir=%s reload=sighup_only",
                            quoted(w.dir).c_str());
                continue;
            }
            if (ev->len == 0) continue;
            const std::string_view name(ev->name);
            const watched_dir* d = nullptr;
            for (const auto& w : dirs_)
                if (w.wd == ev->wd) d = &w;
            if (d == nullptr) continue;
            // Kubernetes ConfigMap/Secret volumes swap a "..data" symlink.
            if (name.substr(0, 2) == ".." && (ev->mask & (IN_MOVED_TO | IN_CREATE))) {
                relevant = true;
                continue;
            }
            if (ev->mask & IN_CREATE) continue; // wait for the writer to close it
            for (const auto& f : files_)
                if (f.first == d->dir && f.second == name) relevant = true;
        }
    }
    return relevant;
}

void reloader::run() {
    rate_limiter errors_rl(3);
    std::int64_t due = -1;   // debounced inotify reload, monotonic ms
    std::int64_t first = -1; // first change of the current burst
    while (!stop_.load(std::memory_order_relaxed)) {
        pollfd pf[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
        int timeout = -1;
        if (due >= 0) {
            const std::int64_t left = due - mono_ms();
            timeout = left < 0 ? 0 : static_cast<int>(left);
        }
        const int r = ::poll(pf, inotify_fd_ >= 0 ? 2 : 1, timeout);
        if (r < 0 && errno != EINTR) {
            log(level::error, "event=reloader_failed what=poll errno=%d", errno);
            return;
        }
        if (stop_.load(std::memory_order_relaxed)) break;
        const char* trigger = nullptr;
        if (pf[0].revents & POLLIN) {
            std::uint64_t v;
            ssize_t n = ::read(wake_fd_, &v, sizeof v);
            (void)n;
            trigger = "sighup";
        }
        if (inotify_fd_ >= 0 && (pf[1].revents & POLLIN) && handle_inotify()) {
            const std::int64_t now = mono_ms();
            if (first < 0) first = now;
            due = std::min(now + debounce_ms, first + debounce_max_ms);
        }
        if (trigger == nullptr && due >= 0 && mono_ms() >= due) trigger = "file_change";
        if (trigger == nullptr) continue;
        due = first = -1; // a SIGHUP reload also covers pending file changes
        if (cfg_.empty()) {
            log(level::info, "event=reload trigger=%s result=nothing_to_reload", trigger);
            continue;
        }
        parse_error err;
        if (!load(err, trigger)) {
            unsigned suppressed = 0;
            if (errors_rl.allow(static_cast<std::uint64_t>(mono_ms() / 1000), suppressed))
                log(level::error,
                    "event=reload_failed trigger=%s file=%s line=%zu error=%s "
                    "action=kept_previous_tables suppressed=%u",
                    trigger, quoted(err.file).c_str(), err.line, quoted(err.message).c_str(),
                    suppressed);
        }
    }
}

void render_metrics(spop::server::prometheus::writer& w, const reload_stats& r) {
    constexpr auto relaxed = std::memory_order_relaxed;
    const std::int64_t now = wall_ms();
    const std::int64_t loaded = r.loaded_unix_ms.load(relaxed);
    w.header("reloads_total", "counter",
             "Reputation table loads (the initial load included), by result.");
    w.sample("reloads_total", "result=\"ok\"", r.reloads_ok.load(relaxed));
    w.sample("reloads_total", "result=\"error\"", r.reloads_failed.load(relaxed));
    w.one("reputation_configured", "gauge",
          "1 if any --list, --allow, --csv or --mmdb source is configured.",
          r.configured.load(relaxed) ? 1 : 0);
    w.one_f("reputation_last_reload_timestamp_seconds", "gauge",
            "When the tables in use were loaded (Unix time; 0 = never).",
            static_cast<double>(loaded) / 1e3);
    w.one_f("reputation_age_seconds", "gauge",
            "Seconds since the tables in use were loaded (0 when none are).",
            loaded > 0 ? static_cast<double>(now - loaded) / 1e3 : 0.0);
    w.one_f("reputation_last_failed_reload_timestamp_seconds", "gauge",
            "When a load last failed (Unix time; 0 = never).",
            static_cast<double>(r.failed_unix_ms.load(relaxed)) / 1e3);
    w.one("reputation_newest_file_mtime_seconds", "gauge",
          "Newest modification time among the loaded source files (Unix time).",
          static_cast<std::uint64_t>(r.newest_mtime.load(relaxed)));
    w.header("reputation_prefixes", "gauge",
             "Distinct prefixes in the loaded tables, by address family.");
    w.sample("reputation_prefixes", "family=\"ipv4\"", r.prefixes_v4.load(relaxed));
    w.sample("reputation_prefixes", "family=\"ipv6\"", r.prefixes_v6.load(relaxed));
    w.header("reputation_entries", "gauge",
             "Entries read by source kind at the last successful load.");
    w.sample("reputation_entries", "source=\"list\"", r.list_entries.load(relaxed));
    w.sample("reputation_entries", "source=\"allow\"", r.allow_entries.load(relaxed));
    w.sample("reputation_entries", "source=\"csv\"", r.csv_entries.load(relaxed));
    w.sample("reputation_entries", "source=\"mmdb\"", r.mmdb_networks.load(relaxed));
    w.one("reputation_table_bytes", "gauge", "Memory of the loaded IPv4 and IPv6 tables.",
          r.table_bytes.load(relaxed));
    w.one_f("reputation_build_seconds", "gauge",
            "Time the last successful load took (read, parse, build).",
            static_cast<double>(r.build_ns.load(relaxed)) / 1e9);
}

} // namespace agent::iprep
