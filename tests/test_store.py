"""lfagg.BagStore (Zarr v3 on disk) against the in-memory Bags it stores: round trips,
indexing, blocks, samples, an interrupted append, damaged or foreign stores, and every
estimator fitted and applied from a store equal to the same fit in memory."""

import json
import mmap
import shutil

import numpy as np
import pytest

pytest.importorskip("zarr")

import lfagg  # noqa: E402
import lfagg._mapped  # noqa: E402
import lfagg.store  # noqa: E402
from lfagg.datasets import make_circles_bags  # noqa: E402

SIZES = (3, 0, 7, 100, 2, 0, 41, 1)


def ragged(seed=0, sizes=SIZES, dim=5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return lfagg.Bags.from_arrays([rng.normal(size=(n, dim)).astype(dtype) for n in sizes])


def build(path, bags, labels=None, names=None, pieces=(0, 2, 5), chunk_rows=16):
    store = lfagg.BagStore.create(path, dim=bags.dim, dtype=bags.dtype, chunk_rows=chunk_rows)
    for lo, hi in zip(pieces, list(pieces[1:]) + [len(bags)]):
        store.append(bags[lo:hi], None if labels is None else labels[lo:hi], None if names is None else names[lo:hi])
    return store


def assert_same_bags(a, b):
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.offsets, b.offsets)


def test_round_trip_and_indexing(tmp_path):
    bags = ragged()
    labels, names = np.arange(len(bags)) % 3, [f"video{i}" for i in range(len(bags))]
    build(tmp_path / "s.zarr", bags, labels, names)
    store = lfagg.BagStore.open(tmp_path / "s.zarr")
    assert len(store) == len(bags) and store.dim == 5 and store.dtype == np.float32
    assert store.n_features == bags.n_features
    np.testing.assert_array_equal(store.offsets, bags.offsets)
    np.testing.assert_array_equal(store.labels, labels)
    assert store.names.tolist() == names
    for i in range(-len(bags), len(bags)):
        np.testing.assert_array_equal(store[i], bags[i])
    for index in (slice(1, 5), slice(None), [6, 0, 3, 3], np.arange(len(bags)) % 2 == 0, slice(None, None, 3)):
        assert_same_bags(store[index], bags[index])
    with pytest.raises(IndexError):
        store[len(bags)]


@pytest.mark.parametrize("labels", [np.array([True, False] * 4), np.array([0.0, 2, -1, 3, 0, 1, 1, 7]),
                                    np.array([2 ** 40, 3, 0, 1, 5, 6, 9, 8], dtype=np.uint64),
                                    np.array(["cat", "dog", "ant", "bee", "a", "b", "c", "d"]),
                                    # only fill values, which Zarr skips writing by default: a store
                                    # once read them back as "damaged"
                                    np.zeros(8, dtype=np.int64), np.zeros(8, dtype=bool)])
def test_labels_come_back_as_they_went_in(tmp_path, labels):
    """Values and kind (bool, float, integer, str), across appends and a reopening."""
    bags = ragged(8)
    build(tmp_path / "s.zarr", bags, labels)
    stored = lfagg.BagStore.open(tmp_path / "s.zarr").labels
    assert stored.dtype.kind == {"u": "i"}.get(labels.dtype.kind, labels.dtype.kind)
    np.testing.assert_array_equal(stored, labels)


def test_a_store_with_string_labels_trains_and_scores_a_classifier(tmp_path):
    """Zarr reads them as numpy's variable-width strings, which the estimators refused and
    scikit-learn's metrics (score) still do: the store returns fixed-width ones."""
    store = build(tmp_path / "s.zarr", ragged(8), np.array(["cat", "dog"] * 4))
    for model in (lfagg.BagClassifier(lfagg.BagOfWords(2, random_state=0)), lfagg.LearnedBoW(2, n_epochs=1)):
        model.fit(store, store.labels)
        np.testing.assert_array_equal(model.classes_, ["cat", "dog"])
        assert 0 <= model.score(store, store.labels) <= 1


def test_an_empty_append_decides_nothing_and_object_integer_labels_stay_integers(tmp_path):
    """An append of no bags once fixed whether the store had labels (a float kind from []) and
    names, so a later append without them left a store read as damaged; object arrays of
    integers (pandas') were stored as strings."""
    bags = ragged(0)
    store = lfagg.BagStore.create(tmp_path / "s.zarr", dim=bags.dim)
    store.append(bags[:0], labels=[], names=[])
    store.append([])  # no arrays either: as no Bags (it was "arrays must hold at least one bag")
    store.append(bags[:2])
    reopened = lfagg.BagStore.open(tmp_path / "s.zarr", mode="a")
    assert len(reopened) == 2 and reopened.labels is None and reopened.names is None
    other = lfagg.BagStore.create(tmp_path / "o.zarr", dim=bags.dim)
    other.append(bags[:2], labels=np.array([0, 1], dtype=object))
    other.append(bags[2:4], labels=np.array([1, 0]))
    np.testing.assert_array_equal(lfagg.BagStore.open(tmp_path / "o.zarr").labels, [0, 1, 1, 0])
    assert lfagg.BagStore.open(tmp_path / "o.zarr").labels.dtype == np.int64


