"""Users' own local features on disk, in the formats the ``lfagg`` command line reads: a
directory of .npy files (one bag each), an .npz of features/offsets/labels, and labels in
.txt/.csv files."""
from __future__ import annotations

import csv
import os
import re
from typing import NamedTuple

import numpy as np

from .._files import atomic_path, replaced_input
from .._validation import first_nonfinite_bag
from ..bags import Bags, as_bags

#: A first row whose label field is one of these (any case) is a header.
_LABEL_HEADERS = ("label", "labels", "class", "target", "y")


#: How NumPy's load begins its message for a file that is neither .npy nor .npz (it takes
#: it for a pickle and suggests loading it with allow_pickle=True).
_NUMPY_PICKLE_GUESS = ("This file contains pickled", "Cannot load file containing pickled")


def read_npz(path, required, optional=()) -> dict:
    """The arrays ``required`` (all must be present) and those of ``optional`` that are
    present in the .npz file at path; ValueError naming the path for anything unreadable."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with data:
            out = {k: data[k] for k in (*required, *optional) if k in data.files}
    except Exception as exc:  # a damaged file fails in zipfile, zlib or the .npy header parser alike
        if isinstance(exc, ValueError) and str(exc).startswith(_NUMPY_PICKLE_GUESS):  # not our advice
            exc = "neither an .npz archive nor an .npy array"
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; expected {list(required)}")
    return out


def natural_key(name: str) -> list:
    """Sort key of a file name in natural order: its runs of digits compare as numbers, so
    "bag2" comes before "bag10" (and "bag02" before "bag10" too)."""
    # ASCII digits only: "²" and other Unicode digits pass str.isdigit but not int()
    return [(0, int(part), part) if i % 2 else (1, 0, part) for i, part in enumerate(re.split(r"([0-9]+)", name))]


def _check_finite(bags: Bags, path, names=None) -> Bags:
    """bags, or ValueError naming path and the first bag holding NaN or infinity."""
    b = first_nonfinite_bag(bags)
    if b is not None:
        raise ValueError(f"{path}: bag {b}{f' ({names[b]})' if names else ''} contains NaN or infinity")
    return bags


def load_npy_dir(path):
    """Bags from a directory of .npy files, one bag per file.

    Parameters
    ----------
    path : str or os.PathLike, a directory holding one ``<name>.npy`` file per bag: a
        2-D (n_i, D) array of real numbers (any integer or float dtype), the same D in
        every file; n_i may be 0. Files are memory-mapped and taken in the natural order of
        their names (:func:`natural_key`: "bag2" before "bag10"); other files are ignored.

    Returns
    -------
    bags : Bags holding every file's rows, concatenated: (sum n_i, D) float32 features
        when every file is float32, float64 otherwise.
    names : list of str, the file names without ".npy", in bag order (see :func:`load_labels`).

    Raises
    ------
    ValueError naming the path: no such directory, no .npy file, an unreadable file, a
    file that is not a 2-D real array, differing D, NaN or infinity.
    """
    headers = npy_dir_headers(path)
    names = [h.name for h in headers]
    offsets = np.concatenate([[0], np.cumsum([h.shape[0] for h in headers])]).astype(np.int64)
    features = np.empty((offsets[-1], headers[0].shape[1]), dtype=npy_dir_dtype(headers))
    for h, start, end in zip(headers, offsets[:-1], offsets[1:]):  # one file open at a time
        features[start:end] = read_npy(h.file)
    return _check_finite(Bags(features, offsets), path, names), names


def _npy_files(path) -> list[str]:
    """The .npy files of a directory of bags, in natural order (see :func:`load_npy_dir`)."""
    if not os.path.isdir(path):
        raise ValueError(f"{path}: no such directory (expected a directory of .npy files, one per bag)")
    files = sorted((f for f in os.listdir(path) if f.endswith(".npy") and os.path.isfile(os.path.join(path, f))),
                   key=natural_key)
    if not files:
        store = os.path.isfile(os.path.join(path, "zarr.json"))  # what store build was given, say
        raise ValueError(f"{path}: " + ("a Zarr store (a bag store already?), not a directory of .npy files" if store
                                        else "no .npy files in this directory"))
    return files


class NpyHeader(NamedTuple):
    """A bag file of a directory: its bag's name (the file name without ".npy"), its path,
    and the shape and dtype of its array."""

    name: str
    file: str
    shape: tuple
    dtype: np.dtype


def npy_dir_headers(path) -> list[NpyHeader]:
    """The :class:`NpyHeader` of each bag file of a directory, in natural order, each
    checked as :func:`load_npy_dir` checks them (NaN aside) from its header, before any is
    read; no file stays open (a memory map each ran out of file descriptors at about 1,000
    bags)."""
    files, headers = _npy_files(path), []
    for name in files:
        file = os.path.join(path, name)
        a = read_npy(file)  # a memory map, closed when dropped below
        if a.ndim != 2 or a.shape[1] == 0 or a.dtype.kind not in "biuf":
            raise ValueError(f"{file}: expected a 2-D (n_features, dim) array of real numbers, got shape {a.shape} "
                             f"and dtype {a.dtype}")
        if headers and a.shape[1] != headers[0].shape[1]:
            raise ValueError(f"{file}: local features of dimension {a.shape[1]}, but {files[0]} has "
                             f"{headers[0].shape[1]}")
        headers.append(NpyHeader(name[:-len(".npy")], file, a.shape, a.dtype))
    return headers


def npy_dir_dtype(headers) -> np.dtype:
    """The dtype of the bags of :func:`npy_dir_headers`: float32 when every file is float32, else float64."""
    return np.dtype(np.float32 if all(h.dtype == np.float32 for h in headers) else np.float64)


def read_npy(file) -> np.ndarray:
    """The array of an .npy file, memory-mapped; ValueError naming the file when it cannot be read."""
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # a damaged header fails in numpy's parser with SyntaxError, TokenError, ...
        raise ValueError(f"{file}: not a readable .npy file ({exc})") from None


def load_npz_bags(path):
    """Bags (and labels) from one .npz file, as written by :func:`save_npz_bags`.

    Parameters
    ----------
    path : str or os.PathLike, an .npz file with "features" (N, D) real numbers,
        "offsets" (n_bags + 1,) integers (bag b is ``features[offsets[b]:offsets[b + 1]]``,
        see :class:`lfagg.Bags`) and optionally "labels" (n_bags,) numbers or strings.

    Returns
    -------
    bags : Bags, float32 features when stored as float32, float64 otherwise.
    labels : (n_bags,) array as stored, or None.

    Raises
    ------
    ValueError naming the path for a missing or unreadable file, missing arrays, bad
    shapes or offsets, NaN or infinity.
    """
    data = read_npz(path, ("features", "offsets"), ("labels",))
    try:
        bags = Bags(data["features"], data["offsets"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    labels = data.get("labels")
    if labels is not None and (labels.ndim != 1 or len(labels) != len(bags)):
        raise ValueError(f"{path}: labels must hold one entry per bag, got shape {labels.shape} for {len(bags)} bags")
    return _check_finite(bags, path), labels


def save_npz_bags(path, bags, labels=None) -> None:
    """Write bags (and labels) to an .npz file that :func:`load_npz_bags` reads.

    Parameters
    ----------
    path : str or os.PathLike; numpy appends ".npz" when it lacks that suffix.
    bags : Bags or list of (N_i, D) arrays; stored as "features" (N, D) in their dtype
        (float32 or float64) and "offsets" (n_bags + 1,) int64.
    labels : None or (n_bags,) numbers or strings, stored as "labels".
    """
    bags = as_bags(bags)
    arrays = {"features": bags.features, "offsets": bags.offsets}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(bags) or labels.dtype.kind not in "biufU":
            raise ValueError(f"labels must be one number or string per bag: got shape {labels.shape} and "
                             f"dtype {labels.dtype} for {len(bags)} bags")
        arrays["labels"] = labels
    path = os.fspath(path)
    path = path if path.endswith(".npz") else f"{path}.npz"  # what numpy.savez writes
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_labels(path, names=None) -> np.ndarray:
    """Class labels of bags from a text file.

    Parameters
    ----------
    path : str or os.PathLike, a ``.txt`` file with one label per line, or a ``.csv`` file
        with one column (one label per row) or two columns ``name,label``. A first row
        whose label field is "label", "labels", "class", "target" or "y" (any case), and
        not the label of another row, is a header; blank lines at the end are ignored.
    names : list of str or None, the bag names given by :func:`load_npy_dir`. Two-column
        files need them: each bag takes the label of its name's row (a ".npy" suffix on
        the name is allowed; rows of other names are ignored). A one-column file must
        then hold exactly ``len(names)`` labels, in bag order.

    Returns
    -------
    (n_bags,) int64 array when every label is a whole number (1 and 1.0 alike), float64
    when every label is a number, else an array of str.

    Raises
    ------
    ValueError naming the path: missing or unreadable file, other suffix, no labels,
    an empty field, a NaN or infinite label (a missing value), a wrong number of columns
    or labels, a bag without a label or listed twice.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".txt", ".csv"):
        raise ValueError(f"{path}: labels must be a .txt or .csv file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: without a byte-order mark
            rows = list(csv.reader(fh)) if suffix == ".csv" else [[line] for line in fh]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read labels ({exc})") from None
    rows = [[field.strip() for field in row] for row in rows]
    while rows and not any(rows[-1]):
        rows.pop()
    start = 1 if rows and _is_header(rows[0], rows[1:], names) else 0
    if len(rows) == start:
        raise ValueError(f"{path}: no labels in this file")
    width = len(rows[start])
    for i in range(start, len(rows)):
        if len(rows[i]) != width or not all(rows[i]):
            raise ValueError(f"{path}: line {i + 1} has {rows[i]!r}, expected {width} non-empty field(s) like line "
                             f"{start + 1}")
    numbered = list(zip(range(start + 1, len(rows) + 1), rows[start:]))  # (line number, fields)
    if width == 1:
        used = [(line, label) for line, (label,) in numbered]
        if _look_like_pairs([label for _, label in used], names):  # else each line is a class of its own
            raise ValueError(f"{path}: its lines look like name and label separated by a tab, ';' or spaces: write "
                             "them as name,label (comma-separated, a .csv file)")
        if names is not None and len(used) != len(names):
            raise ValueError(f"{path}: {len(used)} labels for {len(names)} bags")
        if names is not None:
            _check_unambiguous_order(path, names)
    elif width == 2:
        if names is None:
            raise ValueError(f"{path}: two columns (name,label) need bag names, which only a directory of .npy "
                             f"files has; give one label per line instead")
        by_name = {}
        for line, (name, label) in numbered:
            name = name[:-len(".npy")] if name.endswith(".npy") else name
            if name in by_name:
                raise ValueError(f"{path}: bag {name!r} is listed twice")
            by_name[name] = (line, label)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"{path}: no label for {len(missing)} bag(s): {', '.join(missing[:5])}"
                             + (", ..." if len(missing) > 5 else ""))
        used = [by_name[n] for n in names]
    else:
        raise ValueError(f"{path}: expected one column (label) or two (name,label), got {width}")
    for line, label in sorted(used):  # only the labels of the bags: rows of other names may miss theirs
        if _is_missing(label):
            raise ValueError(f"{path}: line {line} has label {label!r}, NaN or infinite: not a class "
                             "(a missing value?)")
    return _labels_array([label for _, label in used])


