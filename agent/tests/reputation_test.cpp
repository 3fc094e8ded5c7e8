// Unit tests for the reputation sources: the file parsers (good and bad lines; streaming
// across read-buffer boundaries, BOM, binary content, long lines, size limits), the Poptrie
// against a brute-force reference, precedence (allow-list, longest prefix, lowest score),
// IPv4-mapped lookups, MaxMind DB import, snapshot publication under concurrent lookups, the
// reloader (bad file keeps the old tables, inotify), the service's answers and counters, and the
// /metrics page (more in prometheus_test.cpp).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <initializer_list>
#include <new>
#include <random>
#include <span>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "../iprep/lpm.hpp"
#include "../iprep/mmdb.hpp"
#include "../iprep/parse.hpp"
#include "../iprep/reloader.hpp"
#include "../iprep/reputation.hpp"
#include "../iprep/service.hpp"
#include "../iprep/table.hpp"
#include "../iprep/value.hpp"
#include "../metrics.hpp"

#include <spop/spop.hpp>

using namespace agent;
using namespace agent::iprep;

// Counts heap allocations, to check that lookups allocate nothing.
static std::atomic<std::uint64_t> g_allocs{0};
void* operator new(std::size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    std::abort();
}
void* operator new[](std::size_t n) {
    return operator new(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept {
    return operator new(n, t);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}

namespace {

struct ip {
    std::uint8_t b[16]{};
    bool v6 = false;
};

ip addr(const char* s) {
    ip r;
    if (std::string_view(s).find(':') != std::string_view::npos) {
        r.v6 = true;
        EXPECT_EQ(inet_pton(AF_INET6, s, r.b), 1) << s;
    } else {
        EXPECT_EQ(inet_pton(AF_INET, s, r.b), 1) << s;
    }
    return r;
}

lookup_result look(const reputation_source& rep, const char* s) {
    const ip a = addr(s);
    return rep.lookup(a.b, a.v6);
}

class temp_dir {
  public:
    temp_dir() {
        char tmpl[] = "/tmp/iprep-test-XXXXXX";
        path_ = mkdtemp(tmpl);
    }
    ~temp_dir() {
        const std::string cmd = "rm -rf '" + path_ + "'";
        [[maybe_unused]] int rc = std::system(cmd.c_str());
    }
    std::string file(const std::string& name, const std::string& content) const {
        const std::string p = path_ + "/" + name;
        std::ofstream(p, std::ios::binary) << content;
        return p;
    }
    /// Writes to a temporary name and renames into place (what deployment tools do).
    std::string replace(const std::string& name, const std::string& content) const {
        const std::string tmp = file("." + name + ".tmp", content);
        const std::string p = path_ + "/" + name;
        EXPECT_EQ(std::rename(tmp.c_str(), p.c_str()), 0);
        return p;
    }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

std::unique_ptr<snapshot> load(const sources_config& cfg, parse_error& err) {
    load_stats st;
    return load_snapshot(cfg, st, err);
}

} // namespace

// ---- prefixes --------------------------------------------------------------------------------

TEST(ParsePrefix, Ipv4) {
    net_prefix p;
    std::string why;
    ASSERT_TRUE(parse_prefix("192.0.2.1", p, why));
    EXPECT_FALSE(p.v6);
    EXPECT_EQ(p.len, 32);
    EXPECT_EQ(p.v4, 0xC0000201u);
    ASSERT_TRUE(parse_prefix("198.51.100.0/24", p, why));
    EXPECT_EQ(p.len, 24);
    EXPECT_EQ(p.v4, 0xC6336400u);
    ASSERT_TRUE(parse_prefix("10.1.2.3/8", p, why)); // host bits cleared
    EXPECT_EQ(p.v4, 0x0A000000u);
    ASSERT_TRUE(parse_prefix("0.0.0.0/0", p, why));
    EXPECT_EQ(p.len, 0);
}

TEST(ParsePrefix, Ipv6AndMapped) {
    net_prefix p;
    std::string why;
    ASSERT_TRUE(parse_prefix("2001:db8::/32", p, why));
    EXPECT_TRUE(p.v6);
    EXPECT_EQ(p.len, 32);
    EXPECT_EQ(static_cast<std::uint64_t>(p.v6addr >> 64), 0x20010db800000000ull);
    ASSERT_TRUE(parse_prefix("2001:db8::1", p, why));
    EXPECT_EQ(p.len, 128);
    ASSERT_TRUE(parse_prefix("2001:db8:ffff::1/33", p, why));
    EXPECT_EQ(static_cast<std::uint64_t>(p.v6addr >> 64), 0x20010db880000000ull);
    EXPECT_EQ(static_cast<std::uint64_t>(p.v6addr), 0u);
    // IPv4-mapped entries are IPv4 entries.
    ASSERT_TRUE(parse_prefix("::ffff:192.0.2.0/120", p, why));
    EXPECT_FALSE(p.v6);
    EXPECT_EQ(p.len, 24);
    EXPECT_EQ(p.v4, 0xC0000200u);
    ASSERT_TRUE(parse_prefix("::ffff:203.0.113.9", p, why));
    EXPECT_FALSE(p.v6);
    EXPECT_EQ(p.len, 32);
}

TEST(ParsePrefix, Bad) {
    net_prefix p;
    for (const char* s :
         {"", "1.2.3", "1.2.3.4/33", "1.2.3.4/", "1.2.3.4/x", "1.2.3.256", "abc", "::1/129",
          "1.2.3.4/-1", "1.2.3.4/0032", "2001:db8:::1", "1.2.3.4/24/8", " 1.2.3.4"}) {
        std::string why;
        EXPECT_FALSE(parse_prefix(s, p, why)) << "'" << s << "'";
        EXPECT_FALSE(why.empty());
    }
}

// ---- list files ------------------------------------------------------------------------------

TEST(ParseList, FireholFormat) {
    const std::string text = "#\n"
                             "# firehol_level1 (sample)\n"
                             "#\n"
                             "\n"
                             "0.0.0.0/8\n"
                             "1.10.16.0/20\r\n"
                             "   5.5.5.5   \n"
                             "203.0.113.7 # trailing comment\n"
                             "2001:db8::/32\n"
                             "\t# indented comment\n"
                             "192.0.2.9";
    entry_sink out;
    parse_error err;
    ASSERT_TRUE(parse_list(text, "level1.netset", 7, out, err)) << err.to_string();
    ASSERT_EQ(out.v4.size(), 5u);
    ASSERT_EQ(out.v6.size(), 1u);
    EXPECT_EQ(out.v4[0].len, 8);
    EXPECT_EQ(out.v4[1].addr, key4(0x010A1000u));
    EXPECT_EQ(out.v4[1].len, 20);
    EXPECT_EQ(out.v4[2].addr, key4(0x05050505u));
    EXPECT_EQ(out.v4[3].addr, key4(0xCB007107u));
    EXPECT_EQ(out.v4[4].addr, key4(0xC0000209u));
    EXPECT_EQ(out.v4[0].value, 7u);
}

TEST(ParseList, BadLineNamesFileAndLine) {
    entry_sink out;
    parse_error err;
    EXPECT_FALSE(parse_list("1.2.3.4\n# ok\n\n10.0.0.0/33\n5.6.7.8\n", "bad.ipset", 1, out, err));
    EXPECT_EQ(err.file, "bad.ipset");
    EXPECT_EQ(err.line, 4u);
    EXPECT_NE(err.message.find("10.0.0.0/33"), std::string::npos) << err.message;
    EXPECT_EQ(err.to_string().rfind("bad.ipset:4: ", 0), 0u) << err.to_string();

    EXPECT_FALSE(parse_list("1.2.3.4 5.6.7.8\n", "two.ipset", 1, out, err));
    EXPECT_EQ(err.line, 1u);
    EXPECT_FALSE(parse_list("ok\n", "word.ipset", 1, out, err));
    EXPECT_EQ(err.line, 1u);
    EXPECT_FALSE(parse_list("1.2.3.4-1.2.3.9\n", "range.ipset", 1, out, err));
    EXPECT_FALSE(parse_list("1.2.3.4,5\n", "csv.ipset", 1, out, err));
}

TEST(ParseList, EmptyIsFine) {
    entry_sink out;
    parse_error err;
    EXPECT_TRUE(parse_list("", "e", 1, out, err));
    EXPECT_TRUE(parse_list("# nothing\n\n", "e", 1, out, err));
    EXPECT_EQ(out.size(), 0u);
}

// ---- CSV files -------------------------------------------------------------------------------

TEST(ParseCsv, ScoreMapping) {
    EXPECT_EQ(suricata_to_score(0), 100);
    EXPECT_EQ(suricata_to_score(1), 99);
    EXPECT_EQ(suricata_to_score(64), 50);
    EXPECT_EQ(suricata_to_score(100), 21);
    EXPECT_EQ(suricata_to_score(126), 1);
    EXPECT_EQ(suricata_to_score(127), 0);
    for (int s = 1; s <= 127; ++s) EXPECT_LE(suricata_to_score(s), suricata_to_score(s - 1));
}

TEST(ParseCsv, Good) {
    const std::string text = "# ip,category,score\n"
                             "192.0.2.1,BadHosts,127\n"
                             " 198.51.100.0/24 , Scanners , 64 \n"
                             "2001:db8::/48,Tor,0\r\n";
    entry_sink out;
    parse_error err;
    ASSERT_TRUE(parse_csv(text, "rep.csv", out, err)) << err.to_string();
    ASSERT_EQ(out.v4.size(), 2u);
    ASSERT_EQ(out.v6.size(), 1u);
    const auto& pool = category_pool::instance();
    EXPECT_EQ(value_score(out.v4[0].value), 0);
    EXPECT_EQ(pool.get(value_category(out.v4[0].value)), "BadHosts");
    EXPECT_EQ(value_outcome(out.v4[0].value), 1u);
    EXPECT_EQ(value_score(out.v4[1].value), 50);
    EXPECT_EQ(pool.get(value_category(out.v4[1].value)), "Scanners");
    EXPECT_EQ(out.v4[1].len, 24);
    EXPECT_EQ(value_score(out.v6[0].value), 100);
    EXPECT_EQ(pool.get(value_category(out.v6[0].value)), "Tor");
}

TEST(ParseCsv, BadLines) {
    struct bad {
        const char* text;
        std::size_t line;
        const char* needle;
    };
    const std::string long_cat(65, 'x');
    const std::string long_line = "1.2.3.4," + long_cat + ",5\n";
    const bad cases[] = {
        {"1.2.3.4,cat\n", 1, "expected"},
        {"1.2.3.4\n", 1, "expected"},
        {"1.2.3.4,cat,5,extra\n", 1, "expected"},
        {"# c\n1.2.3.4,cat,128\n", 2, "out of range"},
        {"1.2.3.4,cat,-1\n", 1, "bad score"},
        {"1.2.3.4,cat,abc\n", 1, "bad score"},
        {"1.2.3.4,cat,\n", 1, "bad score"},
        {"1.2.3.4,,5\n", 1, "empty category"},
        {"1.2.3.4,two words,5\n", 1, "bad character"},
        {"1.2.3.4,\"q\",5\n", 1, "bad character"},
        {long_line.c_str(), 1, "longer than 64"},
        {"ok,cat,5\n", 1, "bad address"},
        {"1.2.3.4,cat,5\n1.2.3.400,cat,5\n", 2, "bad address"},
        {"1.2.3.4/40,cat,5\n", 1, "prefix length"},
    };
    for (const auto& c : cases) {
        entry_sink out;
        parse_error err;
        EXPECT_FALSE(parse_csv(c.text, "x.csv", out, err)) << c.text;
        EXPECT_EQ(err.line, c.line) << c.text;
        EXPECT_EQ(err.file, "x.csv");
        EXPECT_NE(err.message.find(c.needle), std::string::npos) << c.text << " -> " << err.message;
    }
}

TEST(ParseFiles, MissingFileAndCategoryNames) {
    entry_sink out;
    text_parser p(text_parser::format::list, "/nonexistent/list.netset", 1, out);
    parse_error err;
    EXPECT_FALSE(parse_file("/nonexistent/list.netset", p, read_limits{}, err));
    EXPECT_EQ(err.line, 0u);
    EXPECT_EQ(err.file, "/nonexistent/list.netset");
    EXPECT_NE(err.to_string().find("cannot open"), std::string::npos);
    EXPECT_EQ(file_category("/etc/iprep/firehol_level1.netset"), "firehol_level1");
    EXPECT_EQ(file_category("plain"), "plain");
    EXPECT_EQ(file_category("dir.d/name.with.dots.ipset"), "name.with.dots");
    EXPECT_EQ(file_category(std::string(100, 'a') + ".ipset").size(), 64u);
}

// ---- streaming reads -------------------------------------------------------------------------

namespace {

template <class Key>
bool same_entries(const std::vector<lpm_entry<Key>>& a, const std::vector<lpm_entry<Key>>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].addr != b[i].addr || a[i].len != b[i].len || a[i].value != b[i].value)
            return false;
    return true;
}

bool same_entries(const entry_sink& a, const entry_sink& b) {
    return same_entries(a.v4, b.v4) && same_entries(a.v6, b.v6);
}

/// Parses `text` fed as the given chunks (cut at `cuts`, ascending offsets).
bool parse_chunks(text_parser::format f, std::string_view text,
                  std::initializer_list<std::size_t> cuts, entry_sink& out, parse_error& err,
                  std::size_t max_line = max_line_bytes) {
    text_parser p(f, "chunks", 9, out, max_line);
    std::size_t at = 0;
    for (std::size_t c : cuts) {
        if (!p.feed(text.substr(at, c - at), err)) return false;
        at = c;
    }
    return p.feed(text.substr(at), err) && p.finish(err);
}

} // namespace

// A line cut by the read buffer at any offset (in two or three pieces, the BOM and a CRLF cut
// too) parses exactly as the whole text does.
TEST(Streaming, LineSplitAtEveryOffset) {
    const std::string list = "\xEF\xBB\xBF# header comment\r\n"
                             "192.0.2.1\r\n"
                             "198.51.100.0/24   # note\n"
                             "\n"
                             "2001:db8::/32\n"
                             "\t203.0.113.7\t\n"
                             "10.0.0.0/8";
    const std::string csv = "\xEF\xBB\xBF"
                            "192.0.2.1,BadHosts,127\r\n"
                            "# c\n"
                            " 198.51.100.0/24 , Scanners , 64 \n"
                            "2001:db8::/48,Tor,0";
    for (const auto f : {text_parser::format::list, text_parser::format::csv}) {
        const std::string& text = f == text_parser::format::list ? list : csv;
        entry_sink whole;
        parse_error err;
        ASSERT_TRUE(parse_chunks(f, text, {}, whole, err)) << err.to_string();
        ASSERT_EQ(whole.size(), f == text_parser::format::list ? 5u : 3u);
        for (std::size_t a = 0; a <= text.size(); ++a) {
            entry_sink two;
            ASSERT_TRUE(parse_chunks(f, text, {a}, two, err)) << a << ": " << err.to_string();
            ASSERT_TRUE(same_entries(whole, two)) << "cut at " << a;
            for (std::size_t b = a; b <= text.size(); ++b) {
                entry_sink three;
                ASSERT_TRUE(parse_chunks(f, text, {a, b}, three, err)) << a << "," << b;
                ASSERT_TRUE(same_entries(whole, three)) << "cuts at " << a << "," << b;
            }
        }
    }
}

// The same through files, with read buffers of 1 to 17 bytes.
TEST(Streaming, FileWithTinyReadBuffers) {
    temp_dir d;
    std::string text = "\xEF\xBB\xBF";
    for (int i = 0; i < 50; ++i)
        text += "10.1." + std::to_string(i) + ".0/24 # entry " + std::to_string(i) + "\n";
    text += "2001:db8::1";
    const std::string path = d.file("t.netset", text);
    entry_sink whole;
    parse_error err;
    ASSERT_TRUE(parse_list(text, path, 9, whole, err)) << err.to_string();
    ASSERT_EQ(whole.size(), 51u);
    for (std::size_t buf = 1; buf <= 17; ++buf) {
        entry_sink out;
        text_parser p(text_parser::format::list, path, 9, out);
        read_limits lim;
        lim.buffer_size = buf;
        std::uint64_t n = 0;
        ASSERT_TRUE(parse_file(path, p, lim, err, &n)) << buf << ": " << err.to_string();
        EXPECT_EQ(n, text.size());
        EXPECT_TRUE(same_entries(whole, out)) << "buffer " << buf;
    }
}

TEST(Streaming, ErrorLineIsTheSameAtEveryCut) {
    const std::string text = "192.0.2.1\n# c\n\n198.51.100.0/24\n10.0.0.0/33\n5.6.7.8\n";
    for (std::size_t a = 0; a <= text.size(); ++a) {
        entry_sink out;
        parse_error err;
        EXPECT_FALSE(parse_chunks(text_parser::format::list, text, {a}, out, err));
        EXPECT_EQ(err.line, 5u) << a;
        EXPECT_NE(err.message.find("10.0.0.0/33"), std::string::npos) << a << ": " << err.message;
    }
}

TEST(Streaming, ByteOrderMark) {
    entry_sink out;
    parse_error err;
    ASSERT_TRUE(parse_list("\xEF\xBB\xBF"
                           "192.0.2.1\n",
                           "bom.ipset", 1, out, err))
        << err.to_string();
    ASSERT_EQ(out.v4.size(), 1u);
    EXPECT_EQ(out.v4[0].addr, key4(0xC0000201u));
    EXPECT_TRUE(parse_list("\xEF\xBB\xBF", "only-bom.ipset", 1, out, err)) << err.to_string();
    EXPECT_TRUE(parse_list("\xEF\xBB\xBF# comment\n", "bom-comment.ipset", 1, out, err));
    EXPECT_TRUE(parse_csv("\xEF\xBB\xBF"
                          "192.0.2.1,Cat,5\n",
                          "bom.csv", out, err))
        << err.to_string();
    // Only at the start of the file: elsewhere it is not part of an address.
    EXPECT_FALSE(parse_list("192.0.2.1\n\xEF\xBB\xBF"
                            "192.0.2.2\n",
                            "bom2.ipset", 1, out, err));
    EXPECT_EQ(err.line, 2u);
    EXPECT_FALSE(parse_list("\xEF\xBB\xBF\xEF\xBB\xBF"
                            "192.0.2.2\n",
                            "bom3.ipset", 1, out, err));
    EXPECT_EQ(err.line, 1u);
}

TEST(Streaming, BinaryContentRefused) {
    entry_sink out;
    parse_error err;
    static constexpr char nul_text[] = "192.0.2.1\n192.0.2.2\n# x\0y\n";
    EXPECT_FALSE(
        parse_list(std::string_view(nul_text, sizeof nul_text - 1), "nul.ipset", 1, out, err));
    EXPECT_EQ(err.line, 3u);
    EXPECT_NE(err.message.find("binary content (byte 0x00 at column 4)"), std::string::npos)
        << err.message;
    EXPECT_FALSE(parse_csv("\x01\x02\x03", "bin.csv", out, err));
    EXPECT_EQ(err.line, 1u);
    EXPECT_NE(err.message.find("byte 0x01"), std::string::npos) << err.message;
    // Blanks that text files do contain are accepted.
    EXPECT_TRUE(parse_list("\t192.0.2.1\v\f\r\n", "blanks.ipset", 1, out, err)) << err.to_string();
}

// A 1 GiB sparse file (no disk blocks) is refused at its first NUL byte after one read buffer.
TEST(Streaming, NulRefusedWithoutReadingTheRest) {
    temp_dir d;
    const std::string path = d.file("sparse.ipset", "192.0.2.1\n");
    ASSERT_EQ(::truncate(path.c_str(), std::int64_t{1} << 30), 0);
    entry_sink out;
    text_parser p(text_parser::format::list, path, 1, out);
    read_limits lim;
    lim.max_file_size = std::uint64_t{2} << 30;
    parse_error err;
    std::uint64_t n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(parse_file(path, p, lim, err, &n));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
    EXPECT_EQ(err.line, 2u);
    EXPECT_NE(err.message.find("binary content"), std::string::npos) << err.message;
    EXPECT_LE(n, lim.buffer_size);
    EXPECT_EQ(out.size(), 1u);
}

TEST(Streaming, LongLineRefused) {
    const std::string ok = "# " + std::string(max_line_bytes - 2, 'c') + "\n192.0.2.1\n";
    entry_sink out;
    parse_error err;
    EXPECT_TRUE(parse_list(ok, "max.ipset", 1, out, err)) << err.to_string();
    const std::string bad = "192.0.2.1\n# " + std::string(max_line_bytes - 1, 'c') + "\n";
    for (std::size_t a :
         {std::size_t{0}, std::size_t{10}, std::size_t{11}, std::size_t{4000}, bad.size() - 1}) {
        EXPECT_FALSE(parse_chunks(text_parser::format::list, bad, {a}, out, err)) << a;
        EXPECT_EQ(err.line, 2u) << a;
        EXPECT_NE(err.message.find("line longer than 4096 bytes"), std::string::npos)
            << err.message;
    }
    // A file without line feeds is refused after max_line bytes, not read to the end.
    temp_dir d;
    const std::string path = d.file("oneline.ipset", std::string(1 << 20, '1'));
    text_parser p(text_parser::format::list, path, 1, out);
    std::uint64_t n = 0;
    EXPECT_FALSE(parse_file(path, p, read_limits{}, err, &n));
    EXPECT_EQ(err.line, 1u);
    EXPECT_NE(err.message.find("line longer than"), std::string::npos) << err.message;
    EXPECT_LE(n, read_limits{}.buffer_size);
}

TEST(Streaming, SizeLimitCheckedBeforeReading) {
    temp_dir d;
    const std::string path = d.file("big.ipset", "192.0.2.1\n192.0.2.2\n"); // 20 bytes
    read_limits lim;
    lim.max_file_size = 19;
    entry_sink out;
    parse_error err;
    std::uint64_t n = 1;
    text_parser p(text_parser::format::list, path, 1, out);
    EXPECT_FALSE(parse_file(path, p, lim, err, &n));
    EXPECT_EQ(n, 0u);
    EXPECT_EQ(err.file, path);
    EXPECT_EQ(err.line, 0u);
    EXPECT_NE(err.message.find("file is 20 bytes, larger than --max-file-size 19"),
              std::string::npos)
        << err.message;
    lim.max_file_size = 20;
    text_parser p2(text_parser::format::list, path, 1, out);
    EXPECT_TRUE(parse_file(path, p2, lim, err, &n)) << err.to_string();

    // Through the loader, for every kind of source, MaxMind DB included.
    sources_config cfg;
    cfg.max_file_size = 19;
    cfg.lists.push_back({path, 5});
    EXPECT_FALSE(load(cfg, err));
    EXPECT_EQ(err.file, path);
    EXPECT_NE(err.message.find("--max-file-size"), std::string::npos) << err.message;
    cfg.lists.clear();
    cfg.csv.push_back(d.file("big.csv", "192.0.2.1,Cat,5\n192.0.2.2,Cat,5\n"));
    EXPECT_FALSE(load(cfg, err));
    EXPECT_EQ(err.file, cfg.csv[0]);
    EXPECT_NE(err.message.find("--max-file-size"), std::string::npos) << err.message;
    if (mmdb_supported()) {
        cfg.csv.clear();
        cfg.mmdb = d.file("big.mmdb", std::string(100, 'x'));
        EXPECT_FALSE(load(cfg, err));
        EXPECT_EQ(err.file, cfg.mmdb);
        EXPECT_NE(err.message.find("larger than --max-file-size"), std::string::npos)
            << err.message;
    }
}

// A file whose size fstat() cannot tell (a pipe here; a file growing while it is read is the
// same case) is cut off once it passes the limit.
TEST(Streaming, SizeLimitCheckedWhileReading) {
    std::signal(SIGPIPE, SIG_IGN);
    temp_dir d;
    const std::string path = d.path() + "/growing.ipset";
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    std::thread writer([&] {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return;
        const std::string line = "192.0.2.1\n";
        for (int i = 0; i < 1000; ++i)
            if (::write(fd, line.data(), line.size()) < 0) break; // EPIPE once the reader quits
        ::close(fd);
    });
    read_limits lim;
    lim.max_file_size = 95;
    lim.buffer_size = 16;
    entry_sink out;
    text_parser p(text_parser::format::list, path, 1, out);
    parse_error err;
    std::uint64_t n = 0;
    EXPECT_FALSE(parse_file(path, p, lim, err, &n));
    writer.join();
    EXPECT_EQ(err.line, 0u);
    EXPECT_NE(err.message.find("grew past --max-file-size 95 while being read"), std::string::npos)
        << err.message;
    EXPECT_GT(n, 95u);
    EXPECT_LE(n, 95u + lim.buffer_size);
    EXPECT_LE(out.size(), 9u);
}

TEST(Streaming, SizeOption) {
    std::uint64_t v = 0;
    EXPECT_TRUE(parse_size("123", v));
    EXPECT_EQ(v, 123u);
    EXPECT_TRUE(parse_size("64K", v));
    EXPECT_EQ(v, 65536u);
    EXPECT_TRUE(parse_size("512m", v));
    EXPECT_EQ(v, std::uint64_t{512} << 20);
    EXPECT_TRUE(parse_size("2G", v));
    EXPECT_EQ(v, std::uint64_t{2} << 30);
    EXPECT_TRUE(parse_size("1GiB", v));
    EXPECT_EQ(v, std::uint64_t{1} << 30);
    EXPECT_TRUE(parse_size("100MB", v));
    EXPECT_EQ(v, std::uint64_t{100} << 20);
    for (const char* bad : {"", "0", "0K", "K", "1X", "1.5G", "-1", "1 G", "1Gx", "1iB",
                            "99999999999999999999", "17179869184G"})
        EXPECT_FALSE(parse_size(bad, v)) << bad;
    EXPECT_EQ(format_size(std::uint64_t{512} << 20), "512M");
    EXPECT_EQ(format_size(1536), "1536");
    EXPECT_EQ(format_size(std::uint64_t{3} << 10), "3K");
    EXPECT_EQ(format_size(default_max_file_size), "512M");
}

// ---- LPM against a brute-force reference --------------------------------------------------

namespace {

template <class Key>
std::uint32_t reference(const std::vector<lpm_entry<Key>>& es, Key k) {
    int best = -1;
    std::uint32_t v = 0;
    constexpr unsigned bits = sizeof(Key) * 8;
    for (const auto& e : es) {
        const Key mask = e.len == 0 ? Key{0} : ~Key{0} << (bits - e.len);
        if ((k & mask) == e.addr && static_cast<int>(e.len) > best) {
            best = e.len;
            v = e.value;
        }
    }
    return v;
}

template <class Key>
std::vector<lpm_entry<Key>> random_entries(std::mt19937_64& rng, std::size_t n, unsigned addr_bits,
                                           Key (*make)(std::mt19937_64&)) {
    constexpr unsigned bits = sizeof(Key) * 8;
    std::vector<lpm_entry<Key>> es;
    for (std::size_t i = 0; i < n; ++i) {
        // Clustered: half the prefixes share their first 12 bits with another one.
        Key a = make(rng);
        if (i > 0 && (rng() & 1)) {
            const Key hi = es[rng() % es.size()].addr;
            const Key m = ~Key{0} << (bits - 12);
            a = (hi & m) | (a & ~m);
        }
        const unsigned len = static_cast<unsigned>(rng() % (addr_bits + 1));
        const Key mask = len == 0 ? Key{0} : ~Key{0} << (bits - len);
        es.push_back({a & mask, static_cast<std::uint8_t>(len),
                      static_cast<std::uint32_t>(rng() % 1000 + 1)});
    }
    std::sort(es.begin(), es.end(), [](const auto& x, const auto& y) {
        return x.addr != y.addr ? x.addr < y.addr : x.len < y.len;
    });
    es.erase(std::unique(
                 es.begin(), es.end(),
                 [](const auto& x, const auto& y) { return x.addr == y.addr && x.len == y.len; }),
             es.end());
    return es;
}

std::uint64_t rand4(std::mt19937_64& r) {
    return (r() & 0xFFFFFFFFull) << 32;
}
u128 rand6(std::mt19937_64& r) {
    // Mostly inside 2000::/3, like real tables.
    const u128 v = (static_cast<u128>(r()) << 64) | r();
    return (v >> 3) | (static_cast<u128>(1) << 125);
}

template <class Trie, class Key>
void check_against_reference(std::mt19937_64& rng, std::size_t n, unsigned addr_bits,
                             Key (*make)(std::mt19937_64&)) {
    const auto es = random_entries<Key>(rng, n, addr_bits, make);
    Trie t;
    ASSERT_TRUE(t.build(es));
    constexpr unsigned bits = sizeof(Key) * 8;
    // Random keys, and the first and last address of and around every prefix.
    for (int i = 0; i < 20000; ++i) {
        Key k = make(rng);
        if (bits == 64) k &= ~Key{0} << 32;
        ASSERT_EQ(t.lookup(k), reference(es, k));
    }
    const Key unit = bits == 64 ? Key{1} << 32 : Key{1};
    for (const auto& e : es) {
        const Key host = e.len == 0 ? ~Key{0} : ~(~Key{0} << (bits - e.len));
        const Key last = (e.addr | host) & (bits == 64 ? ~Key{0} << 32 : ~Key{0});
        for (Key k : {e.addr, last, static_cast<Key>(e.addr - unit), static_cast<Key>(last + unit)})
            ASSERT_EQ(t.lookup(k), reference(es, k)) << "len " << int(e.len);
    }
}

} // namespace

TEST(Lpm, EmptyAndDefaultRoute) {
    lpm4 t;
    EXPECT_EQ(t.lookup(key4(0x01020304u)), 0u);
    ASSERT_TRUE(t.build({}));
    EXPECT_EQ(t.lookup(key4(0x01020304u)), 0u);
    ASSERT_TRUE(t.build({{0, 0, 9}}));
    EXPECT_EQ(t.lookup(key4(0xFFFFFFFFu)), 9u);
    lpm6 t6;
    ASSERT_TRUE(t6.build({{0, 0, 4}, {static_cast<u128>(1) << 127, 1, 5}}));
    EXPECT_EQ(t6.lookup(0), 4u);
    EXPECT_EQ(t6.lookup(~u128{0}), 5u);
}

TEST(Lpm, HostRoutesAndNesting) {
    std::vector<lpm_entry<std::uint64_t>> es = {
        {key4(0x0A000000u), 8, 1},  {key4(0x0A010000u), 16, 2}, {key4(0x0A010200u), 24, 3},
        {key4(0x0A010203u), 32, 4}, {key4(0x0A0102FFu), 32, 5},
    };
    lpm4 t;
    ASSERT_TRUE(t.build(es));
    EXPECT_EQ(t.lookup(key4(0x0A010203u)), 4u);
    EXPECT_EQ(t.lookup(key4(0x0A010204u)), 3u);
    EXPECT_EQ(t.lookup(key4(0x0A0102FFu)), 5u);
    EXPECT_EQ(t.lookup(key4(0x0A0103FFu)), 2u);
    EXPECT_EQ(t.lookup(key4(0x0AFF0000u)), 1u);
    EXPECT_EQ(t.lookup(key4(0x0B000000u)), 0u);
    EXPECT_EQ(t.lookup(key4(0x09FFFFFFu)), 0u);
}

TEST(Lpm, RandomIpv4MatchesReference) {
    std::mt19937_64 rng(42);
    for (std::size_t n : {1u, 10u, 300u, 3000u}) check_against_reference<lpm4>(rng, n, 32, rand4);
}

TEST(Lpm, RandomIpv6MatchesReference) {
    std::mt19937_64 rng(7);
    for (std::size_t n : {1u, 10u, 300u, 3000u}) check_against_reference<lpm6>(rng, n, 128, rand6);
}

// ---- tables: precedence, mapped addresses ------------------------------------------------

TEST(Table, PrecedenceAllowLongestLowest) {
    temp_dir d;
    sources_config cfg;
    cfg.lists.push_back({d.file("wide.netset", "10.0.0.0/8\n2001:db8::/32\n"), 30});
    cfg.lists.push_back({d.file("narrow.ipset", "10.2.3.0/24\n10.1.2.0/24\n"), 60});
    cfg.lists.push_back({d.file("dup.ipset", "10.2.3.0/24\n"), 10}); // same prefix: lowest wins
    cfg.allow.push_back(d.file("allow.ipset", "10.1.0.0/16\n2001:db8:1::/48\n10.9.9.9\n"));
    cfg.csv.push_back(d.file("rep.csv", "10.3.0.0/16,Scanners,127\n10.0.0.0/8,Wide,0\n"));
    parse_error err;
    auto snap = load(cfg, err);
    ASSERT_TRUE(snap) << err.to_string();
    reputation_source rep;
    rep.publish(std::move(snap));

    auto r = look(rep, "10.5.5.5"); // only the /8s: list 30 vs CSV 100 -> lowest
    EXPECT_EQ(r.outcome, lookup_outcome::listed);
    EXPECT_EQ(r.score, 30);
    EXPECT_EQ(r.category, "wide");
    r = look(rep, "10.2.3.4"); // /24 in two lists: 60 and 10
    EXPECT_EQ(r.score, 10);
    EXPECT_EQ(r.category, "dup");
    r = look(rep, "10.1.2.3"); // longer list entry inside an allowed /16: allowed
    EXPECT_EQ(r.outcome, lookup_outcome::allowed);
    EXPECT_EQ(r.score, 100);
    EXPECT_EQ(r.category, "allow");
    r = look(rep, "10.3.4.5"); // CSV /16 beats list /8
    EXPECT_EQ(r.score, 0);
    EXPECT_EQ(r.category, "Scanners");
    r = look(rep, "10.9.9.9");
    EXPECT_EQ(r.outcome, lookup_outcome::allowed);
    EXPECT_EQ(look(rep, "10.9.9.8").score, 30);
    r = look(rep, "11.0.0.1");
    EXPECT_EQ(r.outcome, lookup_outcome::unlisted);
    EXPECT_TRUE(r.category.empty());
    // IPv6 and IPv4-mapped IPv6.
    EXPECT_EQ(look(rep, "2001:db8:2::1").score, 30);
    EXPECT_EQ(look(rep, "2001:db8:1::1").outcome, lookup_outcome::allowed);
    EXPECT_EQ(look(rep, "2001:db9::1").outcome, lookup_outcome::unlisted);
    EXPECT_EQ(look(rep, "::ffff:10.2.3.4").score, 10);
    EXPECT_EQ(look(rep, "::ffff:10.1.2.3").outcome, lookup_outcome::allowed);
    EXPECT_EQ(look(rep, "::ffff:11.0.0.1").outcome, lookup_outcome::unlisted);
    EXPECT_EQ(look(rep, "::10.2.3.4").outcome, lookup_outcome::unlisted); // not mapped
}

TEST(Table, AllowShorterThanList) {
    temp_dir d;
    sources_config cfg;
    cfg.lists.push_back({d.file("l.ipset", "192.0.2.128/25\n192.0.2.7\n"), 5});
    cfg.allow.push_back(d.file("a.ipset", "192.0.2.0/24\n"));
    parse_error err;
    auto snap = load(cfg, err);
    ASSERT_TRUE(snap);
    reputation_source rep;
    rep.publish(std::move(snap));
    EXPECT_EQ(look(rep, "192.0.2.7").outcome, lookup_outcome::allowed);
    EXPECT_EQ(look(rep, "192.0.2.200").outcome, lookup_outcome::allowed);
    EXPECT_EQ(look(rep, "192.0.3.1").outcome, lookup_outcome::unlisted);
}

TEST(Table, BadFileReportsFileAndLine) {
    temp_dir d;
    sources_config cfg;
    cfg.lists.push_back({d.file("good.ipset", "1.2.3.4\n"), 5});
    cfg.csv.push_back(d.file("bad.csv", "1.2.3.4,a,1\n\n5.6.7.8,b,900\n"));
    parse_error err;
    EXPECT_FALSE(load(cfg, err));
    EXPECT_EQ(err.file, cfg.csv[0]);
    EXPECT_EQ(err.line, 3u);
    cfg.csv.clear();
    cfg.allow.push_back(d.path() + "/missing.ipset");
    EXPECT_FALSE(load(cfg, err));
    EXPECT_EQ(err.file, d.path() + "/missing.ipset");
}

// ---- MaxMind DB ------------------------------------------------------------------------------

namespace {

/// Builds an MMDB with the test helper (Perl, MaxMind::DB::Writer). Empty path = unavailable.
std::string make_mmdb(const temp_dir& d, const std::string& spec_json) {
    const char* script = std::getenv("SPOP_MKMMDB");
    const char* perl = std::getenv("SPOP_PERL");
    if (script == nullptr || *script == '\0') return {};
    const std::string spec = d.file("spec.json", spec_json);
    const std::string out = d.path() + "/test.mmdb";
    const std::string cmd = std::string(perl && *perl ? perl : "perl") + " '" + script + "' '" +
                            out + "' < '" + spec + "'";
    const int rc = std::system(cmd.c_str());
    if (rc != 0) return {};
    return out;
}

} // namespace

TEST(Mmdb, FieldMapping) {
    if (!mmdb_supported()) GTEST_SKIP() << "built without libmaxminddb";
    temp_dir d;
    const std::string db = make_mmdb(d, R"({
      "ip_version": 6, "alias_ipv6_to_ipv4": 1,
      "types": {"score": "uint32", "fscore": "double", "category": "utf8_string",
                "traits": "map", "is_tor_exit_node": "boolean", "is_anonymous_vpn": "boolean",
                "is_hosting_provider": "boolean", "is_public_proxy": "boolean",
                "country": "map", "iso_code": "utf8_string"},
      "networks": [
        ["192.0.2.0/24", {"score": 7, "category": "mmdb-bad"}],
        ["192.0.2.128/25", {"score": 250}],
        ["198.51.100.0/24", {"is_anonymous_vpn": true, "is_hosting_provider": true}],
        ["203.0.113.0/24", {"traits": {"is_tor_exit_node": true}}],
        ["203.0.114.0/24", {"country": {"iso_code": "FR"}}],
        ["203.0.115.0/24", {"is_public_proxy": false}],
        ["2001:db8::/32", {"score": 42, "category": "v6net"}],
        ["2001:db8:1::/48", {"is_tor_exit_node": true, "category": "tor"}]
      ]})");
    if (db.empty()) GTEST_SKIP() << "cannot build an MMDB (libmaxmind-db-writer-perl missing?)";
    sources_config cfg;
    cfg.mmdb = db;
    load_stats st;
    parse_error err;
    auto snap = load_snapshot(cfg, st, err);
    ASSERT_TRUE(snap) << err.to_string();
    // The writer splits a network around a nested one, so there are more networks than
    // inserted; the FR-only and all-false networks are not imported at all.
    EXPECT_GE(st.mmdb_networks, 6u);
    EXPECT_GT(st.prefixes_v4, 0u);
    EXPECT_GT(st.prefixes_v6, 0u);
    reputation_source rep;
    rep.publish(std::move(snap));
    auto r = look(rep, "192.0.2.1");
    EXPECT_EQ(r.outcome, lookup_outcome::listed);
    EXPECT_EQ(r.score, 7);
    EXPECT_EQ(r.category, "mmdb-bad");
    EXPECT_EQ(look(rep, "192.0.2.200").score, 100); // clamped
    r = look(rep, "198.51.100.9");
    EXPECT_EQ(r.score, 30); // vpn (30) beats hosting (50)
    EXPECT_EQ(r.category, "anonymous_vpn");
    r = look(rep, "203.0.113.5");
    EXPECT_EQ(r.score, 0);
    EXPECT_EQ(r.category, "tor_exit_node");
    EXPECT_EQ(look(rep, "203.0.114.5").outcome, lookup_outcome::unlisted);
    EXPECT_EQ(look(rep, "203.0.115.5").outcome, lookup_outcome::unlisted);
    EXPECT_EQ(look(rep, "::ffff:192.0.2.1").score, 7);
    r = look(rep, "2001:db8:2::1");
    EXPECT_EQ(r.score, 42);
    EXPECT_EQ(r.category, "v6net");
    r = look(rep, "2001:db8:1::1");
    EXPECT_EQ(r.score, 0);
    EXPECT_EQ(r.category, "tor");
    EXPECT_EQ(look(rep, "2002:c000:0201::1").outcome, lookup_outcome::unlisted); // 6to4 alias
}

