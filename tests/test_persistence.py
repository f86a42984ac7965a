"""lfagg.save / lfagg.load: bitwise round trips for every estimator; crafted files (pickle
payloads, untrusted types, object arrays, foreign or newer formats) raise ValueError and
run nothing; writes are atomic."""
import concurrent.futures
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import lfagg
from lfagg.datasets import make_circles_bags

pytestmark = pytest.mark.usefixtures("one_thread")
skops_io = pytest.importorskip("skops.io")

FAST = dict(n_epochs=1, batch_size=8, n_samples_per_bag=10, random_state=0)
CLASSIFIERS = {
    "LearnedBoW": lambda: lfagg.LearnedBoW(3, **FAST),
    "LearnedVLAD": lambda: lfagg.LearnedVLAD(3, init="gmm", **FAST),
    "BagClassifier-BoW": lambda: lfagg.BagClassifier(lfagg.BagOfWords(8, assignment="soft", random_state=0)),
    "BagClassifier-VLAD": lambda: lfagg.BagClassifier(lfagg.VLAD(3, power_alpha=0.5, random_state=0)),
    "BagClassifier-FV": lambda: lfagg.BagClassifier(lfagg.FisherVector(2, with_weights=True, random_state=0)),
}
TRANSFORMERS = {
    "BagOfWords": lambda: lfagg.BagOfWords(4, random_state=0),
    "VLAD": lambda: lfagg.VLAD(3, assignment="soft", random_state=0),
    "FisherVector": lambda: lfagg.FisherVector(2, random_state=0),
}


@pytest.fixture(scope="module")
def circles():
    return make_circles_bags(30, 15, random_state=0), make_circles_bags(12, 15, random_state=1)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifier_round_trip_is_bitwise(name, circles, tmp_path):
    (bags, y), (test_bags, _) = circles
    model = CLASSIFIERS[name]().fit(bags, y)
    lfagg.save(model, tmp_path / "m.lfagg")
    loaded = lfagg.load(tmp_path / "m.lfagg")
    assert type(loaded) is type(model) and loaded.get_params().keys() == model.get_params().keys()
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        np.testing.assert_array_equal(getattr(loaded, method)(test_bags), getattr(model, method)(test_bags))
    assert loaded.l2_ == model.l2_ and loaded.timings_ == model.timings_


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_transformer_round_trip_is_bitwise(name, circles, tmp_path):
    (bags, _), (test_bags, _) = circles
    model = TRANSFORMERS[name]().fit(bags)
    lfagg.save(model, tmp_path / "t.lfagg")
    np.testing.assert_array_equal(lfagg.load(tmp_path / "t.lfagg").transform(test_bags), model.transform(test_bags))


@pytest.mark.parametrize("as_path", [lambda p: p, str, os.fsencode], ids=["PathLike", "str", "bytes"])
def test_unfitted_round_trip_keeps_the_parameters(tmp_path, as_path):
    model = lfagg.LearnedVLAD(5, gamma_scale=3.0, l2=0.1)
    lfagg.save(model, as_path(tmp_path / "u.lfagg"))
    assert lfagg.load(as_path(tmp_path / "u.lfagg")).get_params() == model.get_params()


def test_a_file_from_before_a_parameter_was_added_loads_with_its_default(circles, tmp_path):
    """A file of an earlier lfagg (the same format version) lacks the parameters added since,
    here FisherVector's tol inside a BagClassifier and a LearnedVLADCV's l2: they take
    their defaults, and the model predicts as before."""
    (bags, y), (test_bags, _) = circles
    model = CLASSIFIERS["BagClassifier-FV"]().fit(bags, y)
    expected = model.predict_proba(test_bags)
    del model.encoder.tol
    lfagg.save(model, tmp_path / "old.lfagg")
    loaded = lfagg.load(tmp_path / "old.lfagg")
    assert loaded.encoder.tol == lfagg.FisherVector().tol
    np.testing.assert_array_equal(loaded.predict_proba(test_bags), expected)
    unfitted = lfagg.LearnedVLADCV()
    del unfitted.l2
    lfagg.save(unfitted, tmp_path / "u.lfagg")
    assert lfagg.load(tmp_path / "u.lfagg").get_params() == lfagg.LearnedVLADCV().get_params()


