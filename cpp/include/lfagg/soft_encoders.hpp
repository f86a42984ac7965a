// The learnable encoders of the paper, forward and backward over ragged bags:
//   T1 soft BoW  (eq. 6):  R_b[k]    = (1/N_b) sum_n a_nk
//   T2 soft VLAD (eq. 9):  R_b[k, :] = (1/N_b) sum_n a_nk (f_n - C_k)
//
// The forward pass runs on the shared driver of bag_reduce.hpp. The backward pass works
// on chunks of up to 512 rows; its sums over all features are formed per chunk and folded
// in chunk order, so results are bitwise identical for every thread count.
#pragma once

#include <array>
#include <cstddef>
#include <stdexcept>
#include <vector>

#include "lfagg/bag_reduce.hpp"
#include "lfagg/soft_assign.hpp"

namespace lfagg {

// e = a * (g - <a, g>) for one feature: the softmax backward, dJ/d(-gamma d_n) from
// g = dJ/da_n (e may be g itself).
template <class A, class G, class E>
void softmax_backward_row(const A& a, const G& g, E&& e) {
    const auto ag = a.dot(g);
    e = a.cwiseProduct((g.array() - ag).matrix());
}

// T1. Statistics: the assignment mass of each codeword (K).
struct SoftBowEncoder {
    static constexpr bool has_direct_term = false;
    static Index out_dim(Index k, Index) { return k; }
    static Index stat_dim(Index k, Index) { return k; }

    template <class T>
    static void segment_stats(const SoftAssigner<T>& sa, const TileBuffers<T>& b, Index s, Index m, T* stats) {
        Eigen::Map<RowVec<T>>(stats, sa.k()) = b.a.middleRows(s, m).colwise().sum();
    }

    template <class T>
    static void finalize(const SoftAssigner<T>& sa, const RowVecD& stats, Index n, T* out) {
        Eigen::Map<RowVec<T>>(out, sa.k()) = (stats / static_cast<double>(n)).template cast<T>();
    }

    // e (m x K) = dJ/d(-gamma d) for the m rows [s, s + m) of a chunk, of one bag with
    // gradient grad_b (K) and assignments a (m x K): dJ/da is the same row for every
    // feature of the bag, so it is never written out.
    template <class T, class A, class E>
    static void backprop_segment(const SoftAssigner<T>& sa, const TileBuffers<T>&, Index, const A& a,
                                 const T* grad_b, T inv_n, E&& e, MatR<T>&) {
        const RowVec<T> g = Eigen::Map<const RowVec<T>>(grad_b, sa.k()) * inv_n;
        for (Index i = 0; i < a.rows(); ++i) softmax_backward_row(a.row(i), g, e.row(i));
    }
};

// T2. Statistics: the mass of each codeword (K), then sum_n a_nk f'_n (K x D).
struct SoftVladEncoder {
    static constexpr bool has_direct_term = true;
    static Index out_dim(Index k, Index dim) { return k * dim; }
    static Index stat_dim(Index k, Index dim) { return k * (1 + dim); }

    template <class T>
    static void segment_stats(const SoftAssigner<T>& sa, const TileBuffers<T>& b, Index s, Index m, T* stats) {
        const auto a = b.a.middleRows(s, m);
        Eigen::Map<RowVec<T>>(stats, sa.k()) = a.colwise().sum();
        MapR<T>(stats + sa.k(), sa.k(), sa.dim()).noalias() = a.transpose() * b.shifted(s, m);
    }

    // R_b[k, :] = (sum_n a_nk f'_n - mass_k C'_k) / N_b (the shift cancels in residuals).
    template <class T>
    static void finalize(const SoftAssigner<T>& sa, const RowVecD& stats, Index n, T* out) {
        const Eigen::Map<const MatR<double>> sums(stats.data() + sa.k(), sa.k(), sa.dim());
        const auto mass = stats.head(sa.k()).transpose().array();
        MapR<T>(out, sa.k(), sa.dim()) =
            ((sums.array() - sa.centers().template cast<double>().array().colwise() * mass) / static_cast<double>(n))
                .template cast<T>()
                .matrix();
    }

