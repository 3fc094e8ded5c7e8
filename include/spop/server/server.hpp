// spop::server: an SPOA engine for any service. Write a service (spop::service: on_notify, see
// service.hpp and message.hpp), give the server a factory that builds one per worker, and run:
//
//   spop::server::options o;            // port 12345, 1 worker, io_uring else epoll, limits
//   o.workers = 4;
//   spop::server::server<my_service> srv(o);
//   return srv.run([](const auto& w) { return my_service(w.id); });   // until SIGTERM/SIGINT
//
// What every service gets: io_uring workers (one ring per thread; multishot accept and recv on
// provided buffers; one send per connection per turn) or the epoll fallback, chosen
// automatically with a warning naming the cause; IPv4, IPv6, dual-stack and Unix listeners;
// least-loaded hand-off of new connections; back-pressure through TCP; limits (connections in
// total, ACKs in flight, hello and idle timeouts); a lame-duck graceful stop; per-worker counters.
//
// Threads: the server's methods are called from one thread (main). A service instance belongs to
// one worker thread: the factory runs on that thread, and on_notify() is only ever called there,
// so a service needs no locks for its own state. Shared state (a reputation table) must be
// read-only or published atomically by the service itself. Deferred answers (ticket.hpp) may be
// completed on any thread, also after stop()/wait(), until the server object is destroyed: a
// ticket must be completed or dropped before that.
#pragma once

#include <atomic>
#include <cerrno> // program_invocation_short_name (glibc)
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <pthread.h>
#include <sched.h>
#include <string>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "engine.hpp"
#include "epoll.hpp"
#include "listen.hpp"
#include "tickets.hpp"
#include "uring.hpp"

namespace spop::server {

/// The smallest options::deferred_ack_bytes: an ACK with the largest ids (two 10-byte varints)
/// and the no-op UNSET-VAR an empty answer gets (42 bytes), rounded up. Below it a completed
/// ticket's ACK cannot be built, and the connection would end with AGENT-DISCONNECT 13.
inline constexpr std::uint32_t min_deferred_ack_bytes = 64;
static_assert(min_deferred_ack_bytes >= frame_length_size + max_ack_header_length +
                                            unset_var_size(spop::connection_config{}.noop_var));

/// The options' ranges, checked before anything is opened: every embedder gets the same one-line
/// error for a value the engine cannot honour (a max_frame_size above 16 MiB would also make
/// every receive buffer that large).
inline bool check_ranges(const options& o, std::string& err) {
    const auto bad = [&err](const char* what, long long v, const char* range) {
        err = std::string("invalid ") + what + " " + std::to_string(v) + " (" + range + ")";
        return false;
    };
    if (o.port < 1 || o.port > 65535) return bad("port", o.port, "1..65535");
    if (o.workers < 1 || o.workers > 1024) return bad("workers", o.workers, "1..1024");
    if (o.max_frame_size < min_max_frame_size || o.max_frame_size > max_max_frame_size)
        return bad("max_frame_size", o.max_frame_size, "256..16777216");
    if (o.backlog < 1) return bad("backlog", o.backlog, "1 or more");
    if (o.max_connections < 1) return bad("max_connections", o.max_connections, "1 or more");
    if (o.max_in_flight < 1) return bad("max_in_flight", o.max_in_flight, "1 or more");
    if (o.hello_timeout_s < 1) return bad("hello_timeout_s", o.hello_timeout_s, "1 or more");
    if (o.deferred_timeout_ms < 1)
        return bad("deferred_timeout_ms", o.deferred_timeout_ms, "1 or more");
    // Each of max_deferred tickets per worker gets this much at start; an ACK is one frame.
    if (o.max_deferred != 0 && (o.deferred_ack_bytes < min_deferred_ack_bytes ||
                                o.deferred_ack_bytes > frame_length_size + max_max_frame_size))
        return bad("deferred_ack_bytes", o.deferred_ack_bytes, "64..16777220");
    if (o.unix_mode > 07777) return bad("unix_mode", o.unix_mode, "0..07777 or -1");
    for (const int c : o.cpus)
        if (c < 0 || c >= CPU_SETSIZE) return bad("CPU", c, "0..CPU_SETSIZE-1");
    return true;
}

/// Every CPU of `cpus` is one this process may run on (sched_getaffinity: taskset, a cgroup
/// cpuset, systemd's CPUAffinity=); false and a one-line `err` naming the first that is not.
inline bool check_cpus_allowed(const std::vector<int>& cpus, std::string& err) {
    if (cpus.empty()) return true;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        err = std::string("cannot read this process's CPUs: ") + std::strerror(errno);
        return false;
    }
    for (const int c : cpus) {
        // check_ranges() saw 0 <= c < CPU_SETSIZE: the macros take it as a size_t.
        if (CPU_ISSET(static_cast<std::size_t>(c), &allowed)) continue;
        std::vector<int> ok;
        for (std::size_t i = 0; i < CPU_SETSIZE; ++i)
            if (CPU_ISSET(i, &allowed)) ok.push_back(static_cast<int>(i));
        err = "CPU " + std::to_string(c) + " is not available to this process (it may use " +
              cpu_list_text(ok) + ")";
        return false;
    }
    return true;
}

