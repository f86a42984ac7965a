// Shared types for the lfagg kernels: ragged bags, Eigen aliases, thread helpers.
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace lfagg {

using Index = Eigen::Index;

template <class T>
using MatR = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;
template <class T>
using CMapR = Eigen::Map<const MatR<T>>;
template <class T>
using MapR = Eigen::Map<MatR<T>>;

// Ragged bags in CSR style: rows [offsets[b], offsets[b+1]) of the (n x dim) row-major
// feature matrix belong to bag b. Validated by the caller.
template <class T>
struct BagsView {
    const T* features;
    Index n;
    Index dim;
    const std::int64_t* offsets;
    Index n_bags;

    Index begin(Index b) const { return static_cast<Index>(offsets[b]); }
    Index end(Index b) const { return static_cast<Index>(offsets[b + 1]); }
    Index size(Index b) const { return end(b) - begin(b); }
    const T* row(Index r) const { return features + r * dim; }

    // The (non-empty) bag holding row r: offsets[b] <= r < offsets[b + 1].
    Index bag_of_row(Index r) const {
        const std::int64_t* it = std::upper_bound(offsets, offsets + n_bags + 1, r);
        return static_cast<Index>(it - offsets) - 1;
    }

    // Calls fn(bag, first_row, end_row) for every non-empty piece of a bag inside rows [r0, r1).
    template <class Fn>
    void for_each_segment(Index r0, Index r1, Fn&& fn) const {
        if (r0 >= r1) return;
        for (Index b = bag_of_row(r0); b < n_bags && begin(b) < r1; ++b) {
            const Index s = std::max(begin(b), r0), e = std::min(end(b), r1);
            if (s < e) fn(b, s, e);
        }
    }
};

// Model parameters of the soft-assignment encoders (row-major K x D arrays).
template <class T>
struct SoftParams {
    const T* centers;
    const T* precisions;
    Index k;
    T gamma;
};

// GNU OpenMP's threads do not survive fork(): in a child forked after the core ran a
// parallel region of several threads, its next such region never ends. Such a child runs
// the core on one thread (bindings.cpp registers note_fork with pthread_atfork); a child
// of a process that never started them keeps them. Every `omp parallel` of the core takes
// its thread count through team().
inline std::atomic<bool> threads_started{false}, forked_after_threads{false};
inline void note_fork() { forked_after_threads = threads_started.load(); }

// `threads` for a parallel region about to start, noted when it starts OpenMP's threads.
inline int team(int threads) {
    if (threads > 1) threads_started.store(true, std::memory_order_relaxed);
    return threads;
}

inline int resolve_threads(int requested) {
#ifdef _OPENMP
    if (forked_after_threads.load(std::memory_order_relaxed)) return 1;
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Subnormal numbers (below 1.2e-38 in float32) cost a microcode assist, some hundred
// cycles, per operation on x86. With a sharp gamma the soft assignments of far codewords
// and the backward's products of them fall there: T1's backward ran 8-10x slower on
// CIFAR-10 patches at gamma_scale 8 than on random data (Intel Xeon). Each thread of a
// kernel flushes them to zero (FTZ) and reads them as zero (DAZ) while the kernel runs,
// then restores its own mode, so NumPy and libraries sharing the threads see no change.
// Results change only where a value would have been subnormal (under 1e-38 of the
// largest), alike for every thread count.
class FlushSubnormals {
  public:
#if defined(__x86_64__) || defined(_M_X64)
    FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }  // FTZ | DAZ
    ~FlushSubnormals() { _mm_setcsr(saved_); }

  private:
    unsigned int saved_;
#elif defined(__aarch64__)
    FlushSubnormals() {
        asm volatile("mrs %0, fpcr" : "=r"(saved_));
        asm volatile("msr fpcr, %0" : : "r"(saved_ | (std::uint64_t(1) << 24)));  // FZ
    }
    ~FlushSubnormals() { asm volatile("msr fpcr, %0" : : "r"(saved_)); }

  private:
    std::uint64_t saved_;
#endif
    FlushSubnormals(const FlushSubnormals&) = delete;
    FlushSubnormals& operator=(const FlushSubnormals&) = delete;
};

// The end of an overflow's message for a computation in T: float64 is advice only where T is float.
template <class T>
constexpr const char* float64_advice() {
    return std::is_same_v<T, float> ? ", or compute in float64 (float64 arrays)" : "";
}

// The error of a result computed in T that overflowed to NaN or infinity; `inputs` names
// the arguments whose scale can overflow it (too large, or, for variances and precisions,
// too small or large: a subnormal variance's precision overflows).
template <class T>
std::string overflow_message(const char* inputs) {
    return std::string("the result overflowed to NaN or infinity: ") + inputs +
           " are out of this floating-point type's range; rescale them" + float64_advice<T>();
}

// Exceptions must not escape an OpenMP region: the first one is kept and rethrown after it.
class ErrorTrap {
  public:
    template <class Fn>
    void run(Fn&& fn) noexcept {
        if (failed_.load(std::memory_order_relaxed)) return;
        try {
            fn();
        } catch (...) {
#pragma omp critical(lfagg_error_trap)
            {
                if (!error_) error_ = std::current_exception();
            }
            failed_.store(true);
        }
    }
    bool failed() const { return failed_.load(); }
    void rethrow() const {
        if (error_) std::rethrow_exception(error_);
    }

  private:
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};
};

