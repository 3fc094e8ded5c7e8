// A second service in a few lines, to show that a new check is a small class, not a fork of the
// engine. HAProxy side:
//   spoe-message check-ua
//       args ua=req.hdr(user-agent)
//       event on-frontend-http-request
//   http-request deny if { var(txn.bot.is_bot) -m bool }
#pragma once

#include <string_view>

#include <spop/message.hpp>

namespace example {

class bot_service {
  public:
    static constexpr std::size_t max_ack_size = 64;

    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        return routes.dispatch(req, ack);
    }

  private:
    static void check_ua(const spop::message_view& m, spop::ack_writer& ack) noexcept {
        const auto ua = m.string("ua");
        if (!ua) return; // missing, NULL (no header) or not a string: no verdict
        const bool bot = ua->find("bot") != std::string_view::npos ||
                         ua->find("crawler") != std::string_view::npos;
        ack.set_var(spop::var_scope::txn, "is_bot", spop::value::from_bool(bot));
    }

    static constexpr spop::router routes{spop::on("check-ua", &check_ua)};
};

static_assert(spop::service<bot_service>);

} // namespace example