/// Pins the calling thread to `cpu`; false with errno's text in `err` when the kernel refuses.
inline bool pin_this_thread(int cpu, std::string& err) noexcept {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<std::size_t>(cpu), &set);
    const int rc = ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
    if (rc != 0) err = std::strerror(rc);
    return rc == 0;
}

/// Blocks SIGTERM and SIGINT in the calling thread (threads it starts later inherit that) and
/// returns the set. server::run() does it first; an embedder that starts threads of its own
/// before run() (a thread pool, a client library) calls it before them: a process-directed
/// SIGTERM goes to any thread that does not block it, and until run() reaches its sigwait()
/// such a thread would take the default action, ending the process without a graceful stop.
inline sigset_t block_stop_signals() noexcept {
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    return sigs;
}

/// Waits up to a second for one of the blocked signals `sigs`: its number, or 0 when none came
/// (the caller checks server::failed_workers() and waits again).
inline int wait_stop_signal(const sigset_t& sigs) noexcept {
    const timespec second{1, 0};
    const int sig = sigtimedwait(&sigs, nullptr, &second);
    return sig > 0 ? sig : 0;
}

/// `Stats` may derive from worker_stats to add a service's counters (one block per worker).
template <class Service, class Stats = worker_stats>
class server {
  public:
    explicit server(const options& o) : opt_(o) {}
    server(const server&) = delete;
    server& operator=(const server&) = delete;
    ~server() { close_all(); }

    /// Checks the options' ranges, chooses the backend and checks the addresses and that every
    /// port is free; opens nothing. false + a one-line `err` otherwise (a value out of range, a
    /// bad address, a port in use, io_uring required but unavailable).
    bool check(std::string& err) {
        if (!check_ranges(opt_, err) || !check_cpus_allowed(opt_.cpus, err)) return false;
        use_uring_ = false;
        if (opt_.engine != backend::epoll) {
            std::string why;
            if (uring_usable(why)) {
                use_uring_ = true;
            } else if (opt_.engine == backend::uring) {
                err = "io_uring unavailable: " + why;
                return false;
            } else {
                log(level::warn,
                    "event=engine_fallback engine=epoll reason=\"io_uring unavailable: %s\"",
                    why.c_str());
            }
        }
        specs_.clear();
        if (!resolve_listen_specs(opt_, specs_, err)) return false;
        for (const auto& s : specs_)
            if (!check_port_free(s, err)) return false;
        checked_ = true;
        return true;
    }

