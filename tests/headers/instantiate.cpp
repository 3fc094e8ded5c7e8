// Instantiates the library's templates with the shipped null handlers/service, so that the
// -fno-exceptions -fno-rtti header check covers template bodies too, not just declarations.
#include <spop/spop.hpp>

#include <cstdint>
#include <span>

template class spop::connection<spop::null_service>;

namespace spop_header_check {

spop::result parse_both(std::span<const std::uint8_t> p) noexcept {
    spop::null_kv_handler kv;
    spop::null_notify_handler n;
    const spop::result r = spop::parse_kv_list(p, kv);
    if (!r) return r;
    return spop::parse_notify(p, n);
}

} // namespace spop_header_check

namespace spop_header_check {

// The router and typed getters, and a deferring service, under -fno-exceptions -fno-rtti.
struct routed {
    spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
        const auto r = spop::router{spop::on("check-client-ip",
                                             [](const spop::message_view& m, spop::ack_writer& a) {
                                                 if (m.ip(0)) a.unset_var(spop::var_scope::txn, "x");
                                                 (void)m.integer("n");
                                                 (void)m.string("s");
                                             })};
        if (spop::ticket t = req.defer()) return spop::errc::ok;
        return r.dispatch(req, ack);
    }
};

} // namespace spop_header_check

template class spop::connection<spop_header_check::routed>;
