// fuzz_notify: parse_notify() on arbitrary NOTIFY payloads.
//
// The handler reads every byte of every view it is given (names, argument names, string,
// binary and address bodies) and sums them: a view that runs past the payload is an ASan
// heap-buffer-overflow, since libFuzzer hands us an exactly-sized heap copy. On top of that:
//   - every view lies inside the payload, addresses are 4/16 bytes;
//   - callbacks follow the protocol (exactly nb_args on_arg between on_message/on_message_end);
//   - the result is one of the documented codes, consumed <= size, ok => consumed == size;
//   - a second parse that stops at the k-th callback sees a prefix of the first parse's
//     callbacks and returns errc::stopped;
//   - notify_request::parse() gives the same result as parse_notify().
#include "fuzz_common.hpp"

namespace {

volatile std::uint64_t g_sink; // keeps the byte sums observable

struct touching_handler {
    const std::uint8_t* base = nullptr;
    std::size_t size = 0;
    std::uint64_t sum = 0;
    std::size_t calls = 0;
    std::size_t stop_at = SIZE_MAX; ///< return stop on this callback (0-based)
    std::uint8_t expected_args = 0;
    std::size_t seen_args = 0;
    bool in_message = false;
    std::vector<std::uint64_t> trace; ///< one hash per callback, for the prefix check

    void touch(std::string_view v) {
        FUZZ_CHECK(spop_fuzz::inside(v, base, size));
        for (char c : v) sum += static_cast<std::uint8_t>(c);
    }
    spop::action step(std::uint64_t h) {
        trace.push_back(h);
        return calls++ == stop_at ? spop::action::stop : spop::action::proceed;
    }

    spop::action on_message(std::string_view name, std::uint8_t nb_args) {
        FUZZ_CHECK(!in_message);
        touch(name);
        in_message = true;
        expected_args = nb_args;
        seen_args = 0;
        return step(spop_fuzz::fnv1a(reinterpret_cast<const std::uint8_t*>(name.data()),
                                     name.size()) ^ (std::uint64_t{nb_args} << 56) ^ 1);
    }
    spop::action on_arg(std::string_view name, const spop::value& v) {
        FUZZ_CHECK(in_message);
        FUZZ_CHECK(seen_args < expected_args);
        ++seen_args;
        touch(name);
        touch(v.bytes);
        spop_fuzz::check_value_shape(v, base, size);
        sum += v.integer + v.boolean + static_cast<unsigned>(v.type);
        return step(spop_fuzz::fnv1a(reinterpret_cast<const std::uint8_t*>(name.data()),
                                     name.size()) ^ v.integer ^
                    (std::uint64_t{static_cast<std::uint8_t>(v.type)} << 48) ^ 2);
    }
    spop::action on_message_end() {
        FUZZ_CHECK(in_message);
        FUZZ_CHECK(seen_args == expected_args);
        in_message = false;
        return step(3);
    }
};
static_assert(spop::notify_handler<touching_handler>);

bool documented(spop::errc e) {
    using spop::errc;
    return e == errc::ok || e == errc::stopped || e == errc::truncated ||
           e == errc::varint_overflow || e == errc::bad_data_type;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> payload(data, size);

    touching_handler full;
    full.base = data;
    full.size = size;
    const spop::result r = spop::parse_notify(payload, full);
    FUZZ_CHECK(documented(r.ec));
    FUZZ_CHECK(r.ec != spop::errc::stopped);
    FUZZ_CHECK(r.consumed <= size);
    if (r) {
        FUZZ_CHECK(r.consumed == size);
        FUZZ_CHECK(!full.in_message);
    }
    g_sink = full.sum;

    // The same through notify_request (what a service calls).
    {
        spop::notify_request req{1, 1, spop::flag_fin, payload};
        touching_handler h;
        h.base = data;
        h.size = size;
        const spop::result r2 = req.parse(h);
        FUZZ_CHECK(r2 == r);
        FUZZ_CHECK(h.trace == full.trace);
        FUZZ_CHECK(h.sum == full.sum);
    }

    // Stop at a callback chosen from the input: the callbacks seen are a prefix of the full run.
    if (!full.trace.empty()) {
        touching_handler s;
        s.base = data;
        s.size = size;
        s.stop_at = spop_fuzz::fnv1a(data, size) % full.trace.size();
        const spop::result rs = spop::parse_notify(payload, s);
        FUZZ_CHECK(rs.ec == spop::errc::stopped);
        FUZZ_CHECK(rs.consumed <= size);
        FUZZ_CHECK(rs.consumed <= r.consumed); // stopped no later than the full run ended
        FUZZ_CHECK(s.trace.size() == s.stop_at + 1);
        for (std::size_t i = 0; i < s.trace.size(); ++i) FUZZ_CHECK(s.trace[i] == full.trace[i]);
        g_sink = s.sum;
    }

    // The null handler validates exactly the same payloads.
    {
        spop::null_notify_handler n;
        FUZZ_CHECK(spop::parse_notify(payload, n) == r);
    }
    return 0;
}
