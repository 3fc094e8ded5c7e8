// A second service in ~40 lines, to show that a new check is a small class, not a fork of the
// engine. HAProxy side:
//   spoe-message check-ua
//       args ua=req.hdr(user-agent)
//       event on-frontend-http-request
//   http-request deny if { var(txn.bot.is_bot) -m bool }
#pragma once

#include <string_view>

#include <spop/service.hpp>

namespace example {

class bot_service {
  public:
    static constexpr std::size_t max_ack_size = 64;

    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        handler h{ack};
        return req.parse(h).ec;
    }

  private:
    struct handler {
        spop::ack_writer& ack;
        bool target = false;

        spop::action on_message(std::string_view name, std::uint8_t) noexcept {
            target = name == "check-ua";
            return spop::action::proceed;
        }
        spop::action on_arg(std::string_view name, const spop::value& v) noexcept {
            if (target && name == "ua" && v.type == spop::data_type::string) {
                const bool bot = v.bytes.find("bot") != std::string_view::npos ||
                                 v.bytes.find("crawler") != std::string_view::npos;
                ack.set_var(spop::var_scope::txn, "is_bot", spop::value::from_bool(bot));
            }
            return spop::action::proceed;
        }
        spop::action on_message_end() noexcept { return spop::action::proceed; }
    };
};

static_assert(spop::service<bot_service>);

} // namespace example
