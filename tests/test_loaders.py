"""Loaders of users' own features (lfagg.datasets): a directory of .npy files, one .npz,
label files; round trips, memory mapping, label formats and every malformed-file error."""

import numpy as np
import pytest

import lfagg
from lfagg.datasets import load_bags, load_labels, load_npy_dir, load_npz_bags, save_npz_bags


def write_dir(folder, arrays):
    """Each named array as folder/<name>.npy; returns folder."""
    folder.mkdir(exist_ok=True)
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a)
    return folder


def write_text(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {"b": rng.normal(size=(4, 3)).astype(np.float32), "a": rng.normal(size=(2, 3)).astype(np.float32),
            "c": np.zeros((0, 3), np.float32), "d10": rng.normal(size=(5, 3)).astype(np.float32)}


# ---------------------------------------------------------------------------------------
# Directory of .npy files
# ---------------------------------------------------------------------------------------
def test_more_bag_files_than_open_file_descriptors(tmp_path):
    """Every file stayed memory-mapped, a descriptor each: past the process's limit (1,024
    by default) loading and building a store failed with 'Too many open files'."""
    import subprocess
    import sys

    folder = tmp_path / "bags"
    folder.mkdir()
    for i in range(300):
        np.save(folder / f"b{i}.npy", np.full((2, 3), i, np.float32))
    script = f"""
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (100, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import numpy as np
from lfagg.datasets import load_npy_dir
from lfagg.datasets.files import build_store
bags, names = load_npy_dir({str(folder)!r})
assert len(bags) == 300 and names[299] == "b299" and bags[299][0, 0] == 299
store = build_store({str(folder)!r}, {str(tmp_path / "s.zarr")!r}, verbose=0)
assert len(store) == 300 and store[299][1, 2] == 299 and store.names[7] == "b7"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_npy_dir_round_trip(tmp_path, arrays):
    folder = write_dir(tmp_path / "bags", arrays)
    (folder / "notes.txt").write_text("ignored")
    bags, names = load_npy_dir(folder)
    assert names == ["a", "b", "c", "d10"]  # file names in natural order, without .npy
    assert bags.dtype == np.float32
    np.testing.assert_array_equal(bags.offsets, [0, 2, 6, 6, 11])
    for b, name in enumerate(names):
        np.testing.assert_array_equal(bags[b], arrays[name])


def test_npy_dir_mixed_dtypes_become_float64(tmp_path):
    folder = write_dir(tmp_path / "bags", {"a": np.arange(6, dtype=np.int16).reshape(3, 2),
                                           "b": np.full((1, 2), 0.5, np.float32)})
    bags, _ = load_npy_dir(str(folder))
    assert bags.dtype == np.float64
    np.testing.assert_array_equal(bags.features, [[0, 1], [2, 3], [4, 5], [0.5, 0.5]])


def test_npy_dir_files_are_memory_mapped(tmp_path, arrays, monkeypatch):
    folder = write_dir(tmp_path / "bags", arrays)
    modes = []
    real_load = np.load

    def spy(file, *args, **kwargs):
        modes.append(kwargs.get("mmap_mode"))
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    load_npy_dir(folder)
    assert modes == ["r"] * 2 * len(arrays)  # each mapped twice: its header checked first, then its rows copied


@pytest.mark.parametrize("line", ["{name}\t{label}", "{name};{label}", "{name}  {label}", "{name}.npy {label}"])
def test_name_label_pairs_not_separated_by_commas_are_refused(tmp_path, arrays, line):
    """Read as one column, each 'name<tab>label' line was a class of its own: a model of
    one class per bag, trained without a word."""
    names = sorted(arrays)
    path = write_text(tmp_path / "labels.csv", "".join(line.format(name=n, label=i % 2) + "\n"
                                                      for i, n in enumerate(names)))
    with pytest.raises(ValueError, match="look like name and label separated by a tab, ';' or spaces"):
        load_labels(path, names)
    assert load_labels(write_text(tmp_path / "ok.txt", "big cat\nsmall dog\n"), None).tolist() == ["big cat",
                                                                                                    "small dog"]


def test_only_ascii_numbers_are_numeric_labels(tmp_path):
    """int() read '1_000' as 1000 and Arabic-Indic '١' as 1: distinct labels became one class."""
    assert load_labels(write_text(tmp_path / "a.txt", "1_000\n1000\n7\n"), None).tolist() == ["1_000", "1000", "7"]
    assert load_labels(write_text(tmp_path / "b.txt", "\u0661\n1\n2\n"), None).tolist() == ["\u0661", "1", "2"]
    assert load_labels(write_text(tmp_path / "c.txt", "1\n2.0\n-3\n+4\n1e2\n"), None).tolist() == [1, 2, -3, 4, 100]
    assert load_labels(write_text(tmp_path / "d.txt", "0.5\n.25\n"), None).tolist() == [0.5, 0.25]


def test_a_header_word_that_is_also_a_label_is_data(tmp_path):
    """Labels y / n lost their first line, taken for a header."""
    assert load_labels(write_text(tmp_path / "yn.txt", "y\nn\ny\n"), None).tolist() == ["y", "n", "y"]
    assert load_labels(write_text(tmp_path / "h.txt", "y\n1\n0\n"), None).tolist() == [1, 0]  # a header still
    names = ["a", "b"]
    assert load_labels(write_text(tmp_path / "yn.csv", "a,y\nb,n\n"), names).tolist() == ["y", "n"]


def test_a_unicode_digit_in_a_file_name_sorts(tmp_path):
    """'²' passed str.isdigit in the natural sort, then failed int() without naming a file."""
    folder = write_dir(tmp_path / "bags", {"x1\u00b22": np.ones((2, 3)), "x10": np.zeros((1, 3))})
    bags, names = load_npy_dir(folder)
    assert names == ["x1\u00b22", "x10"] and len(bags) == 2


# ---------------------------------------------------------------------------------------
# One .npz
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", [None, [3, 1, 3], ["cat", "dog", "cat"]])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npz_round_trip(tmp_path, labels, dtype):
    rng = np.random.default_rng(1)
    bags = lfagg.Bags.from_arrays([rng.normal(size=(n, 4)).astype(dtype) for n in (3, 0, 5)])
    save_npz_bags(tmp_path / "bags", bags, labels)  # numpy appends .npz
    loaded, y = load_npz_bags(tmp_path / "bags.npz")
    assert loaded.dtype == dtype
    np.testing.assert_array_equal(loaded.features, bags.features)
    np.testing.assert_array_equal(loaded.offsets, bags.offsets)
    if labels is None:
        assert y is None
    else:
        np.testing.assert_array_equal(y, labels)


def test_save_npz_bags_accepts_arrays_and_rejects_bad_labels(tmp_path):
    save_npz_bags(tmp_path / "x.npz", [np.ones((2, 2)), np.zeros((1, 2))], [0, 1])
    bags, y = load_bags(tmp_path / "x.npz")
    np.testing.assert_array_equal(bags.offsets, [0, 2, 3])
    np.testing.assert_array_equal(y, [0, 1])
    with pytest.raises(ValueError, match="one number or string per bag"):
        save_npz_bags(tmp_path / "y.npz", bags, [0, 1, 2])
    with pytest.raises(ValueError, match="one number or string per bag"):
        save_npz_bags(tmp_path / "y.npz", bags, np.array([0, "a"], dtype=object))


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, text, expected", [
    ("y.txt", "1\n0\n1\n", [1, 0, 1]),
    ("y.txt", "label\n1\n0\n1\n\n\n", [1, 0, 1]),  # header, trailing blank lines
    ("y.txt", "cat\r\ndog\r\ncat\r\n", ["cat", "dog", "cat"]),
    ("y.txt", " 2 \n-1\n7", [2, -1, 7]),
    ("y.csv", "1\n0\n1\n", [1, 0, 1]),
    ("y.csv", "Class\ncat\ndog\n1\n", ["cat", "dog", "1"]),  # any non-integer makes them all strings
    ("y.csv", "name,label\nc,0\na,1\nb,2\n", [1, 2, 0]),      # matched by name
    ("y.csv", "b.npy,x\nunused,z\na.npy,y\nc,w\n", ["y", "x", "w"]),  # .npy suffix; other names ignored
    ("y.csv", "b,1\nunused,nan\na,0\nc,1\n", [0, 1, 1]),  # ... also when their label is missing
    ("y.txt", "1\n1.0\n0\n", [1, 1, 0]),  # one class, however it is written
    ("y.txt", "1.000000000000000000e+00\n0.000000000000000000e+00\n1e0\n", [1, 0, 1]),  # np.savetxt's format
    ("y.txt", "0.5\n1\n2\n", [0.5, 1.0, 2.0]),  # numbers, not all whole: fit refuses them as continuous
    # integers beyond int64, or whole numbers beyond float64's exact ones, stay distinct strings
    ("y.txt", "12345678901234567890123\n12345678901234567890124\n1\n",
     ["12345678901234567890123", "12345678901234567890124", "1"]),
    ("y.txt", "9007199254740993.0\n9007199254740992\n1\n", ["9007199254740993.0", "9007199254740992", "1"]),
    # a byte-order mark (Excel's and Notepad's UTF-8) is no part of the first label or header
    ("y.txt", "\ufeffcat\ndog\ncat\n", ["cat", "dog", "cat"]),
    ("y.txt", "\ufeff1\n2\n1\n", [1, 2, 1]),
    ("y.csv", "\ufefflabel\n0\n1\n0\n", [0, 1, 0]),
])
def test_label_formats(tmp_path, name, text, expected):
    y = load_labels(write_text(tmp_path / name, text), names=["a", "b", "c"])
    np.testing.assert_array_equal(y, expected)
    kind = {int: "i", float: "f", str: "U"}[type(expected[0])]
    assert y.dtype.kind == kind and (kind != "i" or y.dtype == np.int64)


def test_labels_without_names(tmp_path):
    np.testing.assert_array_equal(load_labels(write_text(tmp_path / "y.txt", "4\n5\n")), [4, 5])


def test_load_bags_matches_labels_by_name(tmp_path, arrays):
    folder = write_dir(tmp_path / "bags", arrays)
    csv = write_text(tmp_path / "y.csv", "d10,dog\nc,cat\nb,dog\na,cat\n")
    bags, y = load_bags(folder, csv)
    assert len(bags) == 4
    np.testing.assert_array_equal(y, ["cat", "dog", "cat", "dog"])


def test_labels_file_overrides_npz_labels(tmp_path):
    save_npz_bags(tmp_path / "x.npz", [np.ones((1, 2))] * 3, [0, 0, 0])
    _, y = load_bags(tmp_path / "x.npz", write_text(tmp_path / "y.txt", "1\n2\n3\n"))
    np.testing.assert_array_equal(y, [1, 2, 3])


# ---------------------------------------------------------------------------------------
# Malformed files: ValueError naming the path
# ---------------------------------------------------------------------------------------
def garbage(path, data=b"this is not numpy data"):
    path.write_bytes(data)


def truncated(path):
    np.save(path, np.ones((10, 3)))
    path.write_bytes(path.read_bytes()[:-8])


NPY_CASES = {
    "one-dimensional": (lambda p: np.save(p, np.ones(3)), "2-D"),
    "three-dimensional": (lambda p: np.save(p, np.ones((2, 3, 1))), "2-D"),
    "no columns": (lambda p: np.save(p, np.ones((2, 0))), "2-D"),
    "strings": (lambda p: np.save(p, np.array([["a", "b"]])), "real numbers"),
    "complex": (lambda p: np.save(p, np.ones((2, 3), complex)), "real numbers"),
    "objects": (lambda p: np.save(p, np.array([[1, None]], dtype=object), allow_pickle=True), "not a readable"),
    "garbage": (garbage, "not a readable .npy"),
    "truncated": (truncated, "not a readable .npy"),
    "other dimension": (lambda p: np.save(p, np.ones((2, 4))), "dimension 4, but a.npy has 3"),
    "nan": (lambda p: np.save(p, np.array([[0, 1, np.nan]])), r"bag 1 \(bad\) contains NaN or infinity"),
    "inf": (lambda p: np.save(p, np.array([[0, 1, -np.inf]], np.float32)), "NaN or infinity"),
}


@pytest.mark.parametrize("case", NPY_CASES)
def test_npy_dir_malformed_file(tmp_path, case):
    folder = write_dir(tmp_path / "bags", {"a": np.ones((2, 3)), "c": np.ones((1, 3))})
    write, message = NPY_CASES[case]
    write(folder / "bad.npy")
    with pytest.raises(ValueError, match=message) as err:
        load_npy_dir(folder)
    assert str(folder) in str(err.value)
    with pytest.raises(ValueError, match=message):
        load_bags(folder)


def test_npy_dir_missing_or_empty(tmp_path):
    with pytest.raises(ValueError, match="no such directory") as err:
        load_npy_dir(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="no .npy files") as err:
        load_npy_dir(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def npz(**arrays):
    return lambda p: np.savez(p, **arrays)


NPZ_CASES = {
    "garbage": (garbage, r"not a readable .npz file \(neither an .npz archive nor an .npy array\)"),
    "empty": (lambda p: garbage(p, b""), "not a readable .npz"),
    "npy inside": (lambda p: p.write_bytes(_npy_bytes(p)), "single .npy array"),
    "no offsets": (npz(features=np.ones((2, 2))), r"missing arrays \['offsets'\]"),
    "offsets end": (npz(features=np.ones((2, 2)), offsets=[0, 1]), "offsets\\[-1\\] must equal"),
    "float offsets": (npz(features=np.ones((2, 2)), offsets=[0.0, 2.0]), "offsets must be an integer array"),
    "1-D features": (npz(features=np.ones(4), offsets=[0, 4]), "features must be a 2-D array"),
    "string features": (npz(features=np.array([["a"]]), offsets=[0, 1]), "real numeric array"),
    "labels length": (npz(features=np.ones((2, 2)), offsets=[0, 1, 2], labels=[1]), "one entry per bag"),
    "nan": (npz(features=np.array([[0, 0], [0, np.nan]]), offsets=[0, 1, 2]), "bag 1 contains NaN"),
}


def _corrupt_compressed(path):
    """A compressed .npz whose deflated data is damaged (zlib, not zipfile, fails)."""
    np.savez_compressed(path, features=np.arange(4000.0).reshape(1000, 4), offsets=[0, 1000])
    data = bytearray(path.read_bytes())
    data[200:260] = bytes(60)
    path.write_bytes(bytes(data))


NPZ_CASES["corrupt compressed data"] = (_corrupt_compressed, "not a readable .npz")


def _npy_bytes(path):
    np.save(path.with_suffix(".npy"), np.ones(2))
    return path.with_suffix(".npy").read_bytes()


@pytest.mark.parametrize("case", NPZ_CASES)
def test_npz_malformed_file(tmp_path, case):
    path = tmp_path / "bags.npz"
    write, message = NPZ_CASES[case]
    write(path)
    with pytest.raises(ValueError, match=message) as err:
        load_npz_bags(path)
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match=message):
        load_bags(path)


def test_npz_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not a readable .npz") as err:
        load_npz_bags(tmp_path / "no.npz")
    assert str(tmp_path / "no.npz") in str(err.value)


LABEL_CASES = {
    "empty": ("y.txt", "", None, "no labels"),
    "blank lines only": ("y.csv", "\n\n", None, "no labels"),
    "header only": ("y.csv", "name,label\n", None, "no labels"),
    "too few": ("y.txt", "1\n2\n", ["a", "b", "c"], "2 labels for 3 bags"),
    "too many": ("y.csv", "1\n2\n3\n4\n", ["a", "b", "c"], "4 labels for 3 bags"),
    "blank in the middle": ("y.txt", "1\n\n2\n", None, "line 2"),
    "empty field": ("y.csv", "a,1\nb,\nc,2\n", ["a", "b", "c"], "line 2"),
    "ragged": ("y.csv", "a,1\nb\n", ["a", "b"], "line 2"),
    "three columns": ("y.csv", "a,1,x\n", ["a"], "one column .* or two"),
    "missing names": ("y.csv", "a,1\n", ["a", "b", "c"], "no label for 2 bag\\(s\\): b, c"),
    "listed twice": ("y.csv", "a,1\nb,0\na.npy,0\n", ["a", "b"], "'a' is listed twice"),
    "names needed": ("y.csv", "a,1\nb,0\n", None, "need bag names"),
    "suffix": ("y.json", "[1, 2]", None, ".txt or .csv"),
    "nan": ("y.txt", "0\nnan\n1\n", None, "line 2 has label 'nan', NaN or infinite: not a class"),
    "leading zeros": ("y.txt", "0\n1\n", ["bag1", "bag01"], "'bag1' and 'bag01' differ only in leading zeros"),
    "NaN among strings": ("y.csv", "label\ncat\ndog\nNaN\n", None, "line 4 has label 'NaN'"),
    "infinite by name": ("y.csv", "a,1\nb,-inf\n", ["a", "b"], "line 2 has label '-inf'"),
}


@pytest.mark.parametrize("case", LABEL_CASES)
def test_labels_malformed_file(tmp_path, case):
    name, text, names, message = LABEL_CASES[case]
    path = write_text(tmp_path / name, text)
    with pytest.raises(ValueError, match=message) as err:
        load_labels(path, names)
    assert str(path) in str(err.value)


def test_labels_unreadable(tmp_path):
    with pytest.raises(ValueError, match="cannot read labels") as err:
        load_labels(tmp_path / "no.txt")
    assert str(tmp_path / "no.txt") in str(err.value)
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="cannot read labels"):
        load_labels(tmp_path / "latin1.txt")


def test_load_bags_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or directory"):
        load_bags(tmp_path / "nowhere.npz")
    with pytest.raises(ValueError, match="directory of .npy files .* or an .npz file"):
        load_bags(write_text(tmp_path / "bags.txt", "1\n"))
    save_npz_bags(tmp_path / "x.npz", [np.ones((1, 2))] * 3)
    labels = write_text(tmp_path / "y.txt", "1\n2\n")
    with pytest.raises(ValueError, match="2 labels for the 3 bags") as err:
        load_bags(tmp_path / "x.npz", labels)
    assert str(labels) in str(err.value)


def test_npy_dir_is_read_in_natural_order(tmp_path):
    """bag2 comes before bag10, so a one-column labels file goes to the right bags."""
    arrays = {f"bag{i}": np.full((1, 2), float(i)) for i in range(12)}
    folder = write_dir(tmp_path / "bags", arrays)
    bags, names = load_npy_dir(folder)
    assert names == [f"bag{i}" for i in range(12)]
    np.testing.assert_array_equal(bags.features[:, 0], np.arange(12))
    labels = write_text(tmp_path / "y.txt", "".join(f"{i % 2}\n" for i in range(12)))
    _, y = load_bags(folder, labels)
    np.testing.assert_array_equal(y, bags.features[:, 0].astype(int) % 2)


def test_cifar10_files_with_labels_or_images_of_another_shape_are_named(tmp_path):
    """(n, 1) labels (as Keras saves them) passed and failed later in an IndexError; 3-D
    (grey) images were said not to match labels whose length matched; an empty split
    failed in a reshape's words."""
    from lfagg.datasets import load_cifar10

    images, labels = np.zeros((4, 32, 32, 3), np.uint8), np.arange(4) % 2
    for name, arrays, message in (
            ("keras", dict(train_labels=labels[:, None]), r"train_labels must be \(4,\), one per image, got shape"),
            ("grey", dict(train_images=images[..., 0]), r"train_images must be \(n, 32, 32, 3\) colour images"),
            ("channels first", dict(train_images=images.transpose(0, 3, 1, 2)), r"train_images must be \(n, 32"),
            ("scaled to [0, 1]", dict(test_images=images / 255.0), r"test_images must be uint8 pixels \(0-255"),
            ("no test images", dict(test_images=images[:0], test_labels=labels[:0]), "test_images holds no images")):
        np.savez(tmp_path / f"{name}.npz", **{"train_images": images, "train_labels": labels, "test_images": images,
                                               "test_labels": labels, **arrays})
        with pytest.raises(ValueError, match=message):
            load_cifar10(tmp_path / f"{name}.npz")


@pytest.mark.parametrize("noise", [float("nan"), float("inf"), -0.1])
def test_synthetic_bags_refuse_a_noise_that_is_not_a_finite_std(noise):
    for make in (lfagg.datasets.make_circles_bags, lfagg.datasets.make_moons_bags):
        with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
            make(4, 3, noise=noise, random_state=0)


def test_balanced_subset_refuses_more_items_than_there_are_or_fewer_than_the_classes(tmp_path):
    """n_train=50000 of a 20,000-image file silently used the 20,000; n_train=5 of ten
    classes silently trained without five of them."""
    from lfagg.datasets import balanced_subset, cifar10_patch_bags

    labels = np.repeat(np.arange(3), 4)
    for n in (2, 13):
        with pytest.raises(ValueError, match=f"n={n}: choose from 3 .* to 12"):
            balanced_subset(labels, n)
    np.testing.assert_array_equal(np.bincount(labels[balanced_subset(labels, 3, random_state=1)]), [1, 1, 1])
    np.testing.assert_array_equal(balanced_subset(labels, 12), np.arange(12))
    images = np.zeros((6, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "c.npz", train_images=images, train_labels=np.arange(6) % 2, test_images=images,
             test_labels=np.arange(6) % 2)
    with pytest.raises(ValueError, match="n_train=7"):
        cifar10_patch_bags(tmp_path / "c.npz", n_train=7)
    with pytest.raises(ValueError, match="n_test=1"):
        cifar10_patch_bags(tmp_path / "c.npz", n_test=1)


def test_a_missing_npz_under_a_folder_named_pickled_is_called_missing(tmp_path):
    """NumPy's "pickled data" message is replaced by matching its wording, not the word
    anywhere (the path holds it here)."""
    with pytest.raises(ValueError, match="No such file or directory"):
        load_npz_bags(tmp_path / "pickled" / "missing.npz")
