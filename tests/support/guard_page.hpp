// Inputs placed so that their last byte is the last byte before a PROT_NONE page
// (h2o/picohttpparser test.c): any read past the end faults at once, sanitizer or not.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>

namespace spop_test {

class guarded_region {
  public:
    explicit guarded_region(std::size_t max_size = 1 << 16) {
        page_ = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
        usable_ = (max_size + page_ - 1) / page_ * page_;
        if (usable_ == 0) usable_ = page_;
        void* m = ::mmap(nullptr, usable_ + page_, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            std::perror("mmap");
            std::abort();
        }
        base_ = static_cast<std::uint8_t*>(m);
        if (::mprotect(base_ + usable_, page_, PROT_NONE) != 0) {
            std::perror("mprotect");
            std::abort();
        }
    }
    guarded_region(const guarded_region&) = delete;
    guarded_region& operator=(const guarded_region&) = delete;
    ~guarded_region() { ::munmap(base_, usable_ + page_); }

    /// Copies `data` so that it ends right at the guard page; the returned span views the copy.
    std::span<const std::uint8_t> place(std::span<const std::uint8_t> data) {
        if (data.size() > usable_) {
            std::fprintf(stderr, "guarded_region: %zu bytes do not fit in %zu\n", data.size(),
                         usable_);
            std::abort();
        }
        std::uint8_t* dst = guard() - data.size();
        if (!data.empty()) std::memcpy(dst, data.data(), data.size());
        return {dst, data.size()};
    }

    /// The first inaccessible byte.
    [[nodiscard]] std::uint8_t* guard() const noexcept { return base_ + usable_; }
    [[nodiscard]] std::size_t capacity() const noexcept { return usable_; }

  private:
    std::uint8_t* base_ = nullptr;
    std::size_t page_ = 0;
    std::size_t usable_ = 0;
};

} // namespace spop_test