    // e as for T1, from dJ/da_nk = G_b[k, :] . (f'_n - C'_k) / N_b (formed in e first);
    // also the term of dJ/dC that does not pass through the assignments:
    // direct_k -= (1/N_b) sum_n a_nk G_b[k, :].
    template <class T, class A, class E>
    static void backprop_segment(const SoftAssigner<T>& sa, const TileBuffers<T>& b, Index s, const A& a,
                                 const T* grad_b, T inv_n, E&& e, MatR<T>& direct) {
        const CMapR<T> gb(grad_b, sa.k(), sa.dim());
        // The constant term first, so that the matrix product adds to it (assigned, the
        // product would zero e first, then need passes for the term and the scale).
        e.rowwise() = -inv_n * sa.centers().cwiseProduct(gb).rowwise().sum().transpose();
        e.noalias() += inv_n * (b.shifted(s, a.rows()) * gb.transpose());
        for (Index i = 0; i < a.rows(); ++i) softmax_backward_row(a.row(i), e.row(i), e.row(i));
        const RowVec<T> mass = inv_n * a.colwise().sum();
        direct.noalias() -= mass.asDiagonal() * gb;
    }

    // The term of dJ/dF that does not pass through the assignments, for the m rows of one
    // bag: (1/N_b) sum_k a_nk G_b[k, :], written to `out` (m x D).
    template <class T, class A, class F>
    static void feature_direct_segment(const SoftAssigner<T>& sa, const A& a, const T* grad_b, T inv_n, F&& out) {
        out.noalias() = inv_n * (a * CMapR<T>(grad_b, sa.k(), sa.dim()));
    }
};

// An encoder policy with its parameters, in the interface of encode_bags(); when
// `assignments` is given, every feature's assignments are also written to that N x K
// row-major matrix.
template <class Enc, class T>
class SoftStatistics {
  public:
    using Tile = TileBuffers<T>;
    static constexpr bool keeps_scratch = true;  // see KeepsScratch
    SoftStatistics(const SoftParams<T>& params, Index dim, T* assignments, bool check_features)
        : sa_(params, dim, check_features), assignments_(assignments) {}

    Index k() const { return sa_.k(); }
    Index stat_dim() const { return Enc::stat_dim(sa_.k(), sa_.dim()); }
    Index out_dim() const { return Enc::out_dim(sa_.k(), sa_.dim()); }
    Tile tile(Index rows) const { return Tile(rows, sa_.dim(), sa_.k()); }
    // Twice tile_rows(K): the matrix product repacks the (2D + 1) x K weights for every tile, which
    // cost 9% of the mini-batch soft BoW at 64 rows; the tile's one N x K block stays in L2.
    Index tile_rows() const { return std::min<Index>(512, 2 * lfagg::tile_rows(sa_.k())); }
    void prepare(Tile& t, const T* rows, Index r0, Index m) const {
        sa_.assign(rows, m, t);
        if (assignments_) MapR<T>(assignments_ + r0 * sa_.k(), m, sa_.k()) = t.a.topRows(m);
    }
    void segment_stats(const Tile& t, Index s, Index m, T* stats) const { Enc::segment_stats(sa_, t, s, m, stats); }
    void finalize(const RowVecD& stats, Index n, T* out) const { Enc::finalize(sa_, stats, n, out); }

