"""lfagg.Bags: construction, validation, properties, indexing, subsampling, pickling."""

import pickle

import numpy as np
import pytest

import lfagg
from lfagg import Bags

D = 3


def make_arrays(sizes, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(s, D)).astype(dtype) for s in sizes]


def unique_rows_bags(sizes, dtype=np.float64):
    """Bags whose rows are uniquely identified by column 0 == global row index."""
    n = int(np.sum(sizes))
    f = np.zeros((n, 2), dtype=dtype)
    f[:, 0] = np.arange(n)
    f[:, 1] = -np.arange(n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return Bags(f, offsets), offsets


SIZES = [4, 0, 1, 7, 0, 3]


# ----------------------------------------------------------------------------- construction


def test_exported():
    assert lfagg.Bags is Bags


def test_constructor_basic():
    arrs = make_arrays(SIZES)
    f = np.concatenate(arrs)
    offsets = np.concatenate([[0], np.cumsum(SIZES)])
    bags = Bags(f, offsets)
    assert len(bags) == len(SIZES)
    assert bags.dim == D
    assert bags.n_features == sum(SIZES)
    assert bags.dtype == np.float64
    assert bags.features.shape == (sum(SIZES), D)
    assert bags.features.flags.c_contiguous
    np.testing.assert_array_equal(bags.features, f)
    assert bags.offsets.dtype == np.int64
    assert bags.offsets.shape == (len(SIZES) + 1,)
    np.testing.assert_array_equal(bags.offsets, offsets)
    assert bags.sizes.dtype == np.int64
    np.testing.assert_array_equal(bags.sizes, SIZES)


@pytest.mark.parametrize(
    "in_dtype,out_dtype",
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int32, np.float64),
        (np.int64, np.float64),
        (np.float16, np.float64),
        (np.uint8, np.float64),
    ],
)
def test_constructor_dtypes(in_dtype, out_dtype):
    f = (np.arange(12).reshape(4, 3) % 7).astype(in_dtype)
    bags = Bags(f, np.array([0, 1, 4], dtype=np.int32))
    assert bags.features.dtype == out_dtype
    assert bags.dtype == out_dtype
    assert bags.offsets.dtype == np.int64
    np.testing.assert_array_equal(bags.features, f.astype(out_dtype))


def test_constructor_makes_c_contiguous():
    base = np.arange(40, dtype=np.float64).reshape(10, 4)
    for f in (np.asfortranarray(base), base[:, ::2], base[::2]):
        n = f.shape[0]
        bags = Bags(f, np.array([0, 2, n]))
        assert bags.features.flags.c_contiguous
        np.testing.assert_array_equal(bags.features, f)


def test_constructor_array_like():
    bags = Bags([[1, 2], [3, 4], [5, 6]], [0, 1, 3])
    assert bags.dtype == np.float64
    assert len(bags) == 2
    np.testing.assert_array_equal(bags[1], [[3.0, 4.0], [5.0, 6.0]])


def test_constructor_zero_bags():
    bags = Bags(np.zeros((0, 5)), np.array([0]))
    assert len(bags) == 0
    assert bags.n_features == 0
    assert bags.dim == 5
    assert bags.sizes.shape == (0,)
    assert list(bags) == []


@pytest.mark.parametrize(
    "features,offsets,name",
    [
        (np.ones(6), [0, 6], "features"),
        (np.ones((6, 2, 1)), [0, 6], "features"),
        (np.ones((6, 2)), [1, 6], "offsets"),
        (np.ones((6, 2)), [0, 4, 3, 6], "offsets"),
        (np.ones((6, 2)), [0, 4, 5], "offsets"),
        (np.ones((6, 2)), [0, 4, 7], "offsets"),
        (np.ones((6, 2)), [], r"offsets must be a non-empty 1-D array .* got shape \(0,\)"),
        (np.ones((6, 2)), [[0, 6]], "offsets"),
        (np.ones((6, 2)), np.array([0.0, 6.0]), "offsets"),
        (np.ones((6, 2)), [-1, 6], "offsets"),
        (np.ones((6, 2)), np.array([0, 2 ** 63 + 2, 6], dtype=np.uint64), "offsets must fit in int64"),
    ],
    ids=[
        "features_1d",
        "features_3d",
        "offsets_first_nonzero",
        "offsets_decreasing",
        "offsets_last_too_small",
        "offsets_last_too_big",
        "offsets_empty",
        "offsets_2d",
        "offsets_float",
        "offsets_negative",
        "offsets_beyond_int64",
    ],
)
def test_constructor_errors(features, offsets, name):
    with pytest.raises(ValueError, match=name):
        Bags(features, offsets)