TEST(Mmdb, Ipv4DatabaseAndFloatScore) {
    if (!mmdb_supported()) GTEST_SKIP() << "built without libmaxminddb";
    temp_dir d;
    const std::string db = make_mmdb(d, R"({
      "ip_version": 4, "types": {"score": "double"},
      "networks": [["100.64.0.0/10", {"score": 12.6}], ["100.64.1.1/32", {"score": -3.0}]]})");
    if (db.empty()) GTEST_SKIP() << "cannot build an MMDB";
    sources_config cfg;
    cfg.mmdb = db;
    parse_error err;
    auto snap = load(cfg, err);
    ASSERT_TRUE(snap) << err.to_string();
    reputation_source rep;
    rep.publish(std::move(snap));
    EXPECT_EQ(look(rep, "100.65.0.1").score, 13);
    EXPECT_EQ(look(rep, "100.64.1.1").score, 0);
    EXPECT_EQ(look(rep, "100.128.0.1").outcome, lookup_outcome::unlisted);
}

TEST(Mmdb, BadFile) {
    temp_dir d;
    sources_config cfg;
    cfg.mmdb = d.file("junk.mmdb", "this is not a MaxMind DB\n");
    parse_error err;
    EXPECT_FALSE(load(cfg, err));
    EXPECT_EQ(err.file, cfg.mmdb);
    EXPECT_FALSE(err.message.empty());
}

