// spop::server's own tests, on loopback, with a test service (echo: every argument of an `echo`
// message comes back as a txn variable) and a blocking client written here, once per backend
// (io_uring, skipped with the reason when this kernel or process cannot use it, and epoll):
// many connections pipelining, frames split at odd offsets and across sends, the limits
// (max_connections as an exact total, max_in_flight back-pressure without loss, hello timeout),
// the graceful stop, and fd exhaustion in a forked child with a low RLIMIT_NOFILE.
// Every wait is bounded by a deadline and every loop by a count.
#include <spop/server/server.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <fcntl.h>
#include <fstream>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include <spop/message.hpp>

#include "support/frames.hpp"
#include "support/hex.hpp"

namespace {

using namespace std::chrono_literals;
using spop::value;
using spop_test::bytes;
using spop_test::parsed_frame;
using clock_type = std::chrono::steady_clock;
namespace srv = spop::server;

constexpr std::uint32_t mfs = 16380;

// ---------------------------------------------------------------------------------------------
// The test service.

/// The engine's counters plus one of the service's own (one block per worker).
struct test_stats : srv::worker_stats {
    srv::counter echoed;
};

/// `echo` messages: each argument comes back as SET-VAR txn.<name> with the same value. Other
/// messages are skipped. The ACK grows with the NOTIFY, so no max_ack_size.
class echo_service {
  public:
    explicit echo_service(test_stats& st) noexcept : st_(&st) {}

    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        return routes.dispatch(req, ack, *this);
    }

  private:
    void echo(const spop::message_view& m, spop::ack_writer& ack) noexcept {
        for (const spop::argument& a : m) ack.set_var(spop::var_scope::txn, a.name, a.val);
        st_->echoed.add();
    }

    static constexpr spop::router routes{spop::on("echo", &echo_service::echo)};
    test_stats* st_;
};
static_assert(spop::service<echo_service>);

/// Builds one echo_service per worker, and notes on which thread and for which worker.
struct echo_factory {
    struct record {
        std::atomic<int> calls{0};
        std::atomic<std::uint64_t> ids_seen{0}; ///< bit per worker id
        std::atomic<int> on_caller_thread{0};
        std::thread::id caller = std::this_thread::get_id();
    };
    std::shared_ptr<record> rec = std::make_shared<record>();

    echo_service operator()(const srv::worker_info<test_stats>& w) const {
        rec->calls.fetch_add(1);
        if (w.id >= 0 && w.id < 64) rec->ids_seen.fetch_or(std::uint64_t{1} << w.id);
        if (std::this_thread::get_id() == rec->caller) rec->on_caller_thread.fetch_add(1);
        return echo_service(w.stats);
    }
};

// ---------------------------------------------------------------------------------------------
// Frames.

bytes hello_frame() {
    bytes buf(256);
    spop::kv_writer w(buf, mfs, spop::frame_type::haproxy_hello);
    w.put("supported-versions", value::from_string("2.0"));
    w.put("max-frame-size", value::from_uint32(mfs));
    w.put("capabilities", value::from_string("pipelining"));
    const spop::result r = w.finish();
    EXPECT_TRUE(r) << spop::message(r.ec);
    buf.resize(r.consumed);
    return buf;
}

/// NOTIFY: echo(n=UINT64 n, s=STRING s).
bytes echo_notify(std::uint64_t sid, std::uint64_t fid, std::uint64_t n, std::string_view s) {
    bytes buf(s.size() + 64);
    spop::notify_writer w(buf, sid, fid, mfs);
    w.message("echo", 2);
    w.arg("n", value::from_uint64(n));
    w.arg("s", value::from_string(s));
    const spop::result r = w.finish();
    EXPECT_TRUE(r) << spop::message(r.ec);
    buf.resize(r.consumed);
    return buf;
}

using expected_vars = std::vector<std::pair<std::string, std::string>>; // name, describe()

expected_vars echo_vars(std::uint64_t n, std::string_view s) {
    return {{"n", "uint64:" + std::to_string(n)},
            {"s", spop_test::describe(value::from_string(s))}};
}

/// An ACK for (sid, fid) whose actions are exactly SET-VAR txn.<name> = value, in order.
::testing::AssertionResult is_ack(const parsed_frame& f, std::uint64_t sid, std::uint64_t fid,
                                  const expected_vars& vars) {
    if (f.type != spop::frame_type::ack)
        return ::testing::AssertionFailure() << "frame type " << static_cast<int>(f.type)
                                             << " instead of ACK " << sid << "/" << fid;
    if (f.stream_id != sid || f.frame_id != fid)
        return ::testing::AssertionFailure()
               << "ACK " << f.stream_id << "/" << f.frame_id << " instead of " << sid << "/" << fid;
    if (f.flags != spop::flag_fin) return ::testing::AssertionFailure() << "ACK flags " << f.flags;
    const spop_test::ack_parse a = spop_test::parse_ack_payload(f.payload_span());
    if (!a.error.empty()) return ::testing::AssertionFailure() << "bad ACK payload: " << a.error;
    if (a.actions.size() != vars.size())
        return ::testing::AssertionFailure() << a.actions.size() << " actions, expected "
                                             << vars.size() << " in ACK " << sid << "/" << fid;
    for (std::size_t i = 0; i < vars.size(); ++i) {
        const auto& x = a.actions[i];
        if (x.type != spop::action_type::set_var || x.scope != spop::var_scope::txn ||
            x.name != vars[i].first || x.value != vars[i].second)
            return ::testing::AssertionFailure()
                   << "action " << i << " of ACK " << sid << "/" << fid << ": " << x.name << "="
                   << x.value.substr(0, 80) << ", expected " << vars[i].first << "="
                   << vars[i].second.substr(0, 80);
    }
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult is_disconnect(const parsed_frame& f, std::uint32_t status) {
    if (f.type != spop::frame_type::agent_disconnect)
        return ::testing::AssertionFailure()
               << "frame type " << static_cast<int>(f.type) << " instead of AGENT-DISCONNECT";
    const spop_test::disconnect_info d = spop_test::read_disconnect(f);
    if (!d.well_formed) return ::testing::AssertionFailure() << "malformed AGENT-DISCONNECT";
    if (d.status != status)
        return ::testing::AssertionFailure() << "AGENT-DISCONNECT status " << d.status << " ("
                                             << d.message << "), expected " << status;
    return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------
// A blocking loopback client (HAProxy's side).

/// A port that was free a moment ago (bound to port 0, then released): the server may lose it
/// to someone else, so its start is retried on "in use".
int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) ::close(fd);
    return port;
}

int remaining_ms(clock_type::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
    return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

class client {
  public:
    /// Connects to 127.0.0.1:port. `rcvbuf` > 0 fixes the receive buffer (no autotuning).
    explicit client(int port, int rcvbuf = 0) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        open(reinterpret_cast<const sockaddr*>(&a), sizeof a, rcvbuf);
    }
    /// Connects to [::1]:port.
    static std::unique_ptr<client> ipv6(int port) {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(static_cast<std::uint16_t>(port));
        a.sin6_addr = in6addr_loopback;
        return std::unique_ptr<client>(new client(reinterpret_cast<const sockaddr*>(&a), sizeof a));
    }
    /// Connects to a Unix socket.
    static std::unique_ptr<client> unix_socket(const std::string& path) {
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        return std::unique_ptr<client>(new client(reinterpret_cast<const sockaddr*>(&a), sizeof a));
    }
    client(const client&) = delete;
    client& operator=(const client&) = delete;
    ~client() { close(); }

    [[nodiscard]] bool connected() const noexcept { return fd_ >= 0; }
    [[nodiscard]] int error() const noexcept { return err_; }
    [[nodiscard]] int fd() const noexcept { return fd_; }
    /// The peer closed (EOF or reset).
    [[nodiscard]] bool eof() const noexcept { return eof_; }

    void close() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    /// Sends all of `b` within `timeout`; false on error or timeout.
    bool send_all(std::span<const std::uint8_t> b, std::chrono::milliseconds timeout = 5s) {
        const auto deadline = clock_type::now() + timeout;
        std::size_t off = 0;
        while (off < b.size() && fd_ >= 0) {
            pollfd p{fd_, POLLOUT, 0};
            if (::poll(&p, 1, remaining_ms(deadline)) <= 0) return false;
            const ssize_t w = ::send(fd_, b.data() + off, b.size() - off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                return false;
            }
            off += static_cast<std::size_t>(w);
        }
        return off == b.size();
    }

    /// Reads until `n` frames have arrived, the peer closes, or `timeout` passes; returns the
    /// frames read (fewer than n in the last two cases).
    std::vector<parsed_frame> read_frames(std::size_t n, std::chrono::milliseconds timeout = 5s) {
        std::vector<parsed_frame> out;
        const auto deadline = clock_type::now() + timeout;
        std::uint8_t buf[64 * 1024];
        while (out.size() < n) {
            take_frames(out, n);
            if (out.size() >= n || eof_ || fd_ < 0) break;
            pollfd p{fd_, POLLIN, 0};
            const int left = remaining_ms(deadline);
            if (left == 0 || ::poll(&p, 1, left) <= 0) break;
            const ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
                eof_ = true;
                take_frames(out, n);
                break;
            }
            if (r > 0) in_.insert(in_.end(), buf, buf + r);
        }
        return out;
    }

    /// After the expected frames: true if the peer closes within `timeout` with nothing more.
    bool closes_cleanly(std::chrono::milliseconds timeout = 5s) {
        const auto more = read_frames(1, timeout);
        return more.empty() && eof_ && in_.empty();
    }

    /// HELLO, then the AGENT-HELLO.
    ::testing::AssertionResult handshake(std::chrono::milliseconds timeout = 5s) {
        if (!connected())
            return ::testing::AssertionFailure() << "connect: " << std::strerror(err_);
        if (!send_all(hello_frame(), timeout)) return ::testing::AssertionFailure() << "send";
        const auto f = read_frames(1, timeout);
        if (f.empty())
            return ::testing::AssertionFailure()
                   << (eof_ ? "closed" : "timeout") << " instead of AGENT-HELLO";
        if (f[0].type != spop::frame_type::agent_hello)
            return ::testing::AssertionFailure()
                   << "frame type " << static_cast<int>(f[0].type) << " instead of AGENT-HELLO";
        return ::testing::AssertionSuccess();
    }

    [[nodiscard]] std::size_t buffered() const noexcept { return in_.size(); }

  private:
    void take_frames(std::vector<parsed_frame>& out, std::size_t n) {
        std::size_t off = 0;
        while (out.size() < n) {
            spop::frame f;
            const std::span<const std::uint8_t> rest(in_.data() + off, in_.size() - off);
            const spop::result r = spop::split_frame(rest, spop::max_max_frame_size, f);
            if (!r) break;
            parsed_frame p;
            p.type = f.type;
            p.flags = f.flags;
            p.stream_id = f.stream_id;
            p.frame_id = f.frame_id;
            p.payload.assign(f.payload.begin(), f.payload.end());
            out.push_back(std::move(p));
            off += r.consumed;
        }
        in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(off));
    }

    client(const sockaddr* a, socklen_t len) { open(a, len, 0); }

    void open(const sockaddr* a, socklen_t len, int rcvbuf) {
        fd_ = ::socket(a->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) {
            err_ = errno;
            return;
        }
        if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        if (a->sa_family != AF_UNIX) {
            const int one = 1;
            ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        if (::connect(fd_, a, len) != 0) {
            err_ = errno;
            ::close(fd_);
            fd_ = -1;
        }
    }

    int fd_ = -1;
    int err_ = 0;
    bool eof_ = false;
    bytes in_;
};