def test_plain_pickling_keeps_working(circles):
    (bags, y), (test_bags, _) = circles
    model = CLASSIFIERS["LearnedBoW"]().fit(bags, y)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict_proba(test_bags),
                                  model.predict_proba(test_bags))


def test_save_refuses_other_objects(tmp_path):
    from sklearn.linear_model import LogisticRegression

    class MyBoW(lfagg.LearnedBoW):  # not a type load trusts
        pass

    for obj in (LogisticRegression(), {"a": 1}, np.ones(3), MyBoW(3)):
        with pytest.raises(ValueError, match="model must be one of lfagg's estimators"):
            lfagg.save(obj, tmp_path / "x.lfagg")
    assert not (tmp_path / "x.lfagg").exists()


# ---------------------------------------------------------------------------------------
# Crafted files
# ---------------------------------------------------------------------------------------
class Payload:
    """Unpickling this (or constructing it from a schema) creates the file ``canary``."""

    def __init__(self, canary):
        self.canary = str(canary)

    def __reduce__(self):
        return open, (self.canary, "w")

    def __setstate__(self, state):
        open(state["canary"], "w").close()


def model_file(path, meta=None, payload=None, members=None):
    """A zip laid out as lfagg.save writes it, with the given members."""
    meta = {"format": "lfagg-model", "version": 1, "lfagg": lfagg.__version__, "class": "LearnedBoW"} \
        if meta is None else meta
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (members or {"lfagg.json": json.dumps(meta), "model.skops": payload}).items():
            archive.writestr(name, data)
    return path


def skops_with_object_array(model, canary) -> bytes:
    """model's skops bytes with one stored array replaced by a pickled object array."""
    source = zipfile.ZipFile(io.BytesIO(skops_io.dumps(model)))
    arrays = [n for n in source.namelist() if n.endswith(".npy")]
    assert arrays
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == arrays[0]:
                buffer = io.BytesIO()
                np.save(buffer, np.array([Payload(canary)], dtype=object), allow_pickle=True)
                data = buffer.getvalue()
            target.writestr(name, data)
    return out.getvalue()


