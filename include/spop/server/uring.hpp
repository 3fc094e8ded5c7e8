// spop::server io_uring backend: one ring per worker thread, nothing shared.
//
// Loop rules (one turn = submit_and_wait, then every ready CQE, then one cq_advance):
// - accept is multishot per listener; recv is multishot on a provided-buffer ring, so no
//   buffer is pinned by an idle connection;
// - a receive completion is fed to the connection in place (zero copy) and its buffer goes
//   straight back to the ring at the end of the turn; -ENOBUFS means the ring ran dry: the
//   recv is re-armed after this turn's buffers are returned (back-pressure, not an error);
// - when F_MORE is clear the multishot recv ended and is re-armed, unless the connection is
//   back-pressured (its ACKs are not being read), in which case it waits until they are;
// - back-pressure is TCP's: a connection that cannot answer more stops taking bytes (feed()
//   returns what it consumed); the recv is cancelled, and what the multishot recv still
//   delivers is held, in order, until the connection takes input again (nothing is dropped,
//   nobody is disconnected). Past half the ring, held bytes are copied out so that one
//   connection's back-pressure never starves the others of receive buffers;
// - end of stream (recv 0) is a half-close: every frame before it is answered and sent, then
//   the socket is closed;
// - after all CQEs of a turn, one send per connection that has new output: ACKs of a whole
//   batch leave in one send, always whole frames;
// - a connection is freed only when none of its requests are in flight (user_data carries a
//   generation so a late CQE can never reach a reused slot).
//
// Waiting (one io_uring_enter per turn submits and waits):
// - by default a turn ends as soon as one completion is ready (liburing's submit_and_wait). The
//   completions of the turn's own sends (mostly inline, during the submit) end the next wait at
//   once; that second, short turn often finds the peer's next request already there, which is
//   cheaper than sleeping (measured: counting the sends in the wait made c=1 d=1 cost 1.7x the
//   agent CPU per frame, one wakeup per frame instead of 0.6; BENCHMARKS.md);
// - with options::batch_window_us = W > 0, a kernel with IORING_FEAT_MIN_TIMEOUT (6.12+) and
//   two connections or more on the worker, the wait asks for one completion per connection
//   of the worker, but for at most W microseconds once the first one is there (min_wait_usec
//   of IORING_ENTER_EXT_ARG): fewer wakeups per frame under load, at most W more latency. With
//   no completion at all it sleeps as before (the 1 s general timeout only bounds the wait).
//   Older kernels: the default wait, and a warning. liburing 2.3 (Debian 12) predates
//   min-wait, so the flag, the struct and the enter call are spelled out here;
// - the ring fd is registered (IORING_REGISTER_RING_FDS, 5.18+) when the kernel allows it, so
//   io_uring_enter skips the fd lookup; otherwise the plain fd is used.
#pragma once

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <liburing.h>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <utility>

#include "worker.hpp"

