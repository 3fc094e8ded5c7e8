// spoa-example's random IP reputation, answered later: every check-client-ip NOTIFY is
// deferred (spop::ticket) and completed by a small thread pool --delay-us after it arrived, so
// anyone can see and measure deferred answers against the synchronous random_agent:
//   deferred_agent -p 12345 -n 2 --delay-us 1000 [--threads 1] [--cpus 0-1]
// Each worker has its own pool (--threads per worker), started by the worker's service, so
// with --cpus the pool shares its worker's CPU: the hand-off and the answer are switches on
// one core, not wakeups of another (BENCHMARKS.md: on a VM that is most of the hop's cost).
// --threads 0 --delay-us 0 answers each ticket on its worker at the end of the turn (the
// deferral machinery alone, no thread hop).
// Tickets not completed within the engine's deadline (--deadline-ms, 400 by default) get the
// no-op ACK.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string_view>
#include <thread>
#include <vector>

#include <spop/message.hpp>
#include <spop/server/server.hpp>

#include "flags.hpp"

using clock_type = std::chrono::steady_clock;

/// Threads that complete tickets `delay` after they were posted, in order (one delay for all).
/// Workers post a turn's tickets at once (on_turn_end) and each thread completes every due
/// ticket per wakeup: a wakeup per batch, not per NOTIFY, on both sides.
/// The random reputation answer: sess.ip_score 0..100.
inline void answer(spop::ticket& t, std::minstd_rand& rng) {
    const auto score = static_cast<std::uint32_t>(rng() % 101);
    t.complete([&](spop::ack_writer& a) {
        a.set_var(spop::var_scope::sess, "ip_score", spop::value::from_uint32(score));
    });
}

class delay_pool {
  public:
    delay_pool(int threads, std::chrono::microseconds delay) : delay_(delay) {
        for (int i = 0; i < threads; ++i) threads_.emplace_back([this, i] { run(i); });
    }
    ~delay_pool() { // tickets still queued are dropped: the engine answers with the fallback
        {
            std::lock_guard<std::mutex> g(m_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) t.join();
    }
    /// --threads 0 (with --delay-us 0): the workers answer their own tickets at the end of
    /// each turn. Measures the deferral machinery alone, without a hop to another thread.
    [[nodiscard]] bool inline_answers() const noexcept { return threads_.empty(); }

    /// Takes every ticket of `batch` (left empty, its capacity kept for the next turn).
    void post(std::vector<spop::ticket>& batch) {
        const clock_type::time_point due = clock_type::now() + delay_;
        {
            std::lock_guard<std::mutex> g(m_);
            for (spop::ticket& t : batch) q_.push_back({std::move(t), due});
        }
        batch.clear();
        cv_.notify_one();
    }

  private:
    struct item {
        spop::ticket t;
        clock_type::time_point due;
    };
    void run(int id) {
        std::minstd_rand rng(std::random_device{}() + static_cast<unsigned>(id));
        std::vector<spop::ticket> due_now;
        std::unique_lock<std::mutex> lk(m_);
        while (!stop_) {
            if (q_.empty()) {
                cv_.wait(lk);
                continue;
            }
            const clock_type::time_point now = clock_type::now();
            if (now < q_.front().due) {
                // A copy: another pool thread may pop the front while this one waits.
                const clock_type::time_point due = q_.front().due;
                cv_.wait_until(lk, due);
                continue;
            }
            while (!q_.empty() && q_.front().due <= now) {
                due_now.push_back(std::move(q_.front().t));
                q_.pop_front();
            }
            lk.unlock();
            for (spop::ticket& t : due_now) answer(t, rng);
            due_now.clear();
            lk.lock();
        }
    }
    std::chrono::microseconds delay_;
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<item> q_;
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

class deferred_random {
  public:
    static constexpr bool defers = true; // ticket exhaustion back-pressures
    // Built on its worker's thread (the server's factory): the pool's threads inherit that
    // thread's CPU (options::cpus) and its blocked SIGTERM/SIGINT (server::run() blocks them
    // before starting the workers). Never more tickets per turn than the per-worker cap
    // (options::max_deferred, 4096 here): push_back below never allocates.
    deferred_random(int threads, std::chrono::microseconds delay)
        : pool_(std::make_unique<delay_pool>(threads, delay)) {
        pending_.reserve(4096);
    }
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        has_ip_ = false;
        if (const spop::errc e = routes.dispatch(req, ack, *this); e != spop::errc::ok) return e;
        if (!has_ip_) return spop::errc::ok; // nothing to score: the no-op ACK now
        if (spop::ticket t = req.defer()) pending_.push_back(std::move(t));
        return spop::errc::ok;
    }
    /// The engine's hook after a turn's NOTIFYs: one hand-over to the pool per turn.
    void on_turn_end() {
        if (pending_.empty()) return;
        if (!pool_->inline_answers()) return pool_->post(pending_);
        for (spop::ticket& t : pending_) answer(t, rng_); // --threads 0: no thread hop
        pending_.clear();
    }

  private:
    void check_client_ip(const spop::message_view& m, spop::ack_writer&) noexcept {
        if (m.ip(0)) has_ip_ = true;
    }
    static constexpr spop::router routes{
        spop::on("check-client-ip", &deferred_random::check_client_ip)};
    // Destroyed with the service, when its worker ends (before the server: the pool's queued
    // tickets are dropped into the server's ticket pool, which answers with the fallback).
    std::unique_ptr<delay_pool> pool_;
    std::vector<spop::ticket> pending_; // this turn's tickets (capacity reused)
    std::minstd_rand rng_{std::random_device{}()};
    bool has_ip_ = false;
};

int main(int argc, char** argv) {
    spop::server::options o;
    o.workers = 2;
    long delay_us = 1000;
    int threads = 1; // per worker: one answers in arrival order; more may answer out of order
    for (int i = 1; i < argc; i += 2) {
        const std::string_view flag = argv[i];
        if (flag == "-h" || flag == "--help") {
            std::printf(
                "usage: %s [-p PORT] [-n WORKERS] [-m MAX_FRAME] [-a ADDR]... [--engine E] "
                "[--cpus LIST] [--delay-us N] [--threads T per worker] [--deadline-ms MS]\n",
                argv[0]);
            return 0;
        }
        if (i + 1 >= argc)
            return std::fprintf(stderr, "deferred_agent: %s needs a value\n", argv[i]), 2;
        const std::string_view v = argv[i + 1];
        long n = 0;
        if (example::server_flag(o, flag, v))
            continue;
        else if (flag == "--delay-us" && example::to_long(v, 0, 10000000, n))
            delay_us = n;
        else if (flag == "--threads" && example::to_long(v, 0, 256, n))
            threads = static_cast<int>(n);
        else if (flag == "--deadline-ms" && example::to_long(v, 1, 600000, n))
            o.deferred_timeout_ms = static_cast<std::uint32_t>(n); // then the no-op ACK
        else
            return std::fprintf(stderr, "deferred_agent: bad option %s %s\n", argv[i], argv[i + 1]),
                   2;
    }
    if (threads == 0 && delay_us != 0)
        return std::fprintf(stderr, "deferred_agent: --threads 0 answers on the workers at once: "
                                    "it needs --delay-us 0\n"),
               2;
    spop::server::server<deferred_random> srv(o);
    return srv.run([threads, delay_us](const auto&) {
        return deferred_random(threads, std::chrono::microseconds(delay_us));
    });
}
