// agent: an SPOP agent serving IP reputation to HAProxy 2.6-3.4.
//
// The main thread parses flags, loads the reputation data, opens listeners, drops privileges,
// starts one worker thread per -n, then only waits for signals. Workers share nothing but
// read-only configuration and the reputation snapshot.
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>

#include "engine.hpp"
#include "iprep/mmdb.hpp"
#include "iprep/reloader.hpp"
#include "listen.hpp"
#include "metrics.hpp"
#include "options.hpp"

using namespace agent;

namespace {

int die(const std::string& msg) {
    std::fprintf(stderr, "agent: %s\n", msg.c_str());
    return 1;
}

void raise_nofile() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

bool drop_privileges(const std::string& user, std::string& err) {
    errno = 0;
    const passwd* pw = getpwnam(user.c_str());
    if (pw == nullptr) {
        err = "unknown user '" + user + "' for --user";
        return false;
    }
    if (setgroups(0, nullptr) != 0 && errno != EPERM) {
        err = "setgroups: " + std::string(std::strerror(errno));
        return false;
    }
    if (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
        err = "cannot switch to user '" + user + "': " + std::strerror(errno);
        return false;
    }
    return true;
}

/// The initial load runs before any socket is bound, so the agent must read the files as the
/// --user it will run as (a file that user cannot read must fail at start, as it would at every
/// reload). When started as root, only the effective ids switch; the real ids stay root, so
/// binding a privileged port and drop_privileges() still work afterwards.
class load_identity {
  public:
    bool enter(const std::string& user, std::string& err) {
        if (user.empty() || geteuid() != 0) return true;
        const passwd* pw = getpwnam(user.c_str());
        if (pw == nullptr) {
            err = "unknown user '" + user + "' for --user";
            return false;
        }
        (void)setgroups(0, nullptr); // as drop_privileges() will
        if (setegid(pw->pw_gid) != 0 || seteuid(pw->pw_uid) != 0) {
            err = "cannot read files as user '" + user + "': " + std::strerror(errno);
            return false;
        }
        switched_ = true;
        return true;
    }
    bool leave(std::string& err) {
        if (!switched_) return true;
        switched_ = false;
        if (seteuid(0) != 0 || setegid(getgid()) != 0) {
            err = std::string("cannot restore root after loading: ") + std::strerror(errno);
            return false;
        }
        return true;
    }

  private:
    bool switched_ = false;
};

} // namespace

