// Argument checks shared by the binding units: run with the GIL held, raise ValueError
// naming the argument and the shape seen.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>

#include "lfagg/common.hpp"

namespace lfagg_py {

namespace py = pybind11;
using lfagg::Index;

template <class T>
using Array = py::array_t<T, py::array::c_style>;
using Offsets = py::array_t<std::int64_t, py::array::c_style>;

inline std::string shape_of(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

[[noreturn]] inline void fail(const std::string& message) { throw py::value_error(message); }

inline void check_ndim(const py::array& a, int ndim, const char* name, const char* expected) {
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

// An array of soft assignments (given, or to be written) of n features to k codewords.
template <class T>
void check_assignments_shape(const Array<T>& a, Index n, Index k, const char* name) {
    if (a.ndim() != 2 || a.shape(0) != n || a.shape(1) != k)
        fail(std::string(name) + " must have shape (n_features, n_codewords) = (" + std::to_string(n) + ", " +
             std::to_string(k) + "), got shape " + shape_of(a));
}

// Soft assignments of the n features to k codewords: an (n, k) array of finite,
// non-negative weights.
template <class T>
void check_assignments(const Array<T>& a, Index n, Index k, int n_threads) {
    check_assignments_shape(a, n, k, "assignments");
    bool ok;
    {
        py::gil_scoped_release release;
        ok = lfagg::all_finite_nonnegative(a.data(), static_cast<Index>(a.size()), n_threads);
    }
    if (!ok) fail("assignments must be finite and non-negative");
}

inline int check_threads(int n_threads) {
    if (n_threads < 0) fail("n_threads must be a positive integer or None, got " + std::to_string(n_threads));
    return lfagg::resolve_threads(n_threads);
}

// Shapes of features (n, dim) and offsets (n_bags + 1,); finiteness is checked separately.
template <class T>
lfagg::BagsView<T> check_bags(const Array<T>& features, const Offsets& offsets) {
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
    return {features.data(), n, dim, off, n_bags};
}

// A (K, dim) matrix named `name` of K >= 1 rows, each a `unit` ("codeword", "component").
inline void check_codewords(const py::array& a, Index dim, const char* name, const std::string& unit) {
    check_ndim(a, 2, name, ("(n_" + unit + "s, dim)").c_str());
    if (a.shape(1) != dim)
        fail(std::string(name) + " must have dim = " + std::to_string(dim) + " columns like features, got shape " +
             shape_of(a));
    if (a.shape(0) < 1) fail(std::string(name) + " must have at least one " + unit + ", got shape " + shape_of(a));
}

// The values of `a` (already checked finite) are all > 0.
template <class T>
void check_positive(const Array<T>& a, const char* name) {
    const T* p = a.data();
    for (py::ssize_t i = 0; i < a.size(); ++i)
        if (!(p[i] > 0)) {
            std::ostringstream found;  // %g: a tiny value is not shown as 0.000000
            found << std::setprecision(6) << static_cast<double>(p[i]);
            fail(std::string(name) + " must be strictly positive, found " + found.str() +
                 (p[i] == 0 ? " (a positive value below this floating-point type's range reads as 0)" : ""));
        }
}

// `inputs` names the arguments whose scale can overflow the result.
template <class T>
void check_result_finite(const T* data, Index size, int n_threads,
                         const char* inputs = "features, centers or precisions") {
    if (!lfagg::all_finite(data, size, n_threads)) fail(lfagg::overflow_message<T>(inputs));
}

}  // namespace lfagg_py
