// A snapshot: the immutable IPv4 and IPv6 tables built from every configured source, and the
// loader that builds one.
//
// Precedence, for one address:
//   1. an allow-list entry (any prefix length) gives score 100, outcome "allowed";
//   2. otherwise the longest matching prefix among --list, --csv and --mmdb entries; for the
//      very same prefix in several sources, the lowest score wins;
//   3. otherwise "unlisted": the service uses --default-score.
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are looked up in the IPv4 table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lpm.hpp"
#include "parse.hpp"

namespace agent::iprep {

struct list_source {
    std::string path;
    int score = 0;
};

struct sources_config {
    std::vector<list_source> lists;
    std::vector<std::string> allow;
    std::vector<std::string> csv;
    std::string mmdb;
    std::uint64_t max_file_size = default_max_file_size; ///< per file (--max-file-size)
    [[nodiscard]] bool empty() const noexcept {
        return lists.empty() && allow.empty() && csv.empty() && mmdb.empty();
    }
    /// Every file the configuration reads, in order.
    [[nodiscard]] std::vector<std::string> files() const;
};

struct load_stats {
    std::size_t list_entries = 0;  ///< lines read from --list files
    std::size_t allow_entries = 0; ///< lines read from --allow files
    std::size_t csv_entries = 0;   ///< lines read from --csv files
    std::size_t mmdb_networks = 0; ///< networks imported from --mmdb
    std::size_t prefixes_v4 = 0;   ///< distinct prefixes in the IPv4 table
    std::size_t prefixes_v6 = 0;   ///< distinct prefixes in the IPv6 table
    std::size_t bytes = 0;         ///< memory of both tables
    std::uint64_t build_ns = 0;    ///< parse + build time
    std::int64_t newest_mtime = 0; ///< newest modification time among the files (Unix seconds)
};

class snapshot {
  public:
    /// The leaf value for `ip` (4 or 16 bytes, network order), 0 when nothing matches.
    [[nodiscard]] std::uint32_t lookup(const std::uint8_t* ip, bool v6) const noexcept;

    lpm4 v4;
    lpm6 v6;
};

/// Sorts, deduplicates (lowest score wins), applies allow-list precedence and builds.
/// `allow` holds allow-list prefixes (their values say "allowed"). Returns nullptr if the
/// tables are too large.
std::unique_ptr<snapshot> build_snapshot(entry_sink& listed, entry_sink& allow, load_stats& st);

/// Reads every source and builds a snapshot. On a bad file returns nullptr and sets err.
std::unique_ptr<snapshot> load_snapshot(const sources_config& cfg, load_stats& st,
                                        parse_error& err);

} // namespace agent::iprep
