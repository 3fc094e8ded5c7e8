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