# ----------------------------------------------------------------------------- from_arrays


def test_from_arrays_basic():
    arrs = make_arrays(SIZES)
    bags = Bags.from_arrays(arrs)
    assert len(bags) == len(SIZES)
    np.testing.assert_array_equal(bags.sizes, SIZES)
    np.testing.assert_array_equal(bags.offsets, np.concatenate([[0], np.cumsum(SIZES)]))
    np.testing.assert_array_equal(bags.features, np.concatenate(arrs))
    assert bags.features.flags.c_contiguous
    for i, a in enumerate(arrs):
        np.testing.assert_array_equal(bags[i], a)
        assert bags[i].shape == (SIZES[i], D)


def test_from_arrays_dtypes():
    assert Bags.from_arrays(make_arrays([2, 3], np.float32)).dtype == np.float32
    assert Bags.from_arrays(make_arrays([2, 0, 3], np.float32)).dtype == np.float32
    mixed = [make_arrays([2], np.float32)[0], make_arrays([3], np.float64)[0]]
    assert Bags.from_arrays(mixed).dtype == np.float64
    ints = [np.ones((2, D), dtype=np.int32), np.zeros((1, D), dtype=np.int64)]
    b = Bags.from_arrays(ints)
    assert b.dtype == np.float64
    np.testing.assert_array_equal(b.features, np.concatenate(ints).astype(np.float64))


def test_from_arrays_all_empty_bags():
    bags = Bags.from_arrays([np.zeros((0, 4)), np.zeros((0, 4))])
    assert len(bags) == 2
    assert bags.n_features == 0
    assert bags.dim == 4
    np.testing.assert_array_equal(bags.offsets, [0, 0, 0])
    assert bags[0].shape == (0, 4)


@pytest.mark.parametrize(
    "arrays",
    [
        [],
        [np.ones((2, 3)), np.ones((2, 4))],
        [np.ones((2, 3)), np.ones(3)],
        [np.ones((2, 3)), np.ones((2, 3, 1))],
        [np.ones((0, 3)), np.ones((1, 2))],
    ],
    ids=["empty_list", "different_dims", "one_1d", "one_3d", "empty_bag_wrong_dim"],
)
def test_from_arrays_errors(arrays):
    with pytest.raises(ValueError):
        Bags.from_arrays(arrays)


# ----------------------------------------------------------------------------- indexing


@pytest.fixture
def bags_and_arrays():
    arrs = make_arrays(SIZES, seed=3)
    return Bags.from_arrays(arrs), arrs


def assert_bags_equal_arrays(bags, arrays):
    assert isinstance(bags, Bags)
    assert len(bags) == len(arrays)
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(bags[i], a)
    np.testing.assert_array_equal(bags.sizes, [len(a) for a in arrays])
    assert bags.offsets[0] == 0 and bags.offsets[-1] == bags.n_features
    assert bags.features.shape == (bags.n_features, D)
    assert bags.offsets.dtype == np.int64


def test_getitem_int(bags_and_arrays):
    bags, arrs = bags_and_arrays
    n = len(arrs)
    for i in range(-n, n):
        x = bags[i]
        assert isinstance(x, np.ndarray) and x.ndim == 2
        np.testing.assert_array_equal(x, arrs[i])
    np.testing.assert_array_equal(bags[np.int64(3)], arrs[3])
    for bad in (n, -n - 1, 100):
        with pytest.raises(IndexError):
            bags[bad]


@pytest.mark.parametrize("sl", [slice(None), slice(1, 4), slice(None, None, 2), slice(None, None, -1),
                                slice(4, 1, -2), slice(10, 20), slice(2, 2)])
def test_getitem_slice(bags_and_arrays, sl):
    bags, arrs = bags_and_arrays
    sub = bags[sl]
    assert_bags_equal_arrays(sub, arrs[sl])
    assert sub.dim == D and sub.dtype == bags.dtype