// ---- snapshot publication ------------------------------------------------------------------

TEST(Source, NoTablesMeansUnlisted) {
    reputation_source rep;
    EXPECT_FALSE(rep.loaded());
    EXPECT_EQ(look(rep, "1.2.3.4").outcome, lookup_outcome::unlisted);
    EXPECT_EQ(look(rep, "2001:db8::1").outcome, lookup_outcome::unlisted);
}

TEST(Source, SwapUnderConcurrentLookups) {
    // Readers hammer lookups while snapshots alternate between two contents; each result must
    // come whole from one of them, and every retired snapshot must be freed.
    temp_dir d;
    std::vector<std::unique_ptr<snapshot>> snaps;
    reputation_source rep;
    auto make = [&](int score) {
        sources_config cfg;
        cfg.lists.push_back({d.file("l" + std::to_string(score) + ".ipset",
                                    "10.0.0.0/8\n10.1.0.0/16\n2001:db8::/32\n"),
                             score});
        parse_error err;
        return load(cfg, err);
    };
    rep.publish(make(11));
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> bad{0}, total{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t) {
        readers.emplace_back([&, t] {
            const ip a = addr(t == 0 ? "10.1.2.3" : (t == 1 ? "2001:db8::5" : "::ffff:10.9.9.9"));
            std::uint64_t n = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                const auto r = rep.lookup(a.b, a.v6);
                if (r.outcome != lookup_outcome::listed || (r.score != 11 && r.score != 22) ||
                    r.category != (r.score == 11 ? "l11" : "l22"))
                    bad.fetch_add(1);
                ++n;
            }
            total.fetch_add(n);
        });
    }
    for (int i = 0; i < 60; ++i) {
        rep.publish(make(i % 2 ? 11 : 22));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    stop = true;
    for (auto& t : readers) t.join();
    EXPECT_EQ(bad.load(), 0u);
    EXPECT_GT(total.load(), 1000u);
    EXPECT_EQ(rep.retired(), 0u);
}

