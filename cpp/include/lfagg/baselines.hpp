// The unsupervised baseline encoders over ragged bags:
//   hard Bag of Words (Csurka 2004):  R_b[k]    = (1/N_b) #{n : k = argmin_k' |f_n - C_k'|}
//   VLAD (Jegou 2010):                R_b[k, :] = sum_n a_nk (f_n - C_k)   (unnormalised, like vl_vlad)
//   Fisher Vector (Perronnin 2010):   the mean and variance blocks of VLFeat's vl_fisher
//
// Each encoder reduces a bag to sufficient statistics that are sums over its features,
// so the driver tiles rows across bag boundaries: one large bag spreads over every
// thread, partial sums crossing tiles are combined in tile order, and results are
// bitwise identical for every thread count. Distances use the expanded GEMM form on
// features shifted by the mean centre (see soft_assign.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "lfagg/bag_reduce.hpp"
#include "lfagg/soft_assign.hpp"

namespace lfagg {

// Per-thread buffers of the hard-assignment encoders.
template <class T>
struct HardTile {
    MatR<T> shifted;  // rows x D: f' = f - mu
    // rows x K, column-major: the running minimum over codewords then reads whole columns
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> scores;
    RowVec<T> best;  // rows: the least score so far
    std::vector<int> labels;
    HardTile(Index rows, Index dim, Index k) : shifted(rows, dim), scores(rows, k), best(rows), labels(rows) {}
};

// Rows per tile of the hard-assignment encoders whose statistics hold a K x D sum (VLAD,
// the K-Means step): 512 for every K, not tile_rows(K). Those statistics are zeroed and
// folded once per tile, which at large K cost more than a larger block of scores
// (K-Means step on 100,000 x 108, 2 threads: 158 -> 124 ms at K = 1024, 31 -> 29 at 256).
inline constexpr Index kSumTileRows = 512;

// Rows i0 .. i0 + n of nearest_rows: their running minimum and its index stay in
// registers while the k columns stream by. Returns nonzero when a score is not finite.
template <Index n, class T>
int nearest_block(const T* scores, Index ld, Index k, T* best, int* labels) {
    T b[n];
    int l[n];
    T z[n];  // sums of score * 0: 0 while every score is finite, NaN from an infinite or NaN one
    for (Index i = 0; i < n; ++i) b[i] = std::numeric_limits<T>::infinity(), l[i] = 0, z[i] = T(0);
    for (Index j = 0; j < k; ++j) {
        const T* col = scores + j * ld;
        const int label = static_cast<int>(j);
#pragma omp simd
        for (Index i = 0; i < n; ++i) {
            const T v = col[i];
            z[i] += v * T(0);
            const bool less = v < b[i];  // strict: the lowest index wins ties
            b[i] = less ? v : b[i];
            l[i] = less ? label : l[i];
        }
    }
    std::copy(b, b + n, best);
    std::copy(l, l + n, labels);
    int overflow = 0;
    for (Index i = 0; i < n; ++i) overflow |= (z[i] != T(0));
    return overflow;
}

// The least score of each of m rows of a column-major m x k block (leading dimension ld)
// into best[m] and its column into labels[m], the lowest column on ties; false when a
// score is not finite (an overflowed score would silently pick a wrong centre). Blocks of
// rows: a running minimum down whole columns loads and stores it per score, and a per-row
// minCoeff with its index is scalar; each cost more than the matrix product.
template <class T>
bool nearest_rows(const T* scores, Index ld, Index m, Index k, T* best, int* labels) {
    constexpr Index kBlock = 32;
    int overflow = 0;
    Index i = 0;
    for (; i + kBlock <= m; i += kBlock) overflow |= nearest_block<kBlock>(scores + i, ld, k, best + i, labels + i);
    for (; i < m; ++i) overflow |= nearest_block<1>(scores + i, ld, k, best + i, labels + i);
    return !overflow;
}

// Nearest centre (Euclidean) of each feature: argmin_k |C'_k|^2 - 2 f'.C'_k, which drops
// the row constant |f'|^2 of the squared distance. Ties of these scores go to the lowest
// index; exact ties of the distances need not be ties of the rounded scores.
template <class T>
class NearestCenter {
  public:
    NearestCenter(const T* centers, Index k, Index dim) {
        if (k > std::numeric_limits<int>::max()) throw std::length_error("more codewords than labels can index");
        const CMapR<T> c(centers, k, dim);
        shift_ = c.colwise().mean();
        centers_ = c.rowwise() - shift_;
        weights_ = T(-2) * centers_.transpose();
        bias_ = centers_.rowwise().squaredNorm().transpose();
    }