def test_a_handle_that_missed_another_writers_append_or_a_new_store_refuses_to_append(tmp_path):
    """It appended after its own old length: over the other writer's bags' features, with
    offsets that disagreed with them."""
    bags, path = ragged(1), tmp_path / "s.zarr"
    first = lfagg.BagStore.create(path, dim=bags.dim, dtype=bags.dtype)
    first.append(bags[:2], labels=[0, 1])
    second = lfagg.BagStore.open(path, mode="a")
    second.append(bags[2:4], labels=[1, 0])
    with pytest.raises(ValueError, match="the store changed since this handle read it"):
        first.append(bags[4:5], labels=[0])
    np.testing.assert_array_equal(lfagg.BagStore.open(path)[3], bags[3])  # the other writer's bags intact
    lfagg.BagStore.create(path, dim=bags.dim, overwrite=True)
    with pytest.raises(ValueError, match="created anew"):
        second.append(bags[4:5], labels=[0])
    assert len(lfagg.BagStore.open(path)) == 0


def test_empty_names_come_back(tmp_path):
    build(tmp_path / "s.zarr", ragged(8), names=[""] * 8)  # fill values only: a chunk Zarr would skip
    assert lfagg.BagStore.open(tmp_path / "s.zarr").names.tolist() == [""] * 8


def test_unsigned_labels_beyond_int64_are_refused(tmp_path):
    store = lfagg.BagStore.create(tmp_path / "s.zarr", dim=5)
    with pytest.raises(ValueError, match="labels must fit in int64"):
        store.append(ragged(sizes=(3, 1)), labels=np.array([2 ** 63 + 5, 1], dtype=np.uint64))
    assert store.labels is None and len(store) == 0


def test_a_0_d_integer_array_indexes_one_bag(tmp_path):
    bags = ragged()
    store = build(tmp_path / "s.zarr", bags)
    np.testing.assert_array_equal(store[np.array(1)], bags[1])


@pytest.mark.parametrize("bad", [True, None, np.array([[0, 1]])])
def test_an_index_that_is_not_one_dimensional_is_an_index_error(tmp_path, bad):
    store = build(tmp_path / "s.zarr", ragged())
    for pick in (store.__getitem__, store.subset, lambda i: store.read_subsampled(i, 2)):
        with pytest.raises(IndexError, match="bags are picked by"):
            pick(bad)


def test_a_compressed_store_reads_the_same_through_zarr(tmp_path):
    bags = ragged(9)
    raw = build(tmp_path / "raw.zarr", bags)
    packed = lfagg.BagStore.create(tmp_path / "packed.zarr", dim=5, chunk_rows=16, compressors="auto")
    packed.append(bags)
    assert raw._chunk_dir is not None and packed._chunk_dir is None
    for index in (slice(None), slice(3, 7), [7, 2, 3]):
        assert_same_bags(packed[index], raw[index])
    assert_same_bags(lfagg.Bags.from_arrays([b for block in packed.blocks(20, scratch=True)
                                             for b in block.subset(slice(None))]), bags)


def test_a_store_at_a_url(tmp_path):
    pytest.importorskip("fsspec")
    bags = ragged(10)
    url = f"memory://lfagg-tests/{tmp_path.name}/s.zarr"  # fsspec's in-memory file system
    store = lfagg.BagStore.create(url, dim=5)
    store.append(bags, labels=np.arange(len(bags)))
    opened = lfagg.BagStore.open(url)
    assert opened._chunk_dir is None  # read through Zarr and fsspec
    assert_same_bags(opened[:], bags)
    np.testing.assert_array_equal(opened.labels, np.arange(len(bags)))
    with pytest.raises(ValueError, match="not a bag store"):
        lfagg.BagStore.open(url.replace("s.zarr", "missing.zarr"))


#: The tests of mapped reads: their chunks are whole 4 KiB pages (5 for 20 KiB).
MAPPING = pytest.mark.skipif(not lfagg._mapped.AVAILABLE or mmap.PAGESIZE != 4096,
                             reason="chunk files are mapped on Linux only, here in 4 KiB pages")