def _is_header(first, others, names) -> bool:
    """Whether a label file's first row is a header: its label field is a header word that
    is not also another row's label, and its name field (two columns) no bag's name
    (labels y / n lost their first row)."""
    if not first or first[-1].lower() not in _LABEL_HEADERS:
        return False
    named_bag = len(first) == 2 and names is not None and first[0].removesuffix(".npy") in names
    return not named_bag and first[-1].lower() not in {row[-1].lower() for row in others if row}


def _look_like_pairs(labels, names) -> bool:
    """Whether one-column labels are "name<sep>label" pairs with another separator than a
    comma: every one holds a tab or a ';', or, with bag names, every one starts with a
    bag's name followed by white space."""
    if all("\t" in label or ";" in label for label in labels):
        return True
    if names is None:
        return False
    firsts = [re.split(r"\s+", label, maxsplit=1) for label in labels]
    known = set(names) | {name + ".npy" for name in names}
    return all(len(parts) == 2 and parts[0] in known for parts in firsts)


def _check_unambiguous_order(path, names) -> None:
    """ValueError when two bag names differ only in leading zeros (bag1, bag01): their
    order, which labels given by position rely on, is then a guess."""
    seen = {}
    for name in names:
        key = re.sub(r"\d+", lambda digits: str(int(digits.group())), name)
        if key in seen:
            raise ValueError(f"{path}: bags {seen[key]!r} and {name!r} differ only in leading zeros, so labels given "
                             "by position may go to the wrong bag: give name,label rows instead")
        seen[key] = name


