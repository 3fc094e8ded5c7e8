// Live decisions: parsing of stored entries (hash values, stream entries, prefixes), the overlay
// (longest match, expiry to the second, fallback to a shorter decision) and its precedence in
// reputation_source (allow-list first, then decisions, then lists).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "decisions/entry.hpp"
#include "iprep/reputation.hpp"
#include "iprep/value.hpp"

using namespace agent;
using namespace agent::decisions;
using fields_t = std::vector<std::pair<std::string_view, std::string_view>>;

namespace {

bool ev(const fields_t& f, event& e, std::string& why) {
    return parse_event(f, e, why);
}

iprep::net_prefix pfx(const char* s) {
    iprep::net_prefix p;
    std::string why;
    EXPECT_TRUE(iprep::parse_prefix(s, p, why)) << why;
    return p;
}

struct ip {
    std::uint8_t b[16]{};
    bool v6 = false;
    explicit ip(const char* s) {
        v6 = std::string_view(s).find(':') != std::string_view::npos;
        EXPECT_EQ(inet_pton(v6 ? AF_INET6 : AF_INET, s, b), 1);
    }
};

} // namespace

TEST(DecisionEntry, PrefixesMustBeCanonical) {
    iprep::net_prefix p;
    std::string why;
    EXPECT_TRUE(parse_stored_prefix("198.51.100.7/32", p, why)) << why;
    EXPECT_TRUE(parse_stored_prefix("2001:db8::/32", p, why)) << why;
    EXPECT_TRUE(p.v6);
    EXPECT_EQ(p.len, 32);
    EXPECT_FALSE(parse_stored_prefix("198.51.100.7", p, why)); // no length
    EXPECT_NE(why.find("canonical"), std::string::npos);
    EXPECT_FALSE(parse_stored_prefix("198.51.100.7/24", p, why)); // host bits
    EXPECT_FALSE(parse_stored_prefix("2001:DB8::/32", p, why));   // upper case
    EXPECT_FALSE(parse_stored_prefix("198.51.100.0/33", p, why));
    EXPECT_FALSE(parse_stored_prefix("", p, why));
    EXPECT_FALSE(parse_stored_prefix(std::string(5000, '1'), p, why)); // huge: refused
    EXPECT_NE(why.find("longer"), std::string::npos);
    std::string canon;
    EXPECT_TRUE(normalize_prefix("198.51.100.7/24", p, canon, why));
    EXPECT_EQ(canon, "198.51.100.0/24");
    EXPECT_TRUE(normalize_prefix("2001:DB8:0:0::1", p, canon, why));
    EXPECT_EQ(canon, "2001:db8::1/128");
    EXPECT_TRUE(normalize_prefix("::ffff:1.2.3.4", p, canon, why));
    EXPECT_EQ(canon, "1.2.3.4/32"); // IPv4-mapped: stored as IPv4, as the lists do
}

TEST(DecisionEntry, HashValues) {
    decision d;
    std::string why;
    ASSERT_TRUE(parse_value("0 1767225600 ssh brute force", d, why)) << why;
    EXPECT_EQ(d.score, 0);
    EXPECT_EQ(d.expiry, 1767225600);
    EXPECT_EQ(d.reason, "ssh brute force");
    ASSERT_TRUE(parse_value("100 0", d, why)) << why; // no reason, never expires
    EXPECT_EQ(d.score, 100);
    EXPECT_EQ(d.expiry, 0);
    EXPECT_EQ(d.reason, "");
    EXPECT_EQ(format_value(decision{{}, 7, 42, "x y"}), "7 42 x y");
    for (const char* bad : {"", "0", "101 0 r", "-1 0 r", "+1 0 r", "1 -5 r", "1 x r", "x 1 r",
                            "1 99999999999999 r", " 1 0 r", "1  0 r"})
        EXPECT_FALSE(parse_value(bad, d, why)) << bad;
    EXPECT_FALSE(parse_value("0 0 " + std::string(65, 'a'), d, why));
    EXPECT_FALSE(parse_value("0 0 tab\there", d, why));
    EXPECT_FALSE(parse_value(std::string("0 0 nul\0x", 9), d, why));
    EXPECT_FALSE(parse_value("0 0 " + std::string(1 << 20, 'a'), d, why)); // huge
}