def mapped_files(path):
    """How many of this process's memory mappings are of files under ``path``."""
    with open("/proc/self/maps") as maps:
        return sum(str(path) in line for line in maps)


@MAPPING
def test_scratch_blocks_map_the_chunk_files_read_only(tmp_path, monkeypatch):
    """The estimators' blocks (scratch) map a local store's chunk files instead of copying
    them: equal to the bags, read only, unmapped once dropped, unchanged by a later append;
    the last (unsealed) chunk, a short chunk and a missing one read as through a copy."""
    bags = ragged(3, sizes=(700, 0, 1500, 3, 900, 10))  # float32 x 5: a 1024-row chunk is 5 pages
    path = tmp_path / "m.zarr"
    store = build(path, bags, chunk_rows=1024)
    assert not store._maps_chunks()  # 20 KiB chunks: not worth a mapping each
    monkeypatch.setattr(lfagg._mapped, "MIN_PART_BYTES", 4096)
    assert store._maps_chunks()

    copies = [lfagg.Bags(block.features.copy(), block.offsets) for block in store.blocks(1600, scratch=True)]
    assert_same_bags(lfagg.Bags.from_arrays([b for block in copies for b in block.subset(slice(None))]), bags)
    block = store._scratch_block(2, 5)  # from the middle of chunk 0 into the unsealed chunk 3
    assert_same_bags(block, bags[2:5])
    assert mapped_files(path) == 3  # chunks 0-2 are sealed and mapped (0 whole), 3 is read
    assert not block.features.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        block.features[0] = 0
    region = block.features
    while region.base is not None and isinstance(region.base, np.ndarray):
        region = region.base
    for array in (block.features, region):  # not even the whole mapped region can be made writable
        with pytest.raises(ValueError):
            array.setflags(write=True)
    assert store[2].flags.writeable  # what users index is theirs to change
    lfagg.BagStore.open(path, mode="a").append(ragged(4, sizes=(1500,)))  # rewrites chunk 3 and on
    assert_same_bags(block, bags[2:5])
    del block, region, array
    assert mapped_files(path) == 0
    (path / "features" / "c" / "1" / "0").write_bytes(b"\0" * 100)  # short: rows 1024-2047, bag 2
    (path / "features" / "c" / "0" / "0").unlink()  # missing: bag 0
    damaged = lfagg.BagStore.open(path)
    for bag in (0, 2):
        with pytest.raises(ValueError, match=f"bag {bag} holds NaN or infinity \\(or its chunk is missing"):
            damaged._scratch_block(bag, bag + 1)
    np.testing.assert_array_equal(damaged._scratch_block(3, 5).features, bags[3:5].features)
    assert mapped_files(path) == 0


@MAPPING
def test_a_failed_mapped_read_unmaps_at_once_and_a_failed_mapping_reads(tmp_path, monkeypatch):
    bags = ragged(4, sizes=(3000, 500, 2000))
    path = tmp_path / "m.zarr"
    store = build(path, bags, chunk_rows=1024)
    monkeypatch.setattr(lfagg._mapped, "MIN_PART_BYTES", 4096)

    def failing(c, first, target):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(store, "_read_chunk", failing)  # the unsealed chunk 5 is read, and fails
    with pytest.raises(RuntimeError, match="disk gone") as failure:
        store._scratch_block(0, 3)
    assert failure.value is not None and mapped_files(path) == 0  # the exception does not hold the mappings
    monkeypatch.undo()
    monkeypatch.setattr(lfagg._mapped, "MIN_PART_BYTES", 4096)

    def out_of_mappings(*args):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(lfagg._mapped, "_map", out_of_mappings)
    assert_same_bags(store._scratch_block(0, 3), bags)  # read instead
    assert mapped_files(path) == 0


def test_a_zarr_without_atomic_writes_is_refused(tmp_path, monkeypatch):
    import zarr

    monkeypatch.setattr(zarr, "__version__", "3.1.2")
    with pytest.raises(ImportError, match=r"needs zarr >= 3.1.3"):
        lfagg.BagStore.create(tmp_path / "s.zarr", dim=3)


def test_subsets_read_lazily_and_index_like_bags(tmp_path):
    bags = ragged(1)
    store = build(tmp_path / "s.zarr", bags, labels=np.arange(len(bags)))
    view = store.subset([7, 3, 1, 6])
    assert len(view) == 4 and view.n_features == bags.subset([7, 3, 1, 6]).n_features
    assert_same_bags(view[:], bags[[7, 3, 1, 6]])
    assert_same_bags(view[[2, 0]], bags[[1, 7]])
    np.testing.assert_array_equal(view.labels, [7, 3, 1, 6])
    # No view appends, also one of the store's length (which once rewrote the store's bags
    # with the view's offsets and left it unreadable): the store stays as it was.
    for view in (view, store.subset(slice(None)), store.subset(np.zeros(len(bags), dtype=int))):
        with pytest.raises(ValueError, match="a subset view cannot append"):
            view.append(bags[:1], labels=[0])
    assert_same_bags(lfagg.BagStore.open(tmp_path / "s.zarr")[:], bags)


