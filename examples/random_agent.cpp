// HAProxy's reference agent, spoa-example ("random IP reputation"), on spop::server:
//   random_agent -p 12345 -n 5     check-client-ip -> sess.<prefix>.ip_score, 0..100
// Same engine as the agent: io_uring or epoll, handshake, health checks, errors, limits and
// the lame-duck stop on SIGTERM/SIGINT.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string_view>

#include <spop/server/server.hpp>

#include "flags.hpp"
#include "random_service.hpp"

int main(int argc, char** argv) {
    spop::server::options o;
    o.workers = 5; // as the reference
    for (int i = 1; i < argc; i += 2) {
        const std::string_view flag = argv[i];
        if (flag == "-h" || flag == "--help") {
            std::printf("usage: %s [-p PORT] [-n WORKERS] [-m MAX_FRAME] [-a ADDR]... [--engine E] "
                        "[--cpus LIST]\n",
                        argv[0]);
            return 0;
        }
        if (i + 1 >= argc)
            return std::fprintf(stderr, "random_agent: %s needs a value\n", argv[i]), 2;
        if (!example::server_flag(o, flag, argv[i + 1]))
            return std::fprintf(stderr, "random_agent: bad option %s %s\n", argv[i], argv[i + 1]),
                   2;
    }
    spop::server::server<example::random_service> srv(o);
    const std::uint32_t seed = std::random_device{}();
    return srv.run([seed](const auto& w) {
        return example::random_service(seed + static_cast<std::uint32_t>(w.id));
    });
}