def crafted_files(tmp_path, circles, canary):
    (bags, y), _ = circles
    model = CLASSIFIERS["LearnedBoW"]().fit(bags, y)
    pickled = tmp_path / "pickle.lfagg"
    pickled.write_bytes(pickle.dumps(Payload(canary)))
    return {
        "a pickle": (pickled, "not a model file"),
        "a pickle as the payload": (model_file(tmp_path / "p.lfagg", payload=pickle.dumps(Payload(canary))),
                                    "damaged model file"),
        "an untrusted type": (model_file(tmp_path / "u.lfagg", payload=skops_io.dumps(Payload(canary))),
                              "types lfagg does not trust"),
        "a function": (model_file(tmp_path / "f.lfagg", payload=skops_io.dumps(os.system)),
                       "types lfagg does not trust"),
        "an object array": (model_file(tmp_path / "o.lfagg", payload=skops_with_object_array(model, canary)),
                            "damaged model file|does not trust"),
        "not an estimator": (model_file(tmp_path / "a.lfagg", payload=skops_io.dumps(np.arange(3))),
                             "holds a ndarray, not an lfagg estimator"),
        "a newer format": (model_file(tmp_path / "n.lfagg", meta={"format": "lfagg-model", "version": 99,
                                                                  "lfagg": "9.0"}, payload=b""), "upgrade lfagg"),
        "a foreign zip": (model_file(tmp_path / "z.lfagg", members={"readme.txt": "hello"}), "not a model file"),
        "another format": (model_file(tmp_path / "g.lfagg", meta={"format": "other", "version": 1}, payload=b""),
                           "not a model file"),
        "a bad version": (model_file(tmp_path / "v.lfagg", meta={"format": "lfagg-model", "version": "1"},
                                     payload=b""), "damaged model file"),
        "a truncated file": (truncated(tmp_path, model), "not a model file"),
        "a 5000-digit version": (model_file(tmp_path / "d.lfagg", payload=b"", members={
            "lfagg.json": '{"format": "lfagg-model", "version": ' + "9" * 5000 + "}", "model.skops": b""}),
            "not a model file"),
        "a zip bomb": (bomb(tmp_path / "b.lfagg", "model.skops"), "would inflate"),
        "a zip bomb in the payload": (model_file(tmp_path / "bp.lfagg", payload=bomb(io.BytesIO(), "schema.json")),
                                      "would inflate"),
        "a zip bomb whose headers say 100 bytes": (understated(bomb(tmp_path / "bu.lfagg", "model.skops"),
                                                               "model.skops"), "not a model file.*CRC"),
        "an encrypted member": (encrypted(truncated(tmp_path, model).with_name("whole.lfagg")), "not a model file"),
        "one array referred to 40 times": (model_file(tmp_path / "refs.lfagg", payload=repeated_references(40)),
                                           "refers to 629,"),
        "random bytes": (random_bytes(tmp_path), "not a model file"),
    }