@pytest.mark.parametrize("max_features", [1, 10, 50, 10_000])
def test_blocks_cover_the_bags_in_order_within_the_limit(tmp_path, max_features):
    bags = ragged(2)
    store = build(tmp_path / "s.zarr", bags)
    blocks = list(store.blocks(max_features))
    for block in blocks:
        assert block.n_features <= max_features or len(block) == 1
    assert sum(len(b) for b in blocks) == len(bags)
    assert_same_bags(lfagg.Bags.from_arrays([bag for block in blocks for bag in block]), bags)


def test_subsampled_reads_equal_subsampling_the_bags(tmp_path):
    bags = ragged(8)
    store = build(tmp_path / "s.zarr", bags)
    for n_per_bag in (1, 5, 1000):
        expected = bags[[6, 3, 1, 3]].subsample(n_per_bag, np.random.default_rng(9))
        assert_same_bags(store.read_subsampled([6, 3, 1, 3], n_per_bag, np.random.default_rng(9)), expected)


def test_feature_samples(tmp_path):
    bags = ragged(3, sizes=[50] * 40)
    store = build(tmp_path / "s.zarr", bags, pieces=(0,))
    np.testing.assert_array_equal(store.sample_features(10 ** 6), bags.features)
    sample = store.sample_features(100, random_state=7)
    assert sample.shape == (100, 5)
    rows = {row.tobytes() for row in bags.features}
    assert all(row.tobytes() in rows for row in sample) and len({r.tobytes() for r in sample}) == 100
    np.testing.assert_array_equal(store.sample_features(100, random_state=7), sample)


@pytest.mark.parametrize("first, then", [(["cat"], [3, 7]), ([3], ["a", "b"])])
def test_an_interrupted_first_labelled_append_leaves_no_column_of_the_wrong_kind(tmp_path, monkeypatch, first, then):
    bags = ragged(4)
    store = lfagg.BagStore.create(tmp_path / "s.zarr", dim=bags.dim)

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # the labels column is written, the commit is not
        patch.setattr(type(store._group.attrs), "__setitem__", crash)
        with pytest.raises(KeyboardInterrupt):
            store.append(bags[:1], labels=first)
    store = lfagg.BagStore.open(tmp_path / "s.zarr", mode="a")
    store.append(bags[:2], labels=then)
    labels = lfagg.BagStore.open(tmp_path / "s.zarr").labels
    np.testing.assert_array_equal(labels, then)
    assert labels.dtype.kind == np.asarray(then).dtype.kind


def test_an_interrupted_append_leaves_the_last_complete_bag(tmp_path, monkeypatch):
    bags = ragged(4)
    store = build(tmp_path / "s.zarr", bags[:4], labels=np.arange(4), pieces=(0,))

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # the features, offsets and labels are written; the commit is not
        patch.setattr(type(store._group.attrs), "__setitem__", crash)
        with pytest.raises(KeyboardInterrupt):
            store.append(bags[4:], labels=np.arange(4, len(bags)))
    reopened = lfagg.BagStore.open(tmp_path / "s.zarr", mode="a")
    assert len(reopened) == 4
    assert_same_bags(reopened[:], bags[:4])
    reopened.append(bags[4:], labels=np.arange(4, len(bags)))
    final = lfagg.BagStore.open(tmp_path / "s.zarr")
    assert_same_bags(final[:], bags)
    np.testing.assert_array_equal(final.labels, np.arange(len(bags)))


BAD_APPENDS = {
    "another dimension": (lambda b: lfagg.Bags(b.features[:, :3].copy(), b.offsets), {},
                          "dimension 3, but the store holds dimension"),
    "another dtype": (lambda b: lfagg.Bags(b.features.astype(np.float64), b.offsets), {}, "float64"),
    "integers": (lambda b: [np.ones((3, b.dim), np.int64)] * len(b), {}, "bags are int64 but the store holds float32"),
    "NaN": (lambda b: lfagg.Bags(np.where(np.arange(b.n_features)[:, None] == 5, np.nan, b.features)
                                 .astype(np.float32), b.offsets), {}, "NaN"),
    "labels missing": (lambda b: b, dict(labels=None), "has labels"),
    "labels of another kind": (lambda b: b, dict(labels="strings"), "kind"),
    "labels too few": (lambda b: b, dict(labels=[0]), "labels must be a 1-D array with one label per bag"),
    "names not kept": (lambda b: b, dict(names=["x"] * 8), "no bag names"),
}