    Index k() const { return centers_.rows(); }
    Index dim() const { return centers_.cols(); }
    const RowVec<T>& shift() const { return shift_; }
    const MatR<T>& centers() const { return centers_; }  // C' = C - mu

    // Fills t.shifted and t.labels for the m feature rows starting at `rows`.
    void assign(const T* rows, Index m, HardTile<T>& t) const {
        auto f = t.shifted.topRows(m);
        f = CMapR<T>(rows, m, dim()).rowwise() - shift_;
        // The matrix product accumulates onto the bias: Eigen's `=` would zero the scores
        // first and the bias take a pass of its own (each a pass over the tile's scores).
        auto s = t.scores.topRows(m);
        for (Index j = 0; j < k(); ++j) s.col(j).setConstant(bias_[j]);
        s.noalias() += f * weights_;
        if (!nearest_rows(s.data(), s.outerStride(), m, k(), t.best.data(), t.labels.data()))
            throw std::domain_error(  // reaches Python as ValueError
                std::string("nearest-centre distances overflowed: features or centers are too large for this "
                            "floating-point type; rescale them") + float64_advice<T>());
    }

  private:
    RowVec<T> shift_;
    MatR<T> centers_;
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> weights_;  // D x K: -2 C'^T
    RowVec<T> bias_;
};

// Statistics: the number of features assigned to each centre (K).
template <class T>
class HardBowEncoder {
  public:
    using Tile = HardTile<T>;
    HardBowEncoder(const T* centers, Index k, Index dim) : nearest_(centers, k, dim) {}

    Index k() const { return nearest_.k(); }
    Index stat_dim() const { return k(); }
    Index out_dim() const { return k(); }
    Tile tile(Index rows) const { return Tile(rows, nearest_.dim(), k()); }
    void prepare(Tile& t, const T* rows, Index, Index m) const { nearest_.assign(rows, m, t); }

    void segment_stats(const Tile& t, Index s, Index m, T* stats) const {
        Eigen::Map<RowVec<T>> counts(stats, k());
        counts.setZero();
        for (Index i = s; i < s + m; ++i) counts[t.labels[i]] += T(1);
    }

    void finalize(const RowVecD& stats, Index n, T* out) const {
        Eigen::Map<RowVec<T>>(out, k()) = (stats / static_cast<double>(n)).template cast<T>();
    }

  private:
    NearestCenter<T> nearest_;
};

// Statistics: the mass sum_n a_nk (K), then, with given assignments, sum_n a_nk f'_n
// (K x D), or with the nearest centre's, the residuals sum_{n in k} (f_n - C_k) themselves:
// f_n - C_k of the unshifted values is exact for a feature close to its centre, where
// sum f'_n - mass_k C'_k lost the residual in the rounding of both terms when the centres
// spread far wider than the features around them (float32 centres 0-255 apart, features
// 0.01 from theirs: 2% off).
template <class T>
class VladEncoder {
  public:
    struct Tile : HardTile<T> {
        const T* weights = nullptr;  // m x K rows of the given assignments
        const T* rows = nullptr;     // m x D, the tile's features as given
        using HardTile<T>::HardTile;
    };

    VladEncoder(const T* centers, Index k, Index dim, const T* assignments)
        : nearest_(centers, k, dim), raw_centers_(centers, k, dim), assignments_(assignments) {}

    Index k() const { return nearest_.k(); }
    Index dim() const { return nearest_.dim(); }
    Index stat_dim() const { return k() * (1 + dim()); }
    Index out_dim() const { return k() * dim(); }
    Tile tile(Index rows) const { return Tile(rows, dim(), k()); }
    static Index tile_rows() { return kSumTileRows; }

    void prepare(Tile& t, const T* rows, Index r0, Index m) const {
        t.rows = rows;
        if (!assignments_) return nearest_.assign(rows, m, t);
        t.shifted.topRows(m) = CMapR<T>(rows, m, dim()).rowwise() - nearest_.shift();
        t.weights = assignments_ + r0 * k();
    }