def test_getitem_int_array(bags_and_arrays):
    bags, arrs = bags_and_arrays
    idx = np.array([5, 0, 3, 3, 1, -1])
    assert_bags_equal_arrays(bags[idx], [arrs[i] for i in idx])
    assert_bags_equal_arrays(bags[[2, 0]], [arrs[2], arrs[0]])
    assert_bags_equal_arrays(bags[np.array([], dtype=np.int64)], [])
    with pytest.raises(IndexError):
        bags[np.array([0, len(arrs)])]


def test_a_0_d_integer_array_indexes_one_bag_as_numpy_reads_it(bags_and_arrays):
    """It gave a Bags of one bag, where NumPy (and bags[3]) give the bag itself (BagStore too,
    tests/test_store.py)."""
    bags, arrs = bags_and_arrays
    for index in (np.array(2), np.array(-1, dtype=np.int8), np.array(1, dtype=np.uint64)):
        np.testing.assert_array_equal(bags[index], arrs[int(index)])
    with pytest.raises(IndexError, match="out of range"):
        bags[np.array(len(arrs))]


@pytest.mark.parametrize("bad", [True, np.True_, None, np.array([[0, 1]])])
def test_an_index_that_is_not_one_dimensional_is_an_index_error(bags_and_arrays, bad):
    """numpy reads True and None as a new axis: Bags names what it takes (BagStore too,
    tests/test_store.py)."""
    bags, _ = bags_and_arrays
    for pick in (bags.__getitem__, bags.subset, lambda i: bags.read_subsampled(i, 2)):
        with pytest.raises(IndexError, match="bags are picked by"):
            pick(bad)


def test_getitem_bool_mask(bags_and_arrays):
    bags, arrs = bags_and_arrays
    mask = np.array([True, False, True, True, False, True])
    assert_bags_equal_arrays(bags[mask], [a for a, m in zip(arrs, mask) if m])
    assert_bags_equal_arrays(bags[np.zeros(len(arrs), bool)], [])


def test_iteration(bags_and_arrays):
    bags, arrs = bags_and_arrays
    out = list(bags)
    assert len(out) == len(arrs)
    for x, a in zip(out, arrs):
        assert isinstance(x, np.ndarray) and x.ndim == 2
        np.testing.assert_array_equal(x, a)


def test_float32_preserved_through_indexing():
    bags = Bags.from_arrays(make_arrays([2, 3, 1], np.float32))
    assert bags[1].dtype == np.float32
    assert bags[1:].dtype == np.float32
    assert bags[[2, 0]].features.dtype == np.float32


# ----------------------------------------------------------------------------- subsample


def test_subsample_properties():
    sizes = [10, 0, 1, 3, 50, 4]
    bags, offsets = unique_rows_bags(sizes)
    n = 4
    sub = bags.subsample(n, random_state=0)
    assert isinstance(sub, Bags)
    assert len(sub) == len(sizes)
    assert sub.dtype == bags.dtype and sub.dim == bags.dim
    np.testing.assert_array_equal(sub.sizes, np.minimum(sizes, n))
    assert sub.offsets.dtype == np.int64
    for b in range(len(sizes)):
        rows = sub[b]
        idx = rows[:, 0].astype(np.int64)
        # rows really are rows of bag b (both columns consistent)
        np.testing.assert_array_equal(rows[:, 1], -rows[:, 0])
        assert np.all((idx >= offsets[b]) & (idx < offsets[b + 1]))
        # distinct and kept in original order
        assert np.all(np.diff(idx) > 0)
        if sizes[b] <= n:
            np.testing.assert_array_equal(idx, np.arange(offsets[b], offsets[b + 1]))


def test_offsets_are_the_bags_own_and_any_sample_size_is_taken():
    # the caller's int64 offsets were kept: changing them moved the bags, unchecked; a sample
    # size beyond int64 overflowed NumPy (OverflowError), where subsample and the store took it
    features, offsets = np.arange(20.0).reshape(10, 2), np.array([0, 2, 2, 7, 10])
    bags = lfagg.Bags(features, offsets)
    offsets[-1] = 9
    assert bags[3].shape == (3, 2) and bags.offsets[-1] == 10
    whole = bags.read_subsampled([0, 3, 2], 2 ** 70)
    np.testing.assert_array_equal(whole.features, bags[[0, 3, 2]].features)
    lfagg.LearnedBoW(2, n_epochs=1, n_samples_per_bag=2 ** 63, random_state=0).fit(bags, [0, 1, 0, 1])


