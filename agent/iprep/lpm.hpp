// Longest-prefix match for IPv4 and IPv6: a Poptrie (Asai & Ohara, SIGCOMM 2015) with path
// compression for sparse subtrees.
//
// Layout: a direct-pointing array indexed by the key's top D bits, then a multibit trie with a
// stride of 6 bits. Each node holds two 64-bit bitmaps:
//   vector  - bit i set: child i is an internal node (children stored contiguously at base1);
//   leafvec - bit i set: child i starts a new run of equal leaf values (leaves at base0).
// A lookup is one direct-array read, one node per 6 bits below D, and one leaf read, each
// indexed with a popcount. Nothing is allocated and nothing is locked.
//
// Tails (our addition): a subtree that holds at most tail_max prefixes is not expanded into a
// chain of nodes. Its prefixes are stored longest first in a small array, followed by a
// catch-all entry with the value the subtree inherits, and the lookup compares the key with
// each until one matches (one or two cache lines). A random /128 would otherwise cost up to 19
// nodes and a random /32 two; both become one tail. A direct-array entry or a node's leaf
// points at a tail when it has tail_flag set (values use 25 bits, so the flag is free); such a
// leaf is never merged into a run of equal leaves. IPv4 tail entries are 8 bytes: the address
// in the top 32 bits of a uint64_t and the length and value packed in the low 32 bits.
//
// Keys are unsigned integers with the address in the most significant bits: IPv4 in the top 32
// bits of a uint64_t, IPv6 in an unsigned __int128. Bits past the address are zero, so a stride
// that runs past the end of the address simply sees zeros.
//
// A value is 1..lpm_max_value (25 bits); 0 means "no prefix matched". The table is immutable
// once built: it is part of a snapshot that workers read while the reloader builds the next.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <type_traits>
#include <vector>

namespace agent::iprep {

__extension__ typedef unsigned __int128 u128;

inline constexpr std::uint32_t lpm_max_value = (1u << 25) - 1;

template <class Key>
struct lpm_entry {
    Key addr{};              ///< network address, host bits zero, MSB-aligned in Key
    std::uint8_t len = 0;    ///< prefix length in address bits
    std::uint32_t value = 0; ///< 1..lpm_max_value
};

/// IPv6 tail entry, 24 bytes (IPv4 uses a packed uint64_t). The address is split in two
/// halves to avoid the 16-byte alignment (and padding) of an unsigned __int128 member.
struct wide_tail {
    std::uint64_t hi, lo;
    std::uint32_t value;
    std::uint32_t len; ///< 0 = the catch-all that ends every tail
};

/// An immutable array for the lookup path. Arrays of 2 MiB and more get transparent huge pages
/// (madvise before the copy touches them): a 1M-prefix table then costs a handful of TLB
/// entries instead of thousands, which matters most in virtual machines.
template <class T>
class frozen_array {
    static_assert(std::is_trivially_copyable_v<T>);
    static constexpr std::size_t huge = std::size_t{2} << 20;

  public:
    frozen_array() = default;
    ~frozen_array() { release(); }
    frozen_array(const frozen_array&) = delete;
    frozen_array& operator=(const frozen_array&) = delete;

    /// Copies `v`; false if memory is exhausted.
    bool assign(const std::vector<T>& v) {
        release();
        const std::size_t bytes = v.size() * sizeof(T);
        if (bytes == 0) return true;
        if (bytes >= huge) {
            const std::size_t len = (bytes + huge - 1) / huge * huge;
            void* m = ::mmap(nullptr, len + huge, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) return false;
            map_ = m;
            map_len_ = len + huge;
            const auto a = (reinterpret_cast<std::uintptr_t>(m) + huge - 1) & ~(huge - 1);
            ::madvise(reinterpret_cast<void*>(a), len, MADV_HUGEPAGE); // best effort
            p_ = reinterpret_cast<T*>(a);
            bytes_ = len;
        } else {
            p_ = static_cast<T*>(std::malloc(bytes));
            if (p_ == nullptr) return false;
            bytes_ = bytes;
        }
        std::memcpy(static_cast<void*>(p_), v.data(), bytes);
        n_ = v.size();
        return true;
    }