    void segment_stats(const Tile& t, Index s, Index m, T* stats) const {
        Eigen::Map<RowVec<T>> mass(stats, k());
        MapR<T> sums(stats + k(), k(), dim());
        const auto f = t.shifted.middleRows(s, m);
        if (assignments_) {
            const CMapR<T> a(t.weights + s * k(), m, k());
            mass = a.colwise().sum();
            sums.noalias() = a.transpose() * f;
            return;
        }
        mass.setZero();
        sums.setZero();
        const CMapR<T> rows(t.rows, s + m, dim());
        for (Index i = s; i < s + m; ++i) {
            const Index label = t.labels[i];
            mass[label] += T(1);
            sums.row(label) += rows.row(i) - raw_centers_.row(label);
        }
    }

    // R_b[k, :] = sum_n a_nk f'_n - mass_k C'_k (the shift cancels in the residuals), or the
    // residuals' sums as they are (nearest centres).
    void finalize(const RowVecD& stats, Index, T* out) const {
        const Eigen::Map<const MatR<double>> sums(stats.data() + k(), k(), dim());
        if (!assignments_) {
            MapR<T>(out, k(), dim()) = sums.template cast<T>();
            return;
        }
        const auto mass = stats.head(k()).transpose().array();
        MapR<T>(out, k(), dim()) =
            (sums.array() - nearest_.centers().template cast<double>().array().colwise() * mass)
                .template cast<T>()
                .matrix();
    }

  private:
    NearestCenter<T> nearest_;
    CMapR<T> raw_centers_;  // C as given
    const T* assignments_;
};

// A diagonal Gaussian mixture (means, variances, weights: K x D, K x D, K).
template <class T>
struct GmmParams {
    const T* means;
    const T* variances;
    const T* weights;
    Index k;
};

// Statistics: S0 = sum_n q_nk (K), then per component k the row [S1_k, S2_k] (K x 2D) with
// S1_k = sum_n q_nk f'_n and S2_k = sum_n q_nk f'_n^2, where q_nk is the posterior.
// Output: the K mean blocks, the K variance blocks (D each), then with_weights the K
// gradients with respect to the mixture weights, then with_log_likelihood the mean over
// the bag's features of log p(f_n) (for EM: its change tells when to stop; the statistic
// after S2 holds their sum).
template <class T>
class FisherEncoder {
  public:
    struct Tile {
        MatR<T> x;     // rows x 2D: [f', f'^2]
        MatR<T> post;  // rows x K: log-likelihoods, then posteriors
        RowVec<T> log_likelihood;  // rows: log p(f_n) + D/2 log(2 pi)
        Tile(Index rows, Index dim, Index k) : x(rows, 2 * dim), post(rows, k), log_likelihood(rows) {}
    };

    // log(w_k N(f; mu_k, var_k)) + D/2 log(2 pi) = [f', f'^2] W + bias_k, with
    // W = [mu' P ; -P/2]^T, bias_k = log w_k - 1/2 sum_j (log var_kj + P_kj mu'_kj^2).
    FisherEncoder(const GmmParams<T>& gmm, Index dim, bool with_weights, bool with_log_likelihood = false)
        : dim_(dim), with_weights_(with_weights), with_log_likelihood_(with_log_likelihood) {
        const CMapR<T> mu(gmm.means, gmm.k, dim), var(gmm.variances, gmm.k, dim);
        const Eigen::Map<const RowVec<T>> w(gmm.weights, gmm.k);
        shift_ = mu.colwise().mean();
        means_ = (mu.rowwise() - shift_).template cast<double>();
        precisions_ = var.template cast<double>().cwiseInverse();
        const MatR<double> mu_p = means_.cwiseProduct(precisions_);
        projection_.resize(2 * dim, gmm.k);
        projection_.topRows(dim) = mu_p.transpose().template cast<T>();
        projection_.bottomRows(dim) = (-0.5 * precisions_).transpose().template cast<T>();
        bias_ = (w.template cast<double>().array().log().transpose() -
                 0.5 * (var.template cast<double>().array().log().rowwise().sum() +
                        mu_p.cwiseProduct(means_).rowwise().sum().array()))
                    .transpose()
                    .template cast<T>();
        // 1 / sqrt(w_k) and 1 / sqrt(2 w_k): Perronnin's normalisation by the Fisher information
        mixture_weights_ = w.template cast<double>().transpose();
        mean_scale_ = mixture_weights_.cwiseSqrt().cwiseInverse();
        var_scale_ = mean_scale_ / std::sqrt(2.0);
    }