TEST(Source, LookupsDoNotAllocate) {
    temp_dir d;
    sources_config cfg;
    cfg.lists.push_back({d.file("l.ipset", "10.0.0.0/8\n10.1.2.3\n2001:db8::/32\n"), 9});
    cfg.csv.push_back(d.file("c.csv", "192.0.2.0/24,Cat,10\n"));
    cfg.allow.push_back(d.file("a.ipset", "10.9.0.0/16\n"));
    parse_error err;
    auto snap = load(cfg, err);
    ASSERT_TRUE(snap);
    reputation_source rep;
    rep.publish(std::move(snap));
    const ip addrs[] = {addr("10.1.2.3"),    addr("10.9.1.1"),        addr("192.0.2.7"),
                        addr("2001:db8::1"), addr("::ffff:10.1.2.3"), addr("8.8.8.8")};
    std::uint64_t sum = look(rep, "10.1.2.3").score; // first lookup of this thread: slot
    const std::uint64_t before = g_allocs.load();
    for (int i = 0; i < 10000; ++i) {
        const ip& a = addrs[i % 6];
        const auto r = rep.lookup(a.b, a.v6);
        sum += static_cast<std::uint64_t>(r.score) + r.category.size();
    }
    EXPECT_EQ(g_allocs.load(), before);
    EXPECT_GT(sum, 0u);
}

