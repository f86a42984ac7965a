"""Interface shared by the compiled cores ``lfagg._core_{baseline,avx2,avx512,native}``
(one module per instruction set, chosen by ``lfagg._native``). Use :mod:`lfagg.ops`:
these functions take exactly-typed C-contiguous arrays (float64 or float32, int64 offsets)
and never convert them. Each function has a float64 and a float32 overload.
``check_features=False`` skips the check of features for NaN and infinity (a scan of its
own, or in the soft encoders part of reading each block), for bags that lfagg validated
once (``all_finite``) before calling kernels on them many times."""
from typing import Literal, Optional, Tuple, Union, overload

import numpy as np
from numpy.typing import NDArray

F = Union[NDArray[np.float64], NDArray[np.float32]]
Offsets = NDArray[np.int64]

isa: str

def cpu_supports(isa: str) -> bool: ...
def max_threads() -> int: ...
def run_on_one_thread() -> None: ...
def all_finite(a: F, n_threads: int = 0) -> bool: ...
@overload
def soft_bow(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int = 0,
             return_assignments: Literal[False] = False, check_features: bool = True,
             assignments_out: None = None) -> F: ...
@overload
def soft_bow(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int,
             return_assignments: Literal[True], check_features: bool = True,
             assignments_out: Optional[F] = None) -> Tuple[F, F]: ...
@overload
def soft_bow(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int = 0, *,
             return_assignments: Literal[True], check_features: bool = True,
             assignments_out: Optional[F] = None) -> Tuple[F, F]: ...
@overload
def soft_bow(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int = 0,
             return_assignments: bool = False, check_features: bool = True, *,
             assignments_out: F) -> Tuple[F, F]: ...
@overload
def soft_bow(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int = 0,
             return_assignments: bool = False, check_features: bool = True,
             assignments_out: Optional[F] = None) -> Union[F, Tuple[F, F]]: ...
@overload
def soft_bow_backward(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, grad_output: F,
                      assignments: Optional[F] = None, n_threads: int = 0, check_features: bool = True,
                      return_grad_features: Literal[False] = False) -> Tuple[F, F, float]: ...
@overload
def soft_bow_backward(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, grad_output: F,
                      assignments: Optional[F], n_threads: int, check_features: bool,
                      return_grad_features: Literal[True]) -> Tuple[F, F, float, F]: ...
@overload
def soft_bow_backward(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, grad_output: F,
                      assignments: Optional[F] = None, n_threads: int = 0, check_features: bool = True, *,
                      return_grad_features: Literal[True]) -> Tuple[F, F, float, F]: ...
@overload
def soft_vlad(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int = 0,
              return_assignments: Literal[False] = False, check_features: bool = True,
              assignments_out: None = None) -> F: ...
@overload
def soft_vlad(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int,
              return_assignments: Literal[True], check_features: bool = True,
              assignments_out: Optional[F] = None) -> Tuple[F, F]: ...
@overload
def soft_vlad(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int = 0, *,
              return_assignments: Literal[True], check_features: bool = True,
              assignments_out: Optional[F] = None) -> Tuple[F, F]: ...
@overload
def soft_vlad(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int = 0,
              return_assignments: bool = False, check_features: bool = True, *,
              assignments_out: F) -> Tuple[F, F]: ...
@overload
def soft_vlad(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, n_threads: int = 0,
              return_assignments: bool = False, check_features: bool = True,
              assignments_out: Optional[F] = None) -> Union[F, Tuple[F, F]]: ...
@overload
def soft_vlad_backward(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, grad_output: F,
                       assignments: Optional[F] = None, n_threads: int = 0, check_features: bool = True,
                       return_grad_features: Literal[False] = False) -> Tuple[F, F, float]: ...
@overload
def soft_vlad_backward(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, grad_output: F,
                       assignments: Optional[F], n_threads: int, check_features: bool,
                       return_grad_features: Literal[True]) -> Tuple[F, F, float, F]: ...
@overload
def soft_vlad_backward(features: F, offsets: Offsets, centers: F, precisions: F, gamma: float, grad_output: F,
                       assignments: Optional[F] = None, n_threads: int = 0, check_features: bool = True, *,
                       return_grad_features: Literal[True]) -> Tuple[F, F, float, F]: ...
def bow(features: F, offsets: Offsets, centers: F, n_threads: int = 0, check_features: bool = True) -> F: ...
def vlad(features: F, offsets: Offsets, centers: F, assignments: Optional[F], n_threads: int = 0,
         check_features: bool = True) -> F: ...
def fisher_vector(features: F, offsets: Offsets, means: F, variances: F, weights: F, with_weights: bool = False,
                  n_threads: int = 0, check_features: bool = True,
                  with_log_likelihood: bool = False) -> F: ...  # + 1 column: each bag's mean log p(f_n)
def kmeans_step(features: F, centers: F, n_threads: int = 0, return_labels: bool = False,
                check_features: bool = True) -> tuple: ...  # (counts, means, inertia[, labels, distances])
def kmeans_plusplus(features: F, uniforms: NDArray[np.float64], n_threads: int = 0, check_features: bool = True,
                    weights: F | None = None) -> NDArray[np.int64]: ...  # (K,) rows; uniforms (K, trials)
def take_rows(features: F, rows: NDArray[np.int64], n_threads: int = 0) -> F: ...  # (n, D) = features[rows]
