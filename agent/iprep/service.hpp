// The IP-reputation service (a spop::service): `check-client-ip` with one address argument
// (named `ip` or unnamed) gets SET-VAR sess ip_score <0..100>, which HAProxy exposes as
// sess.<var-prefix>.ip_score. Scores are random by default, like HAProxy's spoa-example, or a
// fixed default score; a reputation table (lists, allow-lists) answers first when loaded. One
// instance per worker, on that worker's thread; the reputation source is shared, read-only.
//
// Argument types read: IPV4 and IPV6, and a STRING holding one IPv4 or IPv6 literal (HAProxy
// sends a header sample such as `req.hdr(x-forwarded-for)` as a string), spaces and tabs around
// it ignored. Anything else (a list "a, b", a port, brackets, a zone, other types) is not an
// address: that message gets no score.
//
// ACK size: every action is optional to the ACK. A NOTIFY may carry many messages, so the
// service writes every score first, then the categories, and the ack_writer leaves out whole
// what does not fit the negotiated max-frame-size. Left-out actions are counted
// (service_stats::ack_actions_dropped) and logged, rate-limited. The service declares no
// max_ack_size: it has no bound below a whole frame, so the connection keeps room for a whole
// frame per NOTIFY.
//
// Deterministic answers (benchmarks, tests): an empty reputation_source and a fixed
// default_score give every address that score.
//
// `check-rate` (shared rate limits, docs/rate-limits.md) is routed to the Redis thread through
// the worker's ratelimit::port: the NOTIFY is deferred (spop::ticket), its key copied out, and
// the ticket completed from the Redis thread with txn rate / over_limit. The first check-rate
// message of a NOTIFY counts. When the NOTIFY also carries check-client-ip messages, their
// scores are written again into the ticket's ACK before it leaves the worker, so that the one
// ACK carries both. A NOTIFY without check-rate takes the path it always took: one parse, no
// allocation, answered at once (the only addition is one name comparison per message).
#pragma once

#include <arpa/inet.h>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <memory>
#include <string_view>

#include <spop/server/log.hpp>
#include <spop/service.hpp>

#include "../ratelimit/args.hpp"
#include "../ratelimit/gateway.hpp"
#include "reputation.hpp"
#include "stats.hpp"

namespace agent::iprep {

struct service_config {
    int default_score = -1; ///< -1 = random 0..100 per request
    std::string_view var_name = "ip_score";
    spop::var_scope scope = spop::var_scope::sess;
    /// Export the matching list's category as a string variable (empty = off).
    std::string_view category_var{};
};

/// Scores are 0..100 (a one-byte varint).
inline constexpr std::uint32_t max_score = 100;

/// Length of a scope's name in HAProxy's full variable name ("sess" in "sess.iprep.ip_score").
[[nodiscard]] constexpr std::size_t scope_name_length(spop::var_scope s) noexcept {
    return s == spop::var_scope::proc || s == spop::var_scope::sess ? 4 : 3;
}

/// FRAME-LENGTH of the largest ACK that one check-client-ip message can produce with `cfg`:
/// the ACK header with the largest ids, the score SET-VAR, and the category SET-VAR with the
/// longest category any source can hold (reputation_max_category). Compare it with a
/// max-frame-size: below it, the category of a single-message NOTIFY may be left out (the
/// score, written first, is kept while max_score_ack() fits).
[[nodiscard]] constexpr std::size_t max_single_message_ack(const service_config& cfg) noexcept {
    std::size_t n = spop::max_ack_header_length +
                    spop::set_var_size(cfg.var_name, spop::value::from_uint32(max_score));
    if (!cfg.category_var.empty())
        n += 3 + spop::varint_size(cfg.category_var.size()) + cfg.category_var.size() + 1 +
             spop::varint_size(reputation_max_category) + reputation_max_category;
    return n;
}

/// FRAME-LENGTH of the largest ACK holding one score and nothing else.
[[nodiscard]] constexpr std::size_t max_score_ack(const service_config& cfg) noexcept {
    return spop::max_ack_header_length +
           spop::set_var_size(cfg.var_name, spop::value::from_uint32(max_score));
}

/// Parses a STRING argument as one IPv4 or IPv6 literal. No allocation: at most 45 characters
/// (INET6_ADDRSTRLEN - 1) are copied to the stack for inet_pton.
[[nodiscard]] inline bool address_from_string(std::string_view s, std::uint8_t* out,
                                              bool& v6) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    char buf[46];
    if (s.empty() || s.size() >= sizeof buf) return false;
    // inet_pton stops at a NUL: "1.2.3.4\0junk" is not an address.
    if (std::memchr(s.data(), '\0', s.size()) != nullptr) return false;
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    v6 = s.find(':') != std::string_view::npos;
    return inet_pton(v6 ? AF_INET6 : AF_INET, buf, out) == 1;
}