@pytest.mark.parametrize("case", list(BAD_APPENDS))
def test_a_refused_append_leaves_the_store_as_it_was(tmp_path, case):
    change, kwargs, message = BAD_APPENDS[case]
    bags = ragged(5)
    store = build(tmp_path / "s.zarr", bags, labels=np.arange(len(bags)), pieces=(0,))
    labels = kwargs.get("labels", np.arange(len(bags)))
    if isinstance(labels, str):
        labels = np.array([f"c{i}" for i in range(len(bags))])
    with pytest.raises(ValueError, match=message):
        store.append(change(bags), labels=labels, names=kwargs.get("names"))
    reopened = lfagg.BagStore.open(tmp_path / "s.zarr")
    assert_same_bags(reopened[:], bags)


def edit_meta(path, **changes):
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["lfagg"].update(changes)
    meta_file.write_text(json.dumps(meta))


def test_missing_foreign_newer_or_damaged_stores_are_named(tmp_path):
    with pytest.raises(ValueError, match="none.zarr: not a bag store"):
        lfagg.BagStore.open(tmp_path / "none.zarr")
    import zarr

    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(ValueError, match="plain.zarr: not a bag store written by lfagg"):
        lfagg.BagStore.open(tmp_path / "plain.zarr")
    (tmp_path / "file.zarr").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="file.zarr: not a bag store"):
        lfagg.BagStore.open(tmp_path / "file.zarr")
    bags = ragged(6)
    for name, changes, message in (("newer", dict(version=99), "upgrade lfagg"),
                                   ("more bags", dict(n_bags=50), "damaged bag store"),
                                   ("bad dtype", dict(dtype="int8"), "damaged bag store metadata"),
                                   ("boolean version", dict(version=True), "format version True"),
                                   ("boolean dim", dict(dim=True), "damaged bag store metadata")):
        build(tmp_path / f"{name}.zarr", bags)
        edit_meta(tmp_path / f"{name}.zarr", **changes)
        with pytest.raises(ValueError, match=message):
            lfagg.BagStore.open(tmp_path / f"{name}.zarr")
    store = build(tmp_path / "offsets.zarr", bags)
    store._offsets_array[3] = 10 ** 6  # offsets past the features
    with pytest.raises(ValueError, match="offsets disagree with its features"):
        lfagg.BagStore.open(tmp_path / "offsets.zarr")
    store = build(tmp_path / "nan.zarr", bags)
    store._features[110] = np.nan  # bag 4, written behind lfagg's back: found when read
    with pytest.raises(ValueError, match=r"nan.zarr: bag 4 holds NaN"):
        lfagg.LearnedBoW(3, n_epochs=1).fit(lfagg.BagStore.open(tmp_path / "nan.zarr"), np.arange(8) % 2)
    with pytest.raises(ValueError, match="read-only"):
        lfagg.BagStore.open(tmp_path / "nan.zarr").append(bags)
    build(tmp_path / "truncated.zarr", bags)
    (tmp_path / "truncated.zarr" / "features" / "c" / "2" / "0").unlink()  # rows 32-47: bag 3
    truncated = lfagg.BagStore.open(tmp_path / "truncated.zarr")
    np.testing.assert_array_equal(truncated[2], bags[2])
    with pytest.raises(ValueError, match="bag 3 holds NaN or infinity \\(or its chunk is missing"):
        truncated[3]
    with pytest.raises(ValueError, match="already exists"):
        lfagg.BagStore.create(tmp_path / "nan.zarr", dim=5)


def test_missing_or_garbled_offsets_labels_and_names_are_a_damaged_store(tmp_path):
    """A missing labels or names chunk read as zeros or '' (silently wrong labels); a garbled
    compressed one failed in the decompressor's terms (RuntimeError)."""
    bags = ragged(6)
    for column in ("labels", "names"):
        build(tmp_path / f"no-{column}.zarr", bags, labels=np.arange(len(bags)) + 3, names=[f"b{i}" for i in range(8)])
        (tmp_path / f"no-{column}.zarr" / column / "c" / "0").unlink()
        store = lfagg.BagStore.open(tmp_path / f"no-{column}.zarr")
        with pytest.raises(ValueError, match=f"no-{column}.zarr: damaged bag store, its {column} cannot be read"):
            getattr(store, column)
        build(tmp_path / f"bad-{column}.zarr", bags, labels=np.arange(len(bags)) + 3, names=[f"b{i}" for i in range(8)])
        (tmp_path / f"bad-{column}.zarr" / column / "c" / "0").write_bytes(b"garbage")
        with pytest.raises(ValueError, match=f"damaged bag store, its {column} cannot be read"):
            getattr(lfagg.BagStore.open(tmp_path / f"bad-{column}.zarr"), column)
        shutil.rmtree(tmp_path / f"bad-{column}.zarr" / column)  # the whole array gone: the path named too
        with pytest.raises(ValueError, match=f"bad-{column}.zarr: damaged bag store, its {column} cannot be read"):
            getattr(lfagg.BagStore.open(tmp_path / f"bad-{column}.zarr"), column)
    build(tmp_path / "bad-offsets.zarr", bags)
    (tmp_path / "bad-offsets.zarr" / "offsets" / "c" / "0").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad-offsets.zarr: damaged bag store, its offsets cannot be read"):
        lfagg.BagStore.open(tmp_path / "bad-offsets.zarr")


