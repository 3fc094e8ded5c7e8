// An HDR-like latency histogram: log2 buckets split into 64 linear sub-buckets, so every
// recorded value is kept within 1/64 (1.6 %) of its true value, from 1 ns to 2^64 ns, in a
// fixed 30 KB table. record() is a few instructions and never allocates.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>

namespace spop_bench {

class latency_histogram {
  public:
    static constexpr unsigned sub_bits = 7; ///< values below 2^7 are exact
    static constexpr std::uint64_t half = std::uint64_t{1} << (sub_bits - 1);
    static constexpr std::size_t bucket_count = (64 - sub_bits) * half + 2 * half;

    void record(std::uint64_t ns) noexcept {
        ++counts_[index_of(ns)];
        ++total_;
        sum_ += ns;
        max_ = std::max(max_, ns);
        min_ = std::min(min_, ns);
    }

    void merge(const latency_histogram& o) noexcept {
        for (std::size_t i = 0; i < bucket_count; ++i) counts_[i] += o.counts_[i];
        total_ += o.total_;
        sum_ += o.sum_;
        max_ = std::max(max_, o.max_);
        min_ = std::min(min_, o.min_);
    }

    [[nodiscard]] std::uint64_t count() const noexcept { return total_; }
    [[nodiscard]] std::uint64_t max() const noexcept { return total_ ? max_ : 0; }
    [[nodiscard]] std::uint64_t min() const noexcept { return total_ ? min_ : 0; }
    [[nodiscard]] double mean() const noexcept {
        return total_ ? static_cast<double>(sum_) / static_cast<double>(total_) : 0.0;
    }

    /// The value at quantile q (0..1): the highest value of the bucket holding the q-th
    /// sample (as HdrHistogram reports it), never above the true maximum.
    [[nodiscard]] std::uint64_t quantile(double q) const noexcept {
        if (total_ == 0) return 0;
        auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_) + 0.5);
        rank = std::clamp<std::uint64_t>(rank, 1, total_);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::min(highest_of(i), max_);
        }
        return max_;
    }

  private:
    static constexpr std::size_t index_of(std::uint64_t v) noexcept {
        if (v < 2 * half) return static_cast<std::size_t>(v);
        const unsigned e = static_cast<unsigned>(std::bit_width(v)) - sub_bits;
        return static_cast<std::size_t>(e * half + (v >> e));
    }
    static constexpr std::uint64_t highest_of(std::size_t i) noexcept {
        if (i < 2 * half) return i;
        const std::uint64_t e = (i - half) / half; // i = e*half + m, m in [half, 2*half)
        const std::uint64_t m = i - e * half;
        return ((m + 1) << e) - 1;
    }

    std::array<std::uint64_t, bucket_count> counts_{};
    std::uint64_t total_ = 0;
    std::uint64_t sum_ = 0;
    std::uint64_t max_ = 0;
    std::uint64_t min_ = ~std::uint64_t{0};
};

} // namespace spop_bench