// ---- reloader --------------------------------------------------------------------------------

TEST(Reloader, BadFileKeepsOldTables) {
    temp_dir d;
    sources_config cfg;
    cfg.lists.push_back({d.file("l.ipset", "192.0.2.0/24\n"), 15});
    reputation_source rep;
    reload_stats st;
    reloader rl(rep, cfg, st);
    parse_error err;
    ASSERT_TRUE(rl.load(err));
    EXPECT_EQ(look(rep, "192.0.2.1").score, 15);
    d.file("l.ipset", "192.0.2.0/24\nnot-an-address\n");
    EXPECT_FALSE(rl.load(err, "test"));
    EXPECT_EQ(err.line, 2u);
    EXPECT_EQ(look(rep, "192.0.2.1").score, 15);
    EXPECT_EQ(st.reloads_ok.load(), 1u);
    EXPECT_EQ(st.reloads_failed.load(), 1u);
    d.file("l.ipset", "198.51.100.0/24\n");
    ASSERT_TRUE(rl.load(err, "test"));
    EXPECT_EQ(look(rep, "192.0.2.1").outcome, lookup_outcome::unlisted);
    EXPECT_EQ(look(rep, "198.51.100.1").score, 15);
    EXPECT_EQ(st.prefixes_v4.load(), 1u);
}