    Index k() const { return means_.rows(); }
    // Twice tile_rows(K), as the soft encoders': the K x 2D statistics of a tile are zeroed and
    // folded once per tile.
    Index tile_rows() const { return std::min<Index>(512, 2 * lfagg::tile_rows(k())); }
    Index stat_dim() const { return k() * (1 + 2 * dim_) + (with_log_likelihood_ ? 1 : 0); }
    Index out_dim() const { return 2 * k() * dim_ + (with_weights_ ? k() : 0) + (with_log_likelihood_ ? 1 : 0); }
    Tile tile(Index rows) const { return Tile(rows, dim_, k()); }

    void prepare(Tile& t, const T* rows, Index, Index m) const {
        auto x = t.x.topRows(m);
        x.leftCols(dim_) = CMapR<T>(rows, m, dim_).rowwise() - shift_;
        x.rightCols(dim_) = x.leftCols(dim_).cwiseAbs2();
        auto p = t.post.topRows(m);
        p.noalias() = x * projection_;
        p.rowwise() += bias_;
        for (Index i = 0; i < m; ++i) {  // softmax in log space: subtract the largest term
            auto q = p.row(i);
            const T top = q.maxCoeff();
            q = (q.array() - top).exp().matrix();
            const T total = q.sum();
            q /= total;
            t.log_likelihood[i] = top + std::log(total);
        }
    }

    void segment_stats(const Tile& t, Index s, Index m, T* stats) const {
        const auto q = t.post.middleRows(s, m);
        Eigen::Map<RowVec<T>>(stats, k()) = q.colwise().sum();
        MapR<T>(stats + k(), k(), 2 * dim_).noalias() = q.transpose() * t.x.middleRows(s, m);
        if (with_log_likelihood_) stats[stat_dim() - 1] = t.log_likelihood.segment(s, m).sum();
    }

    // As vl_fisher: u_k = sum_n q_nk (f_n - mu_k) / sigma_k / (N sqrt(w_k)),
    //               v_k = sum_n q_nk ((f_n - mu_k)^2 / sigma_k^2 - 1) / (N sqrt(2 w_k));
    // and (Sanchez et al. 2013) a_k = sum_n (q_nk - w_k) / (N sqrt(w_k)).
    void finalize(const RowVecD& stats, Index n, T* out) const {
        const Eigen::Map<const MatR<double>> s12(stats.data() + k(), k(), 2 * dim_);
        const auto s0 = stats.head(k()).transpose().array();
        const auto s1 = s12.leftCols(dim_).array(), s2 = s12.rightCols(dim_).array();
        const auto mu = means_.array();
        const double inv_n = 1.0 / static_cast<double>(n);
        const Eigen::ArrayXXd centred = s1 - mu.colwise() * s0;                     // sum q (f - mu)
        const Eigen::ArrayXXd squared = s2 - 2.0 * mu * s1 + mu.square().colwise() * s0;  // sum q (f - mu)^2
        const Eigen::ArrayXd mean_scale = inv_n * mean_scale_.array(), var_scale = inv_n * var_scale_.array();
        const Eigen::ArrayXXd u = (centred * precisions_.array().sqrt()).colwise() * mean_scale;
        const Eigen::ArrayXXd v = ((squared * precisions_.array()).colwise() - s0).colwise() * var_scale;
        MapR<T>(out, k(), dim_) = u.matrix().template cast<T>();
        MapR<T>(out + k() * dim_, k(), dim_) = v.matrix().template cast<T>();
        if (with_weights_)
            Eigen::Map<RowVec<T>>(out + 2 * k() * dim_, k()) =
                ((s0 * inv_n - mixture_weights_.array()) * mean_scale_.array()).transpose().matrix().template cast<T>();
        if (with_log_likelihood_)
            out[out_dim() - 1] = static_cast<T>(stats[stat_dim() - 1] * inv_n - 0.5 * dim_ * std::log(2 * kPi));
    }

  private:
    static constexpr double kPi = 3.14159265358979323846;
    Index dim_;
    bool with_weights_, with_log_likelihood_;
    RowVec<T> shift_;
    MatR<double> means_, precisions_;  // mu' = mu - shift, P = 1 / var
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> projection_;  // 2D x K
    RowVec<T> bias_;
    Eigen::VectorXd mixture_weights_, mean_scale_, var_scale_;
};

}  // namespace lfagg