    /// Binds and listens (TCP: one SO_REUSEPORT listener per worker; Unix: one, shared).
    /// After this, a connecting client waits in the backlog until start(). Call it before
    /// dropping privileges to bind a port below 1024; start() and run() then keep these
    /// listeners (a second call does nothing and returns true).
    bool listen(std::string& err) {
        if (!envs_.empty()) return true; // listening already: the workers' fds stay theirs
        if (!checked_ && !check(err)) return false;
        const int n = opt_.workers;
        envs_.clear();
        stats_.clear();
        tickets_.clear();
        for (int i = 0; i < n; ++i) {
            envs_.push_back(std::make_unique<worker_env>());
            stats_.push_back(std::make_unique<Stats>());
        }
        for (const auto& s : specs_) {
            if (!s.is_unix) continue;
            const int fd =
                open_listener(s, opt_.backlog, false, err, opt_.unix_mode, opt_.unix_gid);
            if (fd < 0) return false;
            shared_fds_.push_back(fd);
        }
        peers_.clear();
        for (auto& env : envs_) peers_.push_back(env.get());
        for (int i = 0; i < n; ++i) {
            worker_env& env = *envs_[static_cast<std::size_t>(i)];
            int pfd[2];
            if (pipe2(pfd, O_NONBLOCK | O_CLOEXEC) != 0) {
                err = "pipe2: " + std::string(std::strerror(errno));
                return false;
            }
            env.handoff_rfd = pfd[0];
            env.handoff_wfd = pfd[1];
            env.peers = &peers_;
            env.id = i;
            env.opt = &opt_;
            env.conn_cfg.limits.max_frame_size = opt_.max_frame_size;
            env.conn_cfg.limits.pipelining = opt_.pipelining;
            env.conn_cfg.max_queued_acks = opt_.max_in_flight;
            env.stats = stats_[static_cast<std::size_t>(i)].get();
            tickets_.push_back(std::make_unique<ticket_pool>(
                opt_.max_deferred, opt_.deferred_ack_bytes, opt_.deferred_timeout_ms, *env.stats));
            env.tickets = tickets_.back().get();
            env.max_conns = opt_.max_connections; // a total: workers share one count
            env.live_total = &live_total_;
            env.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            if (env.wake_fd < 0) {
                err = "eventfd: " + std::string(std::strerror(errno));
                return false;
            }
            for (const auto& s : specs_) {
                if (s.is_unix) continue;
                const int fd = open_listener(s, opt_.backlog, true, err);
                if (fd < 0) return false;
                env.listen_fds.push_back(fd);
                env.listen_is_tcp.push_back(true);
            }
            for (int fd : shared_fds_) {
                env.listen_fds.push_back(fd);
                env.listen_is_tcp.push_back(false);
            }
        }
        return true;
    }

    /// Starts one thread per worker; each builds its service with `make(worker_info<Stats>)`
    /// (on its own thread, so a service may be neither copyable nor movable), after pinning
    /// itself to its CPU when options::cpus names any (a failure there is logged, not fatal).
    template <class Factory>
    bool start(Factory&& make, std::string& err) {
        if (envs_.empty() && !listen(err)) return false;
        // The workers call the factory after start() returned: they share their own copy.
        auto factory = std::make_shared<std::decay_t<Factory>>(std::forward<Factory>(make));
        for (auto& envp : envs_) {
            worker_env* env = envp.get();
            Stats* st = stats_[static_cast<std::size_t>(env->id)].get();
            threads_.emplace_back([this, env, st, factory] {
                // Before the factory: threads the service starts there inherit the CPU.
                if (!opt_.cpus.empty()) {
                    const int cpu = opt_.cpus[static_cast<std::size_t>(env->id) % opt_.cpus.size()];
                    std::string why;
                    if (!pin_this_thread(cpu, why))
                        log(level::warn, "event=cpu_pin_failed worker=%d cpu=%d error=\"%s\"",
                            env->id, cpu, why.c_str());
                }
                auto build = [&](int id) { return (*factory)(worker_info<Stats>{id, *st}); };
                const int rc = use_uring_ ? run_uring_worker<Service>(*env, build)
                                          : run_epoll_worker<Service>(*env, build);
                if (rc != 0) {
                    // Leave the SO_REUSEPORT group at once: the kernel would otherwise keep
                    // handing this dead worker a share of the new connections.
                    for (std::size_t i = 0; i < env->listen_fds.size(); ++i)
                        if (env->listen_is_tcp[i] && env->listen_fds[i] >= 0)
                            ::shutdown(env->listen_fds[i], SHUT_RDWR);
                    failures_.fetch_add(1);
                }
            });
        }
        return true;
    }

    /// Graceful stop (lame duck, see options::drain_idle_s). Async-signal-safe: writes eventfds.
    void stop() noexcept {
        for (auto& env : envs_) {
            const std::uint64_t one = 1;
            const ssize_t w = ::write(env->wake_fd, &one, sizeof one);
            (void)w;
        }
    }