namespace spop::server {
namespace uring_detail {

inline constexpr unsigned sq_entries = 1024;
inline constexpr unsigned buf_count = 256; // power of two
inline constexpr unsigned buf_size = spop::default_feed_chunk;
inline constexpr std::uint16_t no_buf = 0xFFFF;
inline constexpr unsigned short buf_group = 1;

// Kernel UAPI newer than liburing 2.3's headers; every use is probed at run time.
/// IORING_FEAT_MIN_TIMEOUT (6.12): io_uring_getevents_arg::min_wait_usec is honoured.
inline constexpr unsigned feat_min_timeout = 1U << 15;
/// struct io_uring_getevents_arg as of 6.12 (older headers call min_wait_usec `pad`).
struct getevents_arg {
    std::uint64_t sigmask;
    std::uint32_t sigmask_sz;
    std::uint32_t min_wait_usec;
    std::uint64_t ts;
};
static_assert(sizeof(getevents_arg) == sizeof(io_uring_getevents_arg));

enum op : std::uint8_t {
    op_accept = 1,
    op_recv,
    op_send,
    op_wake,
    op_timer,
    op_cancel,
    op_handoff,
    op_tickets,
    op_deadline,
    op_drain, ///< while stopping: the lame-duck drain's check (worker_core::drain_check_ms)
};

inline constexpr std::uint64_t pack(op o, std::uint32_t idx, std::uint32_t gen) {
    return std::uint64_t{o} | (std::uint64_t{idx} << 8) | (std::uint64_t{gen & 0xFFFFFF} << 40);
}

/// The io_uring backend's part of a connection.
struct uconn_io {
    std::uint32_t send_inflight = 0; ///< bytes of output() handed to the kernel
    std::uint8_t ops = 0;            ///< requests in flight (recv, send)
    bool recv_armed = false;
    bool recv_cancelled = false;
    bool dead = false;  ///< closed; the slot is freed once no request is in flight
    bool dirty = false; ///< queued for end_of_turn()
    /// Input the connection did not take yet (back-pressure), in arrival order: ring buffers
    /// chained through the worker's held_next_ (head..tail), then bytes copied out of the ring.
    std::uint16_t held_head = no_buf;
    std::uint16_t held_tail = no_buf;
    std::uint32_t held_n = 0;
    std::vector<std::uint8_t> spill;
    std::size_t spill_off = 0;
    [[nodiscard]] bool holds() const noexcept { return held_n != 0 || spill_off < spill.size(); }
};

inline int ring_setup(io_uring& ring, std::string& why) {
    const unsigned attempts[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                                 IORING_SETUP_COOP_TASKRUN, 0};
    int rc = -EINVAL;
    for (unsigned flags : attempts) {
        io_uring_params p{};
        p.flags = flags | IORING_SETUP_CQSIZE;
        p.cq_entries = sq_entries * 4;
        rc = io_uring_queue_init_params(sq_entries, &ring, &p);
        if (rc == 0) return 0;
        if (rc != -EINVAL) break;
    }
    std::string disabled;
    {
        std::ifstream f("/proc/sys/kernel/io_uring_disabled");
        std::getline(f, disabled);
    }
    if (rc == -EPERM) {
        why = "io_uring_setup: operation not permitted (kernel.io_uring_disabled=" +
              (disabled.empty() ? std::string("?") : disabled) +
              ", or a seccomp profile such as "
              "Docker's default blocks io_uring)";
    } else if (rc == -ENOSYS) {
        why =
            "io_uring_setup: not implemented (kernel without io_uring, or the syscall is filtered)";
    } else if (rc == -ENOMEM) {
        why = "io_uring_setup: cannot allocate the ring (RLIMIT_MEMLOCK too low?)";
    } else {
        why = std::string("io_uring_setup: ") + std::strerror(-rc);
    }
    return rc;
}

/// One worker thread's io_uring event loop, serving `Service`.
template <class Service>
class uring_worker : public worker_core<uring_worker<Service>, Service, uconn_io> {
    using core = worker_core<uring_worker<Service>, Service, uconn_io>;
    using slot = typename core::slot;
    friend core;
    using core::conns_;
    using core::env_;

  public:
    template <class Factory>
    uring_worker(worker_env& env, Factory& make) : core(env, make) {}

    ~uring_worker() {
        if (br_ != nullptr) {
            io_uring_unregister_buf_ring(&ring_, buf_group);
            munmap(br_, br_bytes_);
        }
        if (bufs_ != nullptr) munmap(bufs_, std::size_t{buf_count} * buf_size);
        if (ring_ok_) io_uring_queue_exit(&ring_);
    }

    int run() {
        std::string why;
        if (uring_detail::ring_setup(ring_, why) != 0) {
            log(level::error, "event=fatal worker=%d reason=\"%s\"", env_.id, why.c_str());
            return 1;
        }
        ring_ok_ = true;
        if (!setup_buffers()) return 1;
        setup_wait();
        for (std::uint32_t i = 0; i < env_.listen_fds.size(); ++i) arm_accept(i);
        arm_wake();
        arm_timer();
        arm_handoff();
        arm_tickets();
        this->clock_turn();
        while (true) {
            // Tickets finished by other threads during the last turn, or NOTIFYs processed
            // after its turn_end(): poll, do not sleep.
            const bool sleep = !this->notified_after_turn_end() && this->tickets_.worker_sleep();
            const int rc = sleep ? wait_turn() : io_uring_submit(&ring_);
            this->tickets_.worker_awake();
            if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME) {
                log(level::error, "event=fatal worker=%d what=submit_and_wait error=\"%s\"",
                    env_.id, std::strerror(-rc));
                break;
            }
            this->clock_turn();
            io_uring_cqe* cqe;
            unsigned head;
            unsigned seen = 0;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                handle(cqe);
                ++seen;
            }
            io_uring_cq_advance(&ring_, seen);
            if (!sleep) this->tickets_turn();
            end_of_turn();
            if (this->finished()) break;
        }
        // The last turn's sends (with --shutdown-timeout 0, the stop's fallbacks and
        // AGENT-DISCONNECTs): to the kernel before the sockets close, as epoll's last flush.
        io_uring_submit(&ring_);
        for (std::uint32_t i = 0; i < conns_.size(); ++i)
            if (conns_[i] && !conns_[i]->io.dead) ::close(conns_[i]->fd);
        // Connections handed over during the stop: close them (this->stopping_ is set).
        int fds[64];
        for (ssize_t r; (r = ::read(env_.handoff_rfd, fds, sizeof fds)) > 0;)
            this->adopt_handed(fds, static_cast<std::size_t>(r));
        return 0;
    }