class service {
  public:
    /// `cfg`, `rep` and `stats` must outlive the service. `stats` is this worker's block (the
    /// program's Stats derives from service_stats); `seed` drives the random default score.
    /// `rate`: this worker's end of the shared rate limits (null: check-rate is not
    /// recognised, as before).
    service(const service_config& cfg, const reputation_source& rep, service_stats& stats,
            std::uint64_t seed, ratelimit::gateway* rate = nullptr, int worker = 0) noexcept
        : cfg_(cfg), rep_(rep), stats_(&stats), rng_(seed | 1), rate_(rate),
          port_(rate != nullptr ? &rate->at(worker) : nullptr) {}

    /// check-rate answers are deferred: when no ticket is free, connections pause.
    static constexpr bool defers = true;

    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        rate_args_.seen = false;
        const spop::errc e = answer_addresses(req, ack, rate_ != nullptr ? &rate_args_ : nullptr);
        if (e != spop::errc::ok) return e;
        if (rate_args_.seen) [[unlikely]]
            check_rate(req, ack);
        return spop::errc::ok;
    }

  private:
    /// Every check-client-ip message's score (and category) into `ack`; `ra` captures the
    /// first check-rate message's arguments when not null.
    spop::errc answer_addresses(const spop::notify_request& req, spop::ack_writer& ack,
                                ratelimit::rate_args* ra) noexcept {
        // Pass 1: every score, in message order. The first categories are kept aside (views
        // into the category pool, which never dangle) so that most NOTIFYs parse once.
        score_pass p1{*this, ack};
        p1.h.rate = ra;
        const spop::result r = req.parse(p1.h);
        if (r.ec != spop::errc::ok) return r.ec;
        addresses_ = p1.addresses;
        // Then the categories, after every score: a full frame loses categories first.
        const std::size_t kept = p1.addresses < kept_categories ? p1.addresses : kept_categories;
        for (std::size_t i = 0; i < kept; ++i)
            if (p1.cat_size[i] != 0)
                ack.set_var(cfg_.scope, cfg_.category_var,
                            spop::value::from_string({p1.cat_data[i], p1.cat_size[i]}));
        if (p1.addresses > kept_categories && !cfg_.category_var.empty()) {
            // Pass 2, only for NOTIFYs with more messages than kept aside: the rest looked up
            // again (a reload in between may give a newer category; scores are not redone).
            category_pass p2{*this, ack};
            (void)req.parse(p2.h); // parsed fine once already
        }
        if (ack.dropped() != 0) note_truncation(req, p1.addresses, ack);
        return spop::errc::ok;
    }

    /// The NOTIFY held a check-rate message: defer it to the Redis thread, or answer now with
    /// the fail value when that cannot be done.
    void check_rate(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        ratelimit::port& p = *port_;
        const ratelimit::config& rc = rate_->cfg();
        const ratelimit::rate_args& a = rate_args_;
        p.c.messages.add();
        if (a.bad_arg) p.c.bad_args.add();
        if (!a.have_key) return p.c.no_key.add(); // nothing to count: no variable
        const auto fail_now = [&](ratelimit::fail_reason why) noexcept {
            p.c.fails[static_cast<int>(why)].add();
            ratelimit::write_fail(ack, rc);
        };
        if (!rate_->enabled()) {
            if (rate_->warn_unconfigured_once()) {
                spop::server::log(spop::server::level::warn,
                                  "event=rate_unconfigured msg=\"check-rate received but no "
                                  "--rate-redis given: answering the --rate-fail value\"");
            }
            return fail_now(ratelimit::fail_reason::unconfigured);
        }
        if (a.key_too_long()) return fail_now(ratelimit::fail_reason::key_too_long);
        spop::ticket t = req.defer();
        if (!t) return fail_now(ratelimit::fail_reason::no_ticket);
        if (addresses_ != 0) {
            // The scores already written went to `ack`, which a deferred NOTIFY discards: write
            // them again into the ticket's ACK, without counting the lookups twice. They leave
            // room for the rate answer written later: a NOTIFY with many addresses loses
            // scores, never `over_limit` (which fails open when missing).
            service_stats* const real = stats_;
            stats_ = scratch_stats_.get();
            t.ack().reserve(ratelimit::max_answer_size(rc.vars));
            (void)answer_addresses(req, t.ack(), nullptr); // parsed fine once already
            t.ack().reserve(0);
            stats_ = real;
        }
        const std::uint32_t limit = a.limit != 0 ? a.limit : rc.limit;
        const std::uint32_t window_s = a.window_s != 0 ? a.window_s : rc.window_s;
        const std::uint64_t now = ratelimit::now_ns();
        if (!rate_->submit(p, t, a.key_view(), limit, window_s * 1000, now)) {
            p.c.fails[static_cast<int>(ratelimit::fail_reason::queue_full)].add();
            t.complete([&rc](spop::ack_writer& w) { ratelimit::write_fail(w, rc); });
            return;
        }
        p.c.deferred.add();
    }

    static constexpr std::size_t kept_categories = 16;
    static_assert(reputation_max_category <= 255, "category sizes are kept in a byte");

    /// `a == lit` with the length known at compile time, so that the compiler compares in a
    /// few loads instead of calling memcmp (GCC 12 at -O3 may leave std::string_view's ==
    /// out of line: measured, about 15% of BM_NotifyToAck).
    template <std::size_t N>
    static bool equals(std::string_view a, const char (&lit)[N]) noexcept {
        return a.size() == N - 1 && std::memcmp(a.data(), lit, N - 1) == 0;
    }

    /// Finds each check-client-ip message's address and calls f(ip, v6) at its end.
    template <class F>
    struct address_handler {
        F f;
        bool target = false;
        bool have_ip = false;
        bool v6 = false;
        bool in_rate = false;                 ///< inside the check-rate message captured
        ratelimit::rate_args* rate = nullptr; ///< null: check-rate not looked for
        std::uint8_t ip[16]{};

        spop::action on_message(std::string_view name, std::uint8_t) noexcept {
            target = equals(name, "check-client-ip");
            have_ip = false;
            if (!target && rate != nullptr && equals(name, "check-rate") && !rate->seen)
                [[unlikely]] {
                in_rate = true;
                rate->begin();
            }
            return spop::action::proceed;
        }
        spop::action on_arg(std::string_view name, const spop::value& v) noexcept {
            if (in_rate) [[unlikely]] {
                rate->arg(name, v);
                return spop::action::proceed;
            }
            if (!target || have_ip || !(name.empty() || equals(name, "ip")))
                return spop::action::proceed;
            if (v.type == spop::data_type::ipv4 || v.type == spop::data_type::ipv6) {
                v6 = v.type == spop::data_type::ipv6;
                std::memcpy(ip, v.bytes.data(), v.bytes.size());
                have_ip = true;
            } else if (v.type == spop::data_type::string) {
                have_ip = address_from_string(v.bytes, ip, v6);
            }
            return spop::action::proceed;
        }
        spop::action on_message_end() noexcept {
            if (in_rate) [[unlikely]] {
                in_rate = false;
                rate->end();
            }
            if (target && have_ip) f(ip, v6);
            target = false;
            return spop::action::proceed;
        }
    };

    struct score_pass {
        struct on_address {
            score_pass* p;
            void operator()(const std::uint8_t* ip, bool v6) noexcept {
                const std::string_view cat = p->svc.score(p->ack, ip, v6);
                if (p->addresses < kept_categories) {
                    p->cat_data[p->addresses] = cat.data();
                    p->cat_size[p->addresses] = static_cast<std::uint8_t>(cat.size());
                }
                ++p->addresses;
            }
        };
        score_pass(service& s, spop::ack_writer& a) noexcept : svc(s), ack(a), h{{this}} {}
        score_pass(const score_pass&) = delete;
        score_pass& operator=(const score_pass&) = delete;

        service& svc;
        spop::ack_writer& ack;
        std::size_t addresses = 0;
        // Left uninitialized on purpose (no per-NOTIFY clearing): entries [0, addresses) are
        // written before they are read.
        const char* cat_data[kept_categories];
        std::uint8_t cat_size[kept_categories]; // <= reputation_max_category
        address_handler<on_address> h;
    };

    struct category_pass {
        struct on_address {
            category_pass* p;
            void operator()(const std::uint8_t* ip, bool v6) noexcept {
                if (p->seen++ < kept_categories) return;
                const lookup_result lr = p->svc.rep_.lookup(ip, v6);
                if (!lr.category.empty())
                    p->ack.set_var(p->svc.cfg_.scope, p->svc.cfg_.category_var,
                                   spop::value::from_string(lr.category));
            }
        };
        category_pass(service& s, spop::ack_writer& a) noexcept : svc(s), ack(a), h{{this}} {}
        category_pass(const category_pass&) = delete;
        category_pass& operator=(const category_pass&) = delete;

        service& svc;
        spop::ack_writer& ack;
        std::size_t seen = 0;
        address_handler<on_address> h;
    };

    /// Writes the score; returns the category to export later (empty: none or off).
    std::string_view score(spop::ack_writer& ack, const std::uint8_t* ip, bool v6) noexcept {
        const lookup_result lr = rep_.lookup(ip, v6);
        int score;
        switch (lr.outcome) {
        case lookup_outcome::allowed:
            stats_->lookups_allowed.add();
            score = lr.score;
            break;
        case lookup_outcome::decided:
            stats_->lookups_decided.add();
            score = lr.score;
            break;
        case lookup_outcome::listed:
            stats_->lookups_listed.add();
            score = lr.score;
            break;
        default:
            stats_->lookups_default.add();
            score = cfg_.default_score >= 0 ? cfg_.default_score : random_score();
            break;
        }
        // Keeps max_single_message_ack() true whatever a source holds.
        if (score < 0) score = 0;
        if (score > static_cast<int>(max_score)) score = static_cast<int>(max_score);
        ack.set_var(cfg_.scope, cfg_.var_name,
                    spop::value::from_uint32(static_cast<std::uint32_t>(score)));
        return cfg_.category_var.empty() ? std::string_view{} : lr.category;
    }

    void note_truncation(const spop::notify_request& req, std::size_t addresses,
                         const spop::ack_writer& ack) noexcept {
        stats_->ack_actions_dropped.add(ack.dropped());
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        unsigned suppressed = 0;
        if (!truncation_rl_.allow(static_cast<std::uint64_t>(ts.tv_sec), suppressed)) return;
        spop::server::log(spop::server::level::warn,
                          "event=ack_truncated stream_id=%llu frame_id=%llu addresses=%zu "
                          "dropped_actions=%zu ack_bytes=%zu reason=\"%s\" suppressed=%u",
                          static_cast<unsigned long long>(req.stream_id),
                          static_cast<unsigned long long>(req.frame_id), addresses, ack.dropped(),
                          ack.size(),
                          ack.drop_reason() == spop::errc::exceeds_max_frame_size ? "max-frame-size"
                                                                                  : "output buffer",
                          suppressed);
    }

    int random_score() noexcept {
        // xorshift64*: per-worker state, no lock, good enough for a demo score.
        rng_ ^= rng_ >> 12;
        rng_ ^= rng_ << 25;
        rng_ ^= rng_ >> 27;
        return static_cast<int>(((rng_ * 0x2545F4914F6CDD1DULL) >> 33) % 101);
    }

    const service_config& cfg_;
    const reputation_source& rep_;
    service_stats* stats_; ///< a pointer: check_rate() swaps it while re-answering addresses
    std::uint64_t rng_;
    spop::server::rate_limiter truncation_rl_{5};
    // check-rate
    ratelimit::gateway* rate_;
    ratelimit::port* port_;
    std::size_t addresses_ = 0; ///< check-client-ip messages answered in this NOTIFY
    std::unique_ptr<service_stats> scratch_stats_ = std::make_unique<service_stats>();
    ratelimit::rate_args rate_args_;
};

static_assert(spop::service<service>);

} // namespace agent::iprep
