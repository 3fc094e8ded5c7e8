// Message routing and typed arguments: the comfortable layer over parse_notify().
//
//   class my_service {
//     public:
//       spop::errc on_notify(const spop::notify_request& req, spop::ack_writer& ack) noexcept {
//           return routes.dispatch(req, ack, *this);
//       }
//     private:
//       void check_ip(const spop::message_view& m, spop::ack_writer& ack) noexcept {
//           if (const auto ip = m.ip("ip")) ack.set_var(..., score(*ip));
//       }
//       static constexpr spop::router routes{spop::on("check-client-ip", &my_service::check_ip)};
//   };
//
// Contract
// - Lifetime: a message_view, the `argument`s it yields and every string_view/value read from it
//   view the NOTIFY payload. They are valid only while that payload is, which for a service is
//   the on_notify() call: copy what you keep longer. ip_address is a small value (17 bytes) and
//   may be kept.
// - Threads: nothing here locks or keeps global state. A message_view is used on the thread that
//   called dispatch(). A const router (e.g. `static constexpr`) may be shared by every thread if
//   its callables are; a router holding mutable lambdas belongs to one service instance.
// - Errors: no exceptions, no allocation. A getter answers with an arg_result: the value, or
//   missing (no such argument), null (HAProxy sent NULL: the sample was unavailable) or
//   wrong_type. dispatch() returns the parse error of a malformed payload (truncated,
//   varint_overflow, bad_data_type), which makes the connection close with status 4. Messages
//   before the malformed one have been dispatched already; their actions are dropped with the
//   frame. Callables must not throw (dispatch is noexcept).
// - Cost: the router validates the payload with parse_notify() and hands each routed message
//   over once its last argument has parsed. Arguments are not copied: a getter re-reads the
//   message's bytes from its first argument, so a lookup costs one decode per argument before
//   the one asked for. This supports all 255 arguments HAProxy may send with no capacity limit
//   and keeps a message_view at 40 bytes; measured, the router-based random service costs the
//   same as a hand-written parse_notify handler (bench/codec_bench.cpp BM_RandomService). A
//   service that reads many arguments of a long message walks it once instead:
//   `for (const spop::argument& a : m)` decodes each argument exactly once.
//
// Naming: the view is `message_view`, not `message`, because spop::message(errc) (status.hpp)
// already names the error-text function in this namespace.
#pragma once

#include <arpa/inet.h>

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "data.hpp"
#include "notify.hpp"
#include "service.hpp"
#include "status.hpp"
#include "writer.hpp"

namespace spop {

/// Why a typed getter has no value.
enum class arg_status : std::uint8_t {
    ok = 0,
    missing,    ///< no argument with that name / at that position
    null,       ///< the argument is NULL (HAProxy could not fetch the sample)
    wrong_type, ///< present with another type (or, for ip_or_string, a non-address STRING)
};

[[nodiscard]] constexpr std::string_view to_string(arg_status s) noexcept {
    switch (s) {
    case arg_status::ok:
        return "ok";
    case arg_status::missing:
        return "missing";
    case arg_status::null:
        return "null";
    case arg_status::wrong_type:
        return "wrong type";
    }
    return "unknown";
}

/// A value or the reason there is none (an `expected` for four outcomes). Reading the value of
/// an empty result is defined: it is a value-initialized T (0, false, empty view, no address).
template <class T>
class arg_result {
  public:
    constexpr arg_result(T v) noexcept : value_(v), status_(arg_status::ok) {}
    constexpr arg_result(arg_status s) noexcept : status_(s) {}

    [[nodiscard]] constexpr bool has_value() const noexcept { return status_ == arg_status::ok; }
    constexpr explicit operator bool() const noexcept { return has_value(); }
    [[nodiscard]] constexpr arg_status status() const noexcept { return status_; }
    [[nodiscard]] constexpr const T& value() const noexcept { return value_; }
    [[nodiscard]] constexpr const T& operator*() const noexcept { return value_; }
    [[nodiscard]] constexpr const T* operator->() const noexcept { return &value_; }
    [[nodiscard]] constexpr T value_or(T fallback) const noexcept {
        return has_value() ? value_ : fallback;
    }