def test_names_that_are_not_utf8_are_refused_before_anything_is_written(tmp_path):
    store = lfagg.BagStore.create(tmp_path / "s.zarr", dim=5)
    with pytest.raises(ValueError, match="names must be UTF-8 text"):
        store.append(ragged(0)[:2], names=["a", "b\udcff"])  # a file name's undecodable byte
    assert len(lfagg.BagStore.open(tmp_path / "s.zarr")) == 0


ESTIMATORS = {
    "LearnedBoW": lambda: lfagg.LearnedBoW(4, n_epochs=2, validation_fraction=0.2, n_samples_per_bag=10,
                                           random_state=0),
    "LearnedVLAD": lambda: lfagg.LearnedVLAD(3, n_epochs=2, init="gmm", random_state=0),
    "BagClassifier-FV": lambda: lfagg.BagClassifier(lfagg.FisherVector(3, random_state=0), random_state=0),
    "BagClassifier-BoW": lambda: lfagg.BagClassifier(lfagg.BagOfWords(8, random_state=0), random_state=0),
    "BagClassifier-VLAD": lambda: lfagg.BagClassifier(lfagg.VLAD(3, assignment="soft", random_state=0),
                                                      random_state=0),
}


@pytest.fixture(scope="module", params=[100, 256], ids=["copied", "mapped"])
def circles_store(request, tmp_path_factory):
    """Circles in a store whose chunks the estimators read into a buffer (100 rows) or map
    (256 rows of float64 x 2: a page, where mapping is available and the test lowers
    MIN_PART_BYTES to a page)."""
    bags, y = make_circles_bags(80, 30, random_state=0)
    path = tmp_path_factory.mktemp("store") / "circles.zarr"
    build(path, bags, labels=y, pieces=(0, 25, 50, 75), chunk_rows=request.param)
    return bags, y, lfagg.BagStore.open(path)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_fits_from_a_store_equal_fits_in_memory(name, circles_store, monkeypatch):
    bags, y, store = circles_store
    monkeypatch.setattr(lfagg.store, "BLOCK_BYTES", 2000)  # blocks of ~125 features: many blocks
    monkeypatch.setattr(lfagg._mapped, "MIN_PART_BYTES", 4096)  # map the "mapped" store's one-page chunks
    in_memory = ESTIMATORS[name]().fit(bags, y)
    streamed = ESTIMATORS[name]().fit(store, store.labels)
    test, _ = make_circles_bags(40, 30, random_state=1)
    # Equal up to the summation order of the kernels, which tile a block's rows from its start.
    np.testing.assert_allclose(streamed.predict_proba(test), in_memory.predict_proba(test), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(in_memory.transform(store), in_memory.transform(bags), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(in_memory.predict(store), in_memory.predict(bags))


def test_baseline_transformers_read_a_store(circles_store):
    bags, _, store = circles_store
    for encoder in (lfagg.BagOfWords(4, random_state=0), lfagg.VLAD(3, random_state=0),
                    lfagg.FisherVector(2, random_state=0)):
        np.testing.assert_allclose(encoder.fit(store).transform(store), encoder.fit(bags).transform(bags),
                                   rtol=1e-12, atol=1e-14)


def test_a_store_of_another_dimension_is_named(circles_store, tmp_path):
    bags, y, store = circles_store
    model = lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0)).fit(bags, y)
    other = build(tmp_path / "d3.zarr", ragged(7, dim=3))
    with pytest.raises(ValueError, match="store's local features have dimension 3"):
        model.predict(other)