/// Retries `f` every 50 ms until it returns true or `timeout` passes.
template <class F>
bool eventually(F&& f, std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    for (int i = 0; i < 10000; ++i) {
        if (f()) return true;
        if (clock_type::now() >= deadline) return false;
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// The server under test.

template <class Service, class Factory>
class basic_test_server {
  public:
    using server_t = srv::server<Service, test_stats>;
    basic_test_server() = default;
    explicit basic_test_server(Factory f) : make_(std::move(f)) {}
    basic_test_server(const basic_test_server&) = delete;
    basic_test_server& operator=(const basic_test_server&) = delete;
    ~basic_test_server() {
        if (running_) {
            srv_->stop();
            (void)srv_->wait();
        }
    }

    /// Starts on 127.0.0.1 at a free port, retrying when the port was taken meanwhile.
    ::testing::AssertionResult start(srv::options o) {
        std::string err;
        if (o.addresses.empty() && o.unix_path.empty()) o.addresses = {"127.0.0.1"};
        for (int attempt = 0; attempt < 20; ++attempt) {
            o.port = free_port();
            srv_ = std::make_unique<server_t>(o);
            err.clear();
            if (srv_->check(err) && srv_->listen(err) && srv_->start(make_, err)) {
                port_ = o.port;
                running_ = true;
                return ::testing::AssertionSuccess();
            }
            srv_.reset();
            if (err.find("in use") == std::string::npos) break;
        }
        return ::testing::AssertionFailure() << "server start: " << err;
    }

    void stop() { srv_->stop(); }
    int wait() {
        running_ = false;
        return srv_->wait();
    }

    [[nodiscard]] int port() const noexcept { return port_; }
    [[nodiscard]] server_t& get() noexcept { return *srv_; }
    [[nodiscard]] const Factory& factory() const noexcept { return make_; }

    /// A counter summed over the workers.
    template <class M>
    [[nodiscard]] std::uint64_t sum(M member) const {
        std::uint64_t s = 0;
        for (const auto& st : srv_->stats()) s += ((*st).*member).get();
        return s;
    }

  private:
    Factory make_;
    std::unique_ptr<server_t> srv_;
    int port_ = 0;
    bool running_ = false;
};

using test_server = basic_test_server<echo_service, echo_factory>;
using server_t = test_server::server_t;

// ---------------------------------------------------------------------------------------------

class ServerTest : public ::testing::TestWithParam<srv::backend> {
  protected:
    void SetUp() override {
        srv::g_log_level.store(static_cast<int>(srv::level::error));
        if (GetParam() == srv::backend::uring) {
            std::string why;
            if (!srv::uring_usable(why)) GTEST_SKIP() << "io_uring unavailable: " << why;
        }
    }

    srv::options opts(int workers = 2) const {
        srv::options o;
        o.workers = workers;
        o.engine = GetParam();
        return o;
    }
};

std::string backend_name_of(srv::backend b) {
    return b == srv::backend::uring ? "uring" : "epoll";
}
std::string backend_name(const ::testing::TestParamInfo<srv::backend>& i) {
    return backend_name_of(i.param);
}

bool ipv6_loopback_usable() {
    const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

INSTANTIATE_TEST_SUITE_P(Backends, ServerTest,
                         ::testing::Values(srv::backend::uring, srv::backend::epoll), backend_name);

TEST_P(ServerTest, ChoosesTheBackendAskedFor) {
    test_server s;
    ASSERT_TRUE(s.start(opts(3)));
    // One service per worker, built on that worker's thread.
    EXPECT_TRUE(eventually([&] { return s.factory().rec->calls.load() == 3; }, 5s));
    EXPECT_EQ(s.factory().rec->ids_seen.load(), 0b111u);
    EXPECT_EQ(s.factory().rec->on_caller_thread.load(), 0);
    EXPECT_EQ(s.get().uses_uring(), GetParam() == srv::backend::uring);
    EXPECT_EQ(s.get().where(), "127.0.0.1:" + std::to_string(s.port()));
    client c(s.port());
    ASSERT_TRUE(c.handshake());
    ASSERT_TRUE(c.send_all(echo_notify(1, 1, 42, "hello")));
    const auto f = c.read_frames(1);
    ASSERT_EQ(f.size(), 1u);
    EXPECT_TRUE(is_ack(f[0], 1, 1, echo_vars(42, "hello")));
    EXPECT_EQ(s.sum(&test_stats::echoed), 1u);
    c.close(); // the lame-duck drain has its own test: stop at once here
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

TEST_P(ServerTest, Ipv6AndUnixListeners) {
    srv::options o = opts(2);
    const std::string path =
        "/tmp/spop-server-test-" + std::to_string(::getpid()) + "-" + backend_name_of(GetParam());
    o.unix_path = path;
    const bool v6 = ipv6_loopback_usable();
    o.addresses = {"127.0.0.1"};
    if (v6) o.addresses.emplace_back("::1");
    test_server s;
    ASSERT_TRUE(s.start(o));
    std::vector<std::unique_ptr<client>> cs;
    cs.push_back(std::make_unique<client>(s.port()));
    if (v6) cs.push_back(client::ipv6(s.port()));
    cs.push_back(client::unix_socket(path));
    for (std::size_t i = 0; i < cs.size(); ++i) {
        ASSERT_TRUE(cs[i]->handshake()) << "listener " << i;
        ASSERT_TRUE(cs[i]->send_all(echo_notify(2, i + 1, i, "via " + std::to_string(i))));
        const auto f = cs[i]->read_frames(1);
        ASSERT_EQ(f.size(), 1u) << "listener " << i;
        EXPECT_TRUE(is_ack(f[0], 2, i + 1, echo_vars(i, "via " + std::to_string(i))));
    }
    cs.clear();
    s.stop();
    EXPECT_EQ(s.wait(), 0);
    EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the socket file was left behind";
    if (!v6) GTEST_SKIP() << "IPv6 loopback unavailable: IPv4 and Unix checked only";
}

TEST_P(ServerTest, IdleTimeout) {
    srv::options o = opts(1);
    o.idle_timeout_s = 1;
    test_server s;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.handshake());
    ASSERT_TRUE(c.send_all(echo_notify(1, 1, 1, "x")));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    const auto t0 = clock_type::now();
    const auto f = c.read_frames(1, 5s);
    const auto took = clock_type::now() - t0;
    ASSERT_EQ(f.size(), 1u) << "no AGENT-DISCONNECT within 5 s of idleness";
    EXPECT_TRUE(is_disconnect(f[0], static_cast<std::uint32_t>(spop::status::timeout)));
    EXPECT_TRUE(c.closes_cleanly());
    EXPECT_LE(took, 3500ms); // whole seconds, checked once a second: 0..2 s today
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

/// Sleeps until just before the next whole second of CLOCK_MONOTONIC_COARSE, the clock the
/// engine's timers read in whole seconds.
void sleep_until_late_in_second() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    const long ns_left = 1000000000L - ts.tv_nsec;
    const long target = 50000000L; // 50 ms before the second turns
    if (ns_left > target)
        std::this_thread::sleep_for(std::chrono::nanoseconds(ns_left - target));
    else
        std::this_thread::sleep_for(std::chrono::nanoseconds(ns_left + 1000000000L - target));
}

// A timeout of N seconds must not fire before N seconds. The engine stamps connections in whole
// seconds; with `now - created >= N` a connection made late in a second timed out up to a
// second early (a 1 s hello timeout fired after ~50-300 ms). check_timers compares with `>`.
TEST_P(ServerTest, TimeoutsDoNotFireEarly) {
    srv::options o = opts(1);
    o.hello_timeout_s = 1;
    o.idle_timeout_s = 1;
    test_server s;
    ASSERT_TRUE(s.start(o));
    sleep_until_late_in_second();
    const auto t0 = clock_type::now();
    client silent(s.port());
    ASSERT_TRUE(silent.connected());
    const auto f = silent.read_frames(1, 5s);
    const auto took = clock_type::now() - t0;
    ASSERT_EQ(f.size(), 1u);
    EXPECT_TRUE(is_disconnect(f[0], static_cast<std::uint32_t>(spop::status::timeout)));
    EXPECT_GE(took, 1s) << "hello timeout of 1 s";

    client idle(s.port());
    ASSERT_TRUE(idle.handshake());
    sleep_until_late_in_second();
    ASSERT_TRUE(idle.send_all(echo_notify(1, 1, 1, "x")));
    ASSERT_EQ(idle.read_frames(1).size(), 1u);
    const auto t1 = clock_type::now();
    const auto g = idle.read_frames(1, 5s);
    ASSERT_EQ(g.size(), 1u);
    EXPECT_TRUE(is_disconnect(g[0], static_cast<std::uint32_t>(spop::status::timeout)));
    EXPECT_GE(clock_type::now() - t1, 1s) << "idle timeout of 1 s";
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

// server::start() must not keep a reference to a factory that dies with its full expression:
// the workers call it on their own threads, after start() has returned (it used to capture
// `make` by reference: ASan reported stack-use-after-scope here). start() keeps a copy.
TEST_P(ServerTest, StartTakesATemporaryFactory) {
    srv::options o = opts(4);
    o.addresses = {"127.0.0.1"};
    std::unique_ptr<server_t> srv;
    std::string err;
    bool started = false;
    for (int attempt = 0; attempt < 20 && !started; ++attempt) {
        o.port = free_port();
        srv = std::make_unique<server_t>(o);
        const std::string tag(100, 't');
        started = srv->start(
            [tag](const srv::worker_info<test_stats>& w) {
                EXPECT_EQ(tag.size(), 100u);
                return echo_service(w.stats);
            },
            err);
    }
    ASSERT_TRUE(started) << err;
    std::string scribble(200, 's'); // reuses the stack the temporary lived on
    client c(o.port);
    EXPECT_TRUE(c.handshake());
    c.close();
    srv->stop();
    EXPECT_EQ(srv->wait(), 0);
}

TEST_P(ServerTest, ManyConnectionsPipelining) {
    constexpr int conns = 200;
    constexpr int per_conn = 25;
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * conns + 100) GTEST_SKIP() << "RLIMIT_NOFILE " << rl.rlim_cur;
    test_server s;
    ASSERT_TRUE(s.start(opts(2)));
    std::vector<std::unique_ptr<client>> cs;
    for (int i = 0; i < conns; ++i) {
        cs.push_back(std::make_unique<client>(s.port()));
        ASSERT_TRUE(cs.back()->handshake()) << "connection " << i;
    }
    // Every connection's NOTIFYs in one send, before any ACK is read.
    for (int i = 0; i < conns; ++i) {
        bytes all;
        for (int k = 0; k < per_conn; ++k) {
            const auto n = static_cast<std::uint64_t>(i * 1000 + k);
            const bytes f =
                echo_notify(static_cast<std::uint64_t>(i + 1), static_cast<std::uint64_t>(k + 1), n,
                            "c" + std::to_string(i) + "-" + std::to_string(k));
            all.insert(all.end(), f.begin(), f.end());
        }
        ASSERT_TRUE(cs[static_cast<std::size_t>(i)]->send_all(all)) << "connection " << i;
    }
    for (int i = 0; i < conns; ++i) {
        const auto f = cs[static_cast<std::size_t>(i)]->read_frames(per_conn, 10s);
        ASSERT_EQ(f.size(), static_cast<std::size_t>(per_conn)) << "connection " << i;
        for (int k = 0; k < per_conn; ++k) {
            const auto n = static_cast<std::uint64_t>(i * 1000 + k);
            ASSERT_TRUE(is_ack(f[static_cast<std::size_t>(k)], static_cast<std::uint64_t>(i + 1),
                               static_cast<std::uint64_t>(k + 1),
                               echo_vars(n, "c" + std::to_string(i) + "-" + std::to_string(k))))
                << "connection " << i;
        }
    }
    EXPECT_EQ(s.sum(&test_stats::echoed), static_cast<std::uint64_t>(conns * per_conn));
    EXPECT_EQ(s.sum(&test_stats::notify_frames), static_cast<std::uint64_t>(conns * per_conn));
    EXPECT_EQ(s.sum(&test_stats::conns_current), static_cast<std::uint64_t>(conns));
    // Both workers took a share (SO_REUSEPORT and the least-loaded hand-off).
    for (const auto& st : s.get().stats()) EXPECT_GT(st->conns_total.get(), 0u);
    cs.clear();
    EXPECT_TRUE(eventually([&] { return s.sum(&test_stats::conns_current) == 0; }, 5s));
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

TEST_P(ServerTest, FramesSplitAtOddOffsetsAndAcrossSends) {
    test_server s;
    ASSERT_TRUE(s.start(opts(1)));
    struct sent {
        std::uint64_t sid, fid;
        expected_vars vars;
    };
    std::vector<sent> want;
    bytes stream = hello_frame();
    auto add = [&](const bytes& f) { stream.insert(stream.end(), f.begin(), f.end()); };
    for (std::uint64_t k = 0; k < 40; ++k) {
        // Sizes from 0 to a frame that needs several reads, with a 9 KB one in the middle.
        const std::string str = k == 20 ? std::string(9000, 'x') : std::string(k * 37 % 300, 'a');
        add(echo_notify(7, k + 1, k, str));
        want.push_back({7, k + 1, echo_vars(k, str)});
    }
    {
        // Three messages in one frame: the unrouted one is skipped.
        bytes buf(256);
        spop::notify_writer w(buf, 9, 1, mfs);
        w.message("echo", 1);
        w.arg("first", value::from_int32(-5));
        w.message("other", 1);
        w.arg("x", value::from_string("ignored"));
        w.message("echo", 2);
        const std::uint8_t v4[4] = {192, 0, 2, 1};
        w.arg("ip", value::from_ipv4(std::span<const std::uint8_t, 4>(v4)));
        w.arg("b", value::from_binary(std::string_view("\x00\x01\xff", 3)));
        const spop::result r = w.finish();
        ASSERT_TRUE(r);
        buf.resize(r.consumed);
        add(buf);
        want.push_back(
            {9, 1, {{"first", "int32:-5"}, {"ip", "ipv4:c0000201"}, {"b", "binary:0001ff"}}});
    }
    client c(s.port());
    ASSERT_TRUE(c.connected());
    // Chunks of 1..97 bytes; a pause now and then so the server sees them as separate reads.
    std::minstd_rand rng(12345);
    std::size_t off = 0;
    for (int sends = 0; off < stream.size() && sends < 100000; ++sends) {
        const std::size_t n = std::min<std::size_t>(1 + rng() % 97, stream.size() - off);
        ASSERT_TRUE(c.send_all(std::span<const std::uint8_t>(stream.data() + off, n)));
        off += n;
        if (sends % 8 == 0) std::this_thread::sleep_for(1ms);
    }
    ASSERT_EQ(off, stream.size());
    const auto f = c.read_frames(1 + want.size(), 10s);
    ASSERT_EQ(f.size(), 1 + want.size());
    EXPECT_EQ(f[0].type, spop::frame_type::agent_hello);
    for (std::size_t i = 0; i < want.size(); ++i)
        EXPECT_TRUE(is_ack(f[i + 1], want[i].sid, want[i].fid, want[i].vars)) << "ACK " << i;
    EXPECT_GT(s.sum(&test_stats::frames_in), want.size());
    c.close();
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

TEST_P(ServerTest, MaxConnectionsIsAnExactTotal) {
    constexpr std::uint32_t limit = 5;
    srv::options o = opts(2);
    o.max_connections = limit;
    test_server s;
    ASSERT_TRUE(s.start(o));
    std::vector<std::unique_ptr<client>> cs;
    for (std::uint32_t i = 0; i < limit; ++i) {
        cs.push_back(std::make_unique<client>(s.port()));
        ASSERT_TRUE(cs.back()->handshake()) << "connection " << i;
    }
    // One more: accepted by the kernel, then closed by the server without an answer.
    {
        client extra(s.port());
        ASSERT_TRUE(extra.connected());
        (void)extra.send_all(hello_frame());
        const auto f = extra.read_frames(1, 5s);
        EXPECT_TRUE(f.empty()) << "the 6th connection was answered";
        EXPECT_TRUE(extra.eof()) << "the 6th connection was not closed";
    }
    EXPECT_EQ(s.sum(&test_stats::conns_rejected), 1u);
    // The admitted ones still work.
    for (std::size_t i = 0; i < cs.size(); ++i) {
        ASSERT_TRUE(cs[i]->send_all(echo_notify(1, i + 1, i, "ok")));
        const auto f = cs[i]->read_frames(1);
        ASSERT_EQ(f.size(), 1u) << "connection " << i;
        EXPECT_TRUE(is_ack(f[0], 1, i + 1, echo_vars(i, "ok")));
    }
    // A slot freed is a slot available again, and only one.
    cs.erase(cs.begin());
    std::unique_ptr<client> again;
    EXPECT_TRUE(eventually(
        [&] {
            again = std::make_unique<client>(s.port());
            return static_cast<bool>(again->handshake(2s));
        },
        5s));
    client over(s.port());
    ASSERT_TRUE(over.connected());
    (void)over.send_all(hello_frame());
    EXPECT_TRUE(over.read_frames(1, 5s).empty());
    EXPECT_TRUE(over.eof());
    EXPECT_GE(s.sum(&test_stats::conns_rejected), 2u);
    cs.clear();
    again.reset();
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

TEST_P(ServerTest, MaxInFlightBackPressureLosesNothing) {
    constexpr std::uint32_t in_flight = 8;
    constexpr int total = 60000;
    const std::string payload(1000, 'p');
    srv::options o = opts(1);
    o.max_in_flight = in_flight;
    test_server s;
    ASSERT_TRUE(s.start(o));
    client c(s.port(), 64 * 1024); // a small receive buffer: the server's sends fill up quickly
    ASSERT_TRUE(c.handshake());

    bytes all;
    all.reserve(static_cast<std::size_t>(total) * (payload.size() + 40));
    for (int k = 0; k < total; ++k) {
        const bytes f = echo_notify(3, static_cast<std::uint64_t>(k + 1),
                                    static_cast<std::uint64_t>(k), payload);
        all.insert(all.end(), f.begin(), f.end());
    }
    std::atomic<std::size_t> sent{0};
    std::atomic<bool> send_ok{true};
    std::thread sender([&] {
        const auto deadline = clock_type::now() + 60s;
        std::size_t off = 0;
        while (off < all.size()) {
            pollfd p{c.fd(), POLLOUT, 0};
            if (::poll(&p, 1, remaining_ms(deadline)) <= 0) break;
            const std::size_t n = std::min<std::size_t>(64 * 1024, all.size() - off);
            const ssize_t w = ::send(c.fd(), all.data() + off, n, MSG_NOSIGNAL);
            if (w < 0 && errno != EINTR && errno != EAGAIN) break;
            if (w > 0) off += static_cast<std::size_t>(w);
            sent.store(off);
        }
        send_ok.store(off == all.size());
    });

    // Read nothing for a while: the server must stop taking NOTIFYs, not queue ACKs unbounded.
    std::this_thread::sleep_for(700ms);
    const std::uint64_t answered_early = s.sum(&test_stats::notify_frames);
    std::uint64_t max_queued = 0;
    for (int i = 0; i < 10; ++i) {
        max_queued = std::max(max_queued, s.sum(&test_stats::acks_queued));
        std::this_thread::sleep_for(50ms);
    }
    const std::uint64_t answered_late = s.sum(&test_stats::notify_frames);
    EXPECT_LE(max_queued, in_flight) << "more ACKs queued than max_in_flight";
    EXPECT_EQ(answered_early, answered_late) << "the server kept answering an unread peer";
    EXPECT_LT(answered_late, static_cast<std::uint64_t>(total));
    EXPECT_LT(sent.load(), all.size()) << "TCP back-pressure never reached the client";

    // Now read: every ACK arrives, in order, with its own content.
    int got = 0;
    const auto deadline = clock_type::now() + 60s;
    bool ok = true;
    while (got < total && clock_type::now() < deadline && ok) {
        const auto f = c.read_frames(static_cast<std::size_t>(std::min(total - got, 4096)), 10s);
        if (f.empty()) break;
        for (const auto& fr : f) {
            if (!is_ack(fr, 3, static_cast<std::uint64_t>(got + 1),
                        echo_vars(static_cast<std::uint64_t>(got), payload))) {
                ADD_FAILURE() << is_ack(fr, 3, static_cast<std::uint64_t>(got + 1),
                                        echo_vars(static_cast<std::uint64_t>(got), payload))
                                     .message();
                ok = false;
                break;
            }
            ++got;
        }
    }
    sender.join();
    EXPECT_TRUE(send_ok.load());
    EXPECT_EQ(got, total);
    EXPECT_EQ(s.sum(&test_stats::acks_queued), 0u);
    c.close();
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

TEST_P(ServerTest, HelloTimeout) {
    srv::options o = opts(1);
    o.hello_timeout_s = 1;
    test_server s;
    ASSERT_TRUE(s.start(o));
    client ok(s.port());
    ASSERT_TRUE(ok.handshake());
    const auto t0 = clock_type::now();
    client silent(s.port());
    ASSERT_TRUE(silent.connected());
    const auto f = silent.read_frames(1, 5s);
    const auto took = clock_type::now() - t0;
    ASSERT_EQ(f.size(), 1u) << "no AGENT-DISCONNECT within 5 s";
    EXPECT_TRUE(is_disconnect(f[0], static_cast<std::uint32_t>(spop::status::timeout)));
    EXPECT_TRUE(silent.closes_cleanly());
    EXPECT_LE(took, 3500ms); // whole seconds, checked once a second: 0..2 s today
    // The established connection is not subject to it.
    ASSERT_TRUE(ok.send_all(echo_notify(1, 1, 1, "still here")));
    const auto a = ok.read_frames(1);
    ASSERT_EQ(a.size(), 1u);
    EXPECT_TRUE(is_ack(a[0], 1, 1, echo_vars(1, "still here")));
    ok.close();
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

TEST_P(ServerTest, GracefulStopAnswersWhatWasReceived) {
    srv::options o = opts(2);
    // Longer than the probe below may take: a connect() racing the listener's close can wait
    // for a SYN retransmit (1 s), and `busy` must not be idle that long before it sends again.
    o.drain_idle_s = 3;
    o.shutdown_timeout_s = 8;
    test_server s;
    ASSERT_TRUE(s.start(o));
    client busy(s.port());
    ASSERT_TRUE(busy.handshake());
    client idle(s.port());
    ASSERT_TRUE(idle.handshake());
    constexpr int first = 50, later = 10;
    bytes batch;
    for (int k = 0; k < first; ++k) {
        const bytes f = echo_notify(5, static_cast<std::uint64_t>(k + 1),
                                    static_cast<std::uint64_t>(k), "before");
        batch.insert(batch.end(), f.begin(), f.end());
    }
    ASSERT_TRUE(busy.send_all(batch));
    ASSERT_TRUE(eventually([&] { return s.sum(&test_stats::notify_frames) == first; }, 5s));
    const auto t0 = clock_type::now();
    s.stop();
    // Lame duck: the listeners close at once...
    EXPECT_TRUE(eventually(
        [&] {
            client late(s.port());
            return !late.connected() && late.error() == ECONNREFUSED;
        },
        3s))
        << "still accepting after stop()";
    // ...but a connection in use is still served, also for what it sends after stop().
    batch.clear();
    for (int k = first; k < first + later; ++k) {
        const bytes f = echo_notify(5, static_cast<std::uint64_t>(k + 1),
                                    static_cast<std::uint64_t>(k), "after");
        batch.insert(batch.end(), f.begin(), f.end());
    }
    ASSERT_TRUE(busy.send_all(batch));
    const auto f = busy.read_frames(first + later + 1, 10s);
    ASSERT_EQ(f.size(), static_cast<std::size_t>(first + later + 1));
    for (int k = 0; k < first + later; ++k)
        EXPECT_TRUE(
            is_ack(f[static_cast<std::size_t>(k)], 5, static_cast<std::uint64_t>(k + 1),
                   echo_vars(static_cast<std::uint64_t>(k), k < first ? "before" : "after")));
    EXPECT_TRUE(is_disconnect(f.back(), 0));
    EXPECT_TRUE(busy.closes_cleanly());
    const auto i = idle.read_frames(1, 10s);
    ASSERT_EQ(i.size(), 1u);
    EXPECT_TRUE(is_disconnect(i[0], 0));
    EXPECT_TRUE(idle.closes_cleanly());
    EXPECT_EQ(s.wait(), 0);
    const auto took = clock_type::now() - t0;
    EXPECT_GE(took, 2900ms) << "did not wait for drain_idle";
    EXPECT_LT(took, 7s) << "waited for the shutdown timeout instead of idleness";
}

// The lame-duck drain measures idleness in milliseconds: a connection read from just before the
// (coarse) clock's second turned is not "idle for 1 s" right after it. In whole seconds it was,
// and got AGENT-DISCONNECT at once while HAProxy was still sending on it.
TEST_P(ServerTest, GracefulStopWaitsDrainIdleAfterTheLastReadAcrossASecondBoundary) {
    srv::options o = opts(1);
    o.drain_idle_s = 1;
    o.shutdown_timeout_s = 8;
    test_server s;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.handshake());
    const auto coarse = [] {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return ts;
    };
    // Late in a second of the clock the engine reads (bounded: one second at most).
    bool late = false;
    for (int i = 0; i < 3000 && !late; ++i) {
        const long ns = coarse().tv_nsec;
        late = ns >= 850'000'000 && ns < 900'000'000;
        if (!late) std::this_thread::sleep_for(1ms);
    }
    ASSERT_TRUE(late);
    const auto sec = coarse().tv_sec;
    ASSERT_TRUE(c.send_all(echo_notify(1, 1, 1, "late in the second")));
    const auto a = c.read_frames(1, 5s);
    const auto t_ack = clock_type::now();
    ASSERT_EQ(a.size(), 1u);
    ASSERT_TRUE(is_ack(a[0], 1, 1, echo_vars(1, "late in the second")));
    if (coarse().tv_sec != sec) GTEST_SKIP() << "the ACK took the whole second: machine too slow";
    ASSERT_TRUE(eventually([&] { return coarse().tv_sec != sec; }, 2s));
    s.stop();
    const auto d = c.read_frames(1, 10s);
    const auto took = clock_type::now() - t_ack;
    ASSERT_EQ(d.size(), 1u);
    EXPECT_TRUE(is_disconnect(d[0], 0));
    EXPECT_GE(took, 900ms) << "AGENT-DISCONNECT before the connection was idle for drain_idle";
    EXPECT_LT(took, 5s);
    EXPECT_TRUE(c.closes_cleanly());
    EXPECT_EQ(s.wait(), 0);
}

TEST_P(ServerTest, StopWithNoConnectionsIsQuick) {
    test_server s;
    ASSERT_TRUE(s.start(opts(3)));
    const auto t0 = clock_type::now();
    s.stop();
    EXPECT_EQ(s.wait(), 0);
    EXPECT_LT(clock_type::now() - t0, 3s);
}

TEST_P(ServerTest, PortInUseIsAClearError) {
    test_server a;
    ASSERT_TRUE(a.start(opts(1)));
    srv::options o = opts(1);
    o.addresses = {"127.0.0.1"};
    o.port = a.port();
    server_t b(o);
    std::string err;
    EXPECT_FALSE(b.check(err));
    EXPECT_NE(err.find("in use"), std::string::npos) << err;
    a.stop();
    EXPECT_EQ(a.wait(), 0);
}

TEST(ServerOptions, OutOfRangeValuesAreRefusedBeforeAnythingOpens) {
    struct bad_case {
        const char* what;
        void (*set)(srv::options&);
    };
    const bad_case cases[] = {
        {"port", [](srv::options& o) { o.port = 0; }},
        {"port", [](srv::options& o) { o.port = 65536; }},
        {"workers", [](srv::options& o) { o.workers = 0; }},
        {"max_frame_size", [](srv::options& o) { o.max_frame_size = 255; }},
        {"max_frame_size", [](srv::options& o) { o.max_frame_size = 16u * 1024 * 1024 + 1; }},
        {"max_frame_size", [](srv::options& o) { o.max_frame_size = 0xFFFFFFFFu; }},
        {"max_in_flight", [](srv::options& o) { o.max_in_flight = 0; }},
        {"deferred_timeout_ms", [](srv::options& o) { o.deferred_timeout_ms = 0; }},
        // Too small for an ACK header: every completed ticket ended its connection with 13.
        {"deferred_ack_bytes", [](srv::options& o) { o.deferred_ack_bytes = 8; }},
        {"deferred_ack_bytes", [](srv::options& o) { o.deferred_ack_bytes = 63; }},
        {"deferred_ack_bytes", [](srv::options& o) { o.deferred_ack_bytes = 0x7FFFFFFFu; }},
        {"unix_mode", [](srv::options& o) { o.unix_mode = 010000; }},
    };
    for (const auto& c : cases) {
        srv::options o;
        o.addresses = {"127.0.0.1"};
        c.set(o);
        std::string err;
        EXPECT_FALSE(srv::check_ranges(o, err)) << c.what;
        EXPECT_NE(err.find(c.what), std::string::npos) << err;
        EXPECT_EQ(err.find('\n'), std::string::npos) << "one line: " << err;
    }
    srv::options ok;
    ok.max_frame_size = 16u * 1024 * 1024;
    std::string err;
    EXPECT_TRUE(srv::check_ranges(ok, err)) << err;
    ok.deferred_ack_bytes = srv::min_deferred_ack_bytes;
    EXPECT_TRUE(srv::check_ranges(ok, err)) << err;
    ok.deferred_ack_bytes = 0; // unused without tickets
    ok.max_deferred = 0;
    EXPECT_TRUE(srv::check_ranges(ok, err)) << err;
}

TEST(ServerOptions, CpuListsParseAsTasksetWritesThem) {
    std::vector<int> cpus;
    std::string err;
    ASSERT_TRUE(srv::parse_cpu_list("0-3,8,10-11", cpus, err)) << err;
    EXPECT_EQ(cpus, (std::vector<int>{0, 1, 2, 3, 8, 10, 11}));
    EXPECT_EQ(srv::cpu_list_text(cpus), "0-3,8,10,11");
    ASSERT_TRUE(srv::parse_cpu_list("5,1", cpus, err)) << err; // the order is the workers'
    EXPECT_EQ(cpus, (std::vector<int>{5, 1}));
    ASSERT_TRUE(srv::parse_cpu_list("7-7", cpus, err)) << err;
    EXPECT_EQ(cpus, (std::vector<int>{7}));
    ASSERT_TRUE(srv::parse_cpu_list(std::to_string(CPU_SETSIZE - 1), cpus, err)) << err;
    for (const char* bad : {"",
                            ",",
                            "1,",
                            ",1",
                            "1,,2",
                            "a",
                            "1a",
                            " 1",
                            "1 ",
                            "-1",
                            "+1",
                            "3-1",
                            "1-",
                            "-",
                            "1-2-3",
                            "0x1",
                            "1,1",
                            "0-2,2",
                            "99999999999999999999",
                            "1024"}) {
        EXPECT_FALSE(srv::parse_cpu_list(bad, cpus, err)) << '"' << bad << '"';
        EXPECT_FALSE(err.empty());
        EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    }
    // An embedder that fills options::cpus itself gets the range check.
    srv::options o;
    for (const int c : {-1, CPU_SETSIZE}) {
        o.cpus = {0, c};
        EXPECT_FALSE(srv::check_ranges(o, err)) << c;
        EXPECT_NE(err.find("CPU"), std::string::npos) << err;
    }
}

/// The CPUs this process may run on.
std::vector<int> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> out;
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return out;
    for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set)) out.push_back(i);
    return out;
}

/// The CPUs the calling thread may run on.
std::vector<int> this_thread_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> out;
    if (::pthread_getaffinity_np(::pthread_self(), sizeof set, &set) != 0) return out;
    for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set)) out.push_back(i);
    return out;
}

TEST_P(ServerTest, WorkersArePinnedToTheirCpusBeforeTheFactoryRuns) {
    const std::vector<int> allowed = allowed_cpus();
    ASSERT_FALSE(allowed.empty());
    srv::options o = opts(3);
    o.addresses = {"127.0.0.1"};
    // Two CPUs when there are two, listed last first (the list's order is the workers'); 3
    // workers: round robin, so worker 2 shares worker 0's CPU.
    o.cpus = {allowed.back()};
    if (allowed.size() > 1) o.cpus.push_back(allowed.front());
    struct seen_t {
        std::mutex m;
        std::vector<std::vector<int>> worker{3}, helper{3};
    } seen;
    auto make = [&seen](const srv::worker_info<test_stats>& w) {
        std::vector<int> mine = this_thread_cpus();
        // A thread the service starts here (a pool) inherits the worker's CPU.
        std::vector<int> helper;
        std::thread([&helper] { helper = this_thread_cpus(); }).join();
        std::lock_guard<std::mutex> g(seen.m);
        seen.worker[static_cast<std::size_t>(w.id)] = std::move(mine);
        seen.helper[static_cast<std::size_t>(w.id)] = std::move(helper);
        return echo_service(w.stats);
    };
    basic_test_server<echo_service, decltype(make)> s(make);
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.handshake());
    ASSERT_TRUE(c.send_all(echo_notify(1, 1, 7, "pinned")));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    c.close();
    EXPECT_TRUE(eventually(
        [&] {
            std::lock_guard<std::mutex> g(seen.m);
            for (const auto& w : seen.worker)
                if (w.empty()) return false;
            return true;
        },
        5s));
    s.stop();
    EXPECT_EQ(s.wait(), 0);
    std::lock_guard<std::mutex> g(seen.m);
    for (std::size_t i = 0; i < 3; ++i) {
        const std::vector<int> want{o.cpus[i % o.cpus.size()]};
        EXPECT_EQ(seen.worker[i], want) << "worker " << i;
        EXPECT_EQ(seen.helper[i], want) << "a thread started by worker " << i << "'s factory";
    }
    EXPECT_EQ(allowed_cpus(), allowed) << "the main thread is not pinned";
}

