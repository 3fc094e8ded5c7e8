// The IP-reputation service: `check-client-ip` with one IPv4/IPv6 argument (named `ip` or
// unnamed) gets SET-VAR sess ip_score <0..100>, which HAProxy exposes as
// sess.<var-prefix>.ip_score. Scores are random by default, like HAProxy's spoa-example, or a
// fixed --default-score; a reputation table (lists, allow-lists) answers first when loaded.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include <spop/service.hpp>

#include "reputation.hpp"
#include "stats.hpp"

namespace agent {

struct iprep_config {
    int default_score = -1; ///< -1 = random 0..100 per request
    std::string_view var_name = "ip_score";
    spop::var_scope scope = spop::var_scope::sess;
    /// Export the matching list's category as a string variable (empty = off).
    std::string_view category_var{};
};

class iprep_service {
  public:
    /// ACK header (<= 4+5+10+10) + SET-VAR ip_score + an optional category string (bounded).
    static constexpr std::size_t max_ack_size = 64 + 2 * 64 + reputation_max_category;

    iprep_service(const iprep_config& cfg, const reputation_source& rep, worker_stats& stats,
                  std::uint64_t seed) noexcept
        : cfg_(cfg), rep_(rep), stats_(stats), rng_(seed | 1) {}

    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        handler h{*this, ack};
        const spop::result r = req.parse(h);
        return r.ec;
    }

  private:
    struct handler {
        iprep_service& svc;
        spop::ack_writer& ack;
        bool target = false;
        bool have_ip = false;
        std::uint8_t ip[16]{};
        bool v6 = false;

        spop::action on_message(std::string_view name, std::uint8_t) noexcept {
            target = name == "check-client-ip";
            have_ip = false;
            return spop::action::proceed;
        }
        spop::action on_arg(std::string_view name, const spop::value& v) noexcept {
            if (!target || have_ip || !(name.empty() || name == "ip")) return spop::action::proceed;
            if (v.type == spop::data_type::ipv4 || v.type == spop::data_type::ipv6) {
                v6 = v.type == spop::data_type::ipv6;
                std::memcpy(ip, v.bytes.data(), v.bytes.size());
                have_ip = true;
            }
            return spop::action::proceed;
        }
        spop::action on_message_end() noexcept {
            if (target && have_ip) svc.answer(ack, ip, v6);
            target = false;
            return spop::action::proceed;
        }
    };

    void answer(spop::ack_writer& ack, const std::uint8_t* ip, bool v6) noexcept {
        const lookup_result lr = rep_.lookup(ip, v6);
        int score;
        switch (lr.outcome) {
        case lookup_outcome::allowed:
            stats_.lookups_allowed.add();
            score = lr.score;
            break;
        case lookup_outcome::listed:
            stats_.lookups_listed.add();
            score = lr.score;
            break;
        default:
            stats_.lookups_default.add();
            score = cfg_.default_score >= 0 ? cfg_.default_score : random_score();
            break;
        }
        ack.set_var(cfg_.scope, cfg_.var_name,
                    spop::value::from_uint32(static_cast<std::uint32_t>(score)));
        if (!cfg_.category_var.empty() && !lr.category.empty())
            ack.set_var(cfg_.scope, cfg_.category_var, spop::value::from_string(lr.category));
    }

    int random_score() noexcept {
        // xorshift64*: per-worker state, no lock, good enough for a demo score.
        rng_ ^= rng_ >> 12;
        rng_ ^= rng_ << 25;
        rng_ ^= rng_ >> 27;
        return static_cast<int>(((rng_ * 0x2545F4914F6CDD1DULL) >> 33) % 101);
    }

    const iprep_config& cfg_;
    const reputation_source& rep_;
    worker_stats& stats_;
    std::uint64_t rng_;
};

static_assert(spop::service<iprep_service>);

} // namespace agent
