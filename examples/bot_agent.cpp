// The bot check (bot_service.hpp: check-ua -> txn.<prefix>.is_bot) on spop::server:
//   bot_agent -p 12345 -n 2 [-a ADDR]... [--engine uring|epoll|auto]
// Same engine as the agent and random_agent; stops gracefully on SIGTERM/SIGINT.
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <spop/server/server.hpp>

#include "bot_service.hpp"

int main(int argc, char** argv) {
    spop::server::options o;
    for (int i = 1; i < argc; i += 2) {
        const std::string_view flag = argv[i];
        const std::string_view v = i + 1 < argc ? argv[i + 1] : "";
        const int n = std::atoi(v.data());
        if (flag == "-p" && n > 0 && n < 65536)
            o.port = n;
        else if (flag == "-n" && n > 0 && n <= 1024)
            o.workers = n;
        else if (flag == "-a" && !v.empty())
            o.addresses.emplace_back(v);
        else if (flag == "--engine" && (v == "uring" || v == "epoll" || v == "auto"))
            o.engine = v == "uring"   ? spop::server::backend::uring
                       : v == "epoll" ? spop::server::backend::epoll
                                      : spop::server::backend::automatic;
        else
            return std::fprintf(stderr, "bot_agent: bad option %s %s\n", argv[i], v.data()), 2;
    }
    spop::server::server<example::bot_service> srv(o);
    return srv.run([](const auto&) { return example::bot_service(); });
}
