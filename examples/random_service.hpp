// HAProxy's spoa-example as a service: check-client-ip -> SET-VAR sess.<prefix>.ip_score, a
// random 0..100. HAProxy side (examples/haproxy/):
//   spoe-message check-client-ip
//       args ip=src
//       event on-client-session
// Like the reference agent it reads the first argument, and answers nothing when that is not
// an address (e.g. NULL).
#pragma once

#include <cstdint>
#include <random>

#include <spop/message.hpp>

namespace example {

class random_service {
  public:
    // No max_ack_size: one SET-VAR per check-client-ip message, however many a NOTIFY carries.
    explicit random_service(std::uint32_t seed = std::random_device{}()) noexcept : rng_(seed) {}

    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        return routes.dispatch(req, ack, *this);
    }

  private:
    void check_client_ip(const spop::message_view& m, spop::ack_writer& ack) noexcept {
        if (!m.ip(0)) return;
        const auto score = static_cast<std::uint32_t>(rng_() % 101);
        ack.set_var(spop::var_scope::sess, "ip_score", spop::value::from_uint32(score));
    }

    static constexpr spop::router routes{
        spop::on("check-client-ip", &random_service::check_client_ip)};
    std::minstd_rand rng_;
};

static_assert(spop::service<random_service>);

} // namespace example