TEST_P(ServerTest, ACpuOutsideTheProcesssMaskIsAClearErrorBeforeAnythingOpens) {
    const std::vector<int> allowed = allowed_cpus();
    int outside = -1;
    for (int i = 0; i < CPU_SETSIZE && outside < 0; ++i)
        if (std::find(allowed.begin(), allowed.end(), i) == allowed.end()) outside = i;
    ASSERT_GE(outside, 0);
    srv::options o = opts(2);
    o.addresses = {"127.0.0.1"};
    o.port = free_port();
    o.cpus = {allowed.front(), outside};
    server_t s(o);
    std::string err;
    EXPECT_FALSE(s.check(err));
    EXPECT_NE(err.find("CPU " + std::to_string(outside) + " is not available"), std::string::npos)
        << err;
    EXPECT_NE(err.find(srv::cpu_list_text(allowed)), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    client c(o.port); // nothing listens
    EXPECT_FALSE(c.connected());
}

// --- fd exhaustion, in a child process with RLIMIT_NOFILE 64 ----------------------------------

/// CPU seconds (user + system, every thread) used so far by `pid`; < 0 if unreadable.
double cpu_seconds(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const auto rp = s.rfind(')');
    if (rp == std::string::npos) return -1;
    std::istringstream in(s.substr(rp + 2));
    std::string tok;
    unsigned long long utime = 0, stime = 0;
    for (int field = 3; field <= 15 && (in >> tok); ++field) {
        if (field == 14) utime = std::stoull(tok);
        if (field == 15) stime = std::stoull(tok);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

/// Waits (bounded) for `pid` to exit; its exit code, or -1 (still running: killed) / -2.
int reap(pid_t pid, std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    for (int i = 0; i < 100000; ++i) {
        int st = 0;
        const pid_t r = ::waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -2;
        if (r < 0) return -2;
        if (clock_type::now() >= deadline) break;
        std::this_thread::sleep_for(20ms);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return -1;
}

TEST_P(ServerTest, FdExhaustionRefusesWithoutSpinningAndRecovers) {
    constexpr rlim_t child_nofile = 64;
    constexpr int conns = 100;
    pid_t pid = -1;
    int port = 0;
    for (int attempt = 0; attempt < 10 && pid < 0; ++attempt) {
        port = free_port();
        srv::options o = opts(2);
        o.addresses = {"127.0.0.1"};
        o.port = port;
        fflush(nullptr);
        const pid_t p = ::fork();
        ASSERT_GE(p, 0) << "fork: " << std::strerror(errno);
        if (p == 0) {
            const rlimit rl{child_nofile, child_nofile};
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(3);
            server_t child(o);
            echo_factory make;
            _exit(child.run(make)); // until SIGTERM
        }
        // Up when it answers a handshake; exit code 2 = could not listen (port taken: retry).
        bool up = false;
        for (int i = 0; i < 100 && !up; ++i) {
            int st = 0;
            if (::waitpid(p, &st, WNOHANG) == p) {
                ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2) << "child died at start";
                break;
            }
            client probe(port);
            up = probe.connected() && probe.handshake(1s);
            if (!up) std::this_thread::sleep_for(50ms);
        }
        if (up) pid = p;
    }
    ASSERT_GT(pid, 0) << "the child server never came up";
    // The probe proves one worker up; the other must have its ring or epoll fd too before the
    // flood below takes every fd (else it cannot start, and the server stops: exit 1).
    const auto worker_fds = [pid] {
        int n = 0;
        const std::string dir = "/proc/" + std::to_string(pid) + "/fd/";
        for (int fd = 0; fd < static_cast<int>(child_nofile); ++fd) {
            char target[64] = {};
            const std::string link = dir + std::to_string(fd);
            const ssize_t len = ::readlink(link.c_str(), target, sizeof target - 1);
            if (len <= 0) continue;
            const std::string_view t(target, static_cast<std::size_t>(len));
            if (t == "anon_inode:[eventpoll]" || t == "anon_inode:[io_uring]") ++n;
        }
        return n;
    };
    ASSERT_TRUE(eventually([&] { return worker_fds() >= 2; }, 5s)) << worker_fds();

    std::vector<std::unique_ptr<client>> cs;
    for (int i = 0; i < conns; ++i) {
        cs.push_back(std::make_unique<client>(port));
        // Completes in the kernel's backlog even when the server cannot accept it.
        ASSERT_TRUE(cs.back()->connected()) << "connection " << i;
        (void)cs.back()->send_all(hello_frame(), 1s);
    }
    std::this_thread::sleep_for(500ms);
    const double c0 = cpu_seconds(pid);
    std::this_thread::sleep_for(2s);
    const double used = cpu_seconds(pid) - c0;
    ASSERT_GE(c0, 0);
    EXPECT_LT(used, 0.3) << "the server busy-loops while accept() fails with EMFILE";
    int served = 0;
    for (auto& c : cs) {
        const auto f = c->read_frames(1, 10ms);
        if (!f.empty() && f[0].type == spop::frame_type::agent_hello) ++served;
    }
    EXPECT_GT(served, 0);
    EXPECT_LT(served, conns) << "RLIMIT_NOFILE " << child_nofile << " did not limit anything";
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), 0) << "the server died";
    cs.clear();
    // Service resumes once fds are free again.
    EXPECT_TRUE(eventually(
        [&] {
            client c(port);
            if (!c.handshake(1s) || !c.send_all(echo_notify(1, 1, 7, "back"))) return false;
            const auto f = c.read_frames(1, 1s);
            return f.size() == 1 && is_ack(f[0], 1, 1, echo_vars(7, "back"));
        },
        8s))
        << "no service after the connections were closed";
    ::kill(pid, SIGTERM);
    EXPECT_EQ(reap(pid, 15s), 0) << "the child did not stop cleanly on SIGTERM";
}

/// A worker that cannot start (here: no fd left for its ring or epoll instance) must not leave
/// a server short of a worker behind a listener that nobody accepts on: run() stops the whole
/// server within a second and exits 1, without a signal, so that a supervisor restarts it.
/// Also: run() after the embedder's own listen() keeps those listeners.
TEST_P(ServerTest, AWorkerThatCannotStartStopsTheServerWithExit1) {
    srv::options o = opts(2);
    o.addresses = {"127.0.0.1"};
    o.port = free_port();
    fflush(nullptr);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0) << "fork: " << std::strerror(errno);
    if (pid == 0) {
        server_t child(o);
        std::string err;
        if (!child.listen(err)) _exit(2);
        // Fill every hole below the highest open fd, so the next one is highest + 1, then
        // allow exactly that one: the first worker gets it, the second finds none.
        int top = -1;
        for (int fd = 0; fd < 4096; ++fd)
            if (::fcntl(fd, F_GETFD) >= 0) top = fd;
        for (int fd = 0; fd < top; ++fd)
            if (::fcntl(fd, F_GETFD) < 0 && ::dup2(0, fd) < 0) _exit(3);
        const rlimit rl{static_cast<rlim_t>(top + 2), static_cast<rlim_t>(top + 2)};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(3);
        echo_factory make;
        _exit(child.run(make)); // no signal comes: it must end by itself
    }
    EXPECT_EQ(reap(pid, 15s), 1) << "-1: still running 15 s after a worker failed";
}

