#include "lpm.hpp"

#include <algorithm>

namespace agent::iprep {

template <class Key, unsigned D>
std::uint32_t poptrie<Key, D>::lookup_hw(Key k) const noexcept {
    return lookup_inline(k);
}

template <class Key, unsigned D>
std::uint32_t poptrie<Key, D>::lookup_sw(Key k) const noexcept {
    return lookup_inline(k);
}

template <class Key, unsigned D>
std::size_t poptrie<Key, D>::append_tail(const lpm_entry<Key>* first, const lpm_entry<Key>* last,
                                         std::uint32_t dflt) {
    const std::size_t base = b_tails_.size();
    const auto n = static_cast<std::size_t>(last - first);
    if (base + n + 1 >= max_index) return max_index;
    // Longest first, so the first match is the longest match. Equal lengths are disjoint.
    const lpm_entry<Key>* order[8];
    for (std::size_t i = 0; i < n; ++i) order[i] = first + i;
    for (std::size_t i = 1; i < n; ++i) // stable insertion sort, n <= tail_max
        for (std::size_t j = i; j > 0 && order[j - 1]->len < order[j]->len; --j)
            std::swap(order[j - 1], order[j]);
    for (std::size_t i = 0; i < n; ++i)
        b_tails_.push_back(make_tail(order[i]->addr, order[i]->len, order[i]->value));
    b_tails_.push_back(make_tail(Key{0}, 0, dflt));
    return base;
}

// Construction walks the sorted entries once per trie level. Sorted by (addr, len), a prefix
// always comes before the prefixes it contains, so painting slots in that order leaves the
// longest match in every slot. The entries that go deeper than a node (len > off + stride) are
// contiguous per child slot, because a shorter prefix starting inside a slot is aligned to the
// slot's start and therefore sorts before all of them.
template <class Key, unsigned D>
bool poptrie<Key, D>::fill_node(std::uint32_t idx, const lpm_entry<Key>* first,
                                const lpm_entry<Key>* last, std::uint32_t dflt, unsigned off) {
    std::uint32_t slot[64];
    std::uint32_t child_first[64];
    std::uint32_t child_last[64];
    for (int i = 0; i < 64; ++i) {
        slot[i] = dflt;
        child_first[i] = child_last[i] = 0;
    }
    std::uint64_t vector = 0;
    const unsigned end = off + stride;
    for (const lpm_entry<Key>* e = first; e != last; ++e) {
        const unsigned c = extract(e->addr, off);
        if (e->len <= end) {
            const unsigned span = 1u << (end - e->len);
            for (unsigned i = c; i < c + span && i < 64; ++i) slot[i] = e->value;
        } else {
            const auto pos = static_cast<std::uint32_t>(e - first);
            if (!(vector & (std::uint64_t{1} << c))) {
                vector |= std::uint64_t{1} << c;
                child_first[c] = pos;
            }
            child_last[c] = pos + 1;
        }
    }
    // Children with few prefixes become tails, referenced from a leaf; the others are nodes.
    // The slot value painted so far is what the child's subtree inherits.
    for (unsigned i = 0; i < 64; ++i) {
        if (!(vector & (std::uint64_t{1} << i)) || child_last[i] - child_first[i] > tail_max)
            continue;
        const std::size_t t = append_tail(first + child_first[i], first + child_last[i], slot[i]);
        if (t == max_index) return false;
        slot[i] = tail_flag | static_cast<std::uint32_t>(t);
        vector &= ~(std::uint64_t{1} << i);
    }
    std::uint64_t leafvec = 0;
    const std::size_t base0 = b_leaves_.size();
    bool have_prev = false;
    std::uint32_t prev = 0;
    for (unsigned i = 0; i < 64; ++i) {
        if (vector & (std::uint64_t{1} << i)) continue;
        if (!have_prev || slot[i] != prev) {
            leafvec |= std::uint64_t{1} << i;
            b_leaves_.push_back(slot[i]);
            prev = slot[i];
            have_prev = true;
        }
    }
    const std::size_t nchild = static_cast<std::size_t>(__builtin_popcountll(vector));
    const std::size_t base1 = b_nodes_.size();
    if (base1 + nchild >= max_index || b_leaves_.size() >= max_index) return false;
    b_nodes_.resize(base1 + nchild);
    b_nodes_[idx] =
        node{vector, leafvec, static_cast<std::uint32_t>(base0), static_cast<std::uint32_t>(base1)};
    std::uint32_t rank = 0;
    for (unsigned i = 0; i < 64; ++i) {
        if (!(vector & (std::uint64_t{1} << i))) continue;
        if (!fill_node(static_cast<std::uint32_t>(base1 + rank), first + child_first[i],
                       first + child_last[i], slot[i], end))
            return false;
        ++rank;
    }
    return true;
}

template <class Key, unsigned D>
bool poptrie<Key, D>::build(const std::vector<lpm_entry<Key>>& sorted) {
    auto top = [](Key k) { return static_cast<std::size_t>(k >> (key_bits - D)); };
    b_direct_.assign(std::size_t{1} << D, leaf_flag);
    b_nodes_.clear();
    b_leaves_.clear();
    b_tails_.clear();
    const std::size_t n = sorted.size();
    for (const auto& e : sorted)
        if (e.value == 0 || e.value > lpm_max_value) return false;
    // Pass 1: prefixes no longer than D paint the direct array.
    for (const auto& e : sorted) {
        if (e.len > D) continue;
        const std::size_t b = top(e.addr);
        const std::size_t span = std::size_t{1} << (D - e.len);
        for (std::size_t i = b; i < b + span; ++i) b_direct_[i] = leaf_flag | e.value;
    }
    // Pass 2: every direct slot with longer prefixes becomes a tail or a node whose default is
    // the slot's painted value.
    std::size_t i = 0;
    while (i < n) {
        if (sorted[i].len <= D) {
            ++i;
            continue;
        }
        const std::size_t b = top(sorted[i].addr);
        std::size_t j = i + 1;
        while (j < n && top(sorted[j].addr) == b) ++j;
        // [i, j) holds the longer prefixes of slot b (shorter ones starting at b sort first).
        const std::uint32_t dflt = b_direct_[b] & ~leaf_flag;
        if (j - i <= tail_max) {
            const std::size_t t = append_tail(sorted.data() + i, sorted.data() + j, dflt);
            if (t == max_index) return false;
            b_direct_[b] = tail_flag | static_cast<std::uint32_t>(t);
        } else {
            const std::size_t idx = b_nodes_.size();
            if (idx >= max_index) return false;
            b_nodes_.emplace_back();
            b_direct_[b] = static_cast<std::uint32_t>(idx);
            if (!fill_node(static_cast<std::uint32_t>(idx), sorted.data() + i, sorted.data() + j,
                           dflt, D))
                return false;
        }
        i = j;
    }
    const bool ok = direct_.assign(b_direct_) && nodes_.assign(b_nodes_) &&
                    leaves_.assign(b_leaves_) && tails_.assign(b_tails_);
    // Free the build vectors (`v = {}` would keep their capacity).
    std::vector<std::uint32_t>().swap(b_direct_);
    std::vector<node>().swap(b_nodes_);
    std::vector<std::uint32_t>().swap(b_leaves_);
    std::vector<tail_entry>().swap(b_tails_);
    return ok;
}

template class poptrie<std::uint64_t, 20>;
template class poptrie<u128, 16>;
template class poptrie<std::uint64_t, 16>;

} // namespace agent::iprep
