"""BagStore: ragged bags on disk (Zarr v3), written once and incrementally, read by block.

A store is a Zarr group holding ``features`` (N, D), chunked by rows, ``offsets``
(n_bags + 1,) int64 and, when given, ``labels`` (n_bags,) and ``names`` (n_bags,), with
lfagg's metadata in the group's attributes under "lfagg": the format's name and version,
D, the dtype and the number of complete bags. An append writes the new rows of every
array first and then this count, in one write of the group's metadata (which Zarr's local
store writes atomically from zarr 3.1.3 on, the version lfagg needs): a reader sees only
complete bags, and an append that is interrupted leaves the store as it was before it
(the next append overwrites the rows it left behind). Reading a bag, a slice, a list of
bags or a block reads only the chunks that hold them.

Install with ``pip install "lfagg[store]"`` (or ``[dask]``); lfagg itself never imports zarr.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import platform
import re
import shutil
import sys
import uuid

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: appends are not locked (see BagStore._append_lock)
    fcntl = None

from . import _mapped
from ._validation import (as_generator, check_fits_int64, check_labels, fixed_width_strings, holds_text, is_int,
                          positive_int)
from .bags import Bags, as_bags, gather_rows, pick_bags, scalar_index

__all__ = ["BagStore"]

#: The name and version of the store format this lfagg writes.
FORMAT, FORMAT_VERSION = "lfagg-bag-store", 1
#: The attribute marking a store that an unfinished build left (see BagStore.unfinished_while).
UNFINISHED = "lfagg_unfinished"
#: The stored dtype of each kind of labels (the kind the first append's labels decide).
LABEL_DTYPES = {"int": np.int64, "float": np.float64, "str": str, "bool": np.bool_}
#: Default rows per chunk of the features: about 4 MiB for D = 128 float32.
DEFAULT_CHUNK_ROWS = 8192
#: The most bytes of features a block of a store read by the estimators holds.
BLOCK_BYTES = 64 << 20


#: The oldest zarr whose local store writes every file atomically (a temporary file, then
#: a rename), which the store's commits and its mapped chunks rely on.
MIN_ZARR = (3, 1, 3)


def _zarr():
    try:
        import zarr
    except ImportError:
        zarr = None
    release = tuple(int(part) for part in re.findall(r"\d+", getattr(zarr, "__version__", "0"))[:3])
    if zarr is None or release < MIN_ZARR:
        needs = f'lfagg.BagStore needs zarr >= {".".join(map(str, MIN_ZARR))}'
        if sys.version_info < (3, 11):  # zarr 3 itself needs Python 3.11
            raise ImportError(f"{needs}, which needs Python >= 3.11 (this is {platform.python_version()})")
        raise ImportError(f'{needs}: pip install "lfagg[store]"')
    return zarr


class BagStore:
    """Ragged bags in a Zarr v3 store: ``BagStore.create(path, dim=, dtype=)`` then
    ``append``; ``BagStore.open(path)`` to read (a local path or any URL zarr/fsspec
    understands). Accepted wherever lfagg takes Bags.

    ``len(store)``: the number of bags; ``store[i]``: bag i as an (N_i, D) array;
    ``store[slice | indices | mask]``: those bags as a :class:`lfagg.Bags`, reading only
    the chunks that hold them; ``store.labels`` / ``store.names``: (n_bags,) arrays or
    None; ``store.blocks(max_features)``: consecutive bags as Bags of at most that many
    features (a larger bag alone); ``store.sample_features(n, random_state)``;
    ``store.subset(indices)``: a lazy view. Appends take turns (on a local store, through
    a lock on its folder); a handle that missed another writer's append refuses to append
    (open the store again); any number read.
    """

    def __init__(self, group, path, writable):
        self._group, self._path, self._writable, self._view = group, str(path), writable, False
        meta = group.attrs.get("lfagg")
        self._meta = self._check_meta(meta)
        self._features = self._array("features")
        self._offsets_array = self._array("offsets")
        self._chunk_dir = self._raw_chunk_dir()
        self._set_stored_offsets(self._read_offsets())

    def _set_stored_offsets(self, offsets):
        """The whole store's offsets; a view (:meth:`subset`) keeps them and its bag ids."""
        self._stored_offsets, self._stored_sizes = offsets, np.diff(offsets)
        self._offsets, self._bag_ids = offsets, np.arange(offsets.size - 1)

    # -- creating and opening ----------------------------------------------------------
    @classmethod
    def create(cls, path, *, dim, dtype=np.float32, chunk_rows=DEFAULT_CHUNK_ROWS, compressors=None,
               overwrite=False):
        """A new, empty store at ``path`` for local features of dimension ``dim``.

        dtype : float32 or float64; chunk_rows : rows of features per Zarr chunk;
        compressors : Zarr's ``compressors`` of the features, None (the default) for none:
        local descriptors are nearly incompressible (zstd saved 7% of standard normal
        float32 and made reading 2.7x slower), so the default reads at the disk's speed;
        overwrite : replace the bag store (or the empty folder) at ``path``, else anything at
            ``path`` is a ValueError; a file or a folder holding anything but a bag store is
            never replaced.
        """
        zarr = _zarr()
        dim, chunk_rows = positive_int(dim, "dim"), positive_int(chunk_rows, "chunk_rows")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if isinstance(path, (str, os.PathLike)) and os.path.exists(path):
            if not overwrite:
                raise ValueError(f"{path}: already exists (pass overwrite=True; on the command line, --overwrite)")
            if not os.path.isdir(path) or (os.listdir(path) and not _holds_bag_store(path)):  # Zarr would empty it
                kind = "a folder" if os.path.isdir(path) else "a file"
                raise ValueError(f"{path}: {kind} that is not a bag store: it is not replaced (remove it yourself, "
                                 "or choose another path)")
        existed = _is_local(path) and os.path.isdir(path)
        with _os_error_naming(path):
            # a failed create removes a folder it made; one that existed is emptied only once Zarr has
            # cleared it (Zarr refuses to clear a symbolic link to a store: the store stays)
            with contextlib.nullcontext() if existed else _removed_if_unfinished(path, existed):
                group = zarr.open_group(_local_path(path), mode="w" if overwrite else "w-", zarr_format=3)
            with _removed_if_unfinished(path, existed):
                _write_empty_store(group, dim, dtype, chunk_rows, compressors)
        return cls(group, path, writable=True)

    @classmethod
    def open(cls, path, mode="r"):
        """The store at ``path``: mode "r" (read only) or "a" (to append).

        Raises ValueError naming the path when it is missing, not a bag store, of a newer
        format version, or damaged (offsets that disagree with the features)."""
        zarr = _zarr()
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        try:
            group = zarr.open_group(_local_path(path), mode="r" if mode == "r" else "r+", zarr_format=3)
        except Exception as exc:  # missing paths and foreign files fail in zarr's or fsspec's own terms
            raise ValueError(f"{path}: not a bag store ({type(exc).__name__}: {exc})") from None
        try:
            store = cls(group, path, writable=mode == "a")
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if group.attrs.get(UNFINISHED):
            raise ValueError(f"{path}: an unfinished bag store: {group.attrs[UNFINISHED]} stopped after "
                             f"{len(store)} of its bags; run it again (lfagg store build --overwrite)")
        return store

    @contextlib.contextmanager
    def unfinished_while(self, what: str):
        """Marks the store unfinished while the block runs (``what``: the work, in messages):
        :meth:`open` refuses it unless the block ends without an exception. For a build of
        many appends, each committed alone, whose interruption left a store that read as
        complete with the bags written so far."""
        if not self._writable or self._view:
            raise ValueError(f"{self._path}: only the writable handle of a whole store can be marked unfinished")
        self._group.attrs[UNFINISHED] = what
        yield self
        del self._group.attrs[UNFINISHED]

    def _check_meta(self, meta):
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("not a bag store written by lfagg.BagStore")
        version = meta.get("version")
        if not is_int(version) or version < 1:
            raise ValueError(f"damaged bag store (format version {version!r})")
        if version > FORMAT_VERSION:
            raise ValueError(f"bag store format {version}; this lfagg reads format {FORMAT_VERSION}: upgrade lfagg")
        dim, n_bags = meta.get("dim"), meta.get("n_bags")
        if meta.get("dtype") not in ("float32", "float64") or meta.get("labels") not in (None, *LABEL_DTYPES) \
                or not isinstance(meta.get("names"), bool) or not isinstance(meta.get("uid", ""), str) or not all(
                is_int(v) and v >= lo for v, lo in ((dim, 1), (n_bags, 0))):
            raise ValueError(f"damaged bag store metadata {meta}")
        return dict(meta)

    def _array(self, name):
        try:
            return self._group[name]
        except KeyError:
            raise ValueError(f"damaged bag store: no '{name}' array") from None

    def _read_offsets(self) -> np.ndarray:
        n_bags = self._meta["n_bags"]
        if self._offsets_array.shape[0] < n_bags + 1:
            raise ValueError(f"damaged bag store: {n_bags} bags but {self._offsets_array.shape[0]} offsets")
        try:
            offsets = np.asarray(self._offsets_array[:n_bags + 1], dtype=np.int64)
        except Exception as exc:  # a garbled chunk fails in the decompressor's terms (RuntimeError)
            raise ValueError(f"damaged bag store, its offsets cannot be read ({type(exc).__name__}: {exc})") from None
        if (offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > self._features.shape[0]
                or self._features.shape[1] != self._meta["dim"] or self._features.dtype != self._meta["dtype"]):
            raise ValueError(f"damaged bag store: its offsets disagree with its features {self._features.shape}")
        return offsets

    # -- appending ---------------------------------------------------------------------
    def append(self, bags, labels=None, names=None) -> None:
        """Appends bags (a Bags or a list of (N_i, D) arrays) and, if the store has them,
        their labels and names (the first append decides whether it does, and the kind of
        its labels: integers (stored as int64), whole reals (float64), strings or bools).

        The bags must have the store's dimension and dtype; NaN and infinity are refused.
        Nothing is visible to readers until the whole append is written, and a refused
        append writes nothing.
        """
        if self._view:  # its bags and offsets are a selection: appending through it would rewrite the store's
            raise ValueError(f"{self._path}: a subset view cannot append; append to the store it came from")
        if not self._writable:
            raise ValueError(f"{self._path}: opened read-only (BagStore.open(path, mode='a') to append)")
        with self._append_lock(), _os_error_naming(self._path):
            self._append(bags, labels, names)

    @contextlib.contextmanager
    def _append_lock(self):
        """An exclusive lock (flock) on a local store's folder while an append checks the
        store and writes to it: two processes appending at once take turns, and the second
        finds the first's append and refuses, instead of both writing after the same old
        length. Where the folder cannot be locked (a remote store, Windows, a file system
        without flock) an append is not locked: one writer at a time, as before."""
        folder, fd = self._local_folder(), None
        try:
            if folder is not None and fcntl is not None:
                with contextlib.suppress(OSError):  # a folder gone is found by the append's own checks
                    fd = os.open(folder, os.O_RDONLY)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _append(self, bags, labels, names) -> None:
        """:meth:`append` under its lock."""
        # Another writer's append, or a store created anew at the path, since this handle read
        # it: appending after its old length would leave offsets that disagree with the features.
        written = _zarr().open_group(store=self._group.store, path=self._group.path, mode="r").attrs.get("lfagg")
        if written != self._meta:
            raise ValueError(f"{self._path}: the store changed since this handle read it (another writer appended, "
                             "or it was created anew): open it again to append")
        from ._validation import check_bags

        if isinstance(bags, (list, tuple)) and not bags:  # no arrays to tell D: as no Bags
            bags = Bags(np.zeros((0, self.dim), self.dtype), np.zeros(1, np.int64))
        given, bags = bags, check_bags(as_bags(bags), self.dim, dim_of="the store holds")
        if bags.dtype != self.dtype:  # named as given: integers became float64 on the way
            dtype = np.result_type(*map(np.asarray, given)) if isinstance(given, (list, tuple)) else bags.dtype
            raise ValueError(f"bags are {dtype} but the store holds {self.dtype}: convert them first")
        if len(bags) == 0:  # nothing to write, and no say in whether the store keeps labels or names
            return
        n_old, rows_old = len(self), self.n_features
        has_labels = self._meta["labels"] is not None
        if len(self) and (labels is not None) != has_labels:
            raise ValueError(f"this store {'has' if has_labels else 'has no'} labels: "
                             f"{'give' if has_labels else 'do not give'} labels with every append")
        if len(self) and (names is not None) != self._meta["names"]:
            raise ValueError(f"this store {'has' if self._meta['names'] else 'has no'} bag names: "
                             f"{'give' if self._meta['names'] else 'do not give'} names with every append")
        if labels is not None:
            labels = check_labels(labels, len(bags), "labels")
            kind = "str" if holds_text(labels) else {"b": "bool", "i": "int", "u": "int", "O": "int"}.get(
                labels.dtype.kind, "float")
            check_fits_int64(labels, "labels")
            if has_labels and kind != self._meta["labels"]:
                raise ValueError(f"labels must be of the store's kind ({self._meta['labels']}), got {kind}")
        if names is not None:
            names = check_bag_names(names, len(bags))
        rows_new = rows_old + bags.n_features
        self._features.resize((rows_new, self.dim))
        self._features[rows_old:rows_new] = bags.features
        offsets = np.concatenate([self._offsets, rows_old + bags.offsets[1:]])
        self._offsets_array.resize((offsets.size,))
        self._offsets_array[n_old + 1:] = offsets[n_old + 1:]
        if labels is not None:
            self._append_column("labels", labels.astype(LABEL_DTYPES[kind]), n_old, not has_labels)
        if names is not None:
            self._append_column("names", names, n_old, not self._meta["names"])
        meta = dict(self._meta, n_bags=len(offsets) - 1, labels=kind if labels is not None else self._meta["labels"],
                    names=names is not None or self._meta["names"])
        self._group.attrs["lfagg"] = meta  # the commit: readers see the new bags from here on
        self._meta = meta
        self._set_stored_offsets(offsets)

    def _append_column(self, name, values, n_old, first):
        """``values`` written after the first ``n_old``; ``first``: the store has no such column
        yet (whatever an interrupted append left under that name is replaced). Every chunk is
        written, also one of fill values only (0, False, ''), which Zarr skips by default:
        a missing chunk then reads as damage, not as labels 0."""
        with _zarr().config.set({"array.write_empty_chunks": True}):  # taken when the array is opened
            if first:
                dtype = values.dtype if values.dtype.kind != "U" else str
                self._group.create_array(name, shape=(0,), chunks=(65536,), dtype=dtype, overwrite=True)
            column = self._group[name]
            column.resize((n_old + len(values),))
            column[n_old:] = values

    # -- reading -----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """D, the dimension of the local features."""
        return self._meta["dim"]

    @property
    def dtype(self) -> np.dtype:
        """The features' dtype, float32 or float64."""
        return np.dtype(self._meta["dtype"])

    @property
    def offsets(self) -> np.ndarray:
        """(n_bags + 1,) int64, as Bags.offsets (held in memory: 8 bytes per bag)."""
        return self._offsets

    @property
    def sizes(self) -> np.ndarray:
        """(n_bags,) int64, the number of local features of each bag."""
        return np.diff(self._offsets)

    @property
    def n_features(self) -> int:
        """The number of local features of all the bags."""
        return int(self._offsets[-1])

    @property
    def uid(self):
        """A random hex string drawn when the store was created (None for a store created by an
        earlier lfagg): a store created anew at the same path has another."""
        return self._meta.get("uid")

    @property
    def labels(self):
        """(n_bags,) labels, or None when the store has none."""
        return self._column("labels") if self._meta["labels"] is not None else None

    @property
    def names(self):
        """(n_bags,) str bag names, or None when the store has none."""
        return self._column("names") if self._meta["names"] else None

    def _column(self, name):
        """The labels or names of the bags: ValueError for a damaged column (a missing chunk
        would read as zeros, False or '' where features read as NaN; a garbled one fails in
        the decompressor's terms)."""
        n_bags = self._meta["n_bags"]
        try:
            column = self._array(name)
            if column.shape[0] < n_bags or (self._meta.get("dense_columns")
                                            and column.nchunks_initialized < -(-n_bags // column.chunks[0])):
                raise ValueError("chunks are missing")
            values = np.asarray(column[:n_bags])
        except Exception as exc:
            raise ValueError(f"{self._path}: damaged bag store, its {name} cannot be read ({exc})") from None
        return fixed_width_strings(values)[self._bag_ids]  # as they went in

    def __len__(self) -> int:
        return self._offsets.size - 1

    def __getitem__(self, index):
        """Bag ``index`` as an (N_i, D) array for an int; the bags as a Bags otherwise."""
        if (b := scalar_index(index)) is not None:
            if not -len(self) <= b < len(self):
                raise IndexError(f"bag index {index} out of range for {len(self)} bags")
            return self._read(np.array([b % len(self)])).features
        return self._read(pick_bags(len(self), index))

    def subset(self, indices) -> "BagStore":
        """The bags at ``indices`` (an index array, mask or slice) as a store of their own,
        read lazily: nothing is read until its bags are."""
        chosen = pick_bags(len(self), indices)
        view = object.__new__(BagStore)
        view.__dict__.update(self.__dict__)
        view._view = True
        view._bag_ids = self._bag_ids[chosen]
        view._offsets = np.concatenate([[0], np.cumsum(self.sizes[chosen])]).astype(np.int64)
        return view

    def _read(self, bag_ids: np.ndarray, buffer=None, scratch=False) -> Bags:
        """The bags bag_ids (of this store or view) as Bags, checked finite; a run of
        consecutive bags of the store is read as one slice of rows (into ``buffer``, a
        (rows, D) array, when given and large enough; mapped, read only, with ``scratch``:
        see :meth:`_read_rows`)."""
        from ._validation import first_nonfinite_bag

        stored = self._bag_ids[bag_ids]
        if stored.size and np.all(np.diff(stored) == 1):  # consecutive bags: their offsets, shifted
            offsets = self._stored_offsets[stored[0]:stored[-1] + 2] - self._stored_offsets[stored[0]]
            lo = int(self._stored_offsets[stored[0]])
            features = self._read_rows(lo, lo + int(offsets[-1]), buffer, scratch)
        else:
            rows, offsets = gather_rows(self._stored_offsets[stored], self._stored_sizes[stored])
            features = self._through_zarr(lambda: self._features.get_orthogonal_selection((rows, slice(None)))) \
                if rows.size else np.empty((0, self.dim), self.dtype)
        bags = Bags._trusted(np.ascontiguousarray(features, dtype=self.dtype), offsets)
        bad = first_nonfinite_bag(bags)
        if bad is not None:
            folder = self._local_folder()
            if folder is not None and not os.path.isdir(folder):  # every chunk read as missing: not damage
                raise ValueError(f"{self._path}: the store is not found at {folder} where it is read (a Dask worker "
                                 "must reach the store at the same path)")
            raise ValueError(f"{self._path}: bag {int(stored[bad])} holds NaN or infinity (or its chunk is missing: "
                             "a truncated store)")
        return bags

    def read_subsampled(self, indices, n_per_bag: int, random_state=None) -> Bags:
        """``self[indices].subsample(n_per_bag, random_state)`` (the same draws, the same
        result), reading the bags one at a time and keeping only their sampled rows: what
        one SGD step of the learned encoders reads (eq. 5 of the paper)."""
        n_per_bag = positive_int(n_per_bag, "n_per_bag")
        rng = as_generator(random_state)
        chosen = pick_bags(len(self), indices)
        # Bags.subsample draws bag by bag in order: the same draws, one bag in memory at a time
        parts = [self._read(np.array([b])).subsample(n_per_bag, rng).features for b in chosen]
        offsets = np.zeros(chosen.size + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        features = np.concatenate(parts) if parts else np.empty((0, self.dim), self.dtype)
        return Bags._trusted(features, offsets)

    def _read_rows(self, lo: int, hi: int, buffer=None, scratch=False) -> np.ndarray:
        """Rows [lo, hi) of the features. From a local store of raw chunks (the default:
        no compressor): with ``scratch``, where :meth:`_maps_chunks`, the sealed chunk files
        mapped into memory, read only (no copy); else each chunk file read straight into the
        result (into ``buffer`` when it has room: fresh pages cost as much as the copy), one
        copy, 2-3x faster than through Zarr's buffers. Otherwise through Zarr."""
        if self._chunk_dir is None or hi <= lo:
            return self._through_zarr(lambda: self._features[lo:hi])
        rows = self._features.chunks[0]
        first_chunk, end_chunk = lo // rows, -(-hi // rows)
        if scratch and self._maps_chunks():
            # full chunks below the last complete bag: no append rewrites them
            sealed = int(self._stored_offsets[-1]) // rows
            paths = [self._chunk_path(c) if c < sealed else None for c in range(first_chunk, end_chunk)]
            row_bytes = self.dim * self.dtype.itemsize

            def fill(i, target):
                self._read_chunk(first_chunk + i, max(lo, (first_chunk + i) * rows), target)

            try:
                region = _mapped.map_side_by_side(paths, rows * row_bytes, (lo - first_chunk * rows) * row_bytes,
                                                  (hi - first_chunk * rows) * row_bytes, fill)
                return region.view(self.dtype).reshape(-1, self.dim)
            except OSError:  # out of mappings or memory to map: read them
                pass
        fits = buffer is not None and buffer.shape[0] >= hi - lo
        out = buffer[:hi - lo] if fits else np.empty((hi - lo, self.dim), self.dtype)
        for c in range(first_chunk, end_chunk):
            first, last = max(lo, c * rows), min(hi, (c + 1) * rows)
            self._read_chunk(c, first, memoryview(out[first - lo:last - lo]).cast("B"))
        return out

    def _through_zarr(self, read):
        """``read()`` of features through Zarr; ValueError naming the store for a damaged
        chunk (a garbled compressed one fails in the decompressor's terms, a truncated raw
        one in NumPy's)."""
        try:
            return read()
        except MemoryError:
            raise
        except Exception as exc:
            raise ValueError(f"{self._path}: damaged bag store, its features cannot be read "
                             f"({type(exc).__name__}: {exc})") from None

    def _maps_chunks(self) -> bool:
        """Whether scratch reads map the chunk files in this process (decided where the
        store is read: a Dask worker may differ from the client)."""
        return self._chunk_dir is not None and _mapped.part_bytes_mappable(
            self._features.chunks[0] * self.dim * self.dtype.itemsize)

    def _chunk_path(self, c: int) -> str:
        return os.path.join(self._chunk_dir, str(c), "0")

    def _read_chunk(self, c: int, first: int, target: memoryview) -> None:
        """Rows of chunk c, from the store's row ``first`` on, into ``target`` (bytes); a
        missing or short chunk reads as its fill value, NaN, as through Zarr."""
        try:
            with open(self._chunk_path(c), "rb") as chunk:
                chunk.seek((first - c * self._features.chunks[0]) * self.dim * self.dtype.itemsize)
                complete = chunk.readinto(target) == target.nbytes
        except FileNotFoundError:
            complete = False
        if not complete:
            np.frombuffer(target, self.dtype)[:] = np.nan

    def _local_folder(self):
        """The folder of the store's group when the store is a local one, else None."""
        from zarr.storage import LocalStore

        store = self._group.store
        return os.path.join(str(store.root), self._group.path) if isinstance(store, LocalStore) else None

    def _raw_chunk_dir(self):
        """The directory of the features' chunk files when they can be read directly (a
        local store, raw little-endian chunks, Zarr's default chunk names), else None."""
        from zarr.codecs import BytesCodec
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
        from zarr.storage import LocalStore

        meta, store = self._features.metadata, self._features.store
        if (isinstance(store, LocalStore) and len(meta.codecs) == 1 and isinstance(meta.codecs[0], BytesCodec)
                and meta.codecs[0].endian.value == "little"
                and isinstance(meta.chunk_key_encoding, DefaultChunkKeyEncoding)
                and meta.chunk_key_encoding.separator == "/"):
            return os.path.join(str(store.root), self._features.path, "c")
        return None

    def block_bounds(self, max_features: int) -> list[tuple[int, int]]:
        """(first bag, end bag) of consecutive blocks of bags holding at most
        ``max_features`` features each (a larger bag makes a block of its own)."""
        max_features = positive_int(max_features, "max_features")
        bounds, start = [], 0
        while start < len(self):
            limit = self._offsets[start] + max_features
            end = max(start + 1, int(np.searchsorted(self._offsets, limit, side="right")) - 1)
            bounds.append((start, end))
            start = end
        return bounds

    def blocks(self, max_features: int, scratch: bool = False):
        """The bags as consecutive Bags of at most ``max_features`` features each (see
        :meth:`block_bounds`), read one at a time. (Reading the next block in a thread
        while the caller encodes the current one made encoding slower on two cores,
        where the kernels already use both.)

        scratch : blocks for a caller that only reads each one and is done with it when it
            asks for the next (as the estimators' encodings are): their features are read
            only and, from a local store of raw chunks of at least 1 MiB, on Linux, the
            chunk files are mapped into memory, not copied (a tenth of the cost of reading
            them from the page cache; see :mod:`lfagg._mapped`); otherwise every block is
            read into one buffer, overwritten by the next (fresh pages per block cost as
            much as reading them).
        """
        bounds = self.block_bounds(max_features)
        rows = max((self._offsets[end] - self._offsets[start] for start, end in bounds), default=0)
        buffer = np.empty((rows, self.dim), self.dtype) if scratch and not self._maps_chunks() else None
        for start, end in bounds:
            yield self._scratch_block(start, end, buffer) if scratch else self._read(np.arange(start, end))

    def _scratch_block(self, start: int, end: int, buffer=None) -> Bags:
        """Bags start..end-1 as a read-only block of :meth:`blocks` with ``scratch`` (also
        what a Dask task that encodes a block reads)."""
        block = self._read(np.arange(start, end), buffer, scratch=True)
        block.features.flags.writeable = False
        return block

    def sample_features(self, n: int, random_state=None) -> np.ndarray:
        """(min(n, n_features), D) local features drawn without replacement, in the
        store's order, reading a random subset of the bags (about four times the
        features asked for) rather than all of them; all features when n >= n_features."""
        n = positive_int(n, "n")
        if n >= self.n_features:
            return self[:].features
        rng = as_generator(random_state)
        order = rng.permutation(len(self))
        enough = np.searchsorted(np.cumsum(self.sizes[order]), 4 * n) + 1
        picked = self[np.sort(order[:enough])].features
        return picked[np.sort(rng.choice(len(picked), min(n, len(picked)), replace=False))]

    def block_features(self) -> int:
        """The most features of a block the estimators read at once (BLOCK_BYTES of them)."""
        return max(1, BLOCK_BYTES // (self.dim * self.dtype.itemsize))

    def __repr__(self) -> str:
        return (f"BagStore({self._path!r}, n_bags={len(self)}, n_features={self.n_features}, dim={self.dim}, "
                f"dtype={self.dtype})")


def _write_empty_store(group, dim: int, dtype: np.dtype, chunk_rows: int, compressors) -> None:
    """The arrays and attributes of a store of no bags in the new Zarr ``group`` (see
    :meth:`BagStore.create`)."""
    # Missing chunks (a truncated copy) read as fill values: NaN features and -1 offsets,
    # which the checks of every read refuse, instead of zeros that would pass.
    try:
        group.create_array("features", shape=(0, dim), chunks=(chunk_rows, dim), dtype=dtype, compressors=compressors,
                           fill_value=np.nan)
    except (TypeError, ValueError) as exc:  # Zarr's own words, e.g. for compressors="zstd"
        raise ValueError(f"compressors={compressors!r}: {exc}") from None
    group.create_array("offsets", shape=(1,), chunks=(65536,), dtype=np.int64, fill_value=-1)
    group["offsets"][0] = 0
    # dense_columns: every chunk of labels and names is written (see _append_column), so a
    # missing one is damage; stores of earlier lfagg may lack chunks that held only zeros.
    # uid: this store, not another created at the same path since (stores of earlier lfagg have none)
    group.attrs["lfagg"] = dict(format=FORMAT, version=FORMAT_VERSION, dim=dim, dtype=dtype.name, n_bags=0,
                                labels=None, names=False, dense_columns=True, uid=uuid.uuid4().hex)


@contextlib.contextmanager
def _os_error_naming(path):
    """An OSError of the block with an errno (a read-only or full disk) as one of its type
    naming the store's ``path``: Zarr's names the temporary file it was writing."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, f"{path}: {exc.strerror}") from None


@contextlib.contextmanager
def _removed_if_unfinished(path, existed: bool):
    """What a failed or interrupted :meth:`BagStore.create` wrote at a local ``path``,
    removed: a folder holding only Zarr's group metadata is no bag store, and
    create(overwrite=True) would refuse to replace it. A folder that ``existed`` (empty,
    or a store Zarr has just cleared) stays, emptied."""
    try:
        yield
    except BaseException:
        if not (_is_local(path) and os.path.isdir(path)):
            raise
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for entry in os.scandir(path):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):  # a read-only disk: the error that brought us here is raised
                        os.remove(entry.path)
        raise


def _is_local(path) -> bool:
    """Whether ``path`` names a local file or folder (a str or os.PathLike that is not a URL)."""
    local = os.fspath(path) if isinstance(path, os.PathLike) else path
    return isinstance(local, str) and "://" not in local


def _local_path(path):
    """A local path made absolute, so that the store is found from any working directory (a
    Dask worker's, or after os.chdir: a relative one read missing chunks as damage); a URL
    as it is."""
    return os.path.abspath(os.fspath(path)) if _is_local(path) else path


def _holds_bag_store(folder) -> bool:
    """Whether a local folder's Zarr metadata says it is a bag store (damaged or not)."""
    import json

    try:
        with open(os.path.join(folder, "zarr.json"), encoding="utf-8") as fh:
            meta = json.load(fh)
        return meta["attributes"]["lfagg"]["format"] == FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


#: How :func:`blockwise` maps a function over a store's blocks: None in this process, in
#: order; ``lfagg.dask.encode_on_dask()`` sets a mapper that runs them as Dask tasks.
BLOCK_MAPPER = contextvars.ContextVar("lfagg_block_mapper", default=None)


def check_bag_names(names, n_bags: int) -> np.ndarray:
    """``names`` as an (n_bags,) str array a store can hold; ValueError otherwise."""
    names = np.asarray(names, dtype=str)
    if names.shape != (n_bags,):
        raise ValueError(f"names must hold one name per bag ({n_bags}), got shape {names.shape}")
    try:  # Zarr stores UTF-8: a file name's undecodable bytes (surrogates) have none
        np.char.encode(names, "utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"names must be UTF-8 text, got {exc.object!r}") from None
    return names


def blockwise(bags, fn) -> np.ndarray:
    """``fn(bags)`` for in-memory Bags; for a BagStore, ``fn`` of each of its blocks
    (:meth:`BagStore.block_features` features at most), the (n_block, ...) results stacked:
    how the estimators encode a store in O(block) memory."""
    if not isinstance(bags, BagStore):
        return fn(bags)
    if len(bags) == 0:  # no blocks: fn of no bags gives the (0, ...) result
        return fn(Bags._trusted(np.empty((0, bags.dim), bags.dtype), np.zeros(1, dtype=np.int64)))
    mapper = BLOCK_MAPPER.get()
    if mapper is not None:
        return np.concatenate(mapper(fn, bags))
    return np.concatenate([fn(block) for block in bags.blocks(bags.block_features(), scratch=True)])
