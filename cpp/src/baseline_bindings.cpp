// pybind11 bindings of the baseline encoders (hard BoW, VLAD, Fisher Vector) and of the
// K-Means step of the codebooks: validate with the GIL held, release it around the
// kernel. Compiled into every per-ISA module.
#include <pybind11/stl.h>

#include <optional>

#include "checks.hpp"
#include "lfagg/baselines.hpp"
#include "lfagg/kmeans.hpp"

namespace py = pybind11;
using namespace lfagg_py;

namespace {

// Runs encode_bags with the GIL released and returns the (n_bags, out_dim) result.
template <class Enc, class T>
Array<T> run_encoder(const lfagg::BagsView<T>& bags, const Enc& enc, int n_threads, const char* inputs) {
    Array<T> out({bags.n_bags, enc.out_dim()});
    T* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        lfagg::encode_bags(bags, enc, dst, n_threads);
    }
    check_result_finite(dst, out.size(), n_threads, inputs);
    return out;
}

template <class T>
Array<T> bow(const Array<T>& features, const Offsets& offsets, const Array<T>& centers, int n_threads,
             bool check_features) {
    const int nt = check_threads(n_threads);
    const auto bags = check_bags(features, offsets);
    check_codewords(centers, bags.dim, "centers", "codeword");
    check_finite(centers, "centers", nt);
    if (check_features) check_finite(features, "features", nt);
    const lfagg::HardBowEncoder<T> enc(centers.data(), centers.shape(0), bags.dim);
    return run_encoder(bags, enc, nt, "features or centers");
}

template <class T>
Array<T> vlad(const Array<T>& features, const Offsets& offsets, const Array<T>& centers,
              const std::optional<Array<T>>& assignments, int n_threads, bool check_features) {
    const int nt = check_threads(n_threads);
    const auto bags = check_bags(features, offsets);
    check_codewords(centers, bags.dim, "centers", "codeword");
    const Index k = centers.shape(0);
    if (assignments) check_assignments(*assignments, bags.n, k, nt);
    check_finite(centers, "centers", nt);
    if (check_features) check_finite(features, "features", nt);
    const lfagg::VladEncoder<T> enc(centers.data(), k, bags.dim, assignments ? assignments->data() : nullptr);
    return run_encoder(bags, enc, nt, "features, centers or assignments");
}

template <class T>
Array<T> fisher_vector(const Array<T>& features, const Offsets& offsets, const Array<T>& means,
                       const Array<T>& variances, const Array<T>& weights, bool with_weights, int n_threads,
                       bool check_features, bool with_log_likelihood) {
    const int nt = check_threads(n_threads);
    const auto bags = check_bags(features, offsets);
    check_codewords(means, bags.dim, "means", "component");
    const Index k = means.shape(0);
    if (variances.ndim() != 2 || variances.shape(0) != k || variances.shape(1) != bags.dim)
        fail("variances must have the shape of means " + shape_of(means) + ", got shape " + shape_of(variances));
    if (weights.ndim() != 1 || weights.shape(0) != k)
        fail("weights must have shape (n_components,) = (" + std::to_string(k) + ",), got shape " +
             shape_of(weights));
    check_finite(means, "means", nt);
    check_finite(variances, "variances", nt);
    check_positive(variances, "variances");
    check_finite(weights, "weights", nt);
    check_positive(weights, "weights");
    if (check_features) check_finite(features, "features", nt);
    const lfagg::FisherEncoder<T> enc({means.data(), variances.data(), weights.data(), k}, bags.dim, with_weights,
                                      with_log_likelihood);
    return run_encoder(bags, enc, nt, "features, means or variances");
}

// One Lloyd iteration on the (N, D) sample: (counts (K,), means (K, D), inertia), then
// with return_labels every feature's nearest centre (N,) int64 and squared distance (N,).
template <class T>
py::tuple kmeans_step(const Array<T>& features, const Array<T>& centers, int n_threads, bool return_labels,
                      bool check_features) {
    const int nt = check_threads(n_threads);
    check_ndim(features, 2, "features", "(n_features, dim)");
    const Index n = features.shape(0), dim = features.shape(1);
    check_codewords(centers, dim, "centers", "codeword");
    check_finite(centers, "centers", nt);
    if (check_features) check_finite(features, "features", nt);
    const Index k = centers.shape(0);
    py::array_t<std::int64_t> labels(return_labels ? n : 0);
    Array<T> distances(return_labels ? n : 0);
    const std::int64_t one_bag[2] = {0, static_cast<std::int64_t>(n)};
    const lfagg::BagsView<T> sample{features.data(), n, dim, one_bag, 1};
    const lfagg::KMeansStep<T> step(centers.data(), k, dim, return_labels ? labels.mutable_data() : nullptr,
                                    return_labels ? distances.mutable_data() : nullptr);
    const Array<T> out = run_encoder(sample, step, nt, "features or centers");
    const T* o = out.data();
    Array<T> counts(k), means({k, dim});
    std::copy(o, o + k, counts.mutable_data());
    std::copy(o + k, o + k + k * dim, means.mutable_data());
    const double inertia = o[k + k * dim];
    if (!return_labels) return py::make_tuple(counts, means, inertia);
    return py::make_tuple(counts, means, inertia, labels, distances);
}

