// gtest printers for the library's enums and results (found by ADL in namespace spop), so a
// failure reads "errc::truncated" instead of "1-byte object <04>".
#pragma once

#include <ostream>

#include <spop/frame.hpp>
#include <spop/status.hpp>

namespace spop {

inline void PrintTo(errc e, std::ostream* os) {
    *os << "errc(" << static_cast<int>(e) << ": " << message(e) << ")";
}
inline void PrintTo(const result& r, std::ostream* os) {
    *os << "{";
    PrintTo(r.ec, os);
    *os << ", consumed " << r.consumed << "}";
}
inline void PrintTo(frame_type t, std::ostream* os) {
    *os << "frame_type(" << static_cast<int>(t) << ")";
}
inline void PrintTo(status s, std::ostream* os) {
    *os << "status(" << static_cast<unsigned>(s) << ": " << status_message(s) << ")";
}

} // namespace spop