  private:
    T value_{};
    arg_status status_ = arg_status::missing;
};

/// An IPv4 or IPv6 address in network order, by value (so it outlives the NOTIFY).
class ip_address {
  public:
    constexpr ip_address() noexcept = default;

    /// 4 or 16 bytes; any other size gives an empty address.
    static constexpr ip_address from_bytes(std::span<const std::uint8_t> b) noexcept {
        ip_address a;
        if (b.size() != 4 && b.size() != 16) return a;
        for (std::size_t i = 0; i < b.size(); ++i) a.b_[i] = b[i];
        a.size_ = static_cast<std::uint8_t>(b.size());
        return a;
    }
    static constexpr ip_address from_bytes(std::string_view b) noexcept {
        ip_address a;
        if (b.size() != 4 && b.size() != 16) return a;
        for (std::size_t i = 0; i < b.size(); ++i) a.b_[i] = static_cast<std::uint8_t>(b[i]);
        a.size_ = static_cast<std::uint8_t>(b.size());
        return a;
    }

    /// Parses an IPv4 dotted-quad or an IPv6 literal (inet_pton syntax, no zone, no brackets,
    /// no port). False, and `out` untouched, for anything else.
    static bool parse(std::string_view text, ip_address& out) noexcept {
        char z[48]; // INET6_ADDRSTRLEN (46) + room to see that the input is longer
        if (text.empty() || text.size() >= sizeof z - 1) return false;
        if (std::memchr(text.data(), '\0', text.size()) != nullptr) return false;
        std::memcpy(z, text.data(), text.size());
        z[text.size()] = '\0';
        std::uint8_t buf[16];
        const bool v6 = std::memchr(text.data(), ':', text.size()) != nullptr;
        if (::inet_pton(v6 ? AF_INET6 : AF_INET, z, buf) != 1) return false;
        out = from_bytes(std::span<const std::uint8_t>(buf, v6 ? 16 : 4));
        return true;
    }

    [[nodiscard]] constexpr bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] constexpr bool is_v4() const noexcept { return size_ == 4; }
    [[nodiscard]] constexpr bool is_v6() const noexcept { return size_ == 16; }
    [[nodiscard]] constexpr std::size_t size() const noexcept { return size_; }
    /// The 4 or 16 address bytes, network order (viewing this object).
    [[nodiscard]] constexpr std::span<const std::uint8_t> bytes() const noexcept {
        return {b_.data(), size_};
    }
    /// The same bytes as a string_view (what value::bytes holds for an address).
    [[nodiscard]] std::string_view view() const noexcept {
        return {reinterpret_cast<const char*>(b_.data()), size_};
    }
    /// The address as a SPOP value (IPV4/IPV6, or NULL when empty), viewing this object.
    [[nodiscard]] value to_value() const noexcept {
        if (is_v4()) return value::from_ipv4(std::span<const std::uint8_t, 4>(b_.data(), 4));
        if (is_v6()) return value::from_ipv6(std::span<const std::uint8_t, 16>(b_.data(), 16));
        return value::null();
    }

    friend constexpr bool operator==(const ip_address& a, const ip_address& b) noexcept {
        if (a.size_ != b.size_) return false;
        for (std::size_t i = 0; i < a.size_; ++i)
            if (a.b_[i] != b.b_[i]) return false;
        return true;
    }

  private:
    std::array<std::uint8_t, 16> b_{};
    std::uint8_t size_ = 0;
};

/// One argument of a message. `name` is empty for an unnamed argument (`args src`).
struct argument {
    std::string_view name;
    value val;
};

template <class... R>
class router;
namespace detail {
template <class F>
struct each_message_handler;
} // namespace detail