// A binary or oversized file on reload is refused early and the old tables stay in use.
TEST(Reloader, BinaryOrOversizedFileKeepsOldTables) {
    temp_dir d;
    sources_config cfg;
    cfg.max_file_size = 1 << 20;
    cfg.lists.push_back({d.file("l.ipset", "192.0.2.0/24\n"), 15});
    reputation_source rep;
    reload_stats st;
    reloader rl(rep, cfg, st);
    parse_error err;
    ASSERT_TRUE(rl.load(err));
    d.file("l.ipset", std::string("192.0.2.0/24\n\0\0\0", 16));
    EXPECT_FALSE(rl.load(err, "test"));
    EXPECT_EQ(err.line, 2u);
    EXPECT_NE(err.message.find("binary content"), std::string::npos) << err.message;
    EXPECT_EQ(look(rep, "192.0.2.1").score, 15);
    ASSERT_EQ(::truncate(cfg.lists[0].path.c_str(), 2 << 20), 0);
    EXPECT_FALSE(rl.load(err, "test"));
    EXPECT_NE(err.message.find("larger than --max-file-size 1M"), std::string::npos) << err.message;
    EXPECT_EQ(look(rep, "192.0.2.1").score, 15);
    EXPECT_EQ(st.reloads_failed.load(), 2u);
}

