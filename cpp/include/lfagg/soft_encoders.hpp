// The learnable encoders of the paper, forward and backward over ragged bags:
//   T1 soft BoW  (eq. 6):  R_b[k]    = (1/N_b) sum_n a_nk
//   T2 soft VLAD (eq. 9):  R_b[k, :] = (1/N_b) sum_n a_nk (f_n - C_k)
//
// Work is split into tiles of rows that ignore bag boundaries, so one large bag spreads
// over every thread. The tiling depends on (N, K) only and partial sums that cross tiles
// are combined in tile order (`omp ordered`), so results are bitwise identical for every
// thread count.
#pragma once

#include <vector>

#include "lfagg/soft_assign.hpp"

namespace lfagg {

// T1. The per-bag representation is the mean assignment.
struct SoftBowEncoder {
    static constexpr bool has_direct_term = false;
    static Index out_dim(Index k, Index) { return k; }

    // out (K) = sum of the assignments of tile rows [s, s + m).
    template <class T>
    static void segment_sum(const SoftAssigner<T>&, TileBuffers<T>& b, Index s, Index m, T* out) {
        Eigen::Map<RowVec<T>>(out, b.a.cols()) = b.a.middleRows(s, m).colwise().sum();
    }

    // g (m x K) = dJ/da for tile rows [s, s + m) of a bag with gradient grad_b (K).
    template <class T, class G>
    static void upstream(const SoftAssigner<T>& sa, TileBuffers<T>&, Index, Index, const T* grad_b,
                         T inv_n, G&& g, MatR<T>&) {
        g.rowwise() = Eigen::Map<const RowVec<T>>(grad_b, sa.k()) * inv_n;
    }
};

// T2. The per-bag representation is the soft-assigned mean residual, k-major.
struct SoftVladEncoder {
    static constexpr bool has_direct_term = true;
    static Index out_dim(Index k, Index dim) { return k * dim; }

    // out (K x D) = sum over tile rows [s, s + m) of a_nk (f'_n - C'_k).
    template <class T>
    static void segment_sum(const SoftAssigner<T>& sa, TileBuffers<T>& b, Index s, Index m, T* out) {
        const auto a = b.a.middleRows(s, m);
        MapR<T> r(out, sa.k(), sa.dim());
        r.noalias() = a.transpose() * b.shifted(s, m);
        for (Index k = 0; k < sa.k(); ++k) r.row(k) -= a.col(k).sum() * sa.centers().row(k);
    }