// ---------------------------------------------------------------------------------------------
// Deferred answers (issue 12): tickets completed later, from other threads.

/// Tickets parked by the service, for the test to complete (a test-only lock).
struct parking {
    struct parked {
        spop::ticket t;
        std::uint64_t sid;
    };
    std::mutex m;
    std::vector<parked> v;
    std::size_t size() {
        std::lock_guard<std::mutex> g(m);
        return v.size();
    }
    std::vector<parked> take() {
        std::lock_guard<std::mutex> g(m);
        std::vector<parked> out;
        out.swap(v);
        return out;
    }
};

// The io_uring wait strategy (issue 14) ------------------------------------------------------

TEST(UringWait, MinWaitProbeOnAKernelThatHasIt) {
    std::string why;
    if (!srv::uring_usable(why)) GTEST_SKIP() << "io_uring unavailable: " << why;
    utsname u{};
    ASSERT_EQ(uname(&u), 0);
    int major = 0, minor = 0;
    ASSERT_EQ(std::sscanf(u.release, "%d.%d", &major, &minor), 2) << u.release;
    // IORING_FEAT_MIN_TIMEOUT came with 6.12; older kernels may have it backported.
    if (major < 6 || (major == 6 && minor < 12))
        GTEST_SKIP() << "kernel " << u.release << ": probe result "
                     << srv::uring_min_wait_supported() << ", not checked";
    EXPECT_TRUE(srv::uring_min_wait_supported()) << u.release;
}