    [[nodiscard]] const T& operator[](std::size_t i) const noexcept { return p_[i]; }
    [[nodiscard]] std::size_t size() const noexcept { return n_; }
    [[nodiscard]] bool empty() const noexcept { return n_ == 0; }
    /// Memory held (huge-page arrays round up to 2 MiB).
    [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }

  private:
    void release() noexcept {
        if (map_ != nullptr)
            ::munmap(map_, map_len_);
        else
            std::free(p_);
        p_ = nullptr;
        map_ = nullptr;
        n_ = bytes_ = map_len_ = 0;
    }

    T* p_ = nullptr;
    std::size_t n_ = 0;
    std::size_t bytes_ = 0;
    void* map_ = nullptr;
    std::size_t map_len_ = 0;
};

/// Key: uint64_t (IPv4, address in the top 32 bits) or u128 (IPv6). D: direct-pointing bits.
template <class Key, unsigned D>
class poptrie {
  public:
    static constexpr unsigned key_bits = sizeof(Key) * 8;
    static constexpr bool packed = sizeof(Key) == 8; ///< IPv4: 8-byte tail entries
    static constexpr unsigned stride = 6;
    static_assert(D >= 1 && D <= 24);

    struct node {
        std::uint64_t vector;
        std::uint64_t leafvec;
        std::uint32_t base0; ///< first leaf
        std::uint32_t base1; ///< first internal child
    };
    using tail_entry = std::conditional_t<packed, std::uint64_t, wide_tail>;
    /// Most prefixes in one tail: with the catch-all, 64 bytes for IPv4, 96 for IPv6.
    static constexpr unsigned tail_max = packed ? 7 : 3;

    /// Builds from entries sorted by (addr, len) with no duplicate (addr, len), no host bits
    /// set and values in 1..lpm_max_value. Returns false if the table would exceed 2^30 nodes,
    /// leaves or tail entries.
    bool build(const std::vector<lpm_entry<Key>>& sorted);

    /// The value of the longest prefix containing `k`, or 0.
    [[nodiscard]] std::uint32_t lookup(Key k) const noexcept {
        return has_hw_popcount() ? lookup_hw(k) : lookup_sw(k);
    }

    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return direct_.bytes() + nodes_.bytes() + leaves_.bytes() + tails_.bytes();
    }
    [[nodiscard]] std::size_t node_count() const noexcept { return nodes_.size(); }
    [[nodiscard]] std::size_t leaf_count() const noexcept { return leaves_.size(); }
    [[nodiscard]] std::size_t tail_count() const noexcept { return tails_.size(); }

    /// True when the CPU has POPCNT (checked once).
    static bool has_hw_popcount() noexcept {
        static const bool hw = __builtin_cpu_supports("popcnt");
        return hw;
    }

  private:
    static constexpr std::uint32_t leaf_flag = 0x80000000u;
    static constexpr std::uint32_t tail_flag = 0x40000000u;
    static constexpr std::size_t max_index = tail_flag;

    [[gnu::always_inline]] static inline unsigned extract(Key k, unsigned off) noexcept {
        return static_cast<unsigned>((k << off) >> (key_bits - stride));
    }
    [[gnu::always_inline]] static inline unsigned pop(std::uint64_t v) noexcept {
        return static_cast<unsigned>(__builtin_popcountll(v));
    }
    [[gnu::always_inline]] static inline Key prefix_mask(unsigned len) noexcept {
        return len == 0 ? Key{0} : ~Key{0} << (key_bits - len);
    }

    static tail_entry make_tail(Key addr, unsigned len, std::uint32_t value) noexcept {
        if constexpr (packed)
            return addr | (static_cast<std::uint64_t>(len) << 25) | value;
        else
            return wide_tail{static_cast<std::uint64_t>(addr >> 64),
                             static_cast<std::uint64_t>(addr), value, len};
    }

    [[gnu::always_inline]] inline std::uint32_t scan_tail(std::uint32_t i, Key k) const noexcept {
        for (const tail_entry* t = &tails_[i];; ++t) {
            if constexpr (packed) {
                const std::uint64_t e = *t;
                // The mask covers address bits only, so the packed low half never interferes.
                if (((k ^ e) & prefix_mask(static_cast<unsigned>(e >> 25) & 63u)) == 0)
                    return static_cast<std::uint32_t>(e) & lpm_max_value;
            } else {
                const Key a = (static_cast<Key>(t->hi) << 64) | t->lo;
                if (((k ^ a) & prefix_mask(t->len)) == 0) return t->value;
            }
        }
    }

