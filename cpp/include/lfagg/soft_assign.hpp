// Normalised soft assignment of a tile of features to K codewords (eq. 6-8):
//   d_nk = sum_j P_kj (f_nj - C_kj)^2,   a_nk = softmax_k(-gamma d_nk).
// Distances use the expanded GEMM form [f'^2, f', 1] [P ; -2 C'P ; b]^T, b_k = sum_j P_kj C'_kj^2,
// one matrix product of inner size 2D + 1, where f' = f - mu and C' = C - mu are shifted
// by the mean of the centres: distances do not change, but the expansion no longer
// cancels large |f|^2 terms when the data sit far from the origin. The column of ones
// carries the bias through the product, and in the backward pass makes sum_n e_nk a
// column of the product sum_n e_nk [f'^2, f', 1].
#pragma once

#include <cmath>
#include <stdexcept>

#include "lfagg/common.hpp"

namespace lfagg {

// Per-thread buffers, sized once for the largest tile.
template <class T>
struct TileBuffers {
    MatR<T> x;  // rows x (2D + 1): [f'^2, f', 1]
    MatR<T> a;  // rows x K: distances, then the assignments computed from them in place
    TileBuffers(Index rows, Index dim, Index k) : x(rows, 2 * dim + 1), a(rows, k) {}

    // Shifted features f' of tile rows [s, s + m), valid after SoftAssigner::expand() or assign().
    auto shifted(Index s, Index m) const {
        const Index dim = (x.cols() - 1) / 2;
        return x.block(s, dim, m, dim);
    }
};

template <class T>
class SoftAssigner {
  public:
    // With check_features, expand() throws std::invalid_argument on a feature that is NaN or
    // infinite, checked as it reads the rows instead of in a pass of its own.
    SoftAssigner(const SoftParams<T>& p, Index dim, bool check_features = false)
        : k_(p.k), dim_(dim), gamma_(p.gamma), check_features_(check_features) {
        const CMapR<T> c(p.centers, k_, dim_);
        precisions_ = CMapR<T>(p.precisions, k_, dim_);
        shift_ = c.colwise().mean();
        centers_ = c.rowwise() - shift_;
        weights_.resize(2 * dim_ + 1, k_);
        weights_.topRows(dim_) = precisions_.transpose();
        weights_.middleRows(dim_, dim_) = (T(-2) * centers_.cwiseProduct(precisions_)).transpose();
        weights_.bottomRows(1) = centers_.cwiseAbs2().cwiseProduct(precisions_).rowwise().sum().transpose();
    }

    Index k() const { return k_; }
    Index dim() const { return dim_; }
    T gamma() const { return gamma_; }
    const MatR<T>& centers() const { return centers_; }        // C' = C - mu
    const MatR<T>& precisions() const { return precisions_; }  // P

    // b.x = [f'^2, f', 1] for the m rows starting at `rows`.
    void expand(const T* rows, Index m, TileBuffers<T>& b) const {
        // Row by row, each row's three parts written while it is in L1 (whole-block passes
        // took 6% of the soft VLAD forward+backward).
        T nan_if_not_finite(0);  // f * 0 is NaN exactly for NaN and infinities
        for (Index i = 0; i < m; ++i) {
            const Eigen::Map<const RowVec<T>> row(rows + i * dim_, dim_);
            if (check_features_) nan_if_not_finite += (row * T(0)).sum();
            auto x = b.x.row(i);
            auto f = x.segment(dim_, dim_);
            f = row - shift_;
            x.head(dim_) = f.cwiseAbs2();
            x[2 * dim_] = T(1);
        }
        if (std::isnan(nan_if_not_finite)) throw std::invalid_argument("features contains NaN or infinity");
    }

    // Fills b.x and b.a for the m feature rows starting at `rows`.
    void assign(const T* rows, Index m, TileBuffers<T>& b) const {
        expand(rows, m, b);
        auto d = b.a.topRows(m);
        d.noalias() = b.x.topRows(m) * weights_;
        // One row at a time, so that its passes run in L1.
        for (Index i = 0; i < m; ++i) {
            auto a = d.row(i);
            // Rounding can push a distance slightly below zero; distances are >= 0.
            a = a.cwiseMax(T(0));
            const T nearest = a.minCoeff();
            a = ((a.array() - nearest) * (-gamma_)).exp().matrix();
            a *= T(1) / a.sum();  // one division per row, not per codeword
        }
    }

  private:
    Index k_, dim_;
    T gamma_;
    bool check_features_;
    RowVec<T> shift_;
    MatR<T> centers_, precisions_;
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> weights_;  // [P ; -2 C'P ; b], (2D + 1) x K
};

}  // namespace lfagg
