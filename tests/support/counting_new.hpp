// Counting replacements of the global operator new/delete, for zero-allocation tests.
// Include this header in exactly ONE translation unit of a test executable (it defines the
// replaceable operators): every allocation of the process then goes through it, so that no
// variant (nothrow, aligned, sized) pairs a sanitizer's allocator with our free().
// alloc_window counts the allocations made between its construction and stop().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace spop_test_alloc {

// The replacement operators below live in the TU that calls them, so the optimizer may inline
// them into a caller. GCC 12 then sees `::operator new` on one side and the std::free() of the
// inlined operator delete on the other, and warns -Wmismatched-new-delete (at -O2 with -g, e.g.
// debugoptimized), although both are ours and match. Keeping the malloc/free helpers out of
// line gives callers an opaque call, as if the operators were defined in their own TU, which is
// how a program replaces them; the counting itself is unchanged.
std::atomic<bool> g_counting{false};
std::atomic<std::size_t> g_news{0};
std::atomic<std::size_t> g_deletes{0};

[[gnu::noinline]] void* counted_alloc(std::size_t n) {
    if (g_counting.load(std::memory_order_relaxed)) g_news.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n == 0 ? 1 : n);
}

[[gnu::noinline]] void* counted_aligned_alloc(std::size_t n, std::align_val_t al) {
    if (g_counting.load(std::memory_order_relaxed)) g_news.fetch_add(1, std::memory_order_relaxed);
    const auto a = static_cast<std::size_t>(al);
    const std::size_t size = (n + a - 1) / a * a;
    return std::aligned_alloc(a, size == 0 ? a : size);
}

[[gnu::noinline]] void counted_free(void* p) noexcept {
    if (p == nullptr) return;
    if (g_counting.load(std::memory_order_relaxed))
        g_deletes.fetch_add(1, std::memory_order_relaxed);
    std::free(p);
}

} // namespace spop_test_alloc

// clang-format off
void* operator new(std::size_t n) { if (void* p = spop_test_alloc::counted_alloc(n)) return p; throw std::bad_alloc(); }
void* operator new[](std::size_t n) { if (void* p = spop_test_alloc::counted_alloc(n)) return p; throw std::bad_alloc(); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return spop_test_alloc::counted_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return spop_test_alloc::counted_alloc(n); }
void* operator new(std::size_t n, std::align_val_t a) { if (void* p = spop_test_alloc::counted_aligned_alloc(n, a)) return p; throw std::bad_alloc(); }
void* operator new[](std::size_t n, std::align_val_t a) { if (void* p = spop_test_alloc::counted_aligned_alloc(n, a)) return p; throw std::bad_alloc(); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return spop_test_alloc::counted_aligned_alloc(n, a); }
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return spop_test_alloc::counted_aligned_alloc(n, a); }
void operator delete(void* p) noexcept { spop_test_alloc::counted_free(p); }
void operator delete[](void* p) noexcept { spop_test_alloc::counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { spop_test_alloc::counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { spop_test_alloc::counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { spop_test_alloc::counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { spop_test_alloc::counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { spop_test_alloc::counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { spop_test_alloc::counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { spop_test_alloc::counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { spop_test_alloc::counted_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { spop_test_alloc::counted_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { spop_test_alloc::counted_free(p); }
// clang-format on

namespace spop_test_alloc {

/// Counts allocations between construction and stop().
class alloc_window {
  public:
    alloc_window() {
        g_news = 0;
        g_deletes = 0;
        g_counting = true;
    }
    ~alloc_window() { g_counting = false; }
    void stop() { g_counting = false; }
    [[nodiscard]] std::size_t news() const { return g_news.load(); }
    [[nodiscard]] std::size_t deletes() const { return g_deletes.load(); }
};

} // namespace spop_test_alloc