TEST(Reloader, FileChangesAndRequests) {
    temp_dir d;
    sources_config cfg;
    cfg.lists.push_back({d.file("watched.ipset", "192.0.2.0/24\n"), 15});
    reputation_source rep;
    reload_stats st;
    reloader rl(rep, cfg, st);
    parse_error err;
    ASSERT_TRUE(rl.load(err));
    std::string serr;
    ASSERT_TRUE(rl.start(serr)) << serr;
    auto wait_for = [&](const char* a, int score) {
        for (int i = 0; i < 300; ++i) {
            const auto r = look(rep, a);
            if (r.outcome != lookup_outcome::unlisted && r.score == score) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    };
    d.replace("watched.ipset", "203.0.113.0/24\n"); // rename into place
    EXPECT_TRUE(wait_for("203.0.113.1", 15));
    d.file("watched.ipset", "198.51.100.0/24\n"); // rewrite in place
    EXPECT_TRUE(wait_for("198.51.100.1", 15));
    d.file("unrelated.txt", "x\n"); // not a source: no reload
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    const auto ok_before = st.reloads_ok.load();
    rl.request(); // SIGHUP path
    for (int i = 0; i < 300 && st.reloads_ok.load() == ok_before; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(st.reloads_ok.load(), ok_before + 1);
    rl.stop();
}

// ---- metrics ---------------------------------------------------------------------------------

TEST(Metrics, RenderSumsWorkers) {
    worker_stats a, b;
    a.notify_frames.add(3);
    a.acks.add(3);
    b.notify_frames.add(4);
    b.acks.add(4);
    a.hello_frames.add(2);
    a.frames_in.add(5);
    b.frames_in.add(4);
    a.conns_current.add(2);
    b.conns_total.add(7);
    a.disconnects_sent[status_slot(0)].add();
    b.disconnects_sent[status_slot(99)].add(2);
    a.lookups_listed.add(1);
    b.lookups_allowed.add(2);
    b.lookups_default.add(4);
    a.observe_latency_ns(3000);  // 3 us -> le 5e-06
    b.observe_latency_ns(70000); // 70 us -> le 0.0001
    iprep::reload_stats rs;
    rs.reloads_ok = 2;
    rs.reloads_failed = 1;
    rs.prefixes_v4 = 10;
    rs.loaded_unix_ms = 1;
    metrics_sources src;
    src.workers = {&a, &b};
    src.reload = &rs;
    src.engine = "epoll";
    src.version = "t";
    const std::string m = render_metrics(src);
    auto has = [&](const std::string& line) {
        EXPECT_NE(m.find("\n" + line + "\n"), std::string::npos) << line << "\n---\n" << m;
    };
    has("spop_agent_frames_received_total{type=\"notify\"} 7");
    has("spop_agent_frames_received_total{type=\"haproxy-hello\"} 2");
    has("spop_agent_frames_received_total{type=\"other\"} 0");
    has("spop_agent_acks_total 7");
    has("spop_agent_agent_disconnects_total{status=\"0\"} 1");
    has("spop_agent_agent_disconnects_total{status=\"other\"} 2");
    has("spop_agent_frames_sent_total{type=\"agent-disconnect\"} 3");
    has("spop_agent_connections 2");
    has("spop_agent_connections_total 7");
    has("spop_agent_inflight_frames 0");
    has("spop_agent_lookups_total{outcome=\"listed\"} 1");
    has("spop_agent_lookups_total{outcome=\"allowed\"} 2");
    has("spop_agent_lookups_total{outcome=\"default\"} 4");
    has("spop_agent_notify_latency_seconds_bucket{le=\"1e-06\"} 0");
    has("spop_agent_notify_latency_seconds_bucket{le=\"5e-06\"} 1");
    has("spop_agent_notify_latency_seconds_bucket{le=\"0.0001\"} 2");
    has("spop_agent_notify_latency_seconds_bucket{le=\"+Inf\"} 2");
    has("spop_agent_notify_latency_seconds_count 2");
    has("spop_agent_worker_notify_frames_total{worker=\"0\"} 3");
    has("spop_agent_worker_notify_frames_total{worker=\"1\"} 4");
    has("spop_agent_worker_lookups_total{worker=\"1\",outcome=\"default\"} 4");
    has("spop_agent_reloads_total{result=\"ok\"} 2");
    has("spop_agent_reloads_total{result=\"error\"} 1");
    has("spop_agent_reputation_prefixes{family=\"ipv4\"} 10");
    has("spop_agent_workers 2");
    has("spop_agent_build_info{version=\"t\",engine=\"epoll\"} 1");
    // Every sample belongs to a declared family.
    std::size_t types = 0;
    for (std::size_t p = m.find("# TYPE "); p != std::string::npos; p = m.find("# TYPE ", p + 1))
        ++types;
    EXPECT_GT(types, 25u);
}

// ---- the service ------------------------------------------------------------------------------

namespace {

using bytes_t = std::vector<std::uint8_t>;

/// A NOTIFY with one check-client-ip message per address (stream 5, frame 1).
bytes_t notify_of(std::initializer_list<const char*> addrs) {
    bytes_t out(4096);
    spop::notify_writer w(out, 5, 1, spop::default_max_frame_size);
    for (const char* s : addrs) {
        const ip a = addr(s);
        w.message("check-client-ip", 1);
        w.arg("ip", a.v6 ? spop::value::from_ipv6(std::span<const std::uint8_t, 16>(a.b, 16))
                         : spop::value::from_ipv4(std::span<const std::uint8_t, 4>(a.b, 4)));
    }
    const spop::result r = w.finish();
    EXPECT_TRUE(r);
    out.resize(r.consumed);
    return out;
}

/// The service's ACK for `notify`, written under max-frame-size `mfs`.
bytes_t answer(iprep::service& svc, const bytes_t& notify, std::uint32_t mfs) {
    spop::frame f;
    EXPECT_TRUE(spop::split_frame(notify, spop::default_max_frame_size, f));
    bytes_t out(std::size_t{mfs} + 4);
    spop::ack_writer ack(out, f.stream_id, f.frame_id, mfs);
    EXPECT_EQ(svc.on_notify({f.stream_id, f.frame_id, f.flags, f.payload}, ack), spop::errc::ok);
    const spop::result r = ack.finish();
    EXPECT_TRUE(r);
    out.resize(r.consumed);
    return out;
}

/// The ACK (stream 5, frame 1) that sets sess.ip_score once per score, in order.
bytes_t ack_of(std::initializer_list<std::uint32_t> scores) {
    bytes_t out(4096);
    spop::ack_writer w(out, 5, 1, spop::default_max_frame_size);
    for (const std::uint32_t s : scores)
        w.set_var(spop::var_scope::sess, "ip_score", spop::value::from_uint32(s));
    const spop::result r = w.finish();
    out.resize(r.consumed);
    return out;
}

} // namespace

TEST(Service, ScoresAndCountsByOutcome) {
    temp_dir d;
    sources_config cfg;
    cfg.lists.push_back({d.file("bad.netset", "10.0.0.0/8\n"), 30});
    cfg.allow.push_back(d.file("allow.ipset", "10.1.0.0/16\n"));
    parse_error err;
    auto snap = load(cfg, err);
    ASSERT_TRUE(snap) << err.to_string();
    reputation_source rep;
    rep.publish(std::move(snap));
    service_config sc;
    sc.default_score = 42;
    service_stats st;
    iprep::service svc(sc, rep, st, 1);

    const bytes_t got = answer(svc, notify_of({"10.5.5.5", "10.1.2.3", "11.0.0.1", "2001:db8::1"}),
                               spop::default_max_frame_size);
    EXPECT_EQ(got, ack_of({30, 100, 42, 42}));
    EXPECT_EQ(st.lookups_listed.get(), 1u);
    EXPECT_EQ(st.lookups_allowed.get(), 1u);
    EXPECT_EQ(st.lookups_default.get(), 2u);
    EXPECT_EQ(st.ack_actions_dropped.get(), 0u);

    // An ACK that holds one score: the second is left out and counted.
    const std::uint32_t small = static_cast<std::uint32_t>(ack_of({42}).size()) + 1;
    EXPECT_EQ(answer(svc, notify_of({"11.0.0.1", "11.0.0.2"}), small), ack_of({42}));
    EXPECT_EQ(st.ack_actions_dropped.get(), 1u);
    EXPECT_EQ(st.lookups_default.get(), 4u);
}

TEST(Service, EmptySourceAndFixedScoreIsDeterministic) {
    reputation_source rep;
    service_config sc;
    sc.default_score = 7;
    service_stats st;
    iprep::service one(sc, rep, st, 1), other(sc, rep, st, 99);
    const bytes_t n = notify_of({"192.0.2.1", "2001:db8::7"});
    EXPECT_EQ(answer(one, n, spop::default_max_frame_size), ack_of({7, 7}));
    EXPECT_EQ(answer(other, n, spop::default_max_frame_size), ack_of({7, 7}));
    EXPECT_EQ(st.lookups_default.get(), 4u);
}

TEST(Metrics, AddressParsing) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    std::string err;
    EXPECT_TRUE(parse_metrics_address("127.0.0.1:9100", ss, len, err)) << err;
    EXPECT_EQ(ss.ss_family, AF_INET);
    EXPECT_TRUE(parse_metrics_address("[::1]:9100", ss, len, err)) << err;
    EXPECT_EQ(ss.ss_family, AF_INET6);
    EXPECT_TRUE(parse_metrics_address(":9100", ss, len, err)) << err;
    EXPECT_EQ(ss.ss_family, AF_INET);
    for (const char* bad : {"9100", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000",
                            "127.0.0.1:http", "::1:9100", "256.1.1.1:9100"}) {
        EXPECT_FALSE(parse_metrics_address(bad, ss, len, err)) << bad;
        EXPECT_FALSE(err.empty());
    }
}

TEST(Readiness, ReasonsInOrder) {
    readiness_state r;
    EXPECT_STREQ(not_ready_reason(r), "reputation data not loaded");
    r.set_data_loaded();
    EXPECT_STREQ(not_ready_reason(r), "SPOP listeners not started");
    r.set_listening();
    EXPECT_EQ(not_ready_reason(r), nullptr);
    r.set_stopping();
    EXPECT_STREQ(not_ready_reason(r), "shutting down");
}

namespace {

/// GET `path` from 127.0.0.1:`port`: the whole response, or "" on a socket error.
std::string http_get(unsigned port, const char* path) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return "";
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string out;
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
        const std::string req = std::string("GET ") + path + " HTTP/1.1\r\nHost: t\r\n\r\n";
        if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
            char buf[4096];
            for (int i = 0; i < 1000; ++i) {
                const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                if (n <= 0) break;
                out.append(buf, static_cast<std::size_t>(n));
            }
        }
    }
    ::close(fd);
    return out;
}