// Greedy k-means++ on the (N, D) sample: the (K,) int64 rows chosen as seeds, from the
// (K, n_trials) float64 uniforms in [0, 1); with `weights` (N,) a weighted sample (see
// lfagg::kmeans_plusplus).
template <class T>
py::array_t<std::int64_t> kmeans_plusplus(const Array<T>& features, const Array<double>& uniforms, int n_threads,
                                          bool check_features, const std::optional<Array<T>>& weights) {
    const int nt = check_threads(n_threads);
    check_ndim(features, 2, "features", "(n_features, dim)");
    check_ndim(uniforms, 2, "uniforms", "(n_centers, n_trials)");
    const Index n = features.shape(0), dim = features.shape(1), k = uniforms.shape(0), trials = uniforms.shape(1);
    if (k < 1 || trials < 1)
        fail("uniforms must have at least one row and one column, got shape " + shape_of(uniforms));
    if (k > n)
        fail("cannot seed " + std::to_string(k) + " centers from " + std::to_string(n) + " features");
    const double* u = uniforms.data();
    if (!std::all_of(u, u + uniforms.size(), [](double v) { return v >= 0 && v < 1; }))
        fail("uniforms must lie in [0, 1)");
    if (check_features) check_finite(features, "features", nt);
    const T* w = nullptr;
    if (weights) {
        check_ndim(*weights, 1, "weights", "(n_features,)");
        if (weights->shape(0) != n)
            fail("weights must have one value per feature (" + std::to_string(n) + "), got " + shape_of(*weights));
        check_finite(*weights, "weights", nt);
        check_positive(*weights, "weights");
        w = weights->data();
    }
    std::vector<Index> chosen;
    {
        py::gil_scoped_release release;
        chosen = lfagg::kmeans_plusplus(features.data(), n, dim, k, trials, u, nt, w);
    }
    py::array_t<std::int64_t> out(k);
    std::copy(chosen.begin(), chosen.end(), out.mutable_data());
    return out;
}

// The (n, D) rows of the (N, D) features at the (n,) int64 indices `rows`, gathered on the
// core's threads into memory the core allocates: numpy's allocator advises huge pages for
// large arrays, and with the kernel's default THP defrag policy ("madvise") their first
// touch waits on compaction (100-115 ms for part (f)'s 43 MB sample on a VM, 23 without).
template <class T>
Array<T> take_rows(const Array<T>& features, const Array<std::int64_t>& rows, int n_threads) {
    const int nt = check_threads(n_threads);
    check_ndim(features, 2, "features", "(n_features, dim)");
    check_ndim(rows, 1, "rows", "(n_rows,)");
    const Index n_all = features.shape(0), dim = features.shape(1), n = rows.shape(0);
    const std::int64_t* r = rows.data();
    if (!std::all_of(r, r + n, [n_all](std::int64_t i) { return i >= 0 && i < n_all; }))
        fail("rows must lie in [0, n_features) = [0, " + std::to_string(n_all) + ")");
    T* gathered = new T[static_cast<std::size_t>(n * dim)];
    const py::capsule owner(gathered, [](void* p) { delete[] static_cast<T*>(p); });
    {
        py::gil_scoped_release release;
        lfagg::take_rows(features.data(), dim, r, n, gathered, nt);
    }
    return Array<T>({n, dim}, gathered, owner);
}

// float64 first, then float32, under one name; arrays are never converted here.
// check_features=false skips the scan of features that lfagg already validated.
template <class T>
void def_baselines_for(py::module_& m) {
    m.def("bow", &bow<T>, py::arg("features").noconvert(), py::arg("offsets").noconvert(),
          py::arg("centers").noconvert(), py::arg("n_threads") = 0, py::arg("check_features") = true);
    m.def("vlad", &vlad<T>, py::arg("features").noconvert(), py::arg("offsets").noconvert(),
          py::arg("centers").noconvert(), py::arg("assignments").noconvert().none(true), py::arg("n_threads") = 0,
          py::arg("check_features") = true);
    m.def("fisher_vector", &fisher_vector<T>, py::arg("features").noconvert(), py::arg("offsets").noconvert(),
          py::arg("means").noconvert(), py::arg("variances").noconvert(), py::arg("weights").noconvert(),
          py::arg("with_weights") = false, py::arg("n_threads") = 0, py::arg("check_features") = true,
          py::arg("with_log_likelihood") = false);
    m.def("kmeans_step", &kmeans_step<T>, py::arg("features").noconvert(), py::arg("centers").noconvert(),
          py::arg("n_threads") = 0, py::arg("return_labels") = false, py::arg("check_features") = true);
    m.def("kmeans_plusplus", &kmeans_plusplus<T>, py::arg("features").noconvert(), py::arg("uniforms").noconvert(),
          py::arg("n_threads") = 0, py::arg("check_features") = true,
          py::arg("weights").noconvert().none(true) = py::none());
    m.def("take_rows", &take_rows<T>, py::arg("features").noconvert(), py::arg("rows").noconvert(),
          py::arg("n_threads") = 0);
}

}  // namespace

void def_baselines(py::module_& m) {
    def_baselines_for<double>(m);
    def_baselines_for<float>(m);
}
