#include "mmdb.hpp"

#ifdef SPOP_HAVE_MMDB

#include <cmath>
#include <cstring>
#include <maxminddb.h>
#include <unordered_map>
#include <vector>

#include "value.hpp"

namespace agent::iprep {

bool mmdb_supported() noexcept {
    return true;
}

namespace {

constexpr const char* end_path = nullptr;

struct flag_rule {
    const char* name;
    int score;
};
// Most severe first: the first true flag gives the score and the category.
constexpr flag_rule flag_rules[] = {
    {"is_tor_exit_node", 0},      {"is_public_proxy", 10},  {"is_anonymous_proxy", 10},
    {"is_residential_proxy", 20}, {"is_anonymous_vpn", 30}, {"is_anonymous", 40},
    {"is_hosting_provider", 50},
};

bool get_bool(MMDB_entry_s* e, const char* a, const char* b) {
    MMDB_entry_data_s d{};
    const int st = b ? MMDB_get_value(e, &d, a, b, end_path) : MMDB_get_value(e, &d, a, end_path);
    return st == MMDB_SUCCESS && d.has_data && d.type == MMDB_DATA_TYPE_BOOLEAN && d.boolean;
}

std::string clean_category(const char* s, std::size_t n) {
    if (n > category_max_len) n = category_max_len;
    std::string out(s, n);
    for (char& c : out) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7F || c == '"' || c == '\\') c = '_';
    }
    return out;
}

/// The leaf value for a data record, 0 if it does not map to a score.
std::uint32_t map_entry(MMDB_entry_s entry) {
    int score = -1;
    std::string category;
    MMDB_entry_data_s d{};
    if (MMDB_get_value(&entry, &d, "score", end_path) == MMDB_SUCCESS && d.has_data) {
        double v = -1;
        switch (d.type) {
        case MMDB_DATA_TYPE_UINT16:
            v = d.uint16;
            break;
        case MMDB_DATA_TYPE_UINT32:
            v = d.uint32;
            break;
        case MMDB_DATA_TYPE_INT32:
            v = d.int32;
            break;
        case MMDB_DATA_TYPE_UINT64:
            v = static_cast<double>(d.uint64);
            break;
        case MMDB_DATA_TYPE_DOUBLE:
            v = d.double_value;
            break;
        case MMDB_DATA_TYPE_FLOAT:
            v = d.float_value;
            break;
        default:
            break;
        }
        if (d.type == MMDB_DATA_TYPE_UINT16 || d.type == MMDB_DATA_TYPE_UINT32 ||
            d.type == MMDB_DATA_TYPE_INT32 || d.type == MMDB_DATA_TYPE_UINT64 ||
            d.type == MMDB_DATA_TYPE_DOUBLE || d.type == MMDB_DATA_TYPE_FLOAT) {
            if (!(v >= 0)) v = 0; // negative or NaN
            if (v > 100) v = 100;
            score = static_cast<int>(std::lround(v));
        }
    }
    if (score < 0) {
        for (const auto& r : flag_rules) {
            if (get_bool(&entry, r.name, nullptr) || get_bool(&entry, "traits", r.name)) {
                score = r.score;
                category = r.name + 3;
                break;
            }
        }
    }
    if (score < 0) return 0;
    MMDB_entry_data_s c{};
    if (MMDB_get_value(&entry, &c, "category", end_path) == MMDB_SUCCESS && c.has_data &&
        c.type == MMDB_DATA_TYPE_UTF8_STRING && c.data_size > 0)
        category = clean_category(c.utf8_string, c.data_size);
    std::uint32_t cat = 0;
    if (!category.empty()) cat = category_pool::instance().intern(category);
    return encode_value(outcome_bits::listed, score, cat);
}

struct mmdb_closer {
    MMDB_s* db;
    ~mmdb_closer() { MMDB_close(db); }
};

} // namespace

