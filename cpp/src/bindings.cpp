// pybind11 bindings: validate (GIL held), unwrap, release the GIL, call the kernels.
// Compiled once per instruction set; LFAGG_MODULE_NAME names the module.
#include <pybind11/stl.h>

#include <pthread.h>

#include <cmath>
#include <optional>
#include <sstream>
#include <string>

#include "checks.hpp"
#include "lfagg/soft_encoders.hpp"

namespace py = pybind11;
using namespace lfagg_py;

void def_baselines(py::module_& m);  // baseline_bindings.cpp

namespace {

// Validated inputs of a soft-assignment kernel.
template <class T>
struct SoftProblem {
    lfagg::BagsView<T> bags;
    lfagg::SoftParams<T> params;
    int n_threads;
};

template <class T>
SoftProblem<T> check_soft_problem(const Array<T>& features, const Offsets& offsets, const Array<T>& centers,
                                  const Array<T>& precisions, double gamma, int n_threads) {
    const int nt = check_threads(n_threads);
    const auto bags = check_bags(features, offsets);
    check_codewords(centers, bags.dim, "centers", "codeword");
    if (precisions.ndim() != 2 || precisions.shape(0) != centers.shape(0) || precisions.shape(1) != bags.dim)
        fail("precisions must have the shape of centers " + shape_of(centers) + ", got shape " +
             shape_of(precisions));
    const T gamma_t = static_cast<T>(gamma);  // in the compute dtype: 1e-46 is 0 in float32
    if (!(std::isfinite(gamma_t) && gamma_t > 0)) {
        std::ostringstream s;
        s << "gamma must be a positive finite number, got " << gamma;
        fail(s.str());
    }

    check_finite(centers, "centers", nt);
    check_finite(precisions, "precisions", nt);
    check_positive(precisions, "precisions");
    // The features are checked by the kernel as it reads them (check_features).

    return {bags, {centers.data(), precisions.data(), centers.shape(0), gamma_t}, nt};
}

// The encoding, or (encoding, assignments) with return_assignments. assignments_out, an
// (N, K) array written in place of a fresh one (implies return_assignments), lets a training
// loop reuse one buffer instead of zeroing the pages of a new one every step.
template <class Enc, class T>
py::object soft_encode(const Array<T>& features, const Offsets& offsets, const Array<T>& centers,
                       const Array<T>& precisions, double gamma, int n_threads, bool return_assignments,
                       bool check_features, std::optional<Array<T>> assignments_out) {
    const auto pb = check_soft_problem(features, offsets, centers, precisions, gamma, n_threads);
    const Index out_dim = Enc::out_dim(pb.params.k, pb.bags.dim);
    Array<T> out({pb.bags.n_bags, out_dim});
    if (assignments_out) {
        check_assignments_shape(*assignments_out, pb.bags.n, pb.params.k, "assignments_out");
        if (!assignments_out->writeable()) fail("assignments_out must be writeable");
        return_assignments = true;
    }
    Array<T> assignments = assignments_out ? *assignments_out
                                           : Array<T>(std::vector<py::ssize_t>{return_assignments ? pb.bags.n : 0,
                                                                               pb.params.k});
    T* dst = out.mutable_data();
    T* a = return_assignments ? assignments.mutable_data() : nullptr;
    {
        py::gil_scoped_release release;
        lfagg::soft_encode<Enc>(pb.bags, pb.params, dst, pb.n_threads, a, check_features);
    }
    check_result_finite(dst, pb.bags.n_bags * out_dim, pb.n_threads);
    if (return_assignments) return py::make_tuple(out, assignments);
    return std::move(out);
}

// (grad_centers, grad_precisions, grad_gamma), and grad_features with return_grad_features.
template <class Enc, class T>
py::tuple soft_backward(const Array<T>& features, const Offsets& offsets, const Array<T>& centers,
                        const Array<T>& precisions, double gamma, const Array<T>& grad_output,
                        const std::optional<Array<T>>& assignments, int n_threads, bool check_features,
                        bool return_grad_features) {
    const auto pb = check_soft_problem(features, offsets, centers, precisions, gamma, n_threads);
    const Index out_dim = Enc::out_dim(pb.params.k, pb.bags.dim);
    if (grad_output.ndim() != 2 || grad_output.shape(0) != pb.bags.n_bags || grad_output.shape(1) != out_dim)
        fail("grad_output must have the shape of the encoder's output (" + std::to_string(pb.bags.n_bags) + ", " +
             std::to_string(out_dim) + "), got shape " + shape_of(grad_output));
    check_finite(grad_output, "grad_output", pb.n_threads);
    // Their values are checked by the kernel as it reads them.
    if (assignments) check_assignments_shape(*assignments, pb.bags.n, pb.params.k, "assignments");
    const T* a = assignments ? assignments->data() : nullptr;

    Array<T> grad_centers({pb.params.k, pb.bags.dim}), grad_precisions({pb.params.k, pb.bags.dim});
    Array<T> grad_features(std::vector<py::ssize_t>{return_grad_features ? pb.bags.n : 0, pb.bags.dim});
    T* gc = grad_centers.mutable_data();
    T* gp = grad_precisions.mutable_data();
    T* gf = return_grad_features ? grad_features.mutable_data() : nullptr;
    double grad_gamma;
    {
        py::gil_scoped_release release;
        grad_gamma = lfagg::soft_backward<Enc>(pb.bags, pb.params, grad_output.data(), gc, gp, pb.n_threads, a, gf,
                                                check_features);
    }
    check_result_finite(gc, grad_centers.size(), pb.n_threads, lfagg::kBackwardInputs);
    check_result_finite(gp, grad_precisions.size(), pb.n_threads, lfagg::kBackwardInputs);
    if (!std::isfinite(grad_gamma)) fail(lfagg::overflow_message<T>(lfagg::kBackwardInputs));  // computed from T's
    if (!return_grad_features) return py::make_tuple(grad_centers, grad_precisions, grad_gamma);
    return py::make_tuple(grad_centers, grad_precisions, grad_gamma, grad_features);
}

template <class Enc, class T>
void def_soft_encoder_for(py::module_& m, const char* name, const char* backward_name) {
    m.def(name, &soft_encode<Enc, T>, py::arg("features").noconvert(), py::arg("offsets").noconvert(),
          py::arg("centers").noconvert(), py::arg("precisions").noconvert(), py::arg("gamma"),
          py::arg("n_threads") = 0, py::arg("return_assignments") = false, py::arg("check_features") = true,
          py::arg("assignments_out").noconvert().none(true) = py::none());
    m.def(backward_name, &soft_backward<Enc, T>, py::arg("features").noconvert(), py::arg("offsets").noconvert(),
          py::arg("centers").noconvert(), py::arg("precisions").noconvert(), py::arg("gamma"),
          py::arg("grad_output").noconvert(), py::arg("assignments").noconvert().none(true) = py::none(),
          py::arg("n_threads") = 0, py::arg("check_features") = true, py::arg("return_grad_features") = false);
}

// Whether every value of an array is finite: one threaded, allocation-free scan, so that
// lfagg validates a collection once and its kernels can then skip their own scan.
template <class T>
void def_all_finite_for(py::module_& m) {
    m.def(
        "all_finite",
        [](const Array<T>& a, int n_threads) {
            const int nt = check_threads(n_threads);
            py::gil_scoped_release release;
            return lfagg::all_finite(a.data(), static_cast<Index>(a.size()), nt);
        },
        py::arg("a").noconvert(), py::arg("n_threads") = 0);
}

// Registers float64 then float32 under one name (check_features=false skips the check of
// features that lfagg already validated); arrays are never converted here
// (lfagg.ops does the one conversion), so a dtype mismatch is a TypeError, not a copy.
template <class Enc>
void def_soft_encoder(py::module_& m, const char* name, const char* backward_name) {
    def_soft_encoder_for<Enc, double>(m, name, backward_name);
    def_soft_encoder_for<Enc, float>(m, name, backward_name);
}

// Name of the instruction set this module was compiled for.
const char* compiled_isa() {
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__)
    return "avx2";
#else
    return "baseline";
#endif
}