/// With a batching window every frame is still answered, a lone request waits about the window
/// (not until the next timer), and an idle server sleeps: a min-wait timer that re-armed itself
/// would wake the worker hundreds of times a second. epoll ignores the option.
TEST_P(ServerTest, BatchWindowAnswersEverythingAndSleepsWhenIdle) {
    srv::options o = opts(1);
    o.batch_window_us = 2000;
    test_server s;
    ASSERT_TRUE(s.start(o));
    constexpr int conns = 8;
    constexpr int rounds = 30;
    std::vector<std::unique_ptr<client>> cs;
    for (int i = 0; i < conns; ++i) {
        cs.push_back(std::make_unique<client>(s.port()));
        ASSERT_TRUE(cs.back()->handshake()) << "connection " << i;
    }
    // One NOTIFY in flight per connection, all connections at once, `rounds` times.
    for (int r = 0; r < rounds; ++r) {
        for (int i = 0; i < conns; ++i) {
            const auto n = static_cast<std::uint64_t>(i * 1000 + r);
            ASSERT_TRUE(cs[static_cast<std::size_t>(i)]->send_all(
                echo_notify(static_cast<std::uint64_t>(r + 1), 1, n, "b")));
        }
        for (int i = 0; i < conns; ++i) {
            const auto n = static_cast<std::uint64_t>(i * 1000 + r);
            const auto f = cs[static_cast<std::size_t>(i)]->read_frames(1, 5s);
            ASSERT_EQ(f.size(), 1u) << "connection " << i << " round " << r;
            ASSERT_TRUE(is_ack(f[0], static_cast<std::uint64_t>(r + 1), 1, echo_vars(n, "b")));
        }
    }
    // A lone request among 8 connections: the window (2 ms), then it is served.
    for (int k = 0; k < 5; ++k) {
        const auto t0 = clock_type::now();
        ASSERT_TRUE(cs[3]->send_all(echo_notify(100 + k, 1, 7, "lone")));
        const auto f = cs[3]->read_frames(1, 5s);
        ASSERT_EQ(f.size(), 1u);
        EXPECT_TRUE(is_ack(f[0], 100 + k, 1, echo_vars(7, "lone")));
        EXPECT_LT(clock_type::now() - t0, 400ms) << "request " << k;
    }
    // Idle for a second: a few timer ticks, not a wakeup per window.
    rusage r0{}, r1{};
    getrusage(RUSAGE_SELF, &r0);
    std::this_thread::sleep_for(1s);
    getrusage(RUSAGE_SELF, &r1);
    EXPECT_LT(r1.ru_nvcsw - r0.ru_nvcsw, 50) << "voluntary context switches in 1 s idle";
    EXPECT_EQ(s.sum(&test_stats::echoed), static_cast<std::uint64_t>(conns * rounds + 5));
    cs.clear();
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

/// Defers every NOTIFY (and says so: ticket exhaustion back-pressures).
class deferring_service {
  public:
    static constexpr bool defers = true;
    explicit deferring_service(parking& p) noexcept : p_(&p) {}
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        spop::ticket t = req.defer();
        if (!t) {
            ack.set_var(spop::var_scope::txn, "sync", value::from_uint32(1));
            return spop::errc::ok;
        }
        std::lock_guard<std::mutex> g(p_->m);
        p_->v.push_back({std::move(t), req.stream_id});
        return spop::errc::ok;
    }

  private:
    parking* p_;
};

struct deferring_factory {
    std::shared_ptr<parking> park = std::make_shared<parking>();
    deferring_service operator()(const srv::worker_info<test_stats>&) const {
        return deferring_service(*park);
    }
};

using deferred_server = basic_test_server<deferring_service, deferring_factory>;

/// An ACK whose only action is SET-VAR txn.v = UINT64 sid.
::testing::AssertionResult is_sid_ack(const parsed_frame& f) {
    return is_ack(f, f.stream_id, f.frame_id, {{"v", "uint64:" + std::to_string(f.stream_id)}});
}

/// The no-op fallback: UNSET-VAR txn.spop_noop and nothing else.
bool is_noop_ack(const parsed_frame& f) {
    if (f.type != spop::frame_type::ack) return false;
    const spop_test::ack_parse a = spop_test::parse_ack_payload(f.payload_span());
    return a.error.empty() && a.actions.size() == 1 &&
           a.actions[0].type == spop::action_type::unset_var && a.actions[0].name == "spop_noop";
}

void complete_with_sid(parking::parked& p) {
    p.t.complete([&](spop::ack_writer& a) {
        a.set_var(spop::var_scope::txn, "v", value::from_uint64(p.sid));
    });
}

class DeferredTest : public ServerTest {};
INSTANTIATE_TEST_SUITE_P(Backends, DeferredTest,
                         ::testing::Values(srv::backend::uring, srv::backend::epoll), backend_name);

/// Deferred options: no deadline gets in the way unless a test asks for one.
/// `conns` handshaken connections, each sent NOTIFYs with stream ids 1..per (frame id 1);
/// fewer connections on a failure (reported).
std::vector<std::unique_ptr<client>> burst_clients(int port, int conns, int per) {
    std::vector<std::unique_ptr<client>> cs;
    bytes batch;
    for (int i = 1; i <= per; ++i)
        spop_test::append(batch, echo_notify(static_cast<std::uint64_t>(i), 1, 0, "x"));
    for (int c = 0; c < conns; ++c) {
        auto cl = std::make_unique<client>(port);
        if (!cl->handshake() || !cl->send_all(batch)) {
            ADD_FAILURE() << "connection " << c;
            break;
        }
        cs.push_back(std::move(cl));
    }
    return cs;
}

srv::options deferred_opts(srv::options o) {
    o.deferred_timeout_ms = 30000;
    return o;
}

TEST_P(DeferredTest, OutOfOrderCompletionFromManyThreads) {
    deferred_server s;
    ASSERT_TRUE(s.start(deferred_opts(opts())));
    constexpr int conns = 20, per = 20;
    std::vector<std::unique_ptr<client>> cs;
    for (int c = 0; c < conns; ++c) {
        cs.push_back(std::make_unique<client>(s.port()));
        ASSERT_TRUE(cs.back()->send_all(hello_frame()));
        ASSERT_EQ(cs.back()->read_frames(1).size(), 1u);
        bytes batch;
        for (int i = 0; i < per; ++i)
            spop_test::append(
                batch, echo_notify(static_cast<std::uint64_t>(c * 1000 + 2 * i + 1), 1, 0, "x"));
        ASSERT_TRUE(cs.back()->send_all(batch));
    }
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == conns * per; }, 10s));
    auto tickets = s.factory().park->take();
    std::mt19937 rng(7);
    std::shuffle(tickets.begin(), tickets.end(), rng);
    std::vector<std::thread> ths;
    for (int t = 0; t < 4; ++t)
        ths.emplace_back([&tickets, t] {
            for (std::size_t i = static_cast<std::size_t>(t); i < tickets.size(); i += 4)
                complete_with_sid(tickets[i]);
        });
    for (auto& th : ths) th.join();
    for (int c = 0; c < conns; ++c) {
        const auto frames = cs[static_cast<std::size_t>(c)]->read_frames(per, 10s);
        ASSERT_EQ(frames.size(), static_cast<std::size_t>(per));
        std::vector<std::uint64_t> sids;
        for (const auto& f : frames) {
            EXPECT_TRUE(is_sid_ack(f));
            sids.push_back(f.stream_id);
        }
        std::sort(sids.begin(), sids.end());
        for (int i = 0; i < per; ++i)
            EXPECT_EQ(sids[static_cast<std::size_t>(i)],
                      static_cast<std::uint64_t>(c * 1000 + 2 * i + 1));
    }
    EXPECT_TRUE(
        eventually([&] { return s.sum(&test_stats::deferred_completed) == conns * per; }, 5s));
    EXPECT_EQ(s.sum(&test_stats::deferred_inflight), 0u);
}

/// Answers on the worker's own thread: odd stream ids inside on_notify, even ones at the end
/// of the turn (on_turn_end), the way a service that batches work per turn does.
class turn_end_service {
  public:
    static constexpr bool defers = true;
    explicit turn_end_service(std::atomic<int>& turns) noexcept : turns_(&turns) {
        held_.reserve(4096);
    }
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        spop::ticket t = req.defer();
        if (!t) {
            ack.set_var(spop::var_scope::txn, "sync", value::from_uint32(1));
            return spop::errc::ok;
        }
        parking::parked p{std::move(t), req.stream_id};
        if (req.stream_id % 2 == 1)
            complete_with_sid(p);
        else
            held_.push_back(std::move(p));
        return spop::errc::ok;
    }
    void on_turn_end() {
        if (held_.empty()) return;
        turns_->fetch_add(1, std::memory_order_relaxed);
        for (parking::parked& p : held_) complete_with_sid(p);
        held_.clear();
    }

  private:
    std::atomic<int>* turns_;
    std::vector<parking::parked> held_;
};

/// Builds a `Service(std::atomic<int>&)` per worker around one counter the test reads.
template <class Service>
struct counting_factory {
    std::shared_ptr<std::atomic<int>> n = std::make_shared<std::atomic<int>>(0);
    Service operator()(const srv::worker_info<test_stats>&) const { return Service(*n); }
};
using turn_end_factory = counting_factory<turn_end_service>;

// Tickets completed on the worker's thread skip the eventfd: the worker must still take them at
// the end of its turn, or these ACKs never come.
TEST_P(DeferredTest, CompletionOnTheWorkerThreadInOnNotifyAndOnTurnEnd) {
    basic_test_server<turn_end_service, turn_end_factory> s;
    ASSERT_TRUE(s.start(deferred_opts(opts())));
    constexpr int conns = 8, per = 200;
    std::vector<std::unique_ptr<client>> cs;
    for (int c = 0; c < conns; ++c) {
        cs.push_back(std::make_unique<client>(s.port()));
        ASSERT_TRUE(cs.back()->send_all(hello_frame()));
        ASSERT_EQ(cs.back()->read_frames(1).size(), 1u);
    }
    for (int c = 0; c < conns; ++c) {
        bytes batch;
        for (int i = 0; i < per; ++i)
            spop_test::append(batch,
                              echo_notify(static_cast<std::uint64_t>(c * 1000 + i + 1), 1, 0, "x"));
        ASSERT_TRUE(cs[static_cast<std::size_t>(c)]->send_all(batch));
    }
    for (int c = 0; c < conns; ++c) {
        const auto frames = cs[static_cast<std::size_t>(c)]->read_frames(per, 10s);
        ASSERT_EQ(frames.size(), static_cast<std::size_t>(per)) << "connection " << c;
        std::vector<std::uint64_t> sids;
        for (const auto& f : frames) {
            EXPECT_TRUE(is_sid_ack(f));
            sids.push_back(f.stream_id);
        }
        std::sort(sids.begin(), sids.end()); // completion order: odd ids first in each turn
        for (int i = 0; i < per; ++i)
            EXPECT_EQ(sids[static_cast<std::size_t>(i)],
                      static_cast<std::uint64_t>(c * 1000 + i + 1));
    }
    EXPECT_GE(s.factory().n->load(), 1);
    EXPECT_LE(s.factory().n->load(), conns * per / 2); // batched per turn, not per NOTIFY
    EXPECT_TRUE(
        eventually([&] { return s.sum(&test_stats::deferred_completed) == conns * per; }, 5s));
    EXPECT_EQ(s.sum(&test_stats::deferred_inflight), 0u);
}

