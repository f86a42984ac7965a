"""Model files that load without running code: :func:`save` and :func:`load`.

A model file is a zip archive of two members: ``lfagg.json`` (the format's name and
version, the lfagg version that wrote it and the estimator's class) and ``model.skops``,
the estimator serialised by skops.io. skops rebuilds objects from a schema instead of
unpickling them, loads arrays without pickle, and refuses any type outside a trusted
list: lfagg's estimators and their parts, and the types skops trusts by default (NumPy
arrays and ufuncs, scikit-learn's estimators, plain Python values). A file holding any
other type fails with ValueError before anything in it is constructed; one whose
object is not an lfagg estimator (a scikit-learn model, say) is refused once built.
(lfagg chose skops over a format of its own: it already knows every scikit-learn and
NumPy building block and how to audit them.)

Plain pickling keeps working for scikit-learn users, for files they trust.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import lzma
import os
import sys
import threading
import types
import zipfile
import zlib

from . import __version__
from ._files import atomic_path
from ._validation import fitted_names, is_int
from .encoders import VLAD, BagOfWords, FisherVector
from .models import BagClassifier, LearnedBoW, LearnedBoWCV, LearnedVLAD, LearnedVLADCV
from .models.feature_map import AdditiveChi2Map
from .models.heads import SoftmaxRegression

__all__ = ["save", "load"]

#: The name and version of the model format this lfagg writes.
FORMAT, FORMAT_VERSION = "lfagg-model", 1
#: A member of a model file larger than MAX_INFLATED_BYTES may inflate at most
#: MAX_INFLATION times its stored size (lfagg's arrays of floats hardly compress).
MAX_INFLATION, MAX_INFLATED_BYTES = 100, 16 << 20
#: The estimators a model file may hold.
ESTIMATORS = (LearnedBoW, LearnedVLAD, LearnedBoWCV, LearnedVLADCV, BagClassifier, BagOfWords, VLAD, FisherVector)
#: The lfagg types a model file may contain (skops trusts NumPy's and scikit-learn's itself).
TRUSTED_TYPES = tuple(f"{t.__module__}.{t.__qualname__}" for t in (*ESTIMATORS, SoftmaxRegression, AdditiveChi2Map))


_SKOPS_LOCK = threading.Lock()  # one thread at a time sets sys.modules' stand-ins aside for skops


@contextlib.contextmanager
def _skops_io():
    """skops.io, used with the objects of ``sys.modules`` that are not modules set aside:
    like pickle, skops asks every loaded module for names such as scipy.special's
    ``erf`` (for each of scipy's ufuncs it trusts), and such a stand-in (Cython's
    ``cython.cimports``, which skops's imports load) imports whatever it is asked for: an
    ``erf.py`` anywhere on ``sys.path`` (the working directory, the script's folder,
    PYTHONPATH) was imported and run by every save and load (and by skops's own import,
    which lists the ufuncs it trusts). They are put back after. scipy is imported first:
    importing it imports Cython, whose stand-ins must be in sys.modules to be set aside."""
    importlib.import_module("scipy.special")

    with _SKOPS_LOCK:
        stand_ins = {name: module for name, module in list(sys.modules.items())
                     if module is not None and not isinstance(module, types.ModuleType)}
        for name in stand_ins:
            del sys.modules[name]
        try:
            import skops.io

            yield skops.io
        finally:
            sys.modules.update(stand_ins)


def save(model, path) -> None:
    """Write ``model`` (an lfagg estimator, usually fitted) to the model file ``path``,
    atomically: an interrupted write leaves the previous file or none.

    Parameters
    ----------
    model : LearnedBoW, LearnedVLAD, LearnedBoWCV, LearnedVLADCV, BagClassifier, BagOfWords,
        VLAD or FisherVector.
    path : str or os.PathLike, the file written (conventionally ``*.lfagg``).
    """
    if type(model) not in ESTIMATORS:  # a subclass is not a trusted type: load would refuse it
        raise ValueError(f"model must be one of lfagg's estimators ({', '.join(t.__name__ for t in ESTIMATORS)}), "
                         f"got {type(model).__name__}")
    if fitted_names(model):  # what load checks: a file that load refuses is not written
        try:
            model._check_fitted_state()
        except Exception as exc:
            raise ValueError(f"this {type(model).__name__} cannot be saved: load would refuse its fitted state "
                             f"({type(exc).__name__}: {exc})") from None
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "lfagg": __version__, "class": type(model).__name__}
    with _skops_io() as skops_io:
        try:
            payload = skops_io.dumps(model)
        except RecursionError:
            raise ValueError(f"this {type(model).__name__} cannot be saved: its parameters nest too deeply") from None
        untrusted = sorted(set(skops_io.get_untrusted_types(data=payload)) - set(TRUSTED_TYPES))
    if untrusted:
        raise ValueError(f"this {type(model).__name__} cannot be saved: it holds types that load does not trust "
                         f"({', '.join(untrusted)}); give lfagg's, scikit-learn's or NumPy's types as parameters")
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr("lfagg.json", json.dumps(meta))
        archive.writestr("model.skops", payload)


def _default_new_parameters(estimator) -> None:
    """Parameters added to lfagg's estimators since an earlier lfagg wrote the file (the
    same format version; FisherVector's tol, say) take their defaults, in ``estimator``
    and in the estimators it holds (an encoder, refits)."""
    for name, parameter in inspect.signature(type(estimator)).parameters.items():
        if name not in vars(estimator) and parameter.default is not parameter.empty:
            setattr(estimator, name, parameter.default)
    for value in vars(estimator).values():
        for inner in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(inner, ESTIMATORS):
                _default_new_parameters(inner)


def _read_members(archive: zipfile.ZipFile) -> dict:
    """name -> bytes of every member, each read in bounded pieces: ValueError for one that
    inflates beyond MAX_INFLATED_BYTES and MAX_INFLATION times its stored bytes (a zip
    bomb: lfagg's arrays of floats hardly compress), whatever sizes its headers declare
    (zipfile inflates a member whole before cutting it to the declared size)."""
    members = {}
    for info in archive.infolist():
        limit = max(MAX_INFLATED_BYTES, MAX_INFLATION * info.compress_size)
        if info.file_size > limit:
            raise ValueError(f"{info.filename} would inflate {info.compress_size:,} stored bytes to "
                             f"{info.file_size:,}")
        pieces, size = [], 0
        with archive.open(info) as member:  # its CRC is checked when the last piece is read
            while piece := member.read(1 << 20):
                size += len(piece)
                if size > limit:
                    raise ValueError(f"{info.filename} inflates {info.compress_size:,} stored bytes beyond {limit:,}")
                pieces.append(piece)
        members[info.filename] = b"".join(pieces)
    return members


def _check_references(members: dict) -> None:
    """ValueError when skops's schema refers to its archive's members far more than once:
    skops reads a member for every reference, before its check of the types, so a small
    file could make it read one large member many times over. ``members``: the archive's
    members as :func:`_read_members` read them."""
    sizes = {name: len(data) for name, data in members.items()}
    referenced = sum(sizes.get(name, 0) for name in _file_references(json.loads(members["schema.json"])))
    if referenced > 2 * sum(sizes.values()) + MAX_INFLATED_BYTES:
        raise ValueError(f"its schema refers to {referenced:,} bytes of a {sum(sizes.values()):,}-byte archive")


def _file_references(node):
    """The "file" entries of a skops schema, as often as they occur."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "file" and isinstance(value, str):
                yield value
            else:
                yield from _file_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _file_references(value)


def _shown(value, width: int = 40) -> str:
    """repr of a value read from a file, cut to ``width`` characters: no terminal escapes
    or megabytes of text in a message."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def load(path):
    """The estimator in the model file ``path`` written by :func:`save` (``lfagg train``, ``lfagg select``).

    Loading constructs only trusted types (:data:`TRUSTED_TYPES` and skops's defaults:
    NumPy arrays and ufuncs, scikit-learn's estimators, builtins) and never unpickles, so
    a crafted file cannot run code of its own.

    Raises
    ------
    ValueError naming the path: no such file, not an lfagg model file (e.g. a pickle),
    a file of a newer format version, a damaged file, one holding untrusted types, or a
    fitted model whose parameters and fitted attributes are not what its ``fit`` leaves
    (wrong types, shapes, non-finite values, an encoder and classifier that disagree).
    """
    path = os.fsdecode(path)  # zipfile would read bytes as a file object
    if not os.path.isfile(path):
        why = ("a directory, not a model file" if os.path.isdir(path) else
               "not a regular file (a device, pipe or socket)" if os.path.exists(path) else "no such file")
        raise ValueError(f"{path}: {why}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = _read_members(archive)
        meta, payload = json.loads(members["lfagg.json"]), members["model.skops"]
        skops_archive = io.BytesIO(payload)
        if zipfile.is_zipfile(skops_archive):  # skops's own archive of the arrays: read (and checked) here first
            with zipfile.ZipFile(skops_archive) as inner:
                _check_references(_read_members(inner))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, ValueError, RecursionError, OSError, EOFError,
            NotImplementedError, RuntimeError, zlib.error, lzma.LZMAError) as exc:  # RecursionError: a crafted,
        # deeply nested lfagg.json; ValueError: bad JSON, a bomb; NotImplementedError: a damaged entry naming a
        # compression zipfile does not know; RuntimeError: one flagged encrypted; zlib/lzma: damaged data
        raise ValueError(f"{path}: not a model file written by lfagg.save / 'lfagg train' / 'lfagg select' "
                         f"({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a model file written by lfagg.save / 'lfagg train' / 'lfagg select'")
    version = meta.get("version")
    if not is_int(version) or version < 1:
        raise ValueError(f"{path}: damaged model file (format version {_shown(version)})")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: written by lfagg {_shown(meta.get('lfagg'))} in model format {version}; this lfagg "
                         f"({__version__}) reads format {FORMAT_VERSION}: upgrade lfagg")
    with _skops_io() as skops_io:
        try:
            model = skops_io.loads(payload, trusted=list(TRUSTED_TYPES))
        except skops_io.exceptions.UntrustedTypesFoundException as exc:
            raise ValueError(f"{path}: refused, the file holds types lfagg does not trust ({exc})") from None
        except Exception as exc:  # a damaged payload fails in zipfile, json, numpy or skops alike
            raise ValueError(f"{path}: damaged model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, ESTIMATORS):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not an lfagg estimator")
    if meta.get("class") != type(model).__name__:
        raise ValueError(f"{path}: damaged model file (it says it holds a {_shown(meta.get('class'))}, its payload "
                         f"is a {type(model).__name__})")
    try:
        _default_new_parameters(model)
    except RecursionError:  # a crafted file: estimators nested without end
        raise ValueError(f"{path}: damaged model file (estimators nested too deeply)") from None
    if fitted_names(model):
        try:
            model._check_fitted_state()
        except Exception as exc:  # a crafted state fails in the checks, or in the probe encoding they run
            raise ValueError(f"{path}: damaged model file, its fitted state is inconsistent "
                             f"({type(exc).__name__}: {exc})") from None
    return model