    [[gnu::always_inline]] inline std::uint32_t lookup_inline(Key k) const noexcept {
        if (direct_.empty()) return 0;
        const std::uint32_t d = direct_[static_cast<std::size_t>(k >> (key_bits - D))];
        if (d & leaf_flag) return d & ~leaf_flag;
        if (d & tail_flag) return scan_tail(d & ~tail_flag, k);
        const node* n = &nodes_[d];
        unsigned off = D;
        unsigned v = extract(k, off);
        std::uint64_t vec = n->vector;
        while (vec & (std::uint64_t{1} << v)) {
            n = &nodes_[n->base1 + pop(vec & ((std::uint64_t{2} << v) - 1)) - 1];
            vec = n->vector;
            off += stride;
            v = extract(k, off);
        }
        const std::uint32_t leaf =
            leaves_[n->base0 + pop(n->leafvec & ((std::uint64_t{2} << v) - 1)) - 1];
        if (leaf & tail_flag) return scan_tail(leaf & ~tail_flag, k);
        return leaf;
    }

    // Both are the same code; the first is compiled for CPUs with POPCNT.
    __attribute__((target("popcnt"))) std::uint32_t lookup_hw(Key k) const noexcept;
    std::uint32_t lookup_sw(Key k) const noexcept;

    /// Appends a tail for prefixes [first, last) over `dflt`; returns its index or max_index.
    std::size_t append_tail(const lpm_entry<Key>* first, const lpm_entry<Key>* last,
                            std::uint32_t dflt);
    bool fill_node(std::uint32_t idx, const lpm_entry<Key>* first, const lpm_entry<Key>* last,
                   std::uint32_t dflt, unsigned off);

    // Built in vectors (b_*), then frozen into the arrays the lookup reads.
    std::vector<std::uint32_t> b_direct_;
    std::vector<node> b_nodes_;
    std::vector<std::uint32_t> b_leaves_;
    std::vector<tail_entry> b_tails_;
    frozen_array<std::uint32_t> direct_;
    frozen_array<node> nodes_;
    frozen_array<std::uint32_t> leaves_;
    frozen_array<tail_entry> tails_;
};

/// IPv4: 20 direct bits (4 MiB), so a /24 is one node deep and a /32 at most two.
using lpm4 = poptrie<std::uint64_t, 20>;
/// IPv6: 16 direct bits (256 KiB).
using lpm6 = poptrie<u128, 16>;
/// IPv4 for small, often rebuilt tables (live decisions): 16 direct bits (256 KiB instead of
/// 4 MiB, so a rebuild does not copy 4 MiB); up to a few hundred thousand prefixes, most direct
/// entries point at a tail, so a lookup still reads two or three cache lines.
using lpm4_sparse = poptrie<std::uint64_t, 16>;

extern template class poptrie<std::uint64_t, 20>;
extern template class poptrie<u128, 16>;
extern template class poptrie<std::uint64_t, 16>;

/// Key helpers: network-order bytes to MSB-aligned keys.
[[nodiscard]] inline std::uint64_t key4(const std::uint8_t* b) noexcept {
    return (static_cast<std::uint64_t>(b[0]) << 56) | (static_cast<std::uint64_t>(b[1]) << 48) |
           (static_cast<std::uint64_t>(b[2]) << 40) | (static_cast<std::uint64_t>(b[3]) << 32);
}
[[nodiscard]] inline std::uint64_t key4(std::uint32_t host_order) noexcept {
    return static_cast<std::uint64_t>(host_order) << 32;
}
[[nodiscard]] inline u128 key6(const std::uint8_t* b) noexcept {
    std::uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 8; ++i) hi = (hi << 8) | b[i];
    for (int i = 8; i < 16; ++i) lo = (lo << 8) | b[i];
    return (static_cast<u128>(hi) << 64) | lo;
}

} // namespace agent::iprep