// One NOTIFY at a time, answered at the end of the turn on the worker's thread: nothing wakes
// the worker afterwards, so it must take the answer before it sleeps. Without that, each round
// waits for the worker's next timer tick (up to a second): 20 rounds take 10 s, not 20 ms.
TEST_P(DeferredTest, CompletionAtTurnEndIsSentBeforeTheWorkerSleeps) {
    basic_test_server<turn_end_service, turn_end_factory> s;
    ASSERT_TRUE(s.start(deferred_opts(opts(1))));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t i = 1; i <= 20; ++i) {
        ASSERT_TRUE(c.send_all(echo_notify(2 * i, 1, 0, "x"))); // even: held until on_turn_end
        const auto frames = c.read_frames(1, 5s);
        ASSERT_EQ(frames.size(), 1u) << "round " << i;
        EXPECT_TRUE(is_sid_ack(frames[0]));
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s) << "answers waited for a timer";
}

TEST_P(DeferredTest, DeadlineAnswersWithTheFallbackAndDropsTheLateCompletion) {
    deferred_server s;
    auto o = opts(1);
    o.deferred_timeout_ms = 200;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    bytes batch;
    for (int i = 0; i < 5; ++i) spop_test::append(batch, echo_notify(2 * i + 1, 1, 0, "x"));
    const auto t0 = clock_type::now();
    ASSERT_TRUE(c.send_all(batch));
    const auto frames = c.read_frames(5, 3s);
    ASSERT_EQ(frames.size(), 5u);
    for (const auto& f : frames) EXPECT_TRUE(is_noop_ack(f));
    EXPECT_GE(clock_type::now() - t0, 150ms);
    EXPECT_LT(clock_type::now() - t0, 1500ms);
    EXPECT_EQ(s.sum(&test_stats::deferred_expired), 5u);
    auto tickets = s.factory().park->take();
    ASSERT_EQ(tickets.size(), 5u);
    for (auto& p : tickets) complete_with_sid(p);
    EXPECT_TRUE(eventually([&] { return s.sum(&test_stats::deferred_late) == 5; }, 5s));
    EXPECT_TRUE(c.read_frames(1, 300ms).empty()) << "a late completion sends nothing";
    // The connection still serves.
    ASSERT_TRUE(c.send_all(echo_notify(99, 1, 0, "x")));
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 1; }, 5s));
    auto one = s.factory().park->take();
    complete_with_sid(one[0]);
    const auto more = c.read_frames(1, 3s);
    ASSERT_EQ(more.size(), 1u);
    EXPECT_TRUE(is_sid_ack(more[0]));
}

/// A ticket completed before its deadline leaves nothing to wait for: the worker sleeps once it
/// is answered. (epoll kept the finished ticket's deadline armed: once past, every wait had a
/// zero timeout and the worker spun a core for ever.)
TEST_P(DeferredTest, WorkerSleepsAfterATicketCompletedBeforeItsDeadline) {
    deferred_server s;
    auto o = opts(1);
    o.deferred_timeout_ms = 100;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    ASSERT_TRUE(c.send_all(echo_notify(1, 1, 0, "x")));
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 1; }, 5s));
    auto one = s.factory().park->take();
    complete_with_sid(one[0]);
    const auto f = c.read_frames(1, 3s);
    ASSERT_EQ(f.size(), 1u);
    EXPECT_TRUE(is_sid_ack(f[0]));
    std::this_thread::sleep_for(300ms); // past the deadline the ticket no longer has
    const auto cpu = [] {
        rusage r{};
        getrusage(RUSAGE_SELF, &r);
        return std::chrono::seconds(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
               std::chrono::microseconds(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
    };
    const auto c0 = cpu();
    std::this_thread::sleep_for(1s);
    const auto used = cpu() - c0;
    // A spinning worker uses most of the second; an idle process a few ms (timer ticks).
    EXPECT_LT(used, 300ms) << "CPU while idle: "
                           << std::chrono::duration_cast<std::chrono::milliseconds>(used).count()
                           << " ms in 1 s";
    EXPECT_EQ(s.sum(&test_stats::deferred_expired), 0u);
}

TEST_P(DeferredTest, CompletionAfterCloseAndTwiceAreSafeAndCounted) {
    deferred_server s;
    ASSERT_TRUE(s.start(deferred_opts(opts(1))));
    {
        client c(s.port());
        ASSERT_TRUE(c.send_all(hello_frame()));
        ASSERT_EQ(c.read_frames(1).size(), 1u);
        bytes batch;
        for (int i = 0; i < 3; ++i) spop_test::append(batch, echo_notify(2 * i + 1, 1, 0, "x"));
        ASSERT_TRUE(c.send_all(batch));
        ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 3; }, 5s));
        // A reset, not a FIN: after a FIN the connection would wait for its answers (a
        // half-close), which a completion then sends.
        const linger lg{1, 0};
        ::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    ASSERT_TRUE(eventually([&] { return s.sum(&test_stats::conns_current) == 0; }, 5s));
    auto tickets = s.factory().park->take();
    for (auto& p : tickets) {
        complete_with_sid(p);
        p.t.complete(); // a second time: nothing, counted
    }
    EXPECT_TRUE(eventually([&] { return s.sum(&test_stats::deferred_after_close) == 3; }, 5s));
    EXPECT_TRUE(eventually([&] { return s.sum(&test_stats::deferred_misuse) == 3; }, 5s));
    EXPECT_EQ(s.sum(&test_stats::deferred_inflight), 0u);
}

TEST_P(DeferredTest, GracefulStopAnswersOutstandingTicketsThenDisconnects) {
    deferred_server s;
    auto o = opts(1);
    o.shutdown_timeout_s = 3;
    o.deferred_timeout_ms = 60000; // only the stop ends them
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    bytes batch;
    for (int i = 0; i < 3; ++i) spop_test::append(batch, echo_notify(2 * i + 1, 1, 0, "x"));
    ASSERT_TRUE(c.send_all(batch));
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 3; }, 5s));
    const auto t0 = clock_type::now();
    s.stop();
    const auto frames = c.read_frames(4, 6s);
    ASSERT_EQ(frames.size(), 4u);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(is_noop_ack(frames[static_cast<std::size_t>(i)]));
    EXPECT_TRUE(is_disconnect(frames[3], 0));
    c.close();
    EXPECT_EQ(s.wait(), 0);
    EXPECT_LT(clock_type::now() - t0, 5s);
    auto tickets = s.factory().park->take();
    for (auto& p : tickets) complete_with_sid(p); // after the server: harmless
}

/// deferring_service with a fallback of its own: txn.fallback = the reason (0 expired,
/// 1 dropped, 2 stopping), then txn.v = the stream id the engine names.
class fallback_service : public deferring_service {
  public:
    using deferring_service::deferring_service;
    void on_fallback(const spop::fallback_event& ev, spop::ack_writer& ack) noexcept {
        ack.set_var(spop::var_scope::txn, "fallback",
                    value::from_uint32(static_cast<std::uint32_t>(ev.reason)));
        ack.set_var(spop::var_scope::txn, "v", value::from_uint64(ev.stream_id));
    }
};

struct fallback_factory {
    std::shared_ptr<parking> park = std::make_shared<parking>();
    fallback_service operator()(const srv::worker_info<test_stats>&) const {
        return fallback_service(*park);
    }
};

using fallback_server = basic_test_server<fallback_service, fallback_factory>;

::testing::AssertionResult is_fallback_ack(const parsed_frame& f, spop::fallback_reason why) {
    return is_ack(f, f.stream_id, f.frame_id,
                  {{"fallback", "uint32:" + std::to_string(static_cast<int>(why))},
                   {"v", "uint64:" + std::to_string(f.stream_id)}});
}

/// The service's on_fallback() writes the engine's answer at the deadline and for a ticket
/// dropped unanswered; an expired ticket dropped later is not answered again.
TEST_P(DeferredTest, TheServicesFallbackAnswersExpiredAndDroppedTickets) {
    fallback_server s;
    auto o = opts(1);
    o.deferred_timeout_ms = 300;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);

    bytes batch;
    for (int i = 0; i < 3; ++i) spop_test::append(batch, echo_notify(2 * i + 1, 1, 0, "x"));
    ASSERT_TRUE(c.send_all(batch));
    auto frames = c.read_frames(3, 3s);
    ASSERT_EQ(frames.size(), 3u);
    for (const auto& f : frames) EXPECT_TRUE(is_fallback_ack(f, spop::fallback_reason::expired));
    (void)s.factory().park->take(); // expired, then dropped: nothing more on the wire

    ASSERT_TRUE(c.send_all(echo_notify(11, 1, 0, "x")));
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 1; }, 5s));
    (void)s.factory().park->take(); // dropped before its deadline
    frames = c.read_frames(2, 2s);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].stream_id, 11u);
    EXPECT_TRUE(is_fallback_ack(frames[0], spop::fallback_reason::dropped));
    EXPECT_EQ(s.sum(&test_stats::deferred_expired), 3u);
}

/// A graceful stop answers the tickets still open with the service's fallback (reason
/// stopping), then AGENT-DISCONNECT.
TEST_P(DeferredTest, TheServicesFallbackAnswersTicketsOpenAtAStop) {
    fallback_server s;
    auto o = opts(1);
    o.shutdown_timeout_s = 2;
    o.deferred_timeout_ms = 60000; // only the stop ends them
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    bytes batch;
    for (int i = 0; i < 2; ++i) spop_test::append(batch, echo_notify(2 * i + 1, 1, 0, "x"));
    ASSERT_TRUE(c.send_all(batch));
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 2; }, 5s));
    s.stop();
    const auto frames = c.read_frames(3, 5s);
    ASSERT_EQ(frames.size(), 3u);
    for (int i = 0; i < 2; ++i)
        EXPECT_TRUE(
            is_fallback_ack(frames[static_cast<std::size_t>(i)], spop::fallback_reason::stopping));
    EXPECT_TRUE(is_disconnect(frames[2], 0));
    c.close();
    EXPECT_EQ(s.wait(), 0);
    (void)s.factory().park->take();
}

TEST_P(DeferredTest, TicketCapBackPressuresWithoutLoss) {
    deferred_server s;
    auto o = deferred_opts(opts(1));
    o.max_deferred = 4;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    constexpr int n = 40;
    bytes batch;
    for (int i = 0; i < n; ++i) spop_test::append(batch, echo_notify(2 * i + 1, 1, 0, "x"));
    ASSERT_TRUE(c.send_all(batch));
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 4; }, 5s));
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(s.factory().park->size(), 4u) << "no ticket beyond the cap, no sync fallback";
    std::vector<std::uint64_t> sids;
    for (int round = 0; round < 200 && sids.size() < n; ++round) {
        auto tickets = s.factory().park->take();
        for (auto& p : tickets) complete_with_sid(p);
        for (const auto& f : c.read_frames(tickets.size(), 3s)) {
            EXPECT_TRUE(is_sid_ack(f));
            sids.push_back(f.stream_id);
        }
        if (tickets.empty()) std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(sids.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) EXPECT_EQ(sids[static_cast<std::size_t>(i)], 2u * i + 1);
}

/// A ticket held long while others come and go quickly still gets its deadline. The deadline
/// queue holds max_deferred entries and keeps those of freed slots until they reach its front;
/// when it was full, a new entry made room by dropping the front one, which was the long-held
/// ticket's (still open): it then never expired, and its NOTIFY waited for its holder for ever.
TEST_P(DeferredTest, DeadlineHoldsForATicketOutlivingQuickerOnes) {
    deferred_server s;
    auto o = opts(1);
    o.max_deferred = 4;
    o.deferred_timeout_ms = 1500;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    ASSERT_TRUE(c.send_all(echo_notify(100, 1, 0, "x"))); // held past its deadline
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 1; }, 5s));
    auto held = s.factory().park->take();
    const auto t0 = clock_type::now();
    for (std::uint64_t i = 1; i <= 12; ++i) { // each one opens and frees a slot
        ASSERT_TRUE(c.send_all(echo_notify(2 * i + 1, 1, 0, "x")));
        ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 1; }, 5s));
        auto one = s.factory().park->take();
        complete_with_sid(one[0]);
        const auto f = c.read_frames(1, 3s);
        ASSERT_EQ(f.size(), 1u) << "round " << i;
        EXPECT_TRUE(is_sid_ack(f[0]));
    }
    ASSERT_LT(clock_type::now() - t0, 1200ms) << "too slow to test the full queue";
    const auto f = c.read_frames(1, 4s);
    ASSERT_EQ(f.size(), 1u) << "no fallback at the held ticket's deadline";
    EXPECT_EQ(f[0].stream_id, 100u);
    EXPECT_TRUE(is_noop_ack(f[0]));
    EXPECT_EQ(s.sum(&test_stats::deferred_expired), 1u);
    held.clear(); // dropped after its deadline: nothing more
}