    // The core's hooks ------------------------------------------------------------------------
    void on_new(slot& e) { arm_recv(e.idx); }
    void kick(std::uint32_t idx) { mark_dirty(idx); }
    [[nodiscard]] static bool alive(const slot& e) noexcept { return !e.io.dead; }
    void stop_listening() {
        // Leave the SO_REUSEPORT group at once: a listener kept alive by a pending accept
        // would otherwise take (and then reset) connections meant for a restarted agent.
        for (std::uint32_t i = 0; i < env_.listen_fds.size(); ++i) {
            ::shutdown(env_.listen_fds[i], SHUT_RDWR);
            io_uring_sqe* s = sqe();
            io_uring_prep_cancel64(s, pack(op_accept, i, 0), 0);
            io_uring_sqe_set_data64(s, pack(op_cancel, 0, 0));
        }
        close_tcp_listeners(env_); // a pending accept keeps its own reference until cancelled
    }

  private:
    /// The wait strategy: min-wait batching when asked for and supported, a registered ring fd.
    void setup_wait() {
        reg_ring_ = io_uring_register_ring_fd(&ring_) == 1;
        ext_arg_ = (ring_.features & IORING_FEAT_EXT_ARG) != 0;
        const std::uint32_t want = env_.opt->batch_window_us;
        window_us_ = (want != 0 && ext_arg_ && (ring_.features & feat_min_timeout) != 0) ? want : 0;
        if (want != 0 && window_us_ == 0 && env_.id == 0)
            log(level::warn,
                "event=batch_window_unsupported batch_window_us=%u reason=\"kernel lacks "
                "IORING_FEAT_MIN_TIMEOUT (6.12+); waiting for one completion per turn\"",
                want);
        // Which ring_setup attempt the kernel took (DEFER_TASKRUN is 6.1+, COOP_TASKRUN 5.19+).
        const char* taskrun = (ring_.flags & IORING_SETUP_DEFER_TASKRUN) != 0  ? "defer"
                              : (ring_.flags & IORING_SETUP_COOP_TASKRUN) != 0 ? "coop"
                                                                               : "default";
        log(level::debug,
            "event=wait_strategy worker=%d batch_window_us=%u registered_ring=%d ext_arg=%d "
            "taskrun=%s",
            env_.id, window_us_, reg_ring_ ? 1 : 0, ext_arg_ ? 1 : 0, taskrun);
    }

    /// Submits this turn's requests and waits for completions (see the header comment).
    int wait_turn() {
        // One connection: nothing to batch, and the min-wait timer only costs (measured: c=1
        // d=1 at 1.4x the CPU per frame with a window).
        if (window_us_ == 0 || this->live_ <= 1) return io_uring_submit_and_wait(&ring_, 1);
        const unsigned to_submit = flush_sq();
        getevents_arg arg{};
        arg.sigmask_sz = _NSIG / 8;
        unsigned want = 0;
        if (io_uring_cq_ready(&ring_) == 0) {
            // One completion per connection (d=1 traffic), or the window after the first.
            want = std::clamp<unsigned>(this->live_, 1, 256);
            arg.min_wait_usec = window_us_;
            arg.ts = reinterpret_cast<std::uint64_t>(&idle_ts_);
        }
        unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
        int fd = ring_.ring_fd;
        if (reg_ring_) {
            flags |= IORING_ENTER_REGISTERED_RING;
            fd = ring_.enter_ring_fd;
        }
        const long r = ::syscall(__NR_io_uring_enter, fd, to_submit, want, flags, &arg, sizeof arg);
        return r < 0 ? -errno : static_cast<int>(r);
    }