/// How an argument is looked up: by name (the first one with that name; "" finds the first
/// unnamed one) or by position (0-based, as configured in `args`).
template <class K>
concept arg_key = std::integral<K> || std::convertible_to<const K&, std::string_view>;

/// One message of a NOTIFY: its name and its arguments, read lazily from the payload.
class message_view {
  public:
    class iterator {
      public:
        using iterator_category = std::input_iterator_tag;
        using value_type = argument;
        using difference_type = std::ptrdiff_t;
        using reference = const argument&;
        using pointer = const argument*;

        constexpr iterator() noexcept = default;
        const argument& operator*() const noexcept { return cur_; }
        const argument* operator->() const noexcept { return &cur_; }
        iterator& operator++() noexcept {
            --left_;
            load();
            return *this;
        }
        void operator++(int) noexcept { ++*this; }
        friend bool operator==(const iterator& a, const iterator& b) noexcept {
            return a.left_ == b.left_;
        }

      private:
        friend class message_view;
        iterator(const std::uint8_t* p, const std::uint8_t* end, unsigned left) noexcept
            : p_(p), end_(end), left_(left) {
            load();
        }
        void load() noexcept {
            if (left_ == 0) return;
            if (!next_arg(p_, end_, cur_)) left_ = 0; // cannot happen on a validated payload
        }
        const std::uint8_t* p_ = nullptr;
        const std::uint8_t* end_ = nullptr;
        unsigned left_ = 0;
        argument cur_{};
    };

    [[nodiscard]] constexpr std::string_view name() const noexcept { return name_; }
    /// The number of arguments (0..255).
    [[nodiscard]] constexpr std::size_t size() const noexcept { return nb_args_; }
    [[nodiscard]] constexpr bool empty() const noexcept { return nb_args_ == 0; }
    [[nodiscard]] iterator begin() const noexcept { return {args_, end_, nb_args_}; }
    [[nodiscard]] iterator end() const noexcept { return {}; }

    /// The raw value (any type, NULL included), or missing.
    [[nodiscard]] arg_result<value> arg(std::string_view arg_name) const noexcept {
        const std::uint8_t* p = args_;
        argument a;
        for (unsigned i = 0; i < nb_args_; ++i) {
            if (!next_arg(p, end_, a)) break;
            if (a.name == arg_name) return a.val;
        }
        return arg_status::missing;
    }
    [[nodiscard]] arg_result<value> arg(std::size_t index) const noexcept {
        if (index >= nb_args_) return arg_status::missing;
        const std::uint8_t* p = args_;
        argument a;
        for (std::size_t i = 0; i <= index; ++i)
            if (!next_arg(p, end_, a)) return arg_status::missing;
        return a.val;
    }
    /// The argument's name at `index` (empty for unnamed), or missing.
    [[nodiscard]] arg_result<std::string_view> arg_name(std::size_t index) const noexcept {
        if (index >= nb_args_) return arg_status::missing;
        const std::uint8_t* p = args_;
        argument a;
        for (std::size_t i = 0; i <= index; ++i)
            if (!next_arg(p, end_, a)) return arg_status::missing;
        return a.name;
    }