bool import_mmdb(const std::string& path, entry_sink& out, std::size_t& networks,
                 std::uint64_t max_file_size, parse_error& err) {
    networks = 0;
    if (!check_file_size(path, max_file_size, err)) return false;
    MMDB_s db{};
    const int st = MMDB_open(path.c_str(), MMDB_MODE_MMAP, &db);
    if (st != MMDB_SUCCESS) {
        err = {path, 0, std::string("cannot open MaxMind DB: ") + MMDB_strerror(st)};
        if (st == MMDB_IO_ERROR) err.message += std::string(" (") + std::strerror(errno) + ")";
        return false;
    }
    mmdb_closer closer{&db};
    if (db.file_size < 0 || static_cast<std::uint64_t>(db.file_size) > max_file_size) {
        err = {path, 0,
               too_large_message(static_cast<std::uint64_t>(db.file_size), max_file_size, true)};
        return false;
    }
    const unsigned bits = db.metadata.ip_version == 6 ? 128u : 32u;
    if (db.metadata.ip_version != 4 && db.metadata.ip_version != 6) {
        err = {path, 0, "unsupported ip_version " + std::to_string(db.metadata.ip_version)};
        return false;
    }
    const std::uint64_t node_count = db.metadata.node_count;

    // The IPv4 subtree of an IPv6 database: the node reached by 96 zero bits.
    std::uint64_t ipv4_start = UINT64_MAX;
    if (bits == 128) {
        std::uint64_t n = 0;
        int depth = 0;
        for (; depth < 96 && n < node_count; ++depth) {
            MMDB_search_node_s sn{};
            if (MMDB_read_node(&db, static_cast<std::uint32_t>(n), &sn) != MMDB_SUCCESS) break;
            if (sn.left_record_type != MMDB_RECORD_TYPE_SEARCH_NODE) break;
            n = sn.left_record;
        }
        if (depth == 96) ipv4_start = n;
    }

    struct item {
        std::uint64_t node;
        unsigned depth;
        u128 path; // MSB-aligned in 128 bits for both versions
    };
    std::vector<item> stack{{0, 0, 0}};
    std::unordered_map<std::uint32_t, std::uint32_t> values; // data offset -> leaf value
    std::uint64_t visited = 0;
    static constexpr u128 mapped_prefix = static_cast<u128>(0xFFFFu) << 32;

    auto emit = [&](u128 p, unsigned len, std::uint32_t v) {
        net_prefix np;
        if (bits == 32) {
            np.v6 = false;
            np.len = static_cast<std::uint8_t>(len);
            np.v4 = static_cast<std::uint32_t>(p >> 96);
            out.add(np, v);
            return;
        }
        const u128 top96 = p >> 32;
        if (len >= 96 && (top96 == 0 || top96 == (mapped_prefix >> 32))) {
            np.v6 = false;
            np.len = static_cast<std::uint8_t>(len - 96);
            np.v4 = static_cast<std::uint32_t>(p & 0xFFFFFFFFu);
            out.add(np, v);
            return;
        }
        if (len < 96 && (len == 0 || (p >> (128 - len)) == 0)) {
            // Covers ::/96: all of IPv4 too.
            np.v6 = false;
            np.len = 0;
            np.v4 = 0;
            out.add(np, v);
        }
        np.v6 = true;
        np.len = static_cast<std::uint8_t>(len);
        np.v6addr = p;
        out.add(np, v);
    };

    while (!stack.empty()) {
        const item it = stack.back();
        stack.pop_back();
        if (++visited > node_count) {
            err = {path, 0, "corrupt MaxMind DB: the search tree has loops"};
            return false;
        }
        MMDB_search_node_s sn{};
        if (it.node >= node_count ||
            MMDB_read_node(&db, static_cast<std::uint32_t>(it.node), &sn) != MMDB_SUCCESS) {
            err = {path, 0, "corrupt MaxMind DB: bad search tree node " + std::to_string(it.node)};
            return false;
        }
        for (int side = 1; side >= 0; --side) {
            const unsigned d = it.depth + 1;
            const u128 p = side ? (it.path | (u128{1} << (127 - it.depth))) : it.path;
            const std::uint8_t type = side ? sn.right_record_type : sn.left_record_type;
            const std::uint64_t rec = side ? sn.right_record : sn.left_record;
            switch (type) {
            case MMDB_RECORD_TYPE_EMPTY:
                break;
            case MMDB_RECORD_TYPE_SEARCH_NODE:
                if (bits == 128 && rec == ipv4_start && !(d == 96 && p == 0)) break; // alias
                if (d >= bits) {
                    err = {path, 0, "corrupt MaxMind DB: search tree deeper than the address"};
                    return false;
                }
                stack.push_back({rec, d, p});
                break;
            case MMDB_RECORD_TYPE_DATA: {
                MMDB_entry_s e = side ? sn.right_record_entry : sn.left_record_entry;
                auto f = values.find(e.offset);
                std::uint32_t v;
                if (f == values.end()) {
                    v = map_entry(e);
                    values.emplace(e.offset, v);
                } else {
                    v = f->second;
                }
                if (v != 0) {
                    emit(p, d, v);
                    ++networks;
                }
                break;
            }
            default:
                err = {path, 0,
                       "corrupt MaxMind DB: invalid record in node " + std::to_string(it.node)};
                return false;
            }
        }
    }
    return true;
}

} // namespace agent::iprep

#else // !SPOP_HAVE_MMDB

namespace agent::iprep {

bool mmdb_supported() noexcept {
    return false;
}

bool import_mmdb(const std::string& path, entry_sink&, std::size_t& networks, std::uint64_t,
                 parse_error& err) {
    networks = 0;
    err = {path, 0, "this agent was built without libmaxminddb (--mmdb is unavailable)"};
    return false;
}

} // namespace agent::iprep

#endif