/// A connection back-pressured by its in-flight limit resumes when its ACKs are sent, which
/// happens after the turn's on_turn_end(): the NOTIFYs it then takes (its held input) are
/// collected for an on_turn_end() that must still come before the worker sleeps. The epoll
/// worker slept instead (up to 250 ms per round, or until the deadline: the fallback answered).
TEST_P(DeferredTest, NotifiesTakenAfterTurnEndStillGetTheirTurnEnd) {
    basic_test_server<turn_end_service, turn_end_factory> s;
    auto o = deferred_opts(opts(1));
    o.max_in_flight = 10;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.send_all(hello_frame()));
    ASSERT_EQ(c.read_frames(1).size(), 1u);
    constexpr int rounds = 8, per = 15; // 10 in flight, 5 held until those are sent
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < rounds; ++r) {
        bytes batch;
        for (int i = 0; i < per; ++i) // even: answered at on_turn_end
            spop_test::append(
                batch, echo_notify(static_cast<std::uint64_t>(2 * (r * per + i + 1)), 1, 0, "x"));
        ASSERT_TRUE(c.send_all(batch));
        const auto frames = c.read_frames(per, 5s);
        ASSERT_EQ(frames.size(), static_cast<std::size_t>(per)) << "round " << r;
        for (const auto& f : frames) EXPECT_TRUE(is_sid_ack(f));
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "answers waited for a timer";
}

/// Answers that found no room in their connection's output wait for a send to make room. When
/// the connection is reset instead, nothing else sends on an otherwise idle worker: the waiting
/// answers must still be dropped (counted after close) and their tickets freed, not left open
/// (deferred_inflight stuck, the slots lost to later NOTIFYs) until another connection sends.
TEST_P(DeferredTest, AnswersWaitingForRoomAreDroppedWhenTheirConnectionResets) {
    deferred_server s;
    auto o = deferred_opts(opts(1));
    o.deferred_ack_bytes = 4096;
    ASSERT_TRUE(s.start(o));
    constexpr int n = 1000;
    {
        client c(s.port(), 4096); // a small receive window, never read: the output clogs
        ASSERT_TRUE(c.handshake());
        bytes batch;
        for (int i = 0; i < n; ++i) spop_test::append(batch, echo_notify(2 * i + 1, 1, 0, "x"));
        ASSERT_TRUE(c.send_all(batch));
        ASSERT_TRUE(eventually([&] { return s.factory().park->size() == n; }, 5s));
        const std::string big(3000, 'a'); // 3 MB: more than the output block and the socket
        for (auto& p : s.factory().park->take())
            p.t.complete([&](spop::ack_writer& a) {
                a.set_var(spop::var_scope::txn, "v", value::from_string(big));
            });
        ASSERT_TRUE(eventually([&] { return s.sum(&test_stats::deferred_completed) > 0; }, 5s));
        std::this_thread::sleep_for(300ms);
        ASSERT_LT(s.sum(&test_stats::deferred_completed), static_cast<std::uint64_t>(n))
            << "every answer found room: nothing waits, nothing to test";
        const linger lg{1, 0};
        ::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    } // reset
    ASSERT_TRUE(eventually([&] { return s.sum(&test_stats::conns_current) == 0; }, 5s));
    EXPECT_TRUE(eventually([&] { return s.sum(&test_stats::deferred_inflight) == 0; }, 5s))
        << s.sum(&test_stats::deferred_inflight) << " tickets still open for a closed connection";
    EXPECT_EQ(s.sum(&test_stats::deferred_completed), static_cast<std::uint64_t>(n));
    EXPECT_GT(s.sum(&test_stats::deferred_after_close), 0u);
}

// --- The ticket pool alone, its worker side driven the way the backends drive it ------------
// A worker thread opens tickets and hands them to holder threads through a queue (the
// service's own hand-off), sleeps in poll() on the pool's eventfd exactly when worker_sleep()
// says so (reading it on wakeup, as the io_uring backend's read does), takes the finished ones
// and checks each answer against the NOTIFY its slot was opened for.

/// Holder threads: each ticket is completed with txn.v = its stream id, dropped, or completed
/// twice (the second a misuse), after a short random pause that lets the worker fall asleep.
class holders {
  public:
    struct item {
        spop::ticket t;
        std::uint64_t sid;
    };
    explicit holders(int n, std::uint32_t max_pause_us) {
        for (int i = 0; i < n; ++i)
            ths_.emplace_back(
                [this, i, max_pause_us] { run(static_cast<unsigned>(i), max_pause_us); });
    }
    ~holders() { stop(); }
    void push(item it) {
        {
            std::lock_guard<std::mutex> g(m_);
            q_.push_back(std::move(it));
        }
        cv_.notify_one();
    }
    void stop() {
        {
            std::lock_guard<std::mutex> g(m_);
            done_ = true;
        }
        cv_.notify_all();
        for (auto& t : ths_) t.join();
        ths_.clear();
    }
    std::atomic<std::uint64_t> dropped{0}, completed{0}, misuse{0};

  private:
    void run(unsigned seed, std::uint32_t max_pause_us) {
        std::mt19937 rng(seed + 1);
        while (true) {
            item it;
            {
                std::unique_lock<std::mutex> g(m_);
                cv_.wait(g, [this] { return done_ || !q_.empty(); });
                if (q_.empty()) return;
                it = std::move(q_.front());
                q_.pop_front();
            }
            const std::uint32_t r = rng();
            if (max_pause_us != 0 && r % 4 == 0)
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % max_pause_us));
            if (r % 8 == 1) {
                it.t = spop::ticket(); // dropped unanswered
                dropped.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            it.t.complete([&](spop::ack_writer& a) {
                a.set_var(spop::var_scope::txn, "v", value::from_uint64(it.sid));
            });
            completed.fetch_add(1, std::memory_order_relaxed);
            if (r % 16 == 2) {
                it.t.complete(); // a second time: nothing, counted
                misuse.fetch_add(1, std::memory_order_relaxed);
            }
        }
    }
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<item> q_;
    bool done_ = false;
    std::vector<std::thread> ths_;
};

/// A finished ticket's ACK, as the worker would deliver it: txn.v = the stream id it was
/// opened for, or nothing (dropped).
::testing::AssertionResult answers_its_notify(srv::ticket_pool::slot& s) {
    const spop::result r = s.w.finish();
    if (!r) return ::testing::AssertionFailure() << "ACK of " << s.sid << " does not finish";
    const auto frames = spop_test::split_frames({s.buf.get(), r.consumed});
    if (frames.size() != 1) return ::testing::AssertionFailure() << "not one frame";
    if (s.abandoned) {
        if (frames[0].stream_id != s.sid) return ::testing::AssertionFailure() << "dropped";
        return ::testing::AssertionSuccess();
    }
    return is_sid_ack(frames[0]) && frames[0].stream_id == s.sid
               ? ::testing::AssertionSuccess()
               : ::testing::AssertionFailure() << "ACK of " << s.sid << " carries another answer";
}

// Every finished ticket reaches a worker that sleeps whenever worker_sleep() lets it: a holder
// that finishes while the worker goes to sleep must see it asleep and write the eventfd, or the
// worker must see the ticket before it sleeps (the Dekker check). A lost wakeup leaves a
// finished ticket on the list under a sleeping worker: detected after 5 s of sleep. Some
// tickets are completed on the worker's own thread (no eventfd: taken before it sleeps).
TEST(DeferredPool, ASleepingWorkerIsWokenForEveryFinishedTicket) {
    constexpr std::uint32_t slots = 16;
    constexpr std::uint64_t total = 20000;
    srv::worker_stats st;
    srv::ticket_pool pool(slots, 128, 600000, st);
    holders h(3, 50);
    std::uint64_t opened = 0, delivered = 0, local = 0, lost = 0, bad = 0;
    std::thread worker([&] {
        pool.worker_attach();
        std::mt19937 rng(11);
        while (delivered < total && lost == 0) {
            pool.worker_clock(srv::ticket_pool::clock_ns());
            // Batches of 1-4, the next once all are answered: often a single ticket, whose
            // holder finishes just before or just after the worker decides to sleep.
            const std::uint64_t batch = pool.open_count() == 0 ? opened + 1 + rng() % 4 : 0;
            while (opened < total && opened < batch) {
                const std::uint64_t sid = ++opened;
                spop::ticket t = pool.open(7, sid, 1, mfs);
                if (sid % 32 == 0) { // answered on the worker's thread, inside its turn
                    t.complete([&](spop::ack_writer& a) {
                        a.set_var(spop::var_scope::txn, "v", value::from_uint64(sid));
                    });
                    ++local;
                    continue;
                }
                h.push({std::move(t), sid});
            }
            if (pool.worker_sleep()) {
                pollfd p{pool.event_fd(), POLLIN, 0};
                // Finished (the holders count after finish()) but not delivered, 5 s later.
                if (::poll(&p, 1, 5000) == 0 &&
                    h.completed.load() + h.dropped.load() + local > delivered)
                    ++lost;
            }
            pool.worker_awake();
            std::uint64_t v;
            const ssize_t rd = ::read(pool.event_fd(), &v, sizeof v);
            (void)rd;
            pool.worker_take([&](srv::ticket_pool::slot& s, std::uint32_t id) {
                if (!answers_its_notify(s)) ++bad;
                pool.worker_done(id);
                ++delivered;
            });
        }
    });
    worker.join();
    h.stop();
    EXPECT_EQ(lost, 0u) << "the worker slept with finished tickets waiting";
    EXPECT_EQ(bad, 0u);
    ASSERT_EQ(delivered, total);
    EXPECT_GT(local, 0u);
    pool.worker_take([](srv::ticket_pool::slot&, std::uint32_t) { ADD_FAILURE(); });
    EXPECT_EQ(st.deferred_completed.get(), total);
    EXPECT_EQ(st.deferred_inflight.get(), 0u);
    EXPECT_EQ(st.deferred_misuse.get(), h.misuse.load());
    EXPECT_EQ(st.deferred_expired.get() + st.deferred_late.get(), 0u);
    EXPECT_EQ(pool.open_count(), 0u);
}

// A deadline of 1 ms and holders that take 0-2 ms: finish() races worker_expire() on the same
// slot. Each NOTIFY gets exactly one answer (its holder's, or the fallback), a late finish
// never reaches the slot's next NOTIFY, and the counters add up: completed + expired = opened,
// late = expired once every holder is done, nothing in flight.
TEST(DeferredPool, AFinishRacingItsDeadlineAnswersOnce) {
    constexpr std::uint32_t slots = 16;
    constexpr std::uint64_t total = 6000;
    srv::worker_stats st;
    srv::ticket_pool pool(slots, 128, 1, st);
    std::vector<std::uint8_t> answers(total + 1, 0); // per stream id: 1 holder's, 2 fallback
    std::uint64_t opened = 0, bad = 0, twice = 0;
    const auto answer = [&](std::uint64_t sid, std::uint8_t how) {
        if (answers[sid] != 0) ++twice;
        answers[sid] = how;
    };
    {
        holders h(3, 2000);
        std::thread worker([&] {
            pool.worker_attach();
            std::uint64_t next = 0;
            for (int turns = 0; turns < 1000000; ++turns) {
                pool.worker_clock(srv::ticket_pool::clock_ns());
                while (opened < total && pool.available()) {
                    const std::uint64_t sid = ++opened;
                    h.push({pool.open(7, sid, 1, mfs), sid});
                }
                if (opened == total && pool.open_count() == 0) break;
                if (pool.worker_sleep()) {
                    const std::uint64_t now = srv::ticket_pool::clock_ns() / 1000000;
                    const int ms = next == 0 ? 50 : next > now ? static_cast<int>(next - now) : 0;
                    pollfd p{pool.event_fd(), POLLIN, 0};
                    (void)::poll(&p, 1, ms);
                }
                pool.worker_awake();
                std::uint64_t v;
                const ssize_t rd = ::read(pool.event_fd(), &v, sizeof v);
                (void)rd;
                pool.worker_clock(srv::ticket_pool::clock_ns());
                pool.worker_take([&](srv::ticket_pool::slot& s, std::uint32_t id) {
                    if (!answers_its_notify(s)) ++bad;
                    answer(s.sid, 1);
                    pool.worker_done(id);
                });
                next =
                    pool.worker_expire(false, [&](srv::ticket_pool::slot& s) { answer(s.sid, 2); });
            }
        });
        worker.join();
    } // the holders are done: every expired ticket was finished (late) or dropped
    pool.worker_take([](srv::ticket_pool::slot&, std::uint32_t) { ADD_FAILURE(); });
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(twice, 0u) << "a NOTIFY answered twice";
    ASSERT_EQ(opened, total);
    std::uint64_t by_holder = 0, by_fallback = 0;
    for (std::uint64_t sid = 1; sid <= total; ++sid) {
        EXPECT_NE(answers[sid], 0) << "stream " << sid << " never answered";
        by_holder += answers[sid] == 1;
        by_fallback += answers[sid] == 2;
    }
    EXPECT_EQ(st.deferred_completed.get(), by_holder);
    EXPECT_EQ(st.deferred_expired.get(), by_fallback);
    EXPECT_EQ(st.deferred_late.get(), by_fallback);
    EXPECT_EQ(st.deferred_inflight.get(), 0u);
    EXPECT_EQ(pool.open_count(), 0u);
    std::printf("[          ] answered by the holder %llu, by the fallback %llu\n",
                static_cast<unsigned long long>(by_holder),
                static_cast<unsigned long long>(by_fallback));
}