def bomb(target, member):
    """A zip (written to the path or buffer ``target``) whose ``member`` inflates 200 KB
    of deflated zeros to 200 MB."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("lfagg.json", json.dumps({"format": "lfagg-model", "version": 1}))
        archive.writestr(member, bytes(200 << 20))
    return target.getvalue() if isinstance(target, io.BytesIO) else target


def understated(path, member, size=100):
    """The zip at ``path`` with the inflated size of ``member`` set to ``size`` in its local
    header and the central directory: zipfile inflated it whole (200 MB of a 200 KB file)
    before cutting it to that size and failing the CRC check."""
    data = bytearray(path.read_bytes())
    for signature, name_length_at, size_at, name_at in ((b"PK\x03\x04", 26, 22, 30), (b"PK\x01\x02", 28, 24, 46)):
        at = data.find(signature)
        while at >= 0:
            length = int.from_bytes(data[at + name_length_at:at + name_length_at + 2], "little")
            if data[at + name_at:at + name_at + length] == member.encode():
                data[at + size_at:at + size_at + 4] = size.to_bytes(4, "little")
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path


def encrypted(path):
    """A copy of the model file ``path`` whose first member is flagged encrypted (zipfile
    raised RuntimeError)."""
    data = bytearray(path.read_bytes())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + flags_at] |= 1
    out = path.with_name("encrypted.lfagg")
    out.write_bytes(bytes(data))
    return out


def repeated_references(n) -> bytes:
    """A skops archive whose schema lists one 15 MiB array (under the inflation limit) n
    times: skops would read it n times before judging the types."""
    array = io.BytesIO()
    np.save(array, np.zeros((15 << 20) // 8))
    node = {"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode", "type": "numpy",
            "file": "a.npy"}
    schema = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "protocol": 2,
              "content": [dict(node, __id__=10 + i) for i in range(n)], "__id__": 1, "_skops_version": "0.10.0"}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.npy", array.getvalue())
        archive.writestr("schema.json", json.dumps(schema))
    return out.getvalue()


def truncated(tmp_path, model):
    lfagg.save(model, tmp_path / "whole.lfagg")
    data = (tmp_path / "whole.lfagg").read_bytes()
    (tmp_path / "t.lfagg").write_bytes(data[:len(data) // 2])
    return tmp_path / "t.lfagg"


def random_bytes(tmp_path):
    (tmp_path / "r.lfagg").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp_path / "r.lfagg"


def test_crafted_files_raise_value_error_and_run_nothing(tmp_path, circles):
    canary = tmp_path / "canary"
    Payload(canary)  # constructing it here creates nothing; only unpickling does
    for what, (path, message) in crafted_files(tmp_path, circles, canary).items():
        with pytest.raises(ValueError, match=message):
            lfagg.load(path)
        assert not canary.exists(), f"loading {what} ran its payload"
    # The payload does run when unpickled: the canary can fire.
    pickle.loads((tmp_path / "pickle.lfagg").read_bytes())
    assert canary.exists()


# A fitted model whose state is not what fit leaves: each is saved (save does not judge)
# and must then fail to load with a ValueError naming the attribute, not later in predict.
BROKEN_STATES = {
    "no encoder": ("BagClassifier-VLAD", lambda m: setattr(m, "encoder_", None), "encoder_"),
    "no classes": ("LearnedBoW", lambda m: setattr(m, "classes_", m.classes_[:0]), "two classes"),
    "one class": ("BagClassifier-FV", lambda m: setattr(m, "classes_", m.classes_[:1]), "two classes"),
    "unsorted classes": ("LearnedBoW", lambda m: setattr(m, "classes_", m.classes_[::-1]), "classes_"),
    "no covariances": ("LearnedBoW", lambda m: setattr(m, "covariances_", None), "covariances_"),
    "no centres": ("LearnedVLAD", lambda m: setattr(m, "centers_", None), "centers_"),
    "NaN centres": ("LearnedVLAD", lambda m: m.centers_.__setitem__((0, 0), np.nan), "centers_"),
    "zero covariance": ("LearnedBoW", lambda m: m.covariances_.__setitem__((1, 0), 0.0), "covariances_"),
    "subnormal covariance": ("LearnedBoW", lambda m: m.covariances_.__setitem__((1, 0), 1e-320), "covariances_"),
    "centres of another dimension": ("LearnedBoW", lambda m: setattr(m, "centers_", m.centers_[:, :1].copy()),
                                     "centers_"),
    "gamma a string": ("LearnedVLAD", lambda m: setattr(m, "gamma_", "0.5"), "gamma_"),
    "encoder gamma negative": ("BagClassifier-BoW", lambda m: setattr(m.encoder_, "gamma_", -1.0), "gamma_"),
    "FV weights zero": ("BagClassifier-FV", lambda m: m.encoder_.weights_.__setitem__(0, 0.0), "weights_"),
    "FV variances short": ("BagClassifier-FV", lambda m: setattr(m.encoder_, "variances_", m.encoder_.variances_[:1]),
                           "variances_"),
    "encoder of another dimension": ("BagClassifier-VLAD", lambda m: setattr(m, "n_features_in_", 3),
                                     "dimension"),
    "weights of another width": ("LearnedVLAD", lambda m: setattr(m.classifier_, "W", m.classifier_.W[1:]),
                                 "classifier_.W"),
    "zero scale": ("BagClassifier-BoW", lambda m: m.classifier_.scale.__setitem__(0, 0.0), "classifier_.scale"),
    "integer bias": ("LearnedBoW", lambda m: setattr(m.classifier_, "b", np.zeros(2, dtype=int)), "classifier_.b"),
    "no classifier": ("LearnedBoW", lambda m: delattr(m, "classifier_"), "classifier_"),
    "bad feature map": ("BagClassifier-BoW", lambda m: setattr(m.feature_map_, "sample_steps", "2"),
                        "sample_steps"),
    "bad parameter": ("BagClassifier-VLAD", lambda m: setattr(m.encoder_, "power_alpha", 5.0), "power_alpha"),
    "threads a string": ("LearnedVLAD", lambda m: setattr(m, "n_threads", "all"), "n_threads"),
    "n_codewords not the centres'": ("LearnedBoW", lambda m: setattr(m, "n_codewords", m.n_codewords + 1),
                                     "centers_"),
    "encoder n_codewords not its centres'": ("BagClassifier-FV", lambda m: setattr(m.encoder_, "n_codewords", 9),
                                             "means_"),
}


@pytest.mark.parametrize("what", list(BROKEN_STATES))
def test_inconsistent_fitted_state_is_refused_at_load_and_save(what, circles, tmp_path):
    """A crafted file is refused at load; save refuses the same model instead of writing a
    file that load refuses (over the previous good one)."""
    name, damage, attribute = BROKEN_STATES[what]
    model = CLASSIFIERS[name]().fit(*circles[0])
    damage(model)
    path = model_file(tmp_path / "broken.lfagg", meta={"format": "lfagg-model", "version": 1,
                                                       "lfagg": lfagg.__version__, "class": type(model).__name__},
                      payload=skops_io.dumps(model))
    with pytest.raises(ValueError, match=r"fitted state is inconsistent \(.*" + attribute):
        lfagg.load(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"cannot be saved: load would refuse its fitted state \(.*" + attribute):
        lfagg.save(model, path)
    assert path.read_bytes() == before


def test_save_refuses_what_load_would_not_trust(circles, tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline

    bags, y = circles[0]
    fitted = lfagg.BagClassifier(make_pipeline(lfagg.BagOfWords(4, random_state=0), PCA(2))).fit(bags, y)
    with pytest.raises(ValueError, match="cannot be saved: load would refuse its fitted state"):
        lfagg.save(fitted, tmp_path / "p.lfagg")
    with pytest.raises(ValueError, match="cannot be saved: it holds types that load does not trust"):
        lfagg.save(lfagg.BagClassifier(lfagg.BagOfWords(4), l2=lambda: 1.0), tmp_path / "p.lfagg")
    with pytest.raises(ValueError, match="cannot be saved: it holds types that load does not trust"):
        lfagg.save(lfagg.LearnedBoWCV(cv=StratifiedKFold(3)), tmp_path / "p.lfagg")
    assert list(tmp_path.iterdir()) == []


def test_a_payload_of_another_class_than_the_file_says_is_refused(circles, tmp_path):
    model = CLASSIFIERS["LearnedBoW"]().fit(*circles[0])
    path = model_file(tmp_path / "c.lfagg", meta={"format": "lfagg-model", "version": 1, "lfagg": lfagg.__version__,
                                                  "class": "LearnedVLAD"}, payload=skops_io.dumps(model))
    with pytest.raises(ValueError, match="says it holds a 'LearnedVLAD', its payload is a LearnedBoW"):
        lfagg.load(path)


def test_an_entry_of_an_unknown_compression_is_a_damaged_file(tmp_path):
    path = tmp_path / "m.lfagg"
    lfagg.save(lfagg.BagOfWords(4), path)
    data = bytearray(path.read_bytes())
    directory = int.from_bytes(data[data.rfind(b"PK\x05\x06") + 16:][:4], "little")  # the central directory
    data[directory + 10:directory + 12] = (99).to_bytes(2, "little")  # its first entry's compression method
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a model file"):  # zipfile raises NotImplementedError
        lfagg.load(path)


def test_saving_to_a_directory_names_it(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}: a directory"):
        lfagg.save(lfagg.BagOfWords(4), tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_saving_never_replaces_what_is_not_a_regular_file(tmp_path):
    """A pipe (or, run as root, a device such as /dev/null) given as the output was renamed
    over by a regular file; a symbolic link was replaced instead of written through."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(ValueError, match="not a regular file"):
        lfagg.save(lfagg.BagOfWords(4), pipe)
    assert pipe.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    target, link, dangling = tmp_path / "real.lfagg", tmp_path / "link.lfagg", tmp_path / "dangling.lfagg"
    lfagg.save(lfagg.BagOfWords(2), target)
    link.symlink_to(target)
    dangling.symlink_to(tmp_path / "new.lfagg")
    lfagg.save(lfagg.BagOfWords(3), link)
    lfagg.save(lfagg.BagOfWords(5), dangling)
    assert link.is_symlink() and dangling.is_symlink() and lfagg.load(target).n_codewords == 3
    assert lfagg.load(tmp_path / "new.lfagg").n_codewords == 5