def test_without_zarr_3_the_store_says_what_to_install_or_that_python_is_too_old(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zarr", None)  # "import zarr" raises ImportError
    with pytest.raises(ImportError, match=r'needs zarr >= 3\.1\.3: pip install "lfagg\[store\]"'):
        lfagg.BagStore.create("unused.zarr", dim=2)
    monkeypatch.setattr(lfagg.store.sys, "version_info", (3, 10, 14))  # the extras install no zarr there
    with pytest.raises(ImportError, match=r"which needs Python >= 3\.11"):
        lfagg.BagStore.open("unused.zarr")


def test_two_appends_at_once_take_turns_and_the_second_refuses(tmp_path, monkeypatch):
    """Both passed the check for another writer's append before either wrote, then both
    wrote after the same old length: the second's bags over the first's features."""
    import threading

    import lfagg._validation as validation

    bags, path = ragged(1), tmp_path / "s.zarr"
    lfagg.BagStore.create(path, dim=bags.dim, dtype=bags.dtype).append(bags[:2])
    first, second = (lfagg.BagStore.open(path, mode="a") for _ in range(2))
    inside, release, check_bags = threading.Event(), threading.Event(), validation.check_bags

    def held_check_bags(*args, **kwargs):  # the first append waits here, between its check and its writes
        inside.set()
        release.wait(10)
        return check_bags(*args, **kwargs)

    monkeypatch.setattr(validation, "check_bags", held_check_bags)
    errors = {}

    def append(name, handle, part):
        try:
            handle.append(part)
        except ValueError as exc:
            errors[name] = str(exc)

    one = threading.Thread(target=append, args=("first", first, bags[2:4]))
    one.start()
    assert inside.wait(10)
    two = threading.Thread(target=append, args=("second", second, bags[4:7]))
    two.start()
    two.join(0.3)
    release.set()
    one.join(10)
    two.join(10)
    assert "first" not in errors and "the store changed since this handle read it" in errors.get("second", "")
    stored = lfagg.BagStore.open(path)
    assert len(stored) == 4
    for i in range(4):
        np.testing.assert_array_equal(stored[i], bags[i])


def test_a_handle_refuses_to_append_to_a_store_created_anew_with_the_same_metadata(tmp_path):
    """The same D, dtype, number of bags and label kind: the metadata compared equal, and
    the append wrote after the old length, leaving the new store damaged."""
    path, bags = tmp_path / "s.zarr", ragged(1)
    lfagg.BagStore.create(path, dim=bags.dim, dtype=bags.dtype).append(bags[:3], labels=[0, 1, 0])
    writer = lfagg.BagStore.open(path, mode="a")
    lfagg.BagStore.create(path, dim=bags.dim, dtype=bags.dtype, overwrite=True).append(bags[3:6], labels=[1, 1, 0])
    with pytest.raises(ValueError, match="created anew"):
        writer.append(bags[6:7], labels=[1])
    reread = lfagg.BagStore.open(path)
    assert reread.uid != writer.uid and len(reread) == 3
    np.testing.assert_array_equal(reread[2], bags[5])


def test_overwrite_replaces_a_store_or_an_empty_folder_never_another_folder_or_a_file(tmp_path):
    """A folder of the user's files given as the path was emptied by overwrite=True
    (``lfagg store build --out ~/thesis --overwrite``)."""
    bags = ragged(1)
    folder = tmp_path / "thesis"
    (folder / "photos").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="a folder that is not a bag store: it is not replaced"):
        lfagg.BagStore.create(folder, dim=bags.dim, overwrite=True)
    assert (folder / "thesis.tex").read_text() == "years of work" and (folder / "photos").is_dir()
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(ValueError, match="a file that is not a bag store: it is not replaced"):
        lfagg.BagStore.create(tmp_path / "file.zarr", dim=bags.dim, overwrite=True)
    (tmp_path / "empty").mkdir()
    store = lfagg.BagStore.create(tmp_path / "s.zarr", dim=bags.dim)
    store.append(bags[:2])
    for path in (tmp_path / "empty", tmp_path / "s.zarr"):
        assert len(lfagg.BagStore.create(path, dim=bags.dim, overwrite=True)) == 0