def _is_missing(label: str) -> bool:
    """Whether a label reads as NaN or infinity (nan, NaN, inf, -Infinity...)."""
    try:
        return not np.isfinite(float(label))
    except ValueError:
        return False


#: A label that reads as a number: what numpy.savetxt and a spreadsheet write (nan and inf
#: are refused before).
_ASCII_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def _labels_array(labels: list) -> np.ndarray:
    """int64 when every label is a whole number ("1" and "1.0" are one class, as numpy's
    savetxt writes them), float64 when every label is a number (fit then refuses them as
    continuous), else str. Numbers that int64 or float64 would not hold exactly stay
    strings: two such labels must not become one class. A number is written in ASCII
    digits ("1_000" and "١" are strings, which Python's int() would read as 1000 and 1)."""
    if not all(_ASCII_NUMBER.fullmatch(label) for label in labels):
        return np.array(labels)
    try:
        integers = [int(label) for label in labels]
    except ValueError:
        integers = None
    if integers is not None:
        fits = all(-2 ** 63 <= i < 2 ** 63 for i in integers)
        return np.array(integers, dtype=np.int64) if fits else np.array(labels)
    try:
        values = np.array([float(label) for label in labels])
    except ValueError:
        return np.array(labels)
    if np.all(values == np.round(values)):
        exact = np.all(np.abs(values) < 2.0 ** 53)  # from there on, neighbouring integers share a float
        return values.astype(np.int64) if exact else np.array(labels)
    return values