def test_saving_names_the_path_the_user_gave(tmp_path, monkeypatch):
    long = tmp_path / ("m" * 249 + ".lfagg")  # 255 characters: the temporary name once went over the limit
    lfagg.save(lfagg.BagOfWords(2), long)
    assert lfagg.load(long).n_codewords == 2
    with pytest.raises(ValueError, match="the path of the file to write is empty"):
        lfagg.save(lfagg.BagOfWords(2), "")

    def full_disk(*args, **kwargs):
        raise OSError(27, "File too large")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match=f"cannot write {long}: File too large"):
        lfagg.save(lfagg.BagOfWords(3), long)
    monkeypatch.undo()
    assert lfagg.load(long).n_codewords == 2 and len(list(tmp_path.iterdir())) == 1


def test_saving_and_loading_run_no_module_found_on_sys_path(tmp_path):
    """skops asks every loaded module for names such as scipy.special's erf; Cython's
    cython.cimports imports whatever it is asked for, so an erf.py on sys.path ran: in the
    working directory, and (after that was fixed) in the script's folder or on PYTHONPATH."""
    pytest.importorskip("Cython")
    (tmp_path / "erf.py").write_text("import os; open(os.path.join(os.path.dirname(__file__), 'ran'), 'w').close()\n")
    (tmp_path / "run.py").write_text("import sys, lfagg; lfagg.save(lfagg.BagOfWords(2), sys.argv[1]); "
                                     "lfagg.load(sys.argv[1]); import Cython.Shadow\n")
    package = os.path.dirname(os.path.dirname(lfagg.__file__))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command, env in (([sys.executable, "-c", open(tmp_path / "run.py").read(), "m.lfagg"], package),  # cwd
                         ([sys.executable, str(tmp_path / "run.py"), "m.lfagg"], package),  # the script's folder
                         ([sys.executable, "-c", open(tmp_path / "run.py").read(), "m.lfagg"],
                          os.pathsep.join([package, str(tmp_path)]))):  # PYTHONPATH
        cwd = tmp_path if command[1] == "-c" and env == package else elsewhere
        subprocess.run(command, cwd=cwd, env=dict(os.environ, PYTHONPATH=env), check=True)
        assert (cwd / "m.lfagg").exists() and not (tmp_path / "ran").exists()