/// With shutdown_timeout_s = 0 the stop does not wait, but what it can send at once still goes
/// out: the open ticket's fallback, then AGENT-DISCONNECT. (io_uring queued both in its last
/// turn and closed the socket without submitting them: the peer got a bare close.)
TEST_P(DeferredTest, AStopWithNoTimeoutStillAnswersOpenTicketsThenDisconnects) {
    deferred_server s;
    auto o = deferred_opts(opts(1));
    o.shutdown_timeout_s = 0;
    ASSERT_TRUE(s.start(o));
    client c(s.port());
    ASSERT_TRUE(c.handshake());
    ASSERT_TRUE(c.send_all(echo_notify(1, 1, 0, "x")));
    ASSERT_TRUE(eventually([&] { return s.factory().park->size() == 1; }, 5s));
    s.stop();
    const auto frames = c.read_frames(2, 5s);
    ASSERT_EQ(frames.size(), 2u) << (c.eof() ? "closed" : "timeout");
    EXPECT_TRUE(is_noop_ack(frames[0]));
    EXPECT_EQ(frames[0].stream_id, 1u);
    EXPECT_TRUE(is_disconnect(frames[1], 0));
    EXPECT_TRUE(c.closes_cleanly());
    EXPECT_EQ(s.wait(), 0);
    EXPECT_EQ(s.sum(&test_stats::deferred_expired), 1u);
    (void)s.factory().park->take(); // after the stop: harmless
}

/// Hands its tickets to holder threads (holders above), except every tenth (by stream id),
/// which it keeps: only a stop or the test ends those.
class handing_service {
  public:
    static constexpr bool defers = true;
    struct shared {
        explicit shared(std::uint32_t max_pause_us = 2000) : h(3, max_pause_us) {}
        holders h;
        std::mutex m;
        std::vector<spop::ticket> kept;
    };
    explicit handing_service(shared& sh) noexcept : sh_(&sh) {}
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        spop::ticket t = req.defer();
        if (!t) {
            ack.set_var(spop::var_scope::txn, "sync", value::from_uint32(1));
            return spop::errc::ok;
        }
        if (req.stream_id % 10 == 0) {
            std::lock_guard<std::mutex> g(sh_->m);
            sh_->kept.push_back(std::move(t));
        } else {
            sh_->h.push({std::move(t), req.stream_id});
        }
        return spop::errc::ok;
    }

  private:
    shared* sh_;
};

struct handing_factory {
    std::shared_ptr<handing_service::shared> sh = std::make_shared<handing_service::shared>();
    handing_service operator()(const srv::worker_info<test_stats>&) const {
        return handing_service(*sh);
    }
};

// A graceful stop while other threads complete, drop and double-complete tickets: every NOTIFY
// read is answered exactly once (its holder's ACK, or the fallback for the kept tickets and
// those their holder dropped or had not completed by the stop's last second), all before the
// AGENT-DISCONNECT, and nothing after it. Holders keep completing while the workers exit and
// after wait() (allowed until the server object is destroyed).
TEST_P(DeferredTest, AStopWhileHoldersCompleteAnswersEachNotifyOnceBeforeTheDisconnect) {
    basic_test_server<handing_service, handing_factory> s;
    auto o = deferred_opts(opts(2));
    o.shutdown_timeout_s = 2;
    ASSERT_TRUE(s.start(o));
    constexpr int conns = 4, per = 200;
    auto cs = burst_clients(s.port(), conns, per);
    ASSERT_EQ(cs.size(), static_cast<std::size_t>(conns));
    s.stop();
    for (int c = 0; c < conns; ++c) {
        client& cl = *cs[static_cast<std::size_t>(c)];
        const auto frames = cl.read_frames(per + 1, 8s);
        ASSERT_EQ(frames.size(), static_cast<std::size_t>(per + 1)) << "connection " << c;
        std::vector<bool> seen(per + 1, false);
        for (int i = 0; i < per; ++i) {
            const parsed_frame& f = frames[static_cast<std::size_t>(i)];
            ASSERT_EQ(f.type, spop::frame_type::ack) << "connection " << c << " frame " << i;
            ASSERT_TRUE(f.stream_id >= 1 && f.stream_id <= per && !seen[f.stream_id])
                << "connection " << c << ": stream " << f.stream_id << " unknown or twice";
            seen[f.stream_id] = true;
            if (f.stream_id % 10 == 0)
                EXPECT_TRUE(is_noop_ack(f)) << "kept ticket " << f.stream_id;
            else
                EXPECT_TRUE(is_sid_ack(f) || is_noop_ack(f)) << "stream " << f.stream_id;
        }
        EXPECT_TRUE(is_disconnect(frames[per], 0)) << "connection " << c;
        EXPECT_TRUE(cl.closes_cleanly()) << "connection " << c;
    }
    EXPECT_EQ(s.wait(), 0);
    s.factory().sh->h.stop(); // every ticket handed over is finished now
    {
        std::lock_guard<std::mutex> g(s.factory().sh->m);
        s.factory().sh->kept.clear(); // after the stop, before the server object goes: harmless
    }
    EXPECT_EQ(s.sum(&test_stats::deferred_completed) + s.sum(&test_stats::deferred_expired),
              static_cast<std::uint64_t>(conns * per));
    EXPECT_GE(s.sum(&test_stats::deferred_expired), static_cast<std::uint64_t>(conns * per / 10));
    EXPECT_EQ(s.sum(&test_stats::deferred_inflight), 0u);
    EXPECT_EQ(s.sum(&test_stats::deferred_after_close), 0u);
}

// Holders racing a 15 ms deadline on two workers (1200 tickets at once: some answered by
// their holder, more by the fallback, some finished just as the deadline came): every NOTIFY gets
// exactly one ACK (its holder's, or the fallback when the deadline won), and once every holder is
// done the counters add up: completed + expired = NOTIFYs, late = expired, misuse = second
// completions, nothing in flight.
TEST_P(DeferredTest, CompletionsRacingAShortDeadlineAnswerOnceAndAddUp) {
    handing_factory f{std::make_shared<handing_service::shared>(400)};
    basic_test_server<handing_service, handing_factory> s(f);
    auto o = opts(2);
    o.deferred_timeout_ms = 15;
    ASSERT_TRUE(s.start(o));
    constexpr int conns = 4, per = 300;
    auto cs = burst_clients(s.port(), conns, per);
    ASSERT_EQ(cs.size(), static_cast<std::size_t>(conns));
    std::uint64_t by_holder = 0;
    for (int c = 0; c < conns; ++c) {
        const auto frames = cs[static_cast<std::size_t>(c)]->read_frames(per, 10s);
        ASSERT_EQ(frames.size(), static_cast<std::size_t>(per)) << "connection " << c;
        std::vector<bool> seen(per + 1, false);
        for (const parsed_frame& f : frames) {
            ASSERT_EQ(f.type, spop::frame_type::ack);
            ASSERT_TRUE(f.stream_id >= 1 && f.stream_id <= per && !seen[f.stream_id])
                << "connection " << c << ": stream " << f.stream_id << " unknown or twice";
            seen[f.stream_id] = true;
            if (is_sid_ack(f)) {
                EXPECT_NE(f.stream_id % 10, 0u) << "a kept ticket answered by a holder";
                ++by_holder;
            } else {
                EXPECT_TRUE(is_noop_ack(f)) << "stream " << f.stream_id;
            }
        }
        EXPECT_TRUE(cs[static_cast<std::size_t>(c)]->read_frames(1, 50ms).empty());
    }
    handing_service::shared& sh = *s.factory().sh;
    sh.h.stop();
    {
        std::lock_guard<std::mutex> g(sh.m);
        sh.kept.clear(); // long expired: late
    }
    const auto total = static_cast<std::uint64_t>(conns * per);
    EXPECT_TRUE(eventually(
        [&] {
            return s.sum(&test_stats::deferred_late) == s.sum(&test_stats::deferred_expired) &&
                   s.sum(&test_stats::deferred_misuse) == sh.h.misuse.load() &&
                   s.sum(&test_stats::deferred_completed) + s.sum(&test_stats::deferred_expired) ==
                       total;
        },
        5s))
        << "late " << s.sum(&test_stats::deferred_late) << " expired "
        << s.sum(&test_stats::deferred_expired) << " completed "
        << s.sum(&test_stats::deferred_completed) << " misuse "
        << s.sum(&test_stats::deferred_misuse) << " of " << sh.h.misuse.load();
    EXPECT_GE(s.sum(&test_stats::deferred_completed), by_holder);
    std::printf("[          ] answered by a holder %llu, expired %llu, late %llu\n",
                static_cast<unsigned long long>(by_holder),
                static_cast<unsigned long long>(s.sum(&test_stats::deferred_expired)),
                static_cast<unsigned long long>(s.sum(&test_stats::deferred_late)));
    EXPECT_EQ(s.sum(&test_stats::deferred_inflight), 0u);
    EXPECT_EQ(s.sum(&test_stats::deferred_after_close), 0u);
    cs.clear();
    s.stop();
    EXPECT_EQ(s.wait(), 0);
}

/// Keeps its tickets and never answers: odd stream ids in the connection's state, even ones in
/// the service itself. Both are dropped on the worker's thread, the first when the connection
/// goes, the others when the worker ends and destroys the service.
class hoarding_service {
  public:
    static constexpr bool defers = true;
    struct connection_state {
        std::vector<spop::ticket> held;
    };
    explicit hoarding_service(std::atomic<int>& n) noexcept : n_(&n) {}
    hoarding_service(hoarding_service&&) noexcept = default;
    ~hoarding_service() { held_.clear(); } // after the worker's loop, on its thread
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer&) noexcept {
        spop::ticket t = req.defer();
        if (!t) return spop::errc::ok;
        if (req.stream_id % 2 == 1)
            req.state<connection_state>().held.push_back(std::move(t));
        else
            held_.push_back(std::move(t));
        n_->fetch_add(1);
        return spop::errc::ok;
    }

  private:
    std::atomic<int>* n_;
    std::vector<spop::ticket> held_;
};

using hoarding_factory = counting_factory<hoarding_service>;

// Tickets dropped on the worker's own thread outside a turn's answers: with their connection
// (a reset) and with the service when the worker ends after a stop. The first is counted after
// close; the stop expires the others (the fallback for those whose connection is there); the late
// drops touch only the ticket pool, which outlives the workers (run under ASan and TSan).
TEST_P(DeferredTest, TicketsDroppedWithTheirConnectionOrServiceOnTheWorkersThreadAreSafe) {
    basic_test_server<hoarding_service, hoarding_factory> s;
    auto o = deferred_opts(opts(1));
    o.shutdown_timeout_s = 1;
    ASSERT_TRUE(s.start(o));
    {
        client a(s.port());
        ASSERT_TRUE(a.handshake());
        bytes batch = echo_notify(1, 1, 0, "x");
        spop_test::append(batch, echo_notify(2, 1, 0, "x"));
        ASSERT_TRUE(a.send_all(batch));
        ASSERT_TRUE(eventually([&] { return s.factory().n->load() == 2; }, 5s));
        const linger lg{1, 0};
        ::setsockopt(a.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    } // reset: ticket 1 goes with the connection's state
    EXPECT_TRUE(eventually([&] { return s.sum(&test_stats::deferred_after_close) == 1; }, 5s));
    client b(s.port());
    ASSERT_TRUE(b.handshake());
    bytes batch = echo_notify(3, 1, 0, "x");
    spop_test::append(batch, echo_notify(4, 1, 0, "x"));
    ASSERT_TRUE(b.send_all(batch));
    ASSERT_TRUE(eventually([&] { return s.factory().n->load() == 4; }, 5s));
    s.stop();
    const auto frames = b.read_frames(3, 5s);
    ASSERT_EQ(frames.size(), 3u);
    EXPECT_TRUE(is_noop_ack(frames[0]));
    EXPECT_TRUE(is_noop_ack(frames[1]));
    EXPECT_TRUE(is_disconnect(frames[2], 0));
    EXPECT_TRUE(b.closes_cleanly());
    EXPECT_EQ(s.wait(), 0);
    EXPECT_EQ(s.sum(&test_stats::deferred_expired), 3u); // 2 (its connection gone), 3 and 4
    EXPECT_EQ(s.sum(&test_stats::deferred_inflight), 0u);
}

} // namespace
