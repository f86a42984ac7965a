// K-Means over a sample of local features: one iteration of Lloyd's algorithm on the tiled
// driver of bag_reduce.hpp (the sample is one bag) -- the features nearest to each centre,
// their mean and the inertia -- and greedy k-means++ seeding; both bitwise identical for
// every thread count.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "lfagg/baselines.hpp"

namespace lfagg {

// Statistics: counts (K), sums of f' (K x D), then the inertia. Output: counts, the means
// (K x D; a centre that no feature is nearest to keeps its place), inertia: the sum over
// features of the squared distance to the nearest centre. With `labels` / `distances`
// (N each, or null) every feature's nearest centre and squared distance are written too.
template <class T>
class KMeansStep {
  public:
    using Tile = HardTile<T>;
    KMeansStep(const T* centers, Index k, Index dim, std::int64_t* labels, T* distances)
        : nearest_(centers, k, dim), labels_(labels), distances_(distances) {}

    Index k() const { return nearest_.k(); }
    Index dim() const { return nearest_.dim(); }
    Index stat_dim() const { return k() * (1 + dim()) + 1; }
    Index out_dim() const { return stat_dim(); }
    Tile tile(Index rows) const { return Tile(rows, dim(), k()); }
    static Index tile_rows() { return kSumTileRows; }

    // After assign, t.best holds |C'|^2 - 2 f'.C' of the nearest centre; adding |f'|^2
    // makes it the squared distance.
    void prepare(Tile& t, const T* rows, Index r0, Index m) const {
        nearest_.assign(rows, m, t);
        auto best = t.best.head(m).array();
        best = (best + t.shifted.topRows(m).rowwise().squaredNorm().transpose().array()).cwiseMax(T(0));
        if (labels_) std::copy(t.labels.begin(), t.labels.begin() + m, labels_ + r0);
        if (distances_) std::copy(best.data(), best.data() + m, distances_ + r0);
    }

    void segment_stats(const Tile& t, Index s, Index m, T* stats) const {
        Eigen::Map<RowVec<T>> counts(stats, k());
        MapR<T> sums(stats + k(), k(), dim());
        counts.setZero();
        sums.setZero();
        for (Index i = s; i < s + m; ++i) {
            const Index label = t.labels[i];
            counts[label] += T(1);
            sums.row(label) += t.shifted.row(i);
        }
        stats[stat_dim() - 1] = t.best.segment(s, m).sum();
    }

    void finalize(const RowVecD& stats, Index, T* out) const {
        const auto counts = stats.head(k());
        const Eigen::Map<const MatR<double>> sums(stats.data() + k(), k(), dim());
        MapR<T> means(out + k(), k(), dim());
        for (Index c = 0; c < k(); ++c)
            means.row(c) = ((counts[c] > 0 ? RowVecD(sums.row(c) / counts[c])
                                           : RowVecD(nearest_.centers().row(c).template cast<double>())) +
                            nearest_.shift().template cast<double>())
                               .template cast<T>();
        Eigen::Map<RowVec<T>>(out, k()) = counts.template cast<T>();
        out[stat_dim() - 1] = static_cast<T>(stats[stat_dim() - 1]);
    }

  private:
    NearestCenter<T> nearest_;
    std::int64_t* labels_;
    T* distances_;
};

// The rows of a matrix shifted by their mean, in blocks of kRows rows stored dimension by
// dimension (dim x kRows, the last block padded with zeros): the squared distances of a
// block to a few candidates then accumulate in registers, kRows rows per vector operation.
// k-means++ reads every row once per seed; a matrix product repacked the rows each time,
// which cost twice its arithmetic.
template <class T>
class RowBlocks {
  public:
    static constexpr Index kRows = 2 * EIGEN_MAX_ALIGN_BYTES / Index(sizeof(T));  // two vectors
    static constexpr Index kCandidates = 4;  // candidates per pass over a block: 8 accumulators

    RowBlocks(const T* rows, Index n, Index dim) : dim_(dim) {
        const CMapR<T> x(rows, n, dim);
        const RowVec<T> mean = x.template cast<double>().colwise().mean().template cast<T>();
        data_.setZero((n + kRows - 1) / kRows * kRows * dim);
        norms_.resize(n);
        for (Index i = 0; i < n; ++i) {
            const RowVec<T> f = x.row(i) - mean;
            norms_[i] = f.squaredNorm();
            for (Index j = 0; j < dim; ++j) at(i, j) = f[j];
        }
    }