unsigned free_tcp_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        if (fd >= 0) ::close(fd);
        return 0;
    }
    ::close(fd);
    return ntohs(a.sin_port);
}

} // namespace

TEST(Readiness, ServerAnswersFromState) {
    const unsigned port = free_tcp_port();
    ASSERT_NE(port, 0u);
    readiness_state state;
    metrics_server srv;
    std::string err;
    ASSERT_TRUE(srv.open("127.0.0.1:" + std::to_string(port), err, &state)) << err;
    EXPECT_EQ(srv.address(), "127.0.0.1:" + std::to_string(port));

    std::string r = http_get(port, "/readyz");
    EXPECT_EQ(r.rfind("HTTP/1.1 503 ", 0), 0u) << r;
    EXPECT_NE(r.find("\r\n\r\nnot ready: reputation data not loaded\n"), std::string::npos) << r;
    r = http_get(port, "/healthz");
    EXPECT_EQ(r.rfind("HTTP/1.1 200 ", 0), 0u) << r;
    EXPECT_NE(r.find("\r\n\r\nok\n"), std::string::npos) << r;
    r = http_get(port, "/metrics"); // no counters published yet
    EXPECT_EQ(r.rfind("HTTP/1.1 503 ", 0), 0u) << r;

    state.set_data_loaded();
    state.set_listening();
    r = http_get(port, "/readyz");
    EXPECT_EQ(r.rfind("HTTP/1.1 200 ", 0), 0u) << r;
    EXPECT_NE(r.find("\r\n\r\nready\n"), std::string::npos) << r;

    worker_stats w;
    w.acks.add(5);
    metrics_sources src;
    src.workers = {&w};
    src.engine = "epoll";
    src.version = "t";
    ASSERT_TRUE(srv.start(std::move(src), err)) << err;
    r = http_get(port, "/metrics");
    EXPECT_EQ(r.rfind("HTTP/1.1 200 ", 0), 0u) << r;
    EXPECT_NE(r.find("\nspop_agent_acks_total 5\n"), std::string::npos) << r;

    // A second server on the same port: a one-line error naming the address.
    metrics_server again;
    EXPECT_FALSE(again.open("127.0.0.1:" + std::to_string(port), err, &state));
    EXPECT_NE(err.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;

    state.set_stopping();
    r = http_get(port, "/readyz");
    EXPECT_NE(r.find("\r\n\r\nnot ready: shutting down\n"), std::string::npos) << r;
    srv.stop();
    EXPECT_EQ(http_get(port, "/healthz"), "");
}