@pytest.mark.parametrize("n_per_bag", [1, 4, 7, 1000])
@pytest.mark.parametrize("indices", [[5, 0, 4, 0, 2], slice(1, 6, 2), np.array([True, False, True, True, False, True]),
                                     [3]], ids=["list", "slice", "mask", "one"])
def test_read_subsampled_draws_as_documented_and_equals_subsampling_the_indexed_bags(n_per_bag, indices):
    # the SGD steps read their samples this way: bag by bag in the order given, each bag
    # larger than n_per_bag drawing sorted rng.choice(N_b, n_per_bag, replace=False)
    sizes = np.array([10, 0, 1, 7, 4, 50])
    bags, offsets = unique_rows_bags(sizes)
    rng = np.random.default_rng(3)
    expected_rows = []
    for b in np.arange(len(sizes))[indices]:
        drawn = sizes[b] > n_per_bag
        picked = np.sort(rng.choice(sizes[b], n_per_bag, replace=False)) if drawn else np.arange(sizes[b])
        expected_rows.append(offsets[b] + picked)
    got = bags.read_subsampled(indices, n_per_bag, np.random.default_rng(3))
    np.testing.assert_array_equal(got.offsets, np.cumsum([0] + [len(r) for r in expected_rows]))
    np.testing.assert_array_equal(got.features[:, 0], np.concatenate(expected_rows))
    indexed = bags[indices].subsample(n_per_bag, np.random.default_rng(3))
    np.testing.assert_array_equal(got.features, indexed.features)
    np.testing.assert_array_equal(got.offsets, indexed.offsets)


def test_subsample_reproducible_and_seed_dependent():
    bags, _ = unique_rows_bags([100, 200, 7, 0, 60])
    a = bags.subsample(5, random_state=42)
    b = bags.subsample(5, random_state=42)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    c = bags.subsample(5, random_state=43)
    assert not np.array_equal(a.features, c.features)
    # random_state=None works and gives a valid subsample
    d = bags.subsample(5)
    np.testing.assert_array_equal(d.sizes, [5, 5, 5, 0, 5])
    # the original is untouched
    assert bags.n_features == 367


def test_subsample_roughly_uniform():
    # 600 identical bags of 10 rows, keep 3: each position is kept with probability 0.3
    n_bags, size, n = 600, 10, 3
    f = np.tile(np.arange(size, dtype=np.float64), n_bags)[:, None]
    bags = Bags(f, np.arange(0, n_bags * size + 1, size))
    sub = bags.subsample(n, random_state=7)
    counts = np.bincount(sub.features[:, 0].astype(int), minlength=size)
    assert counts.sum() == n_bags * n
    expected = n_bags * n / size  # 180, std ~ 11
    assert np.all(np.abs(counts - expected) < 60), counts


def test_subsample_float32_and_numpy_int():
    bags = Bags.from_arrays(make_arrays([8, 2], np.float32))
    sub = bags.subsample(np.int64(3), random_state=1)
    assert sub.dtype == np.float32
    np.testing.assert_array_equal(sub.sizes, [3, 2])


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", None])
def test_subsample_bad_n_per_bag(bad):
    bags, _ = unique_rows_bags([5, 3])
    with pytest.raises(ValueError, match="n_per_bag"):
        bags.subsample(bad, random_state=0)


# ----------------------------------------------------------------------------- pickle


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pickle_roundtrip(dtype):
    bags = Bags.from_arrays(make_arrays(SIZES, dtype))
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        back = pickle.loads(pickle.dumps(bags, protocol=protocol))
        assert isinstance(back, Bags)
        assert back.dtype == dtype
        np.testing.assert_array_equal(back.features, bags.features)
        np.testing.assert_array_equal(back.offsets, bags.offsets)
        assert back.offsets.dtype == np.int64
        assert len(back) == len(bags)
        np.testing.assert_array_equal(back[3], bags[3])