def test_sys_modules_are_restored_under_threads_and_a_deleted_working_directory_is_no_error(tmp_path, monkeypatch):
    # the stand-ins set aside from sys.modules come back, whatever the threads; os.getcwd() raised
    # FileNotFoundError for a deleted working directory, after a whole fit
    path = tmp_path / "m.lfagg"
    lfagg.save(lfagg.BagOfWords(2), path)
    stand_in = object()
    monkeypatch.setitem(sys.modules, "lfagg_test_stand_in", stand_in)
    expected = list(sys.path)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: lfagg.load(path), range(40)))
    finally:
        sys.setswitchinterval(interval)
    assert sys.path == expected and sys.modules["lfagg_test_stand_in"] is stand_in
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    lfagg.save(lfagg.load(path), tmp_path / "again.lfagg")
    assert sys.path == expected


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        lfagg.load(tmp_path / "none.lfagg")
    with pytest.raises(ValueError, match="a directory, not a model file"):
        lfagg.load(tmp_path)
    if os.path.exists(os.devnull) and not os.path.isfile(os.devnull):  # it said "no such file"
        with pytest.raises(ValueError, match="not a regular file"):
            lfagg.load(os.devnull)


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------
def test_an_interrupted_save_leaves_the_previous_file(tmp_path, circles, monkeypatch):
    (bags, y), (test_bags, _) = circles
    first = CLASSIFIERS["LearnedBoW"]().fit(bags, y)
    lfagg.save(first, tmp_path / "m.lfagg")
    before = (tmp_path / "m.lfagg").read_bytes()
    written = []

    def failing_writestr(self, name, data, *args, **kwargs):
        written.append(name)
        if len(written) == 2:
            raise KeyboardInterrupt  # interrupted after the first member
        return real(self, name, data, *args, **kwargs)

    real = zipfile.ZipFile.writestr
    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    with pytest.raises(KeyboardInterrupt):
        lfagg.save(CLASSIFIERS["LearnedVLAD"]().fit(bags, y), tmp_path / "m.lfagg")
    assert (tmp_path / "m.lfagg").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.lfagg"]  # no temporary file left
    monkeypatch.undo()
    np.testing.assert_array_equal(lfagg.load(tmp_path / "m.lfagg").predict(test_bags), first.predict(test_bags))


