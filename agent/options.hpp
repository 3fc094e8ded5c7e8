// Command-line options. The reference agent's flags (-h -d -p -n -m -c) keep their meaning.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <spop/server/options.hpp>

namespace agent {

using engine_kind = spop::server::backend;

struct list_spec {
    std::string path;
    int score = 0;
};

/// The engine's settings (spop::server::options: listeners, workers, limits) plus the agent's.
struct options : spop::server::options {
    options() {
        workers = 5; // as spoa-example
        // A check-rate ACK carries the NOTIFY's scores too: room for about 290 of them (the
        // pages are touched only as far as an ACK is written).
        deferred_ack_bytes = 4096;
    }
    bool debug = false;
    int default_score = -1; ///< -1 = random
    std::string user;
    std::string metrics; ///< ADDR:PORT, empty = off
    std::vector<list_spec> lists;
    std::vector<std::string> allow_lists;
    std::vector<std::string> csv_files;
    std::string mmdb;
    std::uint64_t max_file_size = std::uint64_t{512} << 20; ///< per reputation file
    std::string category_var;
    std::string var_name = "ip_score";

    // Live decisions (agent/decisions/, docs/decisions.md).
    std::string decisions;               ///< Redis URL, empty = off
    std::size_t decisions_max = 1000000; ///< --decisions-max
    unsigned decisions_wait_ms = 2000;   ///< --decisions-wait: first sync before listening
    // Shared rate limits (check-rate, docs/rate-limits.md).
    std::string rate_redis;           ///< --rate-redis URL; empty: check-rate gets the fail value
    std::uint32_t rate_limit = 100;   ///< --rate-limit: requests per window
    std::uint32_t rate_window_s = 60; ///< --rate-window
    bool rate_fail_closed = false;    ///< --rate-fail closed
};

/// The longest --var-name / --category-var accepted. HAProxy drops a SET-VAR whose full name
/// "sess.<var-prefix>.<name>" reaches 64 bytes (spop::haproxy_max_var_full_name), and the agent
/// cannot see the var-prefix (`option var-prefix`, by default the spoe-agent's name). 40 bytes
/// leave 63 - 5 ("sess.") - 1 (".") - 40 = 17 bytes for the prefix, enough for the usual
/// ("iprep", an agent name); with a longer prefix keep len(prefix) + len(name) <= 57.
inline constexpr std::size_t max_var_name_length = 40;

enum class parse_outcome { run, exit_ok, exit_error };

/// Parses argv. On error prints one line "agent: <what>" to stderr.
parse_outcome parse_options(int argc, char** argv, options& out);

void print_usage(const char* argv0);

} // namespace agent