  private:
    SoftAssigner<T> sa_;
    T* assignments_;
};

// Forward pass. out: (n_bags x out_dim) row-major; empty bags encode to zeros. With
// `assignments` (N x K row-major, or null) the soft assignments are kept for soft_backward.
// With check_features, a NaN or infinite feature throws std::invalid_argument (out and
// assignments then hold partial results).
template <class Enc, class T>
void soft_encode(const BagsView<T>& bags, const SoftParams<T>& params, T* out, int n_threads,
                 T* assignments = nullptr, bool check_features = false) {
    encode_bags(bags, SoftStatistics<Enc, T>(params, bags.dim, assignments, check_features), out, n_threads);
}

// The arguments whose scale can overflow the backward pass's results.
inline constexpr const char* kBackwardInputs = "features, centers, precisions, gamma or grad_output";

// Sums over the features of one chunk of rows that the backward pass needs:
// sum_n e_nk [f'^2, f', 1] (K x (2D + 1): its last column is sum_n e_nk) and T2's direct
// term, where e_nk = dJ/d(-gamma d_nk) is the softmax backward.
template <class T>
struct BackwardSums {
    // Column-major: the product e^T [f'^2, f', 1] then reads e^T, a view of the row-major
    // e, in the layout the matrix product packs fastest.
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> ex;
    MatR<T> direct;
    BackwardSums(Index k, Index dim, bool with_direct) : ex(k, 2 * dim + 1), direct(with_direct ? k : 0, dim) {}
};

// Backward pass: gradients of J w.r.t. centres and precisions (K x D row-major, written
// to grad_centers / grad_precisions) and gamma (returned), given grad_out = dJ/dR.
// `assignments` (N x K, or null to recompute them) are those kept by soft_encode: with
// them the backward costs about one forward instead of two. With `grad_features` (N x D
// row-major, or null) the gradient w.r.t. the local features is written there too:
//   dJ/df_nj = -2 gamma sum_k e_nk P_kj (f'_nj - C'_kj)   [+ T2's direct term]
// = -2 gamma f'_nj (E P)_nj + 2 gamma (E (C'P))_nj, one more matrix product per chunk;
// each feature's row is written by the one thread that owns its chunk, so it needs no
// reduction; a NaN or infinity among them is a std::domain_error. check_features as for
// soft_encode.
template <class Enc, class T>
double soft_backward(const BagsView<T>& bags, const SoftParams<T>& params, const T* grad_out,
                     T* grad_centers, T* grad_precisions, int n_threads, const T* assignments = nullptr,
                     T* grad_features = nullptr, bool check_features = false) {
    using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const SoftAssigner<T> sa(params, bags.dim, check_features);
    const Index k = params.k, dim = bags.dim, out_dim = Enc::out_dim(k, dim);
    // Chunks of up to 512 rows, larger than the forward's tiles: the K x 2D sums are a
    // matrix product over the chunk's rows, efficient only with a long inner dimension.
    const Index chunk_rows = std::clamp<Index>((Index(1) << 19) / k, tile_rows(k), 512);
    const Index n_chunks = (bags.n + chunk_rows - 1) / chunk_rows;
    const int nt = static_cast<int>(std::max<Index>(1, std::min<Index>(resolve_threads(n_threads), n_chunks)));
    const Index sums_bytes = k * ((Enc::has_direct_term ? 3 : 2) * dim + 1) * Index(sizeof(T));
    const Index wave = std::max<Index>(1, tiles_per_wave(n_chunks, nt, sums_bytes));

    struct Work {
        TileBuffers<T> tile;
        MatR<T> e;
        MatR<T> e_w;         // e times the feature weights (rows x 2D; T2 adds its direct term to the
                             // right half), for grad_features
        RowVec<T> grad_bag;  // aligned copy of the bag's dJ/dR: reductions over it must not
                             // depend on where numpy placed grad_out
        Work(Index r, Index d, Index k_, Index o, bool with_features)
            : tile(r, d, k_), e(r, k_), e_w(with_features ? r : 0, 2 * d), grad_bag(o) {}
    };
    // Kept between calls with the same sizes (see reused_scratch); grown to this call's
    // threads and wave.
    const bool with_features = grad_features != nullptr;
    auto& [work, sums] = reused_scratch(std::array<Index, 4>{chunk_rows, dim, k, with_features}, [] {
        return std::make_pair(std::vector<Work>(), std::vector<BackwardSums<T>>());
    });
    while (work.size() < static_cast<std::size_t>(nt)) work.emplace_back(chunk_rows, dim, k, out_dim, with_features);
    const Index n_sums = std::min(wave, n_chunks);  // the chunks of a wave
    if (sums.size() < static_cast<std::size_t>(n_sums))
        sums.resize(n_sums, BackwardSums<T>(k, dim, Enc::has_direct_term));
    // dJ/df_n through the assignments = f'_n * (e_n W_l) + e_n W_r with [W_l, W_r] these
    // K x 2D weights, [-2 gamma P, 2 gamma C'P].
    MatR<T> feature_weights(grad_features ? k : 0, 2 * dim);
    if (grad_features) {
        feature_weights.leftCols(dim) = (T(-2) * sa.gamma()) * sa.precisions();
        feature_weights.rightCols(dim) = (T(2) * sa.gamma()) * sa.centers().cwiseProduct(sa.precisions());
    }
    Eigen::MatrixXd ex_total = Eigen::MatrixXd::Zero(k, 2 * dim + 1);  // the layout of BackwardSums::ex
    MatD direct_total = MatD::Zero(k, dim);
    ErrorTrap trap;

    auto chunk_sums = [&](Index c, Work& w, BackwardSums<T>& acc) {
        acc.direct.setZero();  // accumulated over the chunk's bags; ex is assigned below
        const Index r0 = c * chunk_rows, r1 = std::min(bags.n, r0 + chunk_rows), m = r1 - r0;
        if (assignments)
            sa.expand(bags.row(r0), m, w.tile);
        else
            sa.assign(bags.row(r0), m, w.tile);
        const CMapR<T> a(assignments ? assignments + r0 * k : w.tile.a.data(), m, k);
        // Kept assignments come from the caller: checked here, while the chunk is read
        // anyway, instead of in a pass of their own over the N x K matrix.
        if (assignments && !finite_nonnegative(a.array()))
            throw std::invalid_argument("assignments must be finite and non-negative");
        MapR<T> gf(grad_features ? grad_features + r0 * dim : nullptr, grad_features ? m : 0, dim);
        bags.for_each_segment(r0, r1, [&](Index b, Index s, Index e) {
            w.grad_bag = Eigen::Map<const RowVec<T>>(grad_out + b * out_dim, out_dim);
            const T inv_n = T(1) / static_cast<T>(bags.size(b));
            const auto a_seg = a.middleRows(s - r0, e - s);
            Enc::backprop_segment(sa, w.tile, s - r0, a_seg, w.grad_bag.data(), inv_n, w.e.middleRows(s - r0, e - s),
                                  acc.direct);
            if constexpr (Enc::has_direct_term)  // into e_w's right half, which e W_r then adds to
                if (grad_features)
                    Enc::feature_direct_segment(sa, a_seg, w.grad_bag.data(), inv_n,
                                                w.e_w.block(s - r0, dim, e - s, dim));
        });
        const auto e = w.e.topRows(m);
        acc.ex.noalias() = e.transpose() * w.tile.x.topRows(m);
        if (grad_features) {
            // The products go to the thread's own buffer and gf is written once, by the sum
            // (as fast as products written into gf, which Eigen zeroes first): a product
            // added to gf, wherever numpy placed it, was rounded differently from call to
            // call (test_grad_features.py, D = 6, K = 5).
            auto e_w = w.e_w.topRows(m);
            if constexpr (Enc::has_direct_term) {  // one product adds to both halves: e is packed once
                e_w.leftCols(dim).setZero();
                e_w.noalias() += e * feature_weights;
            } else {
                e_w.noalias() = e * feature_weights;
            }
            gf = w.tile.shifted(0, m).cwiseProduct(e_w.leftCols(dim)) + e_w.rightCols(dim);
            // Checked while the chunk is in cache, not in a pass over the N x D result.
            if (!finite_array(gf.array())) throw std::domain_error(overflow_message<T>(kBackwardInputs));
        }
    };

    // Waves of chunks, then a fold in chunk order (see encode_bags for why not `ordered`).
#pragma omp parallel num_threads(team(nt))
    {
        const FlushSubnormals flush;
        for (Index w0 = 0; w0 < n_chunks; w0 += wave) {
            const Index w1 = std::min(n_chunks, w0 + wave);
#pragma omp for schedule(dynamic, 1)
            for (Index c = w0; c < w1; ++c) trap.run([&] { chunk_sums(c, work[thread_id()], sums[c - w0]); });
            // The fold is split by columns of the K x (2D + 1) sums, each folded in chunk order; the
            // barrier of the `single` below keeps the next wave from overwriting `sums` early.
#pragma omp for schedule(static) nowait
            for (Index j = 0; j < ex_total.cols(); ++j)
                if (!trap.failed())
                    for (Index c = w0; c < w1; ++c)
                        ex_total.col(j) += sums[c - w0].ex.col(j).template cast<double>();
#pragma omp single
            if (Enc::has_direct_term && !trap.failed())
                for (Index c = w0; c < w1; ++c) direct_total += sums[c - w0].direct.template cast<double>();
        }
    }
    trap.rethrow();

    const double gamma = static_cast<double>(params.gamma);
    const MatD c = sa.centers().template cast<double>(), p = sa.precisions().template cast<double>();
    const auto s2 = ex_total.leftCols(dim).array(), s1 = ex_total.middleCols(dim, dim).array();
    const auto c_e = c.array().colwise() * ex_total.col(2 * dim).array();  // C'_kj sum_n e_nk
    MapR<T>(grad_centers, k, dim) =
        ((2 * gamma) * p.array() * (s1 - c_e) + direct_total.array()).template cast<T>().matrix();
    // e_sq_kj = sum_n e_nk (f'_nj - C'_kj)^2.
    const Eigen::ArrayXXd e_sq = s2 - 2 * c.array() * s1 + c.array() * c_e;
    MapR<T>(grad_precisions, k, dim) = (-gamma * e_sq).template cast<T>().matrix();
    // d_nk is linear in P, so dJ/dgamma = -sum_nk e_nk d_nk = -sum_kj P_kj e_sq_kj: exact,
    // and no distances are needed (the kept assignments do not give them).
    return -(p.array() * e_sq).sum();
}

}  // namespace lfagg