def load_bags(path, labels=None):
    """Bags, and their labels, from users' files (what the ``lfagg`` command line reads).

    Parameters
    ----------
    path : str or os.PathLike, a directory of .npy files (:func:`load_npy_dir`), an
        .npz file (:func:`load_npz_bags`) or a :class:`lfagg.BagStore` (a directory
        holding zarr.json, or a URL such as s3://...), which is opened, not read.
    labels : None or the path of a .txt/.csv labels file (:func:`load_labels`, matched
        by name for a directory); it takes precedence over labels stored in the .npz.

    Returns
    -------
    bags : Bags (or the BagStore).
    labels : (n_bags,) array, or None when there is no labels file and the .npz or the
        store has none.
    """
    names = stored = None
    if is_store(path):
        from ..store import BagStore

        bags = BagStore.open(path)
        names, stored = bags.names, bags.labels
        names = None if names is None else names.tolist()
    elif not os.path.exists(path):
        raise ValueError(f"{path}: no such file or directory")
    elif os.path.isdir(path):
        bags, names = load_npy_dir(path)
    elif os.fspath(path).lower().endswith(".npz"):
        bags, stored = load_npz_bags(path)
    else:
        raise ValueError(f"{path}: expected a directory of .npy files (one per bag) or an .npz file")
    if labels is None:
        return bags, stored
    y = load_labels(labels, names)
    if len(y) != len(bags):
        raise ValueError(f"{labels}: {len(y)} labels for the {len(bags)} bags of {path}")
    return bags, y