    /// IPV4 or IPV6.
    template <arg_key K>
    [[nodiscard]] arg_result<ip_address> ip(const K& key) const noexcept {
        const arg_result<value> r = lookup(key);
        if (const arg_status s = check(r, data_type::ipv4, data_type::ipv6); s != arg_status::ok)
            return s;
        return ip_address::from_bytes(r->bytes);
    }
    /// IPV4, IPV6, or a STRING holding an IPv4/IPv6 literal (e.g. a header HAProxy forwards as
    /// text); a STRING that is not a literal is wrong_type.
    template <arg_key K>
    [[nodiscard]] arg_result<ip_address> ip_or_string(const K& key) const noexcept {
        const arg_result<value> r = lookup(key);
        if (r && r->type == data_type::string) {
            ip_address a;
            if (ip_address::parse(r->bytes, a)) return a;
            return arg_status::wrong_type;
        }
        return ip(key);
    }
    /// Any integer type (INT32, UINT32, INT64, UINT64), read as signed 64-bit. HAProxy sends
    /// every integer sample as INT64.
    template <arg_key K>
    [[nodiscard]] arg_result<std::int64_t> integer(const K& key) const noexcept {
        const arg_result<value> r = lookup(key);
        if (const arg_status s = check_integer(r); s != arg_status::ok) return s;
        return r->as_int();
    }
    /// Any integer type, read as unsigned 64-bit (the raw wire value).
    template <arg_key K>
    [[nodiscard]] arg_result<std::uint64_t> uinteger(const K& key) const noexcept {
        const arg_result<value> r = lookup(key);
        if (const arg_status s = check_integer(r); s != arg_status::ok) return s;
        return r->as_uint();
    }
    /// STRING only (a BINARY is wrong_type).
    template <arg_key K>
    [[nodiscard]] arg_result<std::string_view> string(const K& key) const noexcept {
        const arg_result<value> r = lookup(key);
        if (const arg_status s = check(r, data_type::string, data_type::string);
            s != arg_status::ok)
            return s;
        return r->bytes;
    }
    /// BINARY only (a STRING is wrong_type).
    template <arg_key K>
    [[nodiscard]] arg_result<std::string_view> binary(const K& key) const noexcept {
        const arg_result<value> r = lookup(key);
        if (const arg_status s = check(r, data_type::binary, data_type::binary);
            s != arg_status::ok)
            return s;
        return r->bytes;
    }
    template <arg_key K>
    [[nodiscard]] arg_result<bool> boolean(const K& key) const noexcept {
        const arg_result<value> r = lookup(key);
        if (const arg_status s = check(r, data_type::boolean, data_type::boolean);
            s != arg_status::ok)
            return s;
        return r->boolean;
    }

  private:
    template <class F>
    friend struct detail::each_message_handler;
    template <class... R>
    friend class router;

    // `name` must be a view parse_notify() gave on_message(): the NB-ARGS byte follows it.
    message_view(std::string_view name, std::uint8_t nb_args, const std::uint8_t* end) noexcept
        : name_(name), args_(reinterpret_cast<const std::uint8_t*>(name.data()) + name.size() + 1),
          end_(end), nb_args_(nb_args) {}

    static bool next_arg(const std::uint8_t*& p, const std::uint8_t* end, argument& a) noexcept {
        result r = decode_name(p, end, a.name);
        if (!r) return false;
        p += r.consumed;
        r = decode_value(p, end, a.val);
        if (!r) return false;
        p += r.consumed;
        return true;
    }

    template <arg_key K>
    arg_result<value> lookup(const K& key) const noexcept {
        if constexpr (std::integral<K>) {
            if constexpr (std::is_signed_v<K>)
                if (key < 0) return arg_status::missing;
            return arg(static_cast<std::size_t>(key));
        } else {
            return arg(std::string_view(key));
        }
    }
    static constexpr arg_status check(const arg_result<value>& r, data_type a,
                                      data_type b) noexcept {
        if (!r) return r.status();
        if (r->type == a || r->type == b) return arg_status::ok;
        return r->type == data_type::null ? arg_status::null : arg_status::wrong_type;
    }
    static constexpr arg_status check_integer(const arg_result<value>& r) noexcept {
        if (!r) return r.status();
        if (r->is_integer()) return arg_status::ok;
        return r->type == data_type::null ? arg_status::null : arg_status::wrong_type;
    }

    std::string_view name_;
    const std::uint8_t* args_ = nullptr; // first argument
    const std::uint8_t* end_ = nullptr;  // end of the payload
    std::uint8_t nb_args_ = 0;
};