    // Row i, shifted, written to `out` (dim values).
    template <class Out>
    void row(Index i, Out&& out) const {
        for (Index j = 0; j < dim_; ++j) out[j] = at(i, j);
    }
    const Eigen::Matrix<T, Eigen::Dynamic, 1>& norms() const { return norms_; }

    // dist(r, j) = max(0, |x_r|^2 - 2 x_r . c_j + |c_j|^2) for the rows r in [r0, r0 + len)
    // (r0 a multiple of kRows) and the m candidates c_j: rows of `cand` (shifted; as many
    // rows as m rounded up to kCandidates, the extra ones zeros) of squared norms cand_norms.
    template <class Dist>
    void distances(Index r0, Index len, const MatR<T>& cand, const RowVec<T>& cand_norms, Index m,
                   Dist& dist) const {
        using Vec = Eigen::Array<T, kRows, 1>;
        for (Index b0 = r0; b0 < r0 + len; b0 += kRows) {
            const T* block = data_.data() + b0 * dim_;
            const Index rows = std::min(kRows, r0 + len - b0);
            for (Index j0 = 0; j0 < m; j0 += kCandidates) {
                std::array<Vec, kCandidates> dot;
                for (auto& d : dot) d.setZero();
                for (Index k = 0; k < dim_; ++k) {
                    const Eigen::Map<const Vec, Eigen::AlignedMax> x(block + k * kRows);
                    for (Index j = 0; j < kCandidates; ++j) dot[j] += cand(j0 + j, k) * x;
                }
                for (Index j = j0; j < std::min(m, j0 + kCandidates); ++j)
                    for (Index r = 0; r < rows; ++r)
                        dist(b0 + r, j) = std::max(T(0), T(-2) * dot[j - j0][r] + norms_[b0 + r] + cand_norms[j]);
            }
        }
    }

  private:
    T& at(Index i, Index j) { return data_[(i / kRows * dim_ + j) * kRows + i % kRows]; }
    const T& at(Index i, Index j) const { return data_[(i / kRows * dim_ + j) * kRows + i % kRows]; }