def test_an_interrupted_save_npz_bags_leaves_no_file(tmp_path, monkeypatch):
    def failing_savez(file, **arrays):
        file.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(KeyboardInterrupt):
        lfagg.datasets.save_npz_bags(tmp_path / "bags", [np.ones((2, 3))])
    assert os.listdir(tmp_path) == []


def test_an_interrupted_encode_leaves_the_previous_output(tmp_path, circles, monkeypatch, capsys):
    from lfagg import cli

    (bags, y), _ = circles
    lfagg.save(CLASSIFIERS["LearnedBoW"]().fit(bags, y), tmp_path / "m.lfagg")
    lfagg.datasets.save_npz_bags(tmp_path / "b.npz", bags)
    (tmp_path / "r.npy").write_bytes(b"previous")

    def failing_save(file, array):
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", failing_save)
    assert cli.main(["encode", "--model", str(tmp_path / "m.lfagg"), "--bags", str(tmp_path / "b.npz"),
                     "--out", str(tmp_path / "r.npy")]) == 130
    assert (tmp_path / "r.npy").read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["b.npz", "m.lfagg", "r.npy"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_written_atomically_get_the_umask_permissions(tmp_path, circles, umask):
    # as open() would create them: mkstemp's temporary files are owner-only
    (bags, y), _ = circles
    model = CLASSIFIERS["BagClassifier-BoW"]().fit(bags, y)
    previous = os.umask(umask)
    try:
        lfagg.save(model, tmp_path / "m.lfagg")
        lfagg.datasets.save_npz_bags(tmp_path / "b.npz", bags)
    finally:
        os.umask(previous)
    for name in ("m.lfagg", "b.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    (tmp_path / "m.lfagg").chmod(0o600)  # a file written over keeps its mode
    lfagg.save(model, tmp_path / "m.lfagg")
    assert (tmp_path / "m.lfagg").stat().st_mode & 0o777 == 0o600


def test_an_unwritable_output_is_named_before_any_work(tmp_path, circles, capsys, monkeypatch):
    from lfagg import cli

    (bags, y), _ = circles
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'none' / 'm.lfagg'}"):
        lfagg.save(CLASSIFIERS["BagClassifier-BoW"]().fit(bags, y), tmp_path / "none" / "m.lfagg")
    lfagg.save(CLASSIFIERS["BagClassifier-BoW"]().fit(bags, y), tmp_path / "m.lfagg")
    lfagg.datasets.save_npz_bags(tmp_path / "b.npz", bags)
    monkeypatch.setattr(lfagg.BagClassifier, "transform", lambda *args: pytest.fail("encoded before the check"))
    assert cli.main(["encode", "--model", str(tmp_path / "m.lfagg"), "--bags", str(tmp_path / "b.npz"),
                     "--out", str(tmp_path / "none" / "r.npy")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"lfagg encode: error: {tmp_path / 'none' / 'r.npy'}: no such directory {tmp_path / 'none'}"