int main(int argc, char** argv) {
    options opt;
    switch (parse_options(argc, argv, opt)) {
    case parse_outcome::exit_ok:
        return 0;
    case parse_outcome::exit_error:
        return 2;
    case parse_outcome::run:
        break;
    }
    if (opt.debug) g_log_level.store(static_cast<int>(level::debug));
    if (!opt.mmdb.empty() && !iprep::mmdb_supported()) {
        std::fprintf(stderr, "agent: --mmdb: this agent was built without libmaxminddb "
                             "(rebuild with -Dmmdb=enabled)\n");
        return 2;
    }
    iprep::sources_config sources;
    for (const auto& l : opt.lists) sources.lists.push_back({l.path, l.score});
    sources.allow = opt.allow_lists;
    sources.csv = opt.csv_files;
    sources.mmdb = opt.mmdb;
    sources.max_file_size = opt.max_file_size;

    bool use_uring = false;
    if (opt.engine != engine_kind::epoll) {
        std::string why;
        if (uring_usable(why)) {
            use_uring = true;
        } else if (opt.engine == engine_kind::uring) {
            return die("io_uring unavailable: " + why);
        } else {
            log(level::warn,
                "event=engine_fallback engine=epoll reason=\"io_uring unavailable: %s\"",
                why.c_str());
        }
    }

    std::vector<listen_spec> specs;
    std::string err;
    if (!resolve_listen_specs(opt, specs, err)) return die(err);
    for (const auto& s : specs)
        if (!check_port_free(s, err)) return die(err);

    raise_nofile();
    // Signals are taken by the main thread only (sigwait); workers inherit the mask.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    // The metrics endpoint comes up first, so that /healthz answers and /readyz says "not
    // ready" while the data loads (it is not the SPOP port: HAProxy's checks do not see it).
    metrics_server metrics;
    if (!opt.metrics.empty() && !metrics.open(opt.metrics, err)) return die(err);

    // Reputation tables: loaded before any SPOP socket is bound or listens. A connection can only be
    // accepted by the kernel once a listener exists, so while the data loads a client (and
    // HAProxy's health check) is refused cleanly instead of waiting in the accept queue, and
    // reset when a bad file makes the agent exit. A bad file is fatal here.
    reputation_source rep;
    iprep::reload_stats reload_stats;
    iprep::reloader reloader(rep, sources, reload_stats);
    if (!sources.empty()) {
        load_identity as_user;
        if (!as_user.enter(opt.user, err)) return die(err);
        iprep::parse_error perr;
        const bool loaded = reloader.load(perr);
        if (!as_user.leave(err)) return die(err);
        if (!loaded) {
            std::fprintf(stderr, "agent: cannot load reputation data: %s\n",
                         perr.to_string().c_str());
            return 2;
        }
    }
    readiness().set_data_loaded(); // /readyz: the first load succeeded (or there is no source)

    const int nworkers = opt.workers;
    std::vector<worker_env> envs(static_cast<std::size_t>(nworkers));
    std::vector<std::unique_ptr<worker_stats>> stats;
    std::vector<int> shared_fds;
    for (const auto& s : specs) {
        if (!s.is_unix) continue;
        const int fd = open_listener(s, opt.backlog, false, err);
        if (fd < 0) return die(err);
        shared_fds.push_back(fd);
    }
    const std::uint64_t seed =
        static_cast<std::uint64_t>(mono_ns()) ^ static_cast<std::uint64_t>(getpid());
    std::vector<worker_env*> peers;
    for (auto& env : envs) peers.push_back(&env);
    std::atomic<std::uint32_t> live_total{0};
    for (int i = 0; i < nworkers; ++i) {
        worker_env& env = envs[static_cast<std::size_t>(i)];
        int pfd[2];
        if (pipe2(pfd, O_NONBLOCK | O_CLOEXEC) != 0)
            return die("pipe2: " + std::string(std::strerror(errno)));
        env.handoff_rfd = pfd[0];
        env.handoff_wfd = pfd[1];
        env.peers = &peers;
        env.id = i;
        env.opt = &opt;
        env.conn_cfg.limits.max_frame_size = opt.max_frame_size;
        env.conn_cfg.limits.pipelining = opt.pipelining;
        env.conn_cfg.max_queued_acks = opt.max_in_flight;
        env.svc_cfg.default_score = opt.default_score;
        env.svc_cfg.var_name = opt.var_name;
        env.svc_cfg.category_var = opt.category_var;
        env.rep = &rep;
        stats.push_back(std::make_unique<worker_stats>());
        env.stats = stats.back().get();
        env.max_conns = opt.max_connections; // a total: workers share one count
        env.live_total = &live_total;
        env.seed = seed + static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ull;
        env.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (env.wake_fd < 0) return die("eventfd: " + std::string(std::strerror(errno)));
        for (const auto& s : specs) {
            if (s.is_unix) continue;
            const int fd = open_listener(s, opt.backlog, true, err);
            if (fd < 0) return die(err);
            env.listen_fds.push_back(fd);
            env.listen_is_tcp.push_back(true);
        }
        for (int fd : shared_fds) {
            env.listen_fds.push_back(fd);
            env.listen_is_tcp.push_back(false);
        }
    }
    if (!opt.user.empty() && !drop_privileges(opt.user, err)) return die(err);

    if (!reloader.start(err)) return die(err);
    if (!opt.metrics.empty()) {
        metrics_sources msrc;
        for (auto& s : stats) msrc.workers.push_back(s.get());
        msrc.reload = &reload_stats;
        timespec ts{};
        clock_gettime(CLOCK_REALTIME, &ts);
        msrc.start_unix_ms = static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
        msrc.engine = use_uring ? "io_uring" : "epoll";
        msrc.version = SPOP_AGENT_VERSION;
        if (!metrics.start(std::move(msrc), err)) return die(err);
    }

    std::string where;
    for (const auto& s : specs) where += (where.empty() ? "" : ",") + s.desc;
    log(level::info,
        "event=start listening on %s workers=%d engine=%s max_frame_size=%u pipelining=%d "
        "default_score=%s metrics=%s",
        where.c_str(), nworkers, use_uring ? "io_uring" : "epoll", opt.max_frame_size,
        opt.pipelining ? 1 : 0,
        opt.default_score < 0 ? "random" : std::to_string(opt.default_score).c_str(),
        opt.metrics.empty() ? "off" : metrics.address().c_str());

    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (auto& env : envs) {
        threads.emplace_back([&env, use_uring, &failures] {
            const int rc = use_uring ? run_uring_worker(env) : run_epoll_worker(env);
            if (rc != 0) failures.fetch_add(1);
        });
    }
    readiness().set_listening(); // /readyz: listeners bound, workers started

    auto wake_all = [&] {
        for (auto& env : envs) {
            const std::uint64_t one = 1;
            ssize_t w = ::write(env.wake_fd, &one, sizeof one);
            (void)w;
        }
    };
    int exit_code = 0;
    while (true) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0) continue;
        if (sig == SIGTERM || sig == SIGINT) {
            log(level::info, "event=stopping signal=%s shutdown_timeout_s=%u drain_idle_s=%u",
                sig == SIGTERM ? "SIGTERM" : "SIGINT", opt.shutdown_timeout_s, opt.drain_idle_s);
            readiness().set_stopping(); // /readyz: 503 while draining
            wake_all();
            break;
        }
        if (sig == SIGHUP) {
            log(level::info, "event=reload_requested signal=SIGHUP sources=%zu",
                sources.files().size());
            reloader.request();
        }
    }
    for (auto& t : threads) t.join();
    reloader.stop();
    metrics.stop();
    for (auto& env : envs) {
        for (std::size_t i = 0; i < env.listen_fds.size(); ++i)
            if (env.listen_is_tcp[i]) ::close(env.listen_fds[i]);
        ::close(env.wake_fd);
        ::close(env.handoff_rfd);
        ::close(env.handoff_wfd);
    }
    for (int fd : shared_fds) ::close(fd);
    if (!opt.unix_path.empty()) ::unlink(opt.unix_path.c_str());
    if (failures.load() != 0) exit_code = 1;
    std::uint64_t notifies = 0, conns = 0;
    for (auto& s : stats) {
        notifies += s->notify_frames.get();
        conns += s->conns_total.get();
    }
    log(level::info, "event=stopped connections_total=%llu notify_total=%llu exit=%d",
        static_cast<unsigned long long>(conns), static_cast<unsigned long long>(notifies),
        exit_code);
    return exit_code;
}