    Index dim_;
    Eigen::Matrix<T, Eigen::Dynamic, 1> data_, norms_;
};

// Greedy k-means++ (Arthur & Vassilvitskii 2007, with scikit-learn's local trials) on the
// n x dim rows: seed 0 is row floor(u[0][0] n); seed c is the best of the candidates
// i_j = the first row whose cumulative potential reaches u[c][j] times the whole (the
// potential of a row: its squared distance to the nearest seed so far), the best being the
// one that leaves the least potential. `uniforms` (k x trials, row-major, in [0, 1)) come
// from the caller so that a seed replays exactly. With `weights` (n positive, or null) the
// rows are a weighted sample (a coreset): seed 0 is drawn in proportion to the weights and
// a row's potential is its weight times its squared distance. Returns the k chosen rows.
//
// Each seed costs one pass over the rows (RowBlocks), bound by the memory bandwidth once
// the rows outgrow the L2 cache. The potentials are summed per tile in double and added in
// tile order, so the candidates' totals -- and the choice -- do not depend on the thread
// count, and the chosen candidate's per-tile sums index the cumulative potential without a
// pass.
template <class T>
std::vector<Index> kmeans_plusplus(const T* rows, Index n, Index dim, Index k, Index trials,
                                   const double* uniforms, int n_threads, const T* weights = nullptr) {
    constexpr Index kTile = 512;  // a multiple of RowBlocks' kRows
    using Blocks = RowBlocks<T>;
    const Index n_tiles = (n + kTile - 1) / kTile;
    const Blocks x(rows, n, dim);
    Eigen::Matrix<T, Eigen::Dynamic, 1> potential(n);  // squared distance to the nearest seed so far
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> dist(n, trials);  // to each candidate
    std::vector<double> tile_sums(n_tiles * trials), tile_potential(n_tiles);
    std::vector<Index> chosen(k), candidates(trials);
    Index best = 0;  // the chosen candidate of the current seed
    MatR<T> cand = MatR<T>::Zero((trials + Blocks::kCandidates - 1) / Blocks::kCandidates * Blocks::kCandidates, dim);
    RowVec<T> cand_norms(trials);

    // The first row whose cumulative potential reaches `target`.
    auto draw = [&](double target) {
        double before = 0;
        Index t = 0;
        while (t + 1 < n_tiles && before + tile_potential[t] < target) before += tile_potential[t++];
        const Index end = std::min(n, (t + 1) * kTile);
        for (Index i = t * kTile; i < end; ++i)
            if ((before += potential[i]) >= target) return i;
        return end - 1;  // rounding left the target past the tile's last row
    };
    auto pick = [&](const Index* picked, Index m) {
        for (Index j = 0; j < m; ++j) {
            x.row(picked[j], cand.row(j));
            cand_norms[j] = x.norms()[picked[j]];
        }
    };
    auto tile_len = [&](Index t) { return std::min(kTile, n - t * kTile); };
    // Squared distances of tile t's rows to the first m candidates; returns its row count.
    auto distances = [&](Index t, Index m) {
        const Index len = tile_len(t);
        x.distances(t * kTile, len, cand, cand_norms, m, dist);
        if (weights)
            dist.block(t * kTile, 0, len, m).array().colwise() *=
                Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(weights + t * kTile, len);
        return len;
    };

    if (weights) {  // in proportion to the weights: the first row whose cumulative weight reaches u times the whole
        double whole = 0, before = 0;
        for (Index i = 0; i < n; ++i) whole += weights[i];
        chosen[0] = n - 1;
        for (Index i = 0; i < n; ++i)
            if ((before += weights[i]) >= uniforms[0] * whole) {
                chosen[0] = i;
                break;
            }
    } else {
        chosen[0] = std::min(n - 1, static_cast<Index>(uniforms[0] * static_cast<double>(n)));
    }
    pick(chosen.data(), 1);
    const int nt = static_cast<int>(std::min<Index>(resolve_threads(n_threads), n_tiles));
#pragma omp parallel num_threads(team(nt))
    {
        const FlushSubnormals flush;
#pragma omp for schedule(static)
        for (Index t = 0; t < n_tiles; ++t) {
            const Index len = distances(t, 1);
            auto p = potential.segment(t * kTile, len);
            p = dist.col(0).segment(t * kTile, len);
            tile_potential[t] = p.template cast<double>().sum();
        }
        for (Index c = 1; c < k; ++c) {
#pragma omp single
            {
                double whole = 0;
                for (double s : tile_potential) whole += s;
                for (Index j = 0; j < trials; ++j) candidates[j] = draw(uniforms[c * trials + j] * whole);
                pick(candidates.data(), trials);
            }
#pragma omp for schedule(static)
            for (Index t = 0; t < n_tiles; ++t) {
                const Index len = distances(t, trials);
                const auto p = potential.segment(t * kTile, len);
                for (Index j = 0; j < trials; ++j)
                    tile_sums[t * trials + j] =
                        dist.col(j).segment(t * kTile, len).cwiseMin(p).template cast<double>().sum();
            }
#pragma omp single
            {
                double best_sum = 0;
                for (Index j = 0; j < trials; ++j) {
                    double sum = 0;
                    for (Index t = 0; t < n_tiles; ++t) sum += tile_sums[t * trials + j];
                    if (j == 0 || sum < best_sum) best = j, best_sum = sum;
                }
                chosen[c] = candidates[best];
                for (Index t = 0; t < n_tiles; ++t) tile_potential[t] = tile_sums[t * trials + best];
            }
#pragma omp for schedule(static)
            for (Index t = 0; t < n_tiles; ++t) {
                auto p = potential.segment(t * kTile, tile_len(t));
                p = p.cwiseMin(dist.col(best).segment(t * kTile, tile_len(t)));
            }
        }
    }
    return chosen;
}

// dst (n x dim) = the rows of src (? x dim) at the n indices `rows` (each in range), on
// n_threads threads: the codebooks' random sample, written where its pages are touched.
template <class T>
void take_rows(const T* src, Index dim, const std::int64_t* rows, Index n, T* dst, int n_threads) {
    const int nt = static_cast<int>(std::min<Index>(resolve_threads(n_threads), std::max<Index>(1, n / 1024)));
#pragma omp parallel for num_threads(team(nt)) schedule(static)
    for (Index i = 0; i < n; ++i) std::copy_n(src + rows[i] * dim, dim, dst + i * dim);
}

}  // namespace lfagg