// Whether the running CPU (and OS) supports an instruction set lfagg builds for.
bool cpu_supports(const std::string& isa) {
    if (isa == "baseline") return true;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == "avx2") return avx2;
    if (isa == "avx512")
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
#endif
    return false;
}

}  // namespace

#define LFAGG_STRINGIFY_(x) #x
#define LFAGG_STRINGIFY(x) LFAGG_STRINGIFY_(x)

PYBIND11_MODULE(LFAGG_MODULE_NAME, m) {
    m.doc() = "lfagg C++ core (" LFAGG_STRINGIFY(LFAGG_MODULE_NAME) "); use lfagg.ops instead.";
    m.attr("isa") = compiled_isa();
    m.def("cpu_supports", &cpu_supports, py::arg("isa"));
    m.def("max_threads", [] { return lfagg::resolve_threads(0); });
    pthread_atfork(nullptr, nullptr, &lfagg::note_fork);
    // A forked child whose parent's OpenMP threads another library sharing the runtime
    // started (PyTorch), which note_fork cannot see: lfagg._native calls it.
    m.def("run_on_one_thread", [] { lfagg::forked_after_threads = true; });

    def_all_finite_for<double>(m);
    def_all_finite_for<float>(m);
    def_soft_encoder<lfagg::SoftBowEncoder>(m, "soft_bow", "soft_bow_backward");
    def_soft_encoder<lfagg::SoftVladEncoder>(m, "soft_vlad", "soft_vlad_backward");
    def_baselines(m);
}
