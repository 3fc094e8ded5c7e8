// A custom agent on spop::server, as another project writes it: one service, one main.
//   path_agent -p PORT [-n WORKERS] [-a ADDRESS]... [--engine uring|epoll|auto]
// HAProxy side:
//   spoe-message check-path
//       args path=path
//       event on-frontend-http-request
//   http-request deny if { var(txn.<prefix>.is_admin) -m bool } !{ src 10.0.0.0/8 }
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <spop/message.hpp>
#include <spop/server/server.hpp>

class path_service {
  public:
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        return routes.dispatch(req, ack);
    }

  private:
    static void check_path(const spop::message_view& m, spop::ack_writer& ack) noexcept {
        const auto path = m.string("path");
        if (!path) return; // missing, NULL or not a string: no verdict
        ack.set_var(spop::var_scope::txn, "is_admin",
                    spop::value::from_bool(path->starts_with("/admin")));
        ack.set_var(spop::var_scope::txn, "path_len",
                    spop::value::from_uint32(static_cast<std::uint32_t>(path->size())));
    }
    static constexpr spop::router routes{spop::on("check-path", &check_path)};
};
static_assert(spop::service<path_service>);

int main(int argc, char** argv) {
    spop::server::options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view flag = argv[i], v = argv[i + 1];
        if (flag == "-p")
            o.port = std::atoi(argv[i + 1]);
        else if (flag == "-n")
            o.workers = std::atoi(argv[i + 1]);
        else if (flag == "-a")
            o.addresses.emplace_back(v);
        else if (flag == "--engine")
            o.engine = v == "uring"   ? spop::server::backend::uring
                       : v == "epoll" ? spop::server::backend::epoll
                                      : spop::server::backend::automatic;
    }
    spop::server::server<path_service> srv(o);
    return srv.run([](const auto&) { return path_service(); }); // until SIGTERM/SIGINT
}
