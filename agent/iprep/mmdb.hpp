// MaxMind DB (--mmdb) import through libmaxminddb.
//
// The database is read once per (re)load: its search tree is walked with MMDB_read_node and
// every network whose record maps to a score becomes a prefix in the agent's own table, so the
// hot path never calls into libmaxminddb and the file can be replaced at any time.
//
// Field-to-score mapping (the first rule that applies):
//   1. `score` (top level), any integer or floating-point type: the score itself, clamped to
//      0..100 (floating-point values are rounded).
//   2. Anonymizer flags, booleans at the top level (GeoIP2 Anonymous IP) or under `traits`
//      (GeoIP2 Enterprise/Insights, legacy is_anonymous_proxy). The lowest score of the flags
//      that are true:
//        is_tor_exit_node 0, is_public_proxy 10, is_anonymous_proxy 10,
//        is_residential_proxy 20, is_anonymous_vpn 30, is_anonymous 40, is_hosting_provider 50
//   3. Anything else: the network is not imported (its addresses stay unlisted).
// Category (for --category-var): the top-level `category` string if present (truncated to 64
// bytes, unprintable bytes replaced with '_'), else the name of the flag that gave the score
// without its "is_" prefix (for example "tor_exit_node"), else none.
//
// Networks under ::/96 and ::ffff:0:0/96 in an IPv6 database are IPv4 networks. The aliases the
// MaxMind writer adds (::ffff:0:0/96 and 2002::/16 pointing at the IPv4 subtree) are skipped;
// 6to4 addresses (2002::/16) are therefore not matched against IPv4 networks.
//
// Memory: libmaxminddb maps the whole file read-only (mmap, MMDB_MODE_MMAP; it reads nothing
// up front but looks for the metadata in the last 128 KiB) and the walk touches the search
// tree and the data records it maps, so the pages counted are file-backed, reclaimable and
// bounded by the file size, which --max-file-size bounds. libmaxminddb validates the metadata
// and every node and record it reads; a file that is not a MaxMind DB fails at open. A file
// truncated in place while it is being walked would fault (SIGBUS): replace it by renaming a
// new file into place, as with every source.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "parse.hpp"

namespace agent::iprep {

/// False when the agent was built without libmaxminddb.
[[nodiscard]] bool mmdb_supported() noexcept;

/// Imports every mapped network of `path` into `out`. `networks` counts the imported ones.
/// A file larger than `max_file_size` is refused before it is opened, and again if the file
/// libmaxminddb mapped turns out larger (it grew in between).
bool import_mmdb(const std::string& path, entry_sink& out, std::size_t& networks,
                 std::uint64_t max_file_size, parse_error& err);

} // namespace agent::iprep