def test_a_create_that_fails_part_way_leaves_nothing_that_blocks_the_next(tmp_path, monkeypatch):
    """compressors="zstd" (Zarr wants a codec) raised Zarr's TypeError after the group's
    metadata was written: a folder that open() and create(overwrite=True) both refused."""
    import zarr

    bags = ragged(1)
    path = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match="compressors='zstd': "):
        lfagg.BagStore.create(path, dim=bags.dim, compressors="zstd")
    assert not path.exists()
    (tmp_path / "empty").mkdir()  # a folder of the user's, given to be overwritten: it stays, empty
    with pytest.raises(ValueError, match="compressors"):
        lfagg.BagStore.create(tmp_path / "empty", dim=bags.dim, compressors="zstd", overwrite=True)
    assert list((tmp_path / "empty").iterdir()) == []
    create_array = zarr.Group.create_array

    def interrupted(self, name, **kwargs):
        if name == "offsets":
            raise KeyboardInterrupt
        return create_array(self, name, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(zarr.Group, "create_array", interrupted)
        with pytest.raises(KeyboardInterrupt):
            lfagg.BagStore.create(path, dim=bags.dim)
    assert not path.exists()
    lfagg.BagStore.create(path, dim=bags.dim, dtype=bags.dtype).append(bags[:2])
    np.testing.assert_array_equal(lfagg.BagStore.open(path)[1], bags[1])
    (tmp_path / "link.zarr").symlink_to(path)  # Zarr refuses to clear a link: the store it points to stays
    with pytest.raises(OSError, match="symbolic link"):
        lfagg.BagStore.create(tmp_path / "link.zarr", dim=bags.dim, overwrite=True)
    assert len(lfagg.BagStore.open(path)) == 2


def test_a_read_only_disk_is_an_os_error_naming_the_store(tmp_path, monkeypatch):
    """On a read-only file system `append` and `create` raised Zarr's OSError naming its
    temporary ``.partial`` file; the store as it was stays readable."""
    import errno

    import zarr.storage

    bags = ragged(2)
    store = build(tmp_path / "s.zarr", bags, pieces=(0,))

    async def read_only(self, key, value, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", f"{key}.partial")

    with monkeypatch.context() as patch:
        patch.setattr(zarr.storage.LocalStore, "set", read_only)
        with pytest.raises(OSError, match=r"s\.zarr: Read-only file system$"):
            store.append(bags)
        with pytest.raises(OSError, match=r"t\.zarr: Read-only file system$"):
            lfagg.BagStore.create(tmp_path / "t.zarr", dim=bags.dim)
    assert not (tmp_path / "t.zarr").exists()
    assert_same_bags(lfagg.BagStore.open(tmp_path / "s.zarr")[:], bags)


def test_a_store_opened_by_a_relative_path_reads_from_any_working_directory(tmp_path, monkeypatch):
    """The path stayed relative: after a change of directory (or on a Dask worker started
    elsewhere) every chunk read as missing, reported as a truncated store."""
    import pickle

    bags = ragged(1)
    monkeypatch.chdir(tmp_path)
    lfagg.BagStore.create("s.zarr", dim=bags.dim, dtype=bags.dtype).append(bags[:4], labels=[0, 1, 0, 1])
    store = lfagg.BagStore.open("s.zarr")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for handle in (store, pickle.loads(pickle.dumps(store))):  # as a Dask worker receives it
        np.testing.assert_array_equal(handle[3], bags[3])
        np.testing.assert_array_equal(handle.labels, [0, 1, 0, 1])


@pytest.mark.parametrize("compressed", [False, True])
def test_a_damaged_chunk_read_through_zarr_names_the_store(tmp_path, compressed):
    """A truncated chunk of a compressed store failed in zstd's words (a RuntimeError, a
    traceback from the command line); one of a raw store read as bags 0 and 5 at once, in
    NumPy's ('cannot reshape array')."""
    from zarr.codecs import ZstdCodec

    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(10, 8)).astype(np.float32) for _ in range(12)]
    path = tmp_path / "s.zarr"
    lfagg.BagStore.create(path, dim=8, chunk_rows=40, compressors=[ZstdCodec()] if compressed else None).append(bags)
    chunk = path / "features" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:chunk.stat().st_size // 2])
    store = lfagg.BagStore.open(path)
    for read in ((lambda: store[1]) if compressed else (lambda: store[[0, 5]]), lambda: store.sample_features(30, 0)):
        damage = f"{path}: (damaged bag store, its features cannot be read|bag \\d+ holds NaN)"
        with pytest.raises(ValueError, match=damage):
            read()


def test_a_store_gone_from_where_it_is_read_is_named_as_such(tmp_path):
    """A Dask worker that cannot reach the store's path read every chunk as missing and
    blamed bag 0 for NaN (a truncated store)."""
    import shutil

    rng = np.random.default_rng(1)
    lfagg.BagStore.create(tmp_path / "s.zarr", dim=3).append([rng.normal(size=(n, 3)).astype(np.float32)
                                                              for n in (3, 5, 2, 4)])
    store = lfagg.BagStore.open(tmp_path / "s.zarr")
    shutil.move(tmp_path / "s.zarr", tmp_path / "moved.zarr")
    for read in (lambda: store[1], lambda: store[[0, 2]], lambda: list(store.blocks(10, scratch=True))):
        with pytest.raises(ValueError, match="the store is not found at .* where it is read"):
            read()