namespace detail {

/// What a route or for_each_message callable returned, as an errc: void and action::proceed
/// are ok; action::stop is stopped; an errc is kept as is (anything but ok ends the NOTIFY).
template <class Call>
errc call_outcome(Call&& call) noexcept {
    using R = decltype(call());
    if constexpr (std::is_void_v<R>) {
        call();
        return errc::ok;
    } else if constexpr (std::same_as<R, action>) {
        return call() == action::stop ? errc::stopped : errc::ok;
    } else {
        static_assert(std::same_as<R, errc>, "a route returns void, spop::action or spop::errc");
        return call();
    }
}

template <class F>
struct each_message_handler {
    F& f;
    const std::uint8_t* end;
    std::string_view name{};
    std::uint8_t nb_args = 0;
    errc outcome = errc::ok;

    action on_message(std::string_view n, std::uint8_t nb) noexcept {
        name = n;
        nb_args = nb;
        return action::proceed;
    }
    action on_arg(std::string_view, const value&) noexcept { return action::proceed; }
    action on_message_end() noexcept;
};

} // namespace detail

/// Calls `f(const message_view&)` for each message of a NOTIFY payload, after the message has
/// been validated. `f` returns void, action or errc (see router). Returns parse_notify()'s
/// result; when `f` ended the walk with an errc other than stopped, that errc.
template <class F>
result for_each_message(std::span<const std::uint8_t> payload, F&& f) noexcept {
    detail::each_message_handler<std::remove_reference_t<F>> h{f, payload.data() + payload.size()};
    const result r = parse_notify(payload, h);
    if (r.ec == errc::stopped && h.outcome != errc::ok) return {h.outcome, r.consumed};
    return r;
}

template <class F>
action detail::each_message_handler<F>::on_message_end() noexcept {
    const message_view m(name, nb_args, end);
    outcome = call_outcome([&]() noexcept { return f(m); });
    return outcome == errc::ok ? action::proceed : action::stop;
}

/// A named route: messages called `name` go to `fn`.
template <class F>
struct route {
    std::string_view name;
    F fn;
};
/// Messages no named route matched go to `fn`. At most one per router.
template <class F>
struct fallback_route {
    F fn;
};

/// `fn` is one of:
///   - a callable `(const message_view&, ack_writer&)` (lambda, function pointer);
///   - a member function pointer `R (S::*)(const message_view&, ack_writer&)`, or any callable
///     taking `(S&, const message_view&, ack_writer&)`: it gets the object passed to
///     dispatch(req, ack, obj).
/// It returns void, spop::action (stop ends the NOTIFY: dispatch returns errc::stopped, which
/// the connection treats as success) or spop::errc (anything but ok ends the NOTIFY and is
/// returned by dispatch; a parse error there closes the connection).
template <class F>
constexpr route<F> on(std::string_view name, F fn) noexcept {
    return {name, std::move(fn)};
}
template <class F>
constexpr fallback_route<F> otherwise(F fn) noexcept {
    return {std::move(fn)};
}

namespace detail {
template <class R>
inline constexpr bool is_fallback_v = false;
template <class F>
inline constexpr bool is_fallback_v<fallback_route<F>> = true;
} // namespace detail

/// Dispatches each message of a NOTIFY to the route with its name (first match, a linear scan
/// of string_view compares). Messages with no route are skipped, or given to the fallback.
/// Routes are stored by value: no std::function, no allocation; callables are inlined.
template <class... R>
class router {
    static_assert(((detail::is_fallback_v<R> ? 1 : 0) + ... + 0) <= 1,
                  "at most one spop::otherwise() per router");

  public:
    constexpr explicit router(R... routes) noexcept : routes_(std::move(routes)...) {}

    /// Parses `req` and calls the routes. Returns errc::ok, errc::stopped (a route stopped),
    /// a route's own errc, or the payload's parse error.
    errc dispatch(const notify_request& req, ack_writer& ack) noexcept {
        return run(*this, req.payload, ack);
    }
    errc dispatch(const notify_request& req, ack_writer& ack) const noexcept {
        return run(*this, req.payload, ack);
    }
    /// The same; routes that are member functions of `obj` (or take it first) get `obj`.
    template <class Obj>
    errc dispatch(const notify_request& req, ack_writer& ack, Obj& obj) noexcept {
        return run(*this, req.payload, ack, obj);
    }
    template <class Obj>
    errc dispatch(const notify_request& req, ack_writer& ack, Obj& obj) const noexcept {
        return run(*this, req.payload, ack, obj);
    }

