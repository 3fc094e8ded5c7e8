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
#include <memory>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <spop/server/server.hpp>

#include "decisions/stats.hpp"
#if SPOP_AGENT_REDIS
#include "decisions/follower.hpp"
#endif
#include "iprep/mmdb.hpp"
#include "iprep/reloader.hpp"
#include "iprep/service.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "options.hpp"
#include "ratelimit/gateway.hpp"
#include "stats.hpp"
#if SPOP_AGENT_REDIS
#include "ratelimit/limiter.hpp"
#include "redis/url.hpp"
#endif

using namespace agent;
using spop::server::mono_ns;

namespace {

int die(const std::string& msg) {
    std::fprintf(stderr, "agent: %s\n", msg.c_str());
    return 1;
}

/// A bad command line exits 2, as a bad flag does: the unit's RestartPreventExitStatus, so
/// systemd stops with the error instead of restarting the agent every second (die(): 1).
int bad_usage(const std::string& msg) {
    std::fprintf(stderr, "agent: %s\n", msg.c_str());
    return 2;
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
    // Live decisions: the URL is checked before anything starts.
#if SPOP_AGENT_REDIS
    redis::endpoint decisions_ep;
    if (!opt.decisions.empty()) {
        std::string why;
        if (!redis::parse_url(opt.decisions, decisions_ep, why)) {
            std::fprintf(stderr, "agent: --decisions: %s\n", why.c_str());
            return 2;
        }
    }
#else
    if (!opt.decisions.empty()) {
        std::fprintf(stderr, "agent: --decisions: this agent was built without hiredis "
                             "(install libhiredis-dev and rebuild with -Dredis=enabled)\n");
        return 2;
    }
#endif
    // Shared rate limits: the URL is checked now, Redis is reached only once serving.
    ratelimit::config rate_cfg;
    rate_cfg.limit = opt.rate_limit;
    rate_cfg.window_s = opt.rate_window_s;
    rate_cfg.fail =
        opt.rate_fail_closed ? ratelimit::fail_policy::closed : ratelimit::fail_policy::open;
#if SPOP_AGENT_REDIS
    redis::endpoint rate_ep;
    if (!opt.rate_redis.empty()) {
        std::string why;
        if (!redis::parse_url(opt.rate_redis, rate_ep, why)) {
            std::fprintf(stderr, "agent: --rate-redis: %s: '%s'\n", why.c_str(),
                         opt.rate_redis.c_str());
            return 2;
        }
        rate_cfg.enabled = true;
    }
#else
    if (!opt.rate_redis.empty()) {
        std::fprintf(stderr, "agent: --rate-redis: this agent was built without libhiredis "
                             "(rebuild with -Dredis=enabled)\n");
        return 2;
    }
#endif
    // Before the server: the workers' services point into it until they are gone.
    ratelimit::gateway rate_gw(opt.workers, opt.max_deferred, rate_cfg);

    iprep::sources_config sources;
    for (const auto& l : opt.lists) sources.lists.push_back({l.path, l.score});
    sources.allow = opt.allow_lists;
    sources.csv = opt.csv_files;
    sources.mmdb = opt.mmdb;
    sources.max_file_size = opt.max_file_size;

    std::string err;
    // What only the command line can get wrong: the listen addresses, the Unix path, --metrics,
    // --user and --cpus (against the CPUs the unit or taskset gives the process). A port in use
    // or io_uring missing may go away: those stay die() below.
    {
        if (!spop::server::check_cpus_allowed(opt.cpus, err)) return bad_usage(err);
        std::vector<spop::server::listen_spec> specs;
        if (!spop::server::resolve_listen_specs(opt, specs, err)) return bad_usage(err);
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (!opt.metrics.empty() && !parse_metrics_address(opt.metrics, ss, len, err))
            return bad_usage(err);
        if (!opt.user.empty() && getpwnam(opt.user.c_str()) == nullptr)
            return bad_usage("unknown user '" + opt.user + "' for --user");
    }

    spop::server::server<iprep::service, worker_stats> srv(opt);
    // Backend, addresses and free ports are checked before the (maybe long) data load.
    if (!srv.check(err)) return die(err);

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

    // Reputation tables: loaded before any SPOP socket is bound or listens. A connection can only
    // be accepted by the kernel once a listener exists, so while the data loads a client (and
    // HAProxy's health check) is refused cleanly instead of waiting in the accept queue, and
    // reset when a bad file makes the agent exit. A bad file is fatal here.
    iprep::reputation_source rep;
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
    // Decisions follow Redis on a thread of their own. Waiting (bounded) for the first load
    // means a restarted agent does not answer without its decisions; Redis down must not keep
    // the agent from starting, so past the wait it starts without them.
    decisions::follower_stats decision_stats;
#if SPOP_AGENT_REDIS
    std::unique_ptr<decisions::follower> follower;
    if (!opt.decisions.empty()) {
        decisions::follower_config dcfg;
        dcfg.endpoint = decisions_ep;
        dcfg.max_decisions = opt.decisions_max;
        follower = std::make_unique<decisions::follower>(rep, std::move(dcfg), decision_stats);
        follower->start();
        if (opt.decisions_wait_ms != 0 && !follower->wait_first_sync(opt.decisions_wait_ms))
            log(level::warn,
                "event=decisions_not_loaded waited_ms=%u action=starting_without_decisions",
                opt.decisions_wait_ms);
    }
#endif
    readiness().set_data_loaded(); // /readyz: the first load succeeded (or there is no source)

    if (!srv.listen(err)) return die(err);
    const std::uint64_t seed =
        static_cast<std::uint64_t>(mono_ns()) ^ static_cast<std::uint64_t>(getpid());
    iprep::service_config svc_cfg;
    svc_cfg.default_score = opt.default_score;
    svc_cfg.var_name = opt.var_name;
    svc_cfg.category_var = opt.category_var;
    const bool use_uring = srv.uses_uring();
    const int nworkers = opt.workers;
    if (!opt.user.empty() && !drop_privileges(opt.user, err)) return die(err);

    if (!reloader.start(err)) return die(err);
    if (!opt.metrics.empty()) {
        metrics_sources msrc;
        for (const auto& s : srv.stats()) msrc.workers.push_back(s.get());
        msrc.reload = &reload_stats;
        if (!opt.decisions.empty()) msrc.decisions = &decision_stats;
        msrc.rate = &rate_gw;
        timespec ts{};
        clock_gettime(CLOCK_REALTIME, &ts);
        msrc.start_unix_ms = static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
        msrc.engine = use_uring ? "io_uring" : "epoll";
        msrc.version = SPOP_AGENT_VERSION;
        if (!metrics.start(std::move(msrc), err)) return die(err);
    }

    const std::string where = srv.where();
    log(level::info,
        "event=start listening on %s workers=%d engine=%s cpus=%s max_frame_size=%u "
        "pipelining=%d default_score=%s metrics=%s",
        where.c_str(), nworkers, use_uring ? "io_uring" : "epoll",
        opt.cpus.empty() ? "any" : spop::server::cpu_list_text(opt.cpus).c_str(),
        opt.max_frame_size, opt.pipelining ? 1 : 0,
        opt.default_score < 0 ? "random" : std::to_string(opt.default_score).c_str(),
        opt.metrics.empty() ? "off" : metrics.address().c_str());

#if SPOP_AGENT_REDIS
    // The Redis thread answers within 3/4 of the engine's deferred deadline, so that the
    // engine's no-op fallback does not have to.
    std::unique_ptr<ratelimit::limiter> rate_limiter;
    if (rate_cfg.enabled) {
        const std::uint32_t budget = opt.deferred_timeout_ms * 3 / 4;
        rate_limiter = std::make_unique<ratelimit::limiter>(rate_gw, rate_ep, budget ? budget : 1);
        rate_limiter->start();
        log(level::info, "event=rate_limits redis=%s limit=%u window_s=%u fail=%s budget_ms=%u",
            rate_ep.describe().c_str(), rate_cfg.limit, rate_cfg.window_s,
            opt.rate_fail_closed ? "closed" : "open", budget ? budget : 1);
    }
#endif

    // One iprep::service per worker, built on its thread; scores are seeded per worker. The
    // service counts into its part of the worker's block (iprep::service_stats).
    const auto make_service = [&](const spop::server::worker_info<worker_stats>& w) {
        return iprep::service(svc_cfg, rep, w.stats,
                              seed + static_cast<std::uint64_t>(w.id) * 0x9E3779B97F4A7C15ull,
                              &rate_gw, w.id);
    };
    if (!srv.start(make_service, err)) return die(err);
    readiness().set_listening(); // /readyz: listeners bound, workers started

    int exit_code = 0;
    while (true) {
        const int sig = spop::server::wait_stop_signal(sigs);
        if (sig == 0 && srv.failed_workers() != 0) {
            // A worker ended on a fatal error (logged): stop all, exit 1, let the supervisor
            // restart the agent rather than run short of a worker.
            log(level::error, "event=stopping reason=worker_failed failed_workers=%d",
                srv.failed_workers());
            readiness().set_stopping();
            srv.stop();
            break;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            log(level::info, "event=stopping signal=%s shutdown_timeout_s=%u drain_idle_s=%u",
                sig == SIGTERM ? "SIGTERM" : "SIGINT", opt.shutdown_timeout_s, opt.drain_idle_s);
            readiness().set_stopping(); // /readyz: 503 while draining
            srv.stop();
            break;
        }
        if (sig == SIGHUP) {
            log(level::info, "event=reload_requested signal=SIGHUP sources=%zu",
                sources.files().size());
            reloader.request();
        }
    }
    exit_code = srv.wait();
#if SPOP_AGENT_REDIS
    if (rate_limiter) rate_limiter->stop(); // before the engine's ticket pools go
#endif
    reloader.stop();
#if SPOP_AGENT_REDIS
    if (follower) follower->stop();
#endif
    metrics.stop();
    std::uint64_t notifies = 0, conns = 0;
    for (const auto& s : srv.stats()) {
        notifies += s->notify_frames.get();
        conns += s->conns_total.get();
    }
    log(level::info, "event=stopped connections_total=%llu notify_total=%llu exit=%d",
        static_cast<unsigned long long>(conns), static_cast<unsigned long long>(notifies),
        exit_code);
    return exit_code;
}