    // g_nk = G_b[k, :] . (f'_n - C'_k) / N_b; also the term of dJ/dC that does not pass
    // through the assignments: direct_k -= (1/N_b) sum_n a_nk G_b[k, :].
    template <class T, class G>
    static void upstream(const SoftAssigner<T>& sa, TileBuffers<T>& b, Index s, Index m, const T* grad_b,
                         T inv_n, G&& g, MatR<T>& direct) {
        const CMapR<T> gb(grad_b, sa.k(), sa.dim());
        const auto f = b.shifted(s, m);
        g.noalias() = f * gb.transpose();
        for (Index k = 0; k < sa.k(); ++k) {
            g.col(k).array() -= sa.centers().row(k).dot(gb.row(k));
            direct.row(k) -= (inv_n * b.a.middleRows(s, m).col(k).sum()) * gb.row(k);
        }
        g *= inv_n;
    }
};

// Forward pass. out: (n_bags x out_dim) row-major; empty bags encode to zeros.
template <class Enc, class T>
void soft_encode(const BagsView<T>& bags, const SoftParams<T>& params, T* out, int n_threads) {
    const SoftAssigner<T> sa(params, bags.dim);
    const Index out_dim = Enc::out_dim(params.k, bags.dim);
    std::fill(out, out + bags.n_bags * out_dim, T(0));
    const Index rows = tile_rows(params.k), n_tiles = (bags.n + rows - 1) / rows;
    if (n_tiles == 0) return;
    const int nt = static_cast<int>(std::min<Index>(resolve_threads(n_threads), n_tiles));

    // A tile's first bag may have started in an earlier tile (head) and its last bag may
    // go on in a later one (tail); those partial sums are combined in tile order.
    // Sums go to these aligned buffers, never straight to `out`: Eigen's vectorised
    // reductions peel unaligned elements, so the summation order (and the last bit)
    // would depend on where numpy placed the output.
    struct Work {
        TileBuffers<T> tile;
        RowVec<T> head, tail, whole;
        Index head_bag = -1, tail_bag = -1;
        Work(Index r, Index d, Index k, Index o) : tile(r, d, k), head(o), tail(o), whole(o) {}
    };
    std::vector<Work> work;
    work.reserve(nt);
    for (int i = 0; i < nt; ++i) work.emplace_back(rows, bags.dim, params.k, out_dim);
    Eigen::Matrix<double, 1, Eigen::Dynamic> open_sum = Eigen::Matrix<double, 1, Eigen::Dynamic>::Zero(out_dim);
    ErrorTrap trap;

#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) ordered
    for (Index t = 0; t < n_tiles; ++t) {
        Work& w = work[thread_id()];
        const Index r0 = t * rows, r1 = std::min(bags.n, r0 + rows);
        w.head_bag = w.tail_bag = -1;
        trap.run([&] {
            sa.assign(bags.row(r0), r1 - r0, w.tile);
            bags.for_each_segment(r0, r1, [&](Index b, Index s, Index e) {
                if (bags.begin(b) < r0) {
                    w.head_bag = b;
                    Enc::segment_sum(sa, w.tile, s - r0, e - s, w.head.data());
                } else if (bags.end(b) > r1) {
                    w.tail_bag = b;
                    Enc::segment_sum(sa, w.tile, s - r0, e - s, w.tail.data());
                } else {  // the whole bag lies in this tile
                    Enc::segment_sum(sa, w.tile, s - r0, e - s, w.whole.data());
                    Eigen::Map<RowVec<T>>(out + b * out_dim, out_dim) = w.whole / static_cast<T>(bags.size(b));
                }
            });
        });
#pragma omp ordered
        if (!trap.failed()) {
            if (w.head_bag >= 0) {
                open_sum += w.head.template cast<double>();
                if (bags.end(w.head_bag) <= r1) {
                    Eigen::Map<RowVec<T>>(out + w.head_bag * out_dim, out_dim) =
                        (open_sum / static_cast<double>(bags.size(w.head_bag))).template cast<T>();
                }
            }
            if (w.tail_bag >= 0) open_sum = w.tail.template cast<double>();
        }
    }
    trap.rethrow();
}

// Backward pass: gradients of J w.r.t. centres and precisions (K x D row-major, written
// to grad_centers / grad_precisions) and gamma (returned), given grad_out = dJ/dR.
template <class Enc, class T>
double soft_backward(const BagsView<T>& bags, const SoftParams<T>& params, const T* grad_out,
                     T* grad_centers, T* grad_precisions, int n_threads) {
    using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const SoftAssigner<T> sa(params, bags.dim);
    const Index k = params.k, dim = bags.dim, out_dim = Enc::out_dim(k, dim);
    const Index rows = tile_rows(k);
    // Chunks of several tiles amortise the ordered reduction of the K x 2D sums.
    const Index chunk_rows = rows * std::max<Index>(1, 512 / rows);
    const Index n_chunks = (bags.n + chunk_rows - 1) / chunk_rows;
    const int nt = static_cast<int>(std::max<Index>(1, std::min<Index>(resolve_threads(n_threads), n_chunks)));

    // Per chunk: sum_n e_nk [f'^2, f'] (K x 2D), sum_n e_nk (K), sum_nk e_nk d_nk, and the
    // direct term of T2; e_nk = dJ/d(-gamma d_nk) is the softmax backward.
    struct Work {
        TileBuffers<T> tile;
        MatR<T> e, ex, direct;
        RowVec<T> e_sum, grad_bag;  // grad_bag: aligned copy of the bag's dJ/dR (see soft_encode)
        double ed = 0;
        Work(Index r, Index d, Index k_, Index o)
            : tile(r, d, k_), e(r, k_), ex(k_, 2 * d), direct(Enc::has_direct_term ? k_ : 0, d), e_sum(k_),
              grad_bag(o) {}
    };
    std::vector<Work> work;
    work.reserve(nt);
    for (int i = 0; i < nt; ++i) work.emplace_back(rows, dim, k, out_dim);
    MatD ex_total = MatD::Zero(k, 2 * dim), direct_total = MatD::Zero(k, dim);
    Eigen::Matrix<double, 1, Eigen::Dynamic> e_total = Eigen::Matrix<double, 1, Eigen::Dynamic>::Zero(k);
    double ed_total = 0;
    ErrorTrap trap;

#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) ordered
    for (Index c = 0; c < n_chunks; ++c) {
        Work& w = work[thread_id()];
        trap.run([&] {
            w.ex.setZero();
            w.direct.setZero();
            w.e_sum.setZero();
            w.ed = 0;
            const Index c1 = std::min(bags.n, (c + 1) * chunk_rows);
            for (Index r0 = c * chunk_rows; r0 < c1; r0 += rows) {
                const Index r1 = std::min(c1, r0 + rows), m = r1 - r0;
                sa.assign(bags.row(r0), m, w.tile);
                bags.for_each_segment(r0, r1, [&](Index b, Index s, Index e) {
                    w.grad_bag = Eigen::Map<const RowVec<T>>(grad_out + b * out_dim, out_dim);
                    Enc::upstream(sa, w.tile, s - r0, e - s, w.grad_bag.data(),
                                  T(1) / static_cast<T>(bags.size(b)), w.e.middleRows(s - r0, e - s), w.direct);
                });
                auto e = w.e.topRows(m);
                const auto a = w.tile.a.topRows(m);
                for (Index i = 0; i < m; ++i) {
                    const T ag = a.row(i).dot(e.row(i));
                    e.row(i) = a.row(i).cwiseProduct((e.row(i).array() - ag).matrix());
                }
                w.ex.noalias() += e.transpose() * w.tile.x.topRows(m);
                w.e_sum += e.colwise().sum();
                w.ed += static_cast<double>(e.cwiseProduct(w.tile.dist.topRows(m)).sum());
            }
        });
#pragma omp ordered
        if (!trap.failed()) {
            ex_total += w.ex.template cast<double>();
            e_total += w.e_sum.template cast<double>();
            ed_total += w.ed;
            if (Enc::has_direct_term) direct_total += w.direct.template cast<double>();
        }
    }
    trap.rethrow();

    const double gamma = static_cast<double>(params.gamma);
    const MatD c = sa.centers().template cast<double>(), p = sa.precisions().template cast<double>();
    const auto s2 = ex_total.leftCols(dim).array(), s1 = ex_total.rightCols(dim).array();
    const auto c_e = c.array().colwise() * e_total.transpose().array();  // C'_kj sum_n e_nk
    MapR<T>(grad_centers, k, dim) =
        ((2 * gamma) * p.array() * (s1 - c_e) + direct_total.array()).template cast<T>().matrix();
    MapR<T>(grad_precisions, k, dim) =
        (-gamma * (s2 - 2 * c.array() * s1 + c.array() * c_e)).template cast<T>().matrix();
    return -ed_total;
}

}  // namespace lfagg