    /// True if a named route handles `name` (what dispatch would call).
    [[nodiscard]] constexpr bool handles(std::string_view name) const noexcept {
        return find(name, std::index_sequence_for<R...>{}) >= 0;
    }

  private:
    static constexpr int npos = -1;
    static constexpr int fallback_index = [] {
        int i = 0, at = npos;
        ((detail::is_fallback_v<R> ? (void)(at = i) : (void)0, ++i), ...);
        return at;
    }();

    template <std::size_t... I>
    constexpr int find(std::string_view name, std::index_sequence<I...>) const noexcept {
        int at = npos;
        (void)((match<I>(name) ? (at = static_cast<int>(I), true) : false) || ...);
        return at;
    }
    template <std::size_t I>
    constexpr bool match(std::string_view name) const noexcept {
        if constexpr (detail::is_fallback_v<std::tuple_element_t<I, std::tuple<R...>>>)
            return false;
        else
            return std::get<I>(routes_).name == name;
    }

    template <class F, class... Obj>
    static errc invoke(F& fn, const message_view& m, ack_writer& ack, Obj&... obj) noexcept {
        if constexpr (sizeof...(Obj) == 1 &&
                      std::is_invocable_v<F&, Obj&..., const message_view&, ack_writer&>) {
            return detail::call_outcome([&]() noexcept { return std::invoke(fn, obj..., m, ack); });
        } else {
            static_assert(std::is_invocable_v<F&, const message_view&, ack_writer&>,
                          "a route takes (const message_view&, ack_writer&), or is a member "
                          "function of the object passed to dispatch(req, ack, obj)");
            return detail::call_outcome([&]() noexcept { return std::invoke(fn, m, ack); });
        }
    }

    template <class Self, std::size_t... I, class... Obj>
    static errc call(Self& self, int at, const message_view& m, ack_writer& ack,
                     std::index_sequence<I...>, Obj&... obj) noexcept {
        errc e = errc::ok;
        (void)((at == static_cast<int>(I)
                    ? (e = invoke(std::get<I>(self.routes_).fn, m, ack, obj...), true)
                    : false) ||
               ...);
        return e;
    }

    template <class Self, class... Obj>
    struct handler {
        Self& self;
        ack_writer& ack;
        const std::uint8_t* end;
        std::tuple<Obj&...> obj;
        int at = npos;
        std::string_view name{};
        std::uint8_t nb_args = 0;
        errc outcome = errc::ok;

        action on_message(std::string_view n, std::uint8_t nb) noexcept {
            at = self.find(n, std::index_sequence_for<R...>{});
            if (at == npos) at = fallback_index;
            name = n;
            nb_args = nb;
            return action::proceed;
        }
        action on_arg(std::string_view, const value&) noexcept { return action::proceed; }
        action on_message_end() noexcept {
            if (at == npos) return action::proceed;
            const message_view m(name, nb_args, end);
            outcome = std::apply(
                [&](auto&... o) noexcept {
                    return call(self, at, m, ack, std::index_sequence_for<R...>{}, o...);
                },
                obj);
            return outcome == errc::ok ? action::proceed : action::stop;
        }
    };

    template <class Self, class... Obj>
    static errc run(Self& self, std::span<const std::uint8_t> payload, ack_writer& ack,
                    Obj&... obj) noexcept {
        handler<Self, Obj...> h{self, ack, payload.data() + payload.size(), {obj...}};
        const result r = parse_notify(payload, h);
        if (r.ec == errc::stopped && h.outcome != errc::ok) return h.outcome;
        return r.ec;
    }

    std::tuple<R...> routes_;
};

template <class... R>
router(R...) -> router<R...>;

} // namespace spop
