// The generic parallel driver of every encoder: per-bag sums of per-feature statistics
// over ragged bags, tiled over rows so that one large bag spreads over every thread,
// with results bitwise identical for every thread count.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "lfagg/common.hpp"

namespace lfagg {

using RowVecD = Eigen::Matrix<double, 1, Eigen::Dynamic>;

// Rows per tile: the tile's N x K blocks (distances, assignments) stay around 256 KiB
// for float32, so they live in L2 and an N x K matrix never exists whole.
inline Index tile_rows(Index k) {
    Index rows = 512;
    while (rows > 16 && rows * k > (Index(1) << 16)) rows /= 2;
    return rows;
}

// The rows of an encoder's tiles: its own tile_rows() when it has one, else tile_rows(K).
template <class Enc, class = void>
struct RowsPerTile {
    static Index of(const Enc& enc) { return tile_rows(enc.k()); }
};
template <class Enc>
struct RowsPerTile<Enc, std::void_t<decltype(std::declval<const Enc&>().tile_rows())>> {
    static Index of(const Enc& enc) { return enc.tile_rows(); }
};

// Whether encode_bags keeps the encoder's scratch between calls (reused_scratch): only
// where the encoder says so (Enc::keeps_scratch), as the soft encoders do, whose training
// loops call them step after step at one size; the others free theirs after each call.
template <class Enc, class = void>
struct KeepsScratch : std::false_type {};
template <class Enc>
struct KeepsScratch<Enc, std::void_t<decltype(Enc::keeps_scratch)>> : std::bool_constant<Enc::keeps_scratch> {};

// Partial statistics of the bags that cross the boundaries of one tile: its first bag may
// have started in an earlier tile (head), its last bag may go on in a later one (tail).
template <class T>
struct TilePartials {
    RowVec<T> head, tail;
    Index head_bag = -1, tail_bag = -1;
    explicit TilePartials(Index stat_dim) : head(stat_dim), tail(stat_dim) {}
};

// Up to 16 tiles per thread in a wave, fewer when their partials (bytes_per_tile each)
// would pass 8 MiB (they are kept between calls, see reused_scratch), at least one; the
// same number for every thread, or the last of a wave's tiles leaves the others idle.
inline Index tiles_per_wave(Index n_tiles, int n_threads, Index bytes_per_tile) {
    const Index per_thread = (Index(8) << 20) / std::max<Index>(1, bytes_per_tile) / n_threads;
    return std::min(n_tiles, n_threads * std::clamp<Index>(per_thread, 1, 16));
}

// Encodes every bag: out (n_bags x enc.out_dim(), row-major) = enc.finalize(sum of the
// statistics of the bag's features, N_b); empty bags encode to zeros.
//
// Tiles are processed in waves; a bag lying inside one tile is finalised by the thread
// that encodes the tile, and the partials of the other bags are folded in tile order
// after each wave. The result therefore does not depend on the thread count, and threads
// meet only twice per wave: a per-tile `omp ordered` hand-off stalls every time the
// thread holding the previous tile is descheduled, which on a loaded machine made two
// threads several times slower than one.
template <class Enc, class T>
void encode_bags(const BagsView<T>& bags, const Enc& enc, T* out, int n_threads) {
    const Index stat_dim = enc.stat_dim(), out_dim = enc.out_dim();
    std::fill(out, out + bags.n_bags * out_dim, T(0));
    const Index rows = RowsPerTile<Enc>::of(enc), n_tiles = (bags.n + rows - 1) / rows;
    if (n_tiles == 0) return;
    const int nt = static_cast<int>(std::min<Index>(resolve_threads(n_threads), n_tiles));
    const Index wave = tiles_per_wave(n_tiles, nt, 2 * stat_dim * Index(sizeof(T)));

    struct Scratch {
        typename Enc::Tile tile;
        RowVec<T> part;
        RowVecD whole;
        Scratch(const Enc& e, Index r, Index s) : tile(e.tile(r)), part(s), whole(s) {}
    };
    // Grown to the threads and the wave of this call; kept between calls with the same sizes
    // when the encoder keeps its scratch.
    auto make = [] { return std::make_pair(std::vector<Scratch>(), std::vector<TilePartials<T>>()); };
    std::optional<decltype(make())> own;
    auto& [scratch, partials] = KeepsScratch<Enc>::value
                                    ? reused_scratch(std::array<Index, 4>{rows, stat_dim, enc.k(), bags.dim}, make)
                                    : own.emplace(make());
    while (scratch.size() < static_cast<std::size_t>(nt)) scratch.emplace_back(enc, rows, stat_dim);
    if (partials.size() < static_cast<std::size_t>(wave)) partials.resize(wave, TilePartials<T>(stat_dim));
    RowVecD open_sum = RowVecD::Zero(stat_dim);
    ErrorTrap trap;

    auto encode_tile = [&](Index r0, Index r1, TilePartials<T>& p, Scratch& w) {
        enc.prepare(w.tile, bags.row(r0), r0, r1 - r0);
        bags.for_each_segment(r0, r1, [&](Index b, Index s, Index e) {
            if (bags.begin(b) < r0) {
                p.head_bag = b;
                enc.segment_stats(w.tile, s - r0, e - s, p.head.data());
            } else if (bags.end(b) > r1) {
                p.tail_bag = b;
                enc.segment_stats(w.tile, s - r0, e - s, p.tail.data());
            } else {  // the whole bag lies in this tile
                enc.segment_stats(w.tile, s - r0, e - s, w.part.data());
                w.whole = w.part.template cast<double>();
                enc.finalize(w.whole, bags.size(b), out + b * out_dim);
            }
        });
    };
    auto fold = [&](Index r1, const TilePartials<T>& p) {
        if (p.head_bag >= 0) {
            open_sum += p.head.template cast<double>();
            if (bags.end(p.head_bag) <= r1) enc.finalize(open_sum, bags.size(p.head_bag), out + p.head_bag * out_dim);
        }
        if (p.tail_bag >= 0) open_sum = p.tail.template cast<double>();
    };

#pragma omp parallel num_threads(team(nt))
    {
        const FlushSubnormals flush;
        for (Index w0 = 0; w0 < n_tiles; w0 += wave) {
            const Index w1 = std::min(n_tiles, w0 + wave);
#pragma omp for schedule(dynamic, 1)
            for (Index t = w0; t < w1; ++t) {
                TilePartials<T>& p = partials[t - w0];
                p.head_bag = p.tail_bag = -1;
                trap.run([&] { encode_tile(t * rows, std::min(bags.n, (t + 1) * rows), p, scratch[thread_id()]); });
            }
#pragma omp single
            if (!trap.failed())
                for (Index t = w0; t < w1; ++t)
                    trap.run([&] { fold(std::min(bags.n, (t + 1) * rows), partials[t - w0]); });
        }
    }
    trap.rethrow();
}

}  // namespace lfagg