    /// Hands the SQEs queued with io_uring_get_sqe() to the kernel ring, as liburing's submit
    /// does (the SQ array filled as an identity map, whichever liburing set it up); returns how
    /// many the kernel has not consumed yet.
    unsigned flush_sq() {
        io_uring_sq& sq = ring_.sq;
        const unsigned mask = sq.ring_mask;
        unsigned ktail = *sq.ktail;
        for (unsigned n = sq.sqe_tail - sq.sqe_head; n != 0; --n) {
            sq.array[ktail & mask] = sq.sqe_head & mask;
            ++ktail;
            ++sq.sqe_head;
        }
        io_uring_smp_store_release(sq.ktail, ktail);
        return ktail - io_uring_smp_load_acquire(sq.khead);
    }

    bool setup_buffers() {
        br_bytes_ = buf_count * sizeof(io_uring_buf);
        void* mem =
            mmap(nullptr, br_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        void* data = mmap(nullptr, std::size_t{buf_count} * buf_size, PROT_READ | PROT_WRITE,
                          MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (mem == MAP_FAILED || data == MAP_FAILED) {
            log(level::error, "event=fatal worker=%d what=mmap error=\"%s\"", env_.id,
                std::strerror(errno));
            return false;
        }
        br_ = static_cast<io_uring_buf_ring*>(mem);
        bufs_ = static_cast<std::uint8_t*>(data);
        io_uring_buf_ring_init(br_);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<std::uint64_t>(br_);
        reg.ring_entries = buf_count;
        reg.bgid = buf_group;
        if (const int rc = io_uring_register_buf_ring(&ring_, &reg, 0); rc != 0) {
            log(level::error, "event=fatal worker=%d what=register_buf_ring error=\"%s\"", env_.id,
                std::strerror(-rc));
            munmap(br_, br_bytes_);
            br_ = nullptr;
            return false;
        }
        for (unsigned i = 0; i < buf_count; ++i)
            io_uring_buf_ring_add(br_, bufs_ + std::size_t{i} * buf_size, buf_size,
                                  static_cast<unsigned short>(i), io_uring_buf_ring_mask(buf_count),
                                  static_cast<int>(i));
        io_uring_buf_ring_advance(br_, static_cast<int>(buf_count));
        return true;
    }

    io_uring_sqe* sqe() {
        io_uring_sqe* s = io_uring_get_sqe(&ring_);
        while (s == nullptr) {
            io_uring_submit(&ring_);
            s = io_uring_get_sqe(&ring_);
        }
        return s;
    }

    void arm_accept(std::uint32_t li) {
        io_uring_sqe* s = sqe();
        io_uring_prep_multishot_accept(s, env_.listen_fds[li], nullptr, nullptr,
                                       SOCK_NONBLOCK | SOCK_CLOEXEC);
        io_uring_sqe_set_data64(s, pack(op_accept, li, 0));
    }
    void arm_wake() {
        io_uring_sqe* s = sqe();
        io_uring_prep_read(s, env_.wake_fd, &wake_val_, sizeof wake_val_, 0);
        io_uring_sqe_set_data64(s, pack(op_wake, 0, 0));
    }
    void arm_handoff() {
        if (env_.handoff_rfd < 0) return;
        io_uring_sqe* s = sqe();
        io_uring_prep_read(s, env_.handoff_rfd, handoff_buf_, sizeof handoff_buf_, 0);
        io_uring_sqe_set_data64(s, pack(op_handoff, 0, 0));
    }
    void arm_tickets() {
        if (this->tickets_.event_fd() < 0) return;
        io_uring_sqe* s = sqe();
        io_uring_prep_read(s, this->tickets_.event_fd(), &tickets_val_, sizeof tickets_val_, 0);
        io_uring_sqe_set_data64(s, pack(op_tickets, 0, 0));
    }
    /// The core's hook: wake up at `ms` (monotonic) to expire deferred answers.
    void arm_deadline(std::uint64_t ms) {
        if (deadline_ms_ != 0 && deadline_ms_ <= ms) return; // one armed earlier
        const std::uint64_t now = mono_ns() / 1000000;
        const std::uint64_t wait = ms > now ? ms - now : 0;
        deadline_ts_.tv_sec = static_cast<long long>(wait / 1000);
        deadline_ts_.tv_nsec = static_cast<long long>((wait % 1000) * 1000000);
        io_uring_sqe* s = sqe();
        io_uring_prep_timeout(s, &deadline_ts_, 0, 0);
        io_uring_sqe_set_data64(s, pack(op_deadline, 0, 0));
        deadline_ms_ = ms;
    }
    void on_handoff(io_uring_cqe* cqe) {
        if (cqe->res > 0) this->adopt_handed(handoff_buf_, static_cast<std::size_t>(cqe->res));
        if (cqe->res != -ECANCELED) arm_handoff();
    }
    void arm_timer() {
        timer_ts_.tv_sec = 1;
        timer_ts_.tv_nsec = 0;
        io_uring_sqe* s = sqe();
        io_uring_prep_timeout(s, &timer_ts_, 0, 0);
        io_uring_sqe_set_data64(s, pack(op_timer, 0, 0));
    }
    void arm_drain() {
        drain_ts_.tv_sec = 0;
        drain_ts_.tv_nsec = static_cast<long long>(this->drain_check_ms) * 1000000;
        io_uring_sqe* s = sqe();
        io_uring_prep_timeout(s, &drain_ts_, 0, 0);
        io_uring_sqe_set_data64(s, pack(op_drain, 0, 0));
    }
    void arm_recv(std::uint32_t idx) {
        slot& e = *conns_[idx];
        io_uring_sqe* s = sqe();
        io_uring_prep_recv_multishot(s, e.fd, nullptr, 0, 0);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = buf_group;
        io_uring_sqe_set_data64(s, pack(op_recv, idx, e.gen));
        e.io.recv_armed = true;
        e.io.recv_cancelled = false;
        ++e.io.ops;
    }
    void cancel_recv(slot& e) {
        if (!e.io.recv_armed || e.io.recv_cancelled) return;
        io_uring_sqe* s = sqe();
        io_uring_prep_cancel64(s, pack(op_recv, e.idx, e.gen), 0);
        io_uring_sqe_set_data64(s, pack(op_cancel, e.idx, e.gen));
        e.io.recv_cancelled = true;
    }

    void handle(io_uring_cqe* cqe) {
        const std::uint64_t ud = io_uring_cqe_get_data64(cqe);
        const auto o = static_cast<op>(ud & 0xFF);
        const auto idx = static_cast<std::uint32_t>((ud >> 8) & 0xFFFFFFFF);
        const auto gen = static_cast<std::uint32_t>(ud >> 40);
        switch (o) {
        case op_accept:
            return on_accept(idx, cqe);
        case op_recv:
            return on_recv(idx, gen, cqe);
        case op_send:
            return on_send(idx, gen, cqe);
        case op_wake:
            if (!this->stopping_) {
                this->begin_stop();
                arm_drain();
            }
            return;
        case op_drain:
            this->drain_step();
            if (this->live_ != 0) arm_drain();
            return;
        case op_timer:
            rearm_starved();
            for (std::uint32_t li : accept_rearm_)
                if (!this->stopping_) arm_accept(li);
            accept_rearm_.clear();
            this->tick();
            if (!this->stopping_ || this->live_ != 0) arm_timer();
            return;
        case op_cancel:
            return;
        case op_handoff:
            return on_handoff(cqe);
        case op_tickets:
            this->tickets_turn();
            if (cqe->res != -ECANCELED) arm_tickets();
            return;
        case op_deadline:
            deadline_ms_ = 0;
            this->tickets_turn();
            return;
        }
    }

    void on_accept(std::uint32_t li, io_uring_cqe* cqe) {
        const bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
        if (cqe->res < 0) {
            if (cqe->res != -ECANCELED && !this->stopping_) {
                unsigned sup = 0;
                if (this->accept_rl_.allow(this->now_, sup))
                    log(level::error, "event=accept_failed worker=%d error=\"%s\" suppressed=%u",
                        env_.id, std::strerror(-cqe->res), sup);
                // Re-armed by the timer: retrying at once on EMFILE would spin.
                if (!more) accept_rearm_.push_back(li);
            }
            return;
        }
        if (!more && !this->stopping_) arm_accept(li);
        const int fd = cqe->res;
        if (this->stopping_) {
            ::close(fd);
            return;
        }
        if (!admit(env_, fd, env_.listen_is_tcp[li], this->accept_rl_, this->now_)) return;
        std::string peer;
        if (log_enabled(level::warn)) {
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
                peer = peer_name(ss, len);
        }
        this->adopt(fd, std::move(peer));
    }

    void on_recv(std::uint32_t idx, std::uint32_t gen, io_uring_cqe* cqe) {
        const bool has_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
        const auto bid = static_cast<unsigned short>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        slot* e = this->find(idx, gen);
        if (!(cqe->flags & IORING_CQE_F_MORE) && e != nullptr) {
            e->io.recv_armed = false;
            --e->io.ops;
        }
        if (e == nullptr || e->io.dead) {
            if (has_buf) recycle(bid);
            if (e != nullptr) maybe_free(idx);
            return;
        }
        const int res = cqe->res;
        if (res > 0) {
            env_.stats->bytes_in.add(static_cast<std::uint64_t>(res));
            const auto len = static_cast<std::uint32_t>(res);
            if (e->draining || !has_buf) {
                if (has_buf) recycle(bid);
            } else if (e->io.holds() || !e->c.takes_input()) {
                hold(*e, bid, 0, len);
            } else {
                e->last_active_ms = this->now_ms_;
                const std::size_t took = this->feed(*e, buf(bid), len);
                if (took < len)
                    hold(*e, bid, static_cast<std::uint32_t>(took), len);
                else
                    recycle(bid);
            }
            mark_dirty(idx);
        } else if (res == 0) {
            if (e->draining) return kill(idx, "eof");
            // A half-close: what was received is still answered and flushed (service()).
            e->eof = true;
            e->c.on_peer_eof();
            mark_dirty(idx);
            return;
        } else if (res == -ENOBUFS) {
            // The ring ran dry: re-armed once buffers come back (end of a turn that returned
            // some, or the next tick), never in a tight loop.
            starved_.push_back(idx);
            return;
        } else if (res == -ECANCELED && e->io.recv_cancelled) {
            // We paused it (back-pressure); it is re-armed when the peer reads its ACKs.
        } else {
            // The connection (and its output buffer, which a send may still point into) goes
            // when its last request completes: maybe_free().
            kill(idx, res == -ECONNRESET ? "rst" : "error");
            return;
        }
        if (!e->io.recv_armed) mark_dirty(idx);
    }

    [[nodiscard]] std::uint8_t* buf(unsigned short bid) const noexcept {
        return bufs_ + std::size_t{bid} * buf_size;
    }

    /// Keeps bytes [off, len) of a receive buffer for a connection that cannot take them now,
    /// and stops its recv. Ring buffers are held in order; once half the ring is held (many
    /// back-pressured connections), bytes are copied out and the buffer goes back at once.
    void hold(slot& e, unsigned short bid, std::uint32_t off, std::uint32_t len) {
        if (e.c.discards_input()) {
            recycle(bid); // closing: feed() would discard it anyway
            return;
        }
        e.c.set_input_held();             // a graceful stop or end of stream waits for these bytes
        e.last_active_ms = this->now_ms_; // a back-pressured peer is not idle (lame-duck stop)
        if (e.io.spill_off < e.io.spill.size() || held_total_ >= buf_count / 2) {
            if (e.io.spill_off == e.io.spill.size()) {
                e.io.spill.clear();
                e.io.spill_off = 0;
            }
            e.io.spill.insert(e.io.spill.end(), buf(bid) + off, buf(bid) + len);
            recycle(bid);
        } else {
            held_off_[bid] = off;
            held_len_[bid] = len;
            held_next_[bid] = no_buf;
            if (e.io.held_tail == no_buf)
                e.io.held_head = bid;
            else
                held_next_[e.io.held_tail] = bid;
            e.io.held_tail = bid;
            ++e.io.held_n;
            ++held_total_;
        }
        if (e.c.state() == spop::conn_state::established) this->note_backpressure(e);
        cancel_recv(e);
    }

    /// Feeds held input, in order, while the connection takes it.
    void feed_held(slot& e) {
        while (e.io.held_n != 0 && e.c.takes_input()) {
            const std::uint16_t bid = e.io.held_head;
            const std::uint32_t rest = held_len_[bid] - held_off_[bid];
            const bool more = held_next_[bid] != no_buf || e.io.spill_off < e.io.spill.size();
            const std::size_t took = this->feed(e, buf(bid) + held_off_[bid], rest, more);
            if (took < rest) {
                held_off_[bid] += static_cast<std::uint32_t>(took);
                return;
            }
            e.io.held_head = held_next_[bid];
            if (e.io.held_head == no_buf) e.io.held_tail = no_buf;
            --e.io.held_n;
            --held_total_;
            recycle(bid);
        }
        if (e.io.held_n != 0 || e.io.spill_off == e.io.spill.size() || !e.c.takes_input()) return;
        e.io.spill_off +=
            this->feed(e, e.io.spill.data() + e.io.spill_off, e.io.spill.size() - e.io.spill_off);
        if (e.io.spill_off == e.io.spill.size()) {
            e.io.spill.clear();
            e.io.spill.shrink_to_fit(); // overload memory goes back once the peer caught up
            e.io.spill_off = 0;
        }
    }

    void release_held(slot& e) {
        while (e.io.held_n != 0) {
            const std::uint16_t bid = e.io.held_head;
            e.io.held_head = held_next_[bid];
            --e.io.held_n;
            --held_total_;
            recycle(bid);
        }
        e.io.held_tail = no_buf;
        e.io.spill.clear();
        e.io.spill.shrink_to_fit();
        e.io.spill_off = 0;
    }

    void on_send(std::uint32_t idx, std::uint32_t gen, io_uring_cqe* cqe) {
        slot* e = this->find(idx, gen);
        if (e == nullptr) return;
        --e->io.ops;
        e->io.send_inflight = 0;
        if (e->io.dead) return maybe_free(idx);
        if (cqe->res < 0) {
            kill(idx, cqe->res == -EPIPE || cqe->res == -ECONNRESET ? "rst" : "error");
            return;
        }
        this->sent(*e, static_cast<std::size_t>(cqe->res));
        if (e->io.holds()) feed_held(*e);
        mark_dirty(idx);
    }

    void mark_dirty(std::uint32_t idx) {
        slot& e = *conns_[idx];
        if (!e.io.dirty) {
            e.io.dirty = true;
            dirty_.push_back(idx);
        }
    }

    void recycle(unsigned short bid) {
        io_uring_buf_ring_add(br_, bufs_ + std::size_t{bid} * buf_size, buf_size, bid,
                              io_uring_buf_ring_mask(buf_count), recycled_++);
    }

    /// After every CQE of a turn: give buffers back, then one send per connection, re-arm recvs.
    void end_of_turn() {
        this->turn_end();
        // Tickets opened this turn need a deadline timer if none is armed.
        if (deadline_ms_ == 0 && this->tickets_.open_count() != 0) this->tickets_turn();
        if (recycled_ != 0) {
            io_uring_buf_ring_advance(br_, recycled_);
            recycled_ = 0;
            rearm_starved();
        }
        for (std::size_t k = 0; k < dirty_.size(); ++k) {
            const std::uint32_t idx = dirty_[k];
            if (!conns_[idx]) continue;
            slot& e = *conns_[idx];
            e.io.dirty = false;
            if (e.io.dead) continue;
            service(idx);
        }
        dirty_.clear();
    }

    void rearm_starved() {
        for (std::uint32_t idx : starved_) {
            if (idx < conns_.size() && conns_[idx] && !conns_[idx]->io.dead) mark_dirty(idx);
        }
        starved_.clear();
    }

    void service(std::uint32_t idx) {
        slot& e = *conns_[idx];
        if (e.io.holds() && e.c.takes_input()) feed_held(e);
        e.book.after_state(env_, e.c);
        const auto out = e.c.output();
        if (e.io.send_inflight == 0 && !out.empty()) {
            io_uring_sqe* s = sqe();
            io_uring_prep_send(s, e.fd, out.data(), out.size(), MSG_NOSIGNAL);
            io_uring_sqe_set_data64(s, pack(op_send, idx, e.gen));
            e.io.send_inflight = static_cast<std::uint32_t>(out.size());
            ++e.io.ops;
        }
        if (e.io.send_inflight == 0 && this->closing_step(idx) == core::step::killed) return;
        const bool want_recv = e.draining || (e.c.wants_input() && !e.io.holds());
        if (want_recv && !e.io.recv_armed)
            arm_recv(idx);
        else if (!want_recv && e.io.recv_armed) {
            if (e.c.state() == spop::conn_state::established && !e.eof) this->note_backpressure(e);
            cancel_recv(e);
        }
    }

    void kill(std::uint32_t idx, const char* how) {
        slot& e = *conns_[idx];
        if (e.io.dead) return;
        this->note_end(e, how);
        e.io.dead = true;
        release_held(e);
        ::shutdown(e.fd, SHUT_RDWR); // completes whatever is still in flight
        cancel_recv(e);
        maybe_free(idx);
    }

    void maybe_free(std::uint32_t idx) {
        slot& e = *conns_[idx];
        if (!e.io.dead || e.io.ops != 0) return;
        this->free_slot(idx);
    }

    io_uring ring_{};
    bool ring_ok_ = false;
    bool reg_ring_ = false;           ///< the ring fd is registered (IORING_ENTER_REGISTERED_RING)
    std::uint32_t window_us_ = 0;     ///< min-wait batching window in use, 0 = off
    bool ext_arg_ = false;            ///< IORING_FEAT_EXT_ARG (5.11+): the waits below
    __kernel_timespec idle_ts_{1, 0}; ///< bounds one wait; the 1 s timer ticks anyway
    io_uring_buf_ring* br_ = nullptr;
    std::size_t br_bytes_ = 0;
    std::uint8_t* bufs_ = nullptr;
    int recycled_ = 0;
    std::vector<std::uint32_t> dirty_;
    std::vector<std::uint32_t> accept_rearm_;
    std::vector<std::uint32_t> starved_;
    unsigned held_total_ = 0; ///< ring buffers held by back-pressured connections
    /// Per ring buffer, while a connection holds it: the next in its chain, and the bytes
    /// [off, len) not yet taken.
    std::uint16_t held_next_[buf_count]{};
    std::uint32_t held_off_[buf_count]{};
    std::uint32_t held_len_[buf_count]{};
    std::uint64_t wake_val_ = 0;
    std::uint64_t tickets_val_ = 0;
    __kernel_timespec deadline_ts_{};
    std::uint64_t deadline_ms_ = 0; ///< the deadline timer armed, 0 = none
    int handoff_buf_[64]{};
    __kernel_timespec timer_ts_{};
    __kernel_timespec drain_ts_{};
};

} // namespace uring_detail

using uring_detail::uring_worker;

/// Checks that this kernel and process can run the io_uring backend (ring setup flags,
/// multishot accept and recv, provided-buffer rings). On failure `why` names the cause.
inline bool uring_usable(std::string& why) {
    utsname u{};
    if (uname(&u) == 0) {
        int major = 0, minor = 0;
        if (std::sscanf(u.release, "%d.%d", &major, &minor) == 2 && (major < 6)) {
            why = std::string("kernel ") + u.release + " lacks multishot recv (needs 6.0+)";
            return false;
        }
    }
    io_uring ring{};
    if (uring_detail::ring_setup(ring, why) != 0) return false;
    bool ok = true;
    io_uring_probe* p = io_uring_get_probe_ring(&ring);
    if (p == nullptr) {
        why = "io_uring probe failed";
        ok = false;
    } else {
        const int needed[] = {IORING_OP_ACCEPT, IORING_OP_RECV,    IORING_OP_SEND,
                              IORING_OP_READ,   IORING_OP_TIMEOUT, IORING_OP_ASYNC_CANCEL};
        for (int opcode : needed) {
            if (!io_uring_opcode_supported(p, opcode)) {
                why = "io_uring opcode " + std::to_string(opcode) + " not supported";
                ok = false;
                break;
            }
        }
        io_uring_free_probe(p);
    }
    io_uring_queue_exit(&ring);
    return ok;
}

/// Whether this kernel honours a minimum wait time (IORING_FEAT_MIN_TIMEOUT, 6.12+), which
/// options::batch_window_us needs; false when io_uring itself is unusable.
inline bool uring_min_wait_supported() {
    io_uring ring{};
    std::string why;
    if (uring_detail::ring_setup(ring, why) != 0) return false;
    const bool ok = (ring.features & uring_detail::feat_min_timeout) != 0;
    io_uring_queue_exit(&ring);
    return ok;
}

/// Runs an io_uring worker until a graceful stop completes. Returns 0, or 1 on a fatal error.
template <class Service, class Factory>
int run_uring_worker(worker_env& env, Factory& make) {
    uring_worker<Service> w(env, make);
    return w.run();
}

} // namespace spop::server