// Scratch that a kernel keeps between its calls from one thread, rebuilt by make() when
// `key` (the sizes it depends on) changes; one per call site, as each make() has its own
// type. Fresh memory costs a page fault and the kernel's zeroing of every page on first
// touch, and glibc hands a large freed block back to the system: allocated anew, the
// scratch of the soft BoW backward at the mini-batch size made every call pay that again,
// 15% of its time. What is kept is never assumed to hold zeros or earlier values, and is
// freed when the thread exits.
template <class Key, class Make>
auto& reused_scratch(const Key& key, Make make) {
    using Scratch = decltype(make());
    thread_local std::optional<std::pair<Key, Scratch>> kept;
    if (!kept || kept->first != key) {
        kept.reset();  // free the old scratch before the new one is made
        kept.emplace(key, make());
    }
    return kept->second;
}

// True when pred(block) holds for every block of p[0..n), blocks being Eigen arrays
// checked in parallel, on no more threads than blocks: waking a sleeping thread (the
// passive wait policy lfagg sets) cost about 0.1 ms, which every check of a small array
// paid (a soft VLAD forward of 112 x 230 took 324 us on two threads against 77 on one).
template <class T, class Pred>
bool all_blocks(const T* p, Index n, int n_threads, Pred pred) {
    const Index block = Index(1) << 16;
    const Index n_blocks = (n + block - 1) / block;
    const int nt = static_cast<int>(std::clamp<Index>(n_blocks, 1, std::max(1, n_threads)));
    bool ok = true;
#pragma omp parallel for num_threads(team(nt)) reduction(&& : ok) schedule(static)
    for (Index i = 0; i < n_blocks; ++i) {
        const Index s = i * block, len = std::min(block, n - s);
        ok = ok && pred(Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(p + s, len));
    }
    return ok;
}

// True when every value of the Eigen array x is finite (no NaN, no +-inf).
template <class X>
bool finite_array(const X& x) {
    // x * 0 is NaN exactly for NaN and infinities, and the sum propagates it.
    return !std::isnan((x * typename X::Scalar(0)).sum());
}

// True when every value of p[0..n) is finite.
template <class T>
bool all_finite(const T* p, Index n, int n_threads) {
    return all_blocks(p, n, n_threads, [](const auto& x) { return finite_array(x); });
}

// True when every value of the Eigen array x is finite and >= 0.
template <class X>
bool finite_nonnegative(const X& x) {
    using T = typename X::Scalar;
    // One vectorised reduction: x + x * 0 is x where finite and NaN at NaN or infinity, and
    // its minimum propagates NaN, which compares false.
    return (x + x * T(0)).template minCoeff<Eigen::PropagateNaN>() >= T(0);
}

// True when every value of p[0..n) is finite and >= 0.
template <class T>
bool all_finite_nonnegative(const T* p, Index n, int n_threads) {
    return all_blocks(p, n, n_threads, [](const auto& x) { return finite_nonnegative(x); });
}

}  // namespace lfagg