def is_store(path) -> bool:
    """Whether ``path`` names a Zarr store (a URL, or a directory holding zarr.json)."""
    return "://" in os.fspath(path) or os.path.isfile(os.path.join(path, "zarr.json"))


def build_store(path, out, labels=None, *, chunk_rows=None, verbose=1, overwrite=False):
    """Converts users' bag files (what :func:`load_bags` reads) into a :class:`lfagg.BagStore`
    at ``out``, appending about 64 MiB of features at a time, so that a directory of .npy
    files is never held whole (an .npz file is read whole, as numpy reads it).

    Parameters
    ----------
    path : a directory of .npy files or an .npz file; labels : None or a labels file (as
        for :func:`load_bags`; an .npz's own labels otherwise); chunk_rows : rows per
        chunk of the store (None: BagStore's default); verbose : > 0 shows the progress.

    Returns
    -------
    The BagStore, open for reading. The bags are written in load_bags' order, with the
    file names as bag names for a directory. A failure (a bad file, NaN: it says which
    file) or an interruption leaves a store marked unfinished, which BagStore.open
    refuses until it is built again (``overwrite=True``).
    """
    from .._progress import bags_count, progress_bar
    from ..store import DEFAULT_CHUNK_ROWS, BLOCK_BYTES, BagStore, check_bag_names

    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or directory")
    source = replaced_input(out, (path, labels))  # --overwrite empties out: never the bags or labels it is built from
    if source is not None:
        raise ValueError(f"{out}: the store would replace the files it is built from ({source})")
    if os.path.isdir(path):
        headers = npy_dir_headers(path)  # checks every file before anything is written
        names = check_bag_names([h.name for h in headers], len(headers)).tolist()
        dtype = npy_dir_dtype(headers)
        y = None if labels is None else load_labels(labels, names)
        # copies: a block of small bags held open as memory maps would hold a descriptor each
        source = (np.array(read_npy(h.file), dtype=dtype) for h in headers)
    else:
        bags, y = load_bags(path, labels)
        names, dtype = None, bags.dtype
        source = iter(bags)
    n_bags = len(names) if names is not None else len(bags)
    if y is not None and len(y) != n_bags:
        raise ValueError(f"{labels}: {len(y)} labels for the {n_bags} bags of {path}")
    dim = headers[0].shape[1] if names is not None else bags.dim
    store = BagStore.create(out, dim=dim, dtype=dtype, chunk_rows=chunk_rows or DEFAULT_CHUNK_ROWS,
                            overwrite=overwrite)
    budget = max(1, BLOCK_BYTES // (dim * np.dtype(dtype).itemsize))
    pending, pending_rows, first = [], 0, 0
    with store.unfinished_while("lfagg store build"), \
            progress_bar(f"lfagg store build: {bags_count(n_bags)} into {out}", n_bags, verbose) as bar:
        def flush():
            nonlocal pending, pending_rows, first
            end = first + len(pending)
            try:
                store.append(pending, None if y is None else y[first:end],
                             None if names is None else names[first:end])
            except ValueError as exc:  # the append numbers its bags from 0: name the file (or bag) instead
                bad = next((i for i, a in enumerate(pending) if not np.isfinite(a).all()), None)
                if bad is not None:  # as load_bags says it
                    raise ValueError(f"{path}: bag {first + bad}{f' ({names[first + bad]})' if names else ''} "
                                     "contains NaN or infinity") from None
                raise ValueError(f"{path}: bags {first}-{end - 1}: {exc}") from None
            bar.update(len(pending))
            pending, pending_rows, first = [], 0, end

        for array in source:
            pending.append(array)
            pending_rows += array.shape[0]
            if pending_rows >= budget:
                flush()
        if pending:
            flush()
    return BagStore.open(out)
