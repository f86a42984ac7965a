// pybind11 bindings: validate (GIL held), unwrap, release the GIL, call the kernels.
// Compiled once per instruction set; LFAGG_MODULE_NAME names the module.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <sstream>
#include <string>

#include "lfagg/soft_encoders.hpp"

namespace py = pybind11;
using lfagg::Index;

namespace {

template <class T>
using Array = py::array_t<T, py::array::c_style>;
using Offsets = py::array_t<std::int64_t, py::array::c_style>;

std::string shape_of(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

[[noreturn]] void fail(const std::string& message) { throw py::value_error(message); }

void check_ndim(const py::array& a, int ndim, const char* name, const char* expected) {
    if (a.ndim() != ndim)
        fail(std::string(name) + " must be a " + std::to_string(ndim) + "-D array of shape " + expected +
             ", got shape " + shape_of(a));
}

template <class T>
void check_finite(const Array<T>& a, const char* name, int n_threads) {
    bool ok;
    {
        py::gil_scoped_release release;
        ok = lfagg::all_finite(a.data(), static_cast<Index>(a.size()), n_threads);
    }
    if (!ok) fail(std::string(name) + " contains NaN or infinity");
}

int check_threads(int n_threads) {
    if (n_threads < 0) fail("n_threads must be a positive integer or None, got " + std::to_string(n_threads));
    return lfagg::resolve_threads(n_threads);
}

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
    check_ndim(features, 2, "features", "(n_features, dim)");
    const Index n = features.shape(0), dim = features.shape(1);
    if (dim < 1) fail("features must have at least one column, got shape " + shape_of(features));

    check_ndim(offsets, 1, "offsets", "(n_bags + 1,)");
    if (offsets.size() < 1) fail("offsets must hold at least one value (offsets[0] == 0), got shape (0,)");
    const std::int64_t* off = offsets.data();
    const Index n_bags = offsets.size() - 1;
    if (off[0] != 0) fail("offsets[0] must be 0, got " + std::to_string(off[0]));
    for (Index b = 0; b < n_bags; ++b)
        if (off[b + 1] < off[b])
            fail("offsets must be non-decreasing, but offsets[" + std::to_string(b + 1) + "] = " +
                 std::to_string(off[b + 1]) + " < offsets[" + std::to_string(b) + "] = " + std::to_string(off[b]));
    if (off[n_bags] != n)
        fail("offsets[-1] must equal the number of features " + std::to_string(n) + ", got " +
             std::to_string(off[n_bags]));

    check_ndim(centers, 2, "centers", "(n_codewords, dim)");
    if (centers.shape(1) != dim)
        fail("centers must have dim = " + std::to_string(dim) + " columns like features, got shape " +
             shape_of(centers));
    if (centers.shape(0) < 1) fail("centers must have at least one codeword, got shape " + shape_of(centers));
    if (precisions.ndim() != 2 || precisions.shape(0) != centers.shape(0) || precisions.shape(1) != dim)
        fail("precisions must have the shape of centers " + shape_of(centers) + ", got shape " +
             shape_of(precisions));
    if (!(std::isfinite(gamma) && gamma > 0)) {
        std::ostringstream s;
        s << "gamma must be a positive finite number, got " << gamma;
        fail(s.str());
    }

    check_finite(centers, "centers", nt);
    check_finite(precisions, "precisions", nt);
    const T* p = precisions.data();
    for (py::ssize_t i = 0; i < precisions.size(); ++i)
        if (!(p[i] > 0)) fail("precisions must be strictly positive, found " + std::to_string(p[i]));
    check_finite(features, "features", nt);

    return {{features.data(), n, dim, off, n_bags},
            {centers.data(), precisions.data(), centers.shape(0), static_cast<T>(gamma)},
            nt};
}

template <class T>
void check_result_finite(const T* data, Index size, int n_threads) {
    if (!lfagg::all_finite(data, size, n_threads))
        throw py::value_error(
            "the result overflowed to NaN or infinity: features, centers or precisions are too large for "
            "this floating-point type; rescale them or use float64");
}

template <class Enc, class T>
Array<T> soft_encode(const Array<T>& features, const Offsets& offsets, const Array<T>& centers,
                     const Array<T>& precisions, double gamma, int n_threads) {
    const auto pb = check_soft_problem(features, offsets, centers, precisions, gamma, n_threads);
    const Index out_dim = Enc::out_dim(pb.params.k, pb.bags.dim);
    Array<T> out({pb.bags.n_bags, out_dim});
    T* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        lfagg::soft_encode<Enc>(pb.bags, pb.params, dst, pb.n_threads);
    }
    check_result_finite(dst, pb.bags.n_bags * out_dim, pb.n_threads);
    return out;
}

template <class Enc, class T>
py::tuple soft_backward(const Array<T>& features, const Offsets& offsets, const Array<T>& centers,
                        const Array<T>& precisions, double gamma, const Array<T>& grad_output,
                        int n_threads) {
    const auto pb = check_soft_problem(features, offsets, centers, precisions, gamma, n_threads);
    const Index out_dim = Enc::out_dim(pb.params.k, pb.bags.dim);
    if (grad_output.ndim() != 2 || grad_output.shape(0) != pb.bags.n_bags || grad_output.shape(1) != out_dim)
        fail("grad_output must have the shape of the encoder's output (" + std::to_string(pb.bags.n_bags) + ", " +
             std::to_string(out_dim) + "), got shape " + shape_of(grad_output));
    check_finite(grad_output, "grad_output", pb.n_threads);

    Array<T> grad_centers({pb.params.k, pb.bags.dim}), grad_precisions({pb.params.k, pb.bags.dim});
    T* gc = grad_centers.mutable_data();
    T* gp = grad_precisions.mutable_data();
    double grad_gamma;
    {
        py::gil_scoped_release release;
        grad_gamma = lfagg::soft_backward<Enc>(pb.bags, pb.params, grad_output.data(), gc, gp, pb.n_threads);
    }
    check_result_finite(gc, grad_centers.size(), pb.n_threads);
    check_result_finite(gp, grad_precisions.size(), pb.n_threads);
    if (!std::isfinite(grad_gamma)) check_result_finite(&grad_gamma, 1, 1);
    return py::make_tuple(grad_centers, grad_precisions, grad_gamma);
}

template <class Enc, class T>
void def_soft_encoder_for(py::module_& m, const char* name, const char* backward_name) {
    m.def(name, &soft_encode<Enc, T>, py::arg("features").noconvert(), py::arg("offsets").noconvert(),
          py::arg("centers").noconvert(), py::arg("precisions").noconvert(), py::arg("gamma"),
          py::arg("n_threads") = 0);
    m.def(backward_name, &soft_backward<Enc, T>, py::arg("features").noconvert(), py::arg("offsets").noconvert(),
          py::arg("centers").noconvert(), py::arg("precisions").noconvert(), py::arg("gamma"),
          py::arg("grad_output").noconvert(), py::arg("n_threads") = 0);
}

// Registers float64 then float32 under one name; arrays are never converted here
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

    def_soft_encoder<lfagg::SoftBowEncoder>(m, "soft_bow", "soft_bow_backward");
    def_soft_encoder<lfagg::SoftVladEncoder>(m, "soft_vlad", "soft_vlad_backward");
}