    /// Workers that ended on a fatal error (logged as event=fatal), from any thread. A failed
    /// worker has left its listeners; the others keep serving until stop(). run() stops the
    /// server within a second of the first failure; an embedder with its own signal loop should
    /// poll this (see agent/main.cpp) so that a supervisor restarts the whole process.
    [[nodiscard]] int failed_workers() const noexcept { return failures_.load(); }

    /// Waits for every worker to finish. 0, or 1 if a worker failed.
    int wait() {
        for (auto& t : threads_) t.join();
        threads_.clear();
        close_all();
        return failures_.load() != 0 ? 1 : 0;
    }

    /// check + listen (unless listen() was called already) + start, then blocks SIGTERM/SIGINT
    /// (and SIGPIPE) and waits for one, or for a worker's fatal error, stops gracefully and
    /// returns the exit code: 0, 1 on a worker failure (the others are stopped within a second
    /// of it), 2 on a start error (printed as one line on stderr). See block_stop_signals()
    /// for threads started earlier.
    template <class Factory>
    int run(Factory&& make) {
        sigset_t sigs = block_stop_signals(); // before the workers: they inherit it
        std::signal(SIGPIPE, SIG_IGN);
        std::string err;
        // After a listen() of the embedder's own (say, before dropping privileges), its
        // listeners are used as they are: check() would find their ports taken.
        if ((envs_.empty() && (!check(err) || !listen(err))) || !start(make, err)) {
            // One line, named like the program's own errors ("agent: ...").
            std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, err.c_str());
            return 2;
        }
        log(level::info, "event=start listening on %s workers=%d engine=%s cpus=%s",
            where().c_str(), opt_.workers, uses_uring() ? "io_uring" : "epoll",
            opt_.cpus.empty() ? "any" : cpu_list_text(opt_.cpus).c_str());
        while (true) {
            const int sig = wait_stop_signal(sigs);
            if (sig > 0) {
                log(level::info, "event=stopping signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
                break;
            }
            if (failed_workers() != 0) {
                log(level::error, "event=stopping reason=worker_failed failed_workers=%d",
                    failed_workers());
                break;
            }
        }
        stop();
        return wait();
    }

    [[nodiscard]] bool uses_uring() const noexcept { return use_uring_; }
    /// "127.0.0.1:12345,unix:/run/x.sock"
    [[nodiscard]] std::string where() const {
        std::string w;
        for (const auto& s : specs_) w += (w.empty() ? "" : ",") + s.desc;
        return w;
    }
    /// Every worker's counters (valid from listen() until the server is destroyed).
    [[nodiscard]] const std::vector<std::unique_ptr<Stats>>& stats() const noexcept {
        return stats_;
    }
    [[nodiscard]] const options& settings() const noexcept { return opt_; }

  private:
    void close_all() noexcept {
        if (!threads_.empty()) return; // still running: wait() first
        for (auto& env : envs_) {
            for (std::size_t i = 0; i < env->listen_fds.size(); ++i)
                if (env->listen_is_tcp[i] && env->listen_fds[i] >= 0) ::close(env->listen_fds[i]);
            env->listen_fds.clear();
            if (env->wake_fd >= 0) ::close(env->wake_fd);
            if (env->handoff_rfd >= 0) ::close(env->handoff_rfd);
            if (env->handoff_wfd >= 0) ::close(env->handoff_wfd);
            env->wake_fd = env->handoff_rfd = env->handoff_wfd = -1;
        }
        // Remove the socket file only if this server created it.
        if (!shared_fds_.empty() && !opt_.unix_path.empty()) ::unlink(opt_.unix_path.c_str());
        for (int fd : shared_fds_) ::close(fd);
        shared_fds_.clear();
    }

    options opt_;
    bool use_uring_ = false;
    bool checked_ = false;
    std::vector<listen_spec> specs_;
    std::vector<std::unique_ptr<worker_env>> envs_;
    std::vector<worker_env*> peers_;
    std::vector<std::unique_ptr<Stats>> stats_;
    /// Deferred-answer tickets, per worker: they live as long as the server, so a ticket
    /// completed after its worker stopped is still safe (it is discarded). Declared after the
    /// stats they count into, so destroyed before them.
    std::vector<std::unique_ptr<ticket_pool>> tickets_;
    std::vector<int> shared_fds_;
    std::vector<std::thread> threads_;
    std::atomic<std::uint32_t> live_total_{0};
    std::atomic<int> failures_{0};
};

} // namespace spop::server
