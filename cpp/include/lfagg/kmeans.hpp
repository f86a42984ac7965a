// One iteration of Lloyd's K-Means over a sample of local features, on the tiled driver
// of bag_reduce.hpp (the sample is one bag): the features nearest to each centre, their
// mean and the inertia, bitwise identical for every thread count.
#pragma once

#include <cstdint>

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

}  // namespace lfagg