TEST(DecisionEntry, StreamEntries) {
    event e;
    std::string why;
    ASSERT_TRUE(ev({{"op", "add"},
                    {"prefix", "198.51.100.0/24"},
                    {"score", "5"},
                    {"expiry", "0"},
                    {"reason", "r"},
                    {"origin", "tool"}},
                   e, why))
        << why;
    EXPECT_EQ(e.kind, op::add);
    EXPECT_EQ(e.prefix, "198.51.100.0/24");
    EXPECT_EQ(e.d.score, 5);
    EXPECT_EQ(e.d.reason, "r");
    ASSERT_TRUE(ev({{"op", "del"}, {"prefix", "2001:db8::/32"}}, e, why)) << why;
    EXPECT_EQ(e.kind, op::del);
    ASSERT_TRUE(ev({{"op", "resync"}}, e, why));
    EXPECT_EQ(e.kind, op::resync);
    // Malformed: whole entry refused.
    EXPECT_FALSE(ev({}, e, why));
    EXPECT_FALSE(ev({{"op", "ban"}, {"prefix", "1.2.3.4/32"}}, e, why));
    EXPECT_FALSE(ev({{"op", "add"}, {"prefix", "1.2.3.4/32"}, {"score", "5"}}, e, why));
    EXPECT_FALSE(
        ev({{"op", "add"}, {"prefix", "1.2.3.4/32"}, {"score", "500"}, {"expiry", "0"}}, e, why));
    EXPECT_FALSE(
        ev({{"op", "add"}, {"prefix", "1.2.3.4"}, {"score", "5"}, {"expiry", "0"}}, e, why));
    EXPECT_FALSE(ev({{"op", "del"}}, e, why));
    EXPECT_FALSE(ev({{"op", "del"}, {"prefix", "1.2.3.4/32"}, {"prefix", "5.6.7.8/32"}}, e, why));
    EXPECT_NE(why.find("twice"), std::string::npos);
    const std::string huge(100000, 'x');
    EXPECT_FALSE(ev({{"op", "add"},
                     {"prefix", "1.2.3.4/32"},
                     {"score", "5"},
                     {"expiry", "0"},
                     {"reason", huge}},
                    e, why));
    fields_t many(17, {"x", "y"});
    many.insert(many.begin(), {"op", "resync"});
    EXPECT_FALSE(ev(many, e, why));
}

TEST(DecisionOverlay, LongestMatchExpiryAndParents) {
    std::vector<iprep::overlay_entry> v = {
        {pfx("10.0.0.0/8"), 50, 0, 0},
        {pfx("10.1.0.0/16"), 20, 2000, 0},
        {pfx("10.1.2.3/32"), 1, 1000, 0},
        {pfx("2001:db8::/32"), 9, 0, 0},
    };
    auto o = iprep::build_overlay(v);
    ASSERT_TRUE(o);
    const ip a("10.1.2.3"), b("10.1.9.9"), c("10.9.9.9"), d("11.0.0.1"), e("2001:db8::1"),
        m("::ffff:10.1.2.3");
    ASSERT_TRUE(o->lookup(a.b, false, 999));
    EXPECT_EQ(o->lookup(a.b, false, 999)->score, 1);
    EXPECT_EQ(o->lookup(a.b, false, 1000)->score, 20); // expired this very second: parent
    EXPECT_EQ(o->lookup(a.b, false, 2000)->score, 50); // and the parent's parent
    EXPECT_EQ(o->lookup(b.b, false, 0)->score, 20);
    EXPECT_EQ(o->lookup(c.b, false, 0)->score, 50);
    EXPECT_EQ(o->lookup(d.b, false, 0), nullptr);
    EXPECT_EQ(o->lookup(e.b, true, 0)->score, 9);
    EXPECT_EQ(o->lookup(m.b, true, 999)->score, 1); // IPv4-mapped
}

TEST(DecisionOverlay, PrecedenceInReputationSource) {
    using namespace agent::iprep;
    entry_sink listed, allow;
    listed.add(pfx("192.0.2.0/24"), encode_value(outcome_bits::listed, 80, 0));
    allow.add(pfx("192.0.2.128/25"), encode_value(outcome_bits::allowed, 100, 0));
    load_stats st;
    reputation_source rep;
    rep.publish(build_snapshot(listed, allow, st));
    const std::uint32_t cat = category_pool::instance().intern("ssh-bf");
    std::vector<overlay_entry> v = {{pfx("192.0.2.0/24"), 3, 0, cat},
                                    {pfx("198.51.100.7/32"), 4, 0, 0}};
    rep.publish_overlay(build_overlay(v));
    const ip listed_ip("192.0.2.1"), allowed_ip("192.0.2.200"), only("198.51.100.7"),
        none("203.0.113.1");
    auto r = rep.lookup(listed_ip.b, false); // decision overrides the list entry
    EXPECT_EQ(r.outcome, lookup_outcome::decided);
    EXPECT_EQ(r.score, 3);
    EXPECT_EQ(r.category, "ssh-bf");
    r = rep.lookup(allowed_ip.b, false); // the allow-list still wins
    EXPECT_EQ(r.outcome, lookup_outcome::allowed);
    EXPECT_EQ(r.score, 100);
    EXPECT_EQ(rep.lookup(only.b, false).score, 4);
    EXPECT_EQ(rep.lookup(none.b, false).outcome, lookup_outcome::unlisted);
    rep.publish_overlay(nullptr);
    EXPECT_EQ(rep.lookup(listed_ip.b, false).outcome, lookup_outcome::listed);
    EXPECT_EQ(rep.lookup(listed_ip.b, false).score, 80);
    // Decisions without any static table.
    reputation_source bare;
    std::vector<overlay_entry> w = {{pfx("198.51.100.7/32"), 4, 0, 0}};
    bare.publish_overlay(build_overlay(w));
    EXPECT_EQ(bare.lookup(only.b, false).outcome, lookup_outcome::decided);
    const std::int64_t past = coarse_unix_now() - 1;
    std::vector<overlay_entry> x = {{pfx("198.51.100.7/32"), 4, past, 0}};
    bare.publish_overlay(build_overlay(x));
    EXPECT_EQ(bare.lookup(only.b, false).outcome, lookup_outcome::unlisted);
}
