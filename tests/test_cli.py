"""The lfagg command line: `python -m lfagg` in a subprocess for the demo, the train /
evaluate round trip and an error exit; in-process `main([...])` for the rest (help,
encode against the model's own transform, every error exit, reproduce/figures plumbing)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import lfagg
from lfagg import cli, experiments
from lfagg.datasets import make_circles_bags, save_npz_bags

SUBCOMMANDS = ["demo", "train", "select", "encode", "evaluate", "reproduce", "figures"]
TRAIN = ["--codewords", "3", "--epochs", "1", "--samples-per-bag", "10", "--lr", "0.01", "--verbose", "0"]


def run_cli(*args):
    """`python -m lfagg args` with the lfagg that this test process imported."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(lfagg.__file__)), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lfagg", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def run_main(capsys, *args):
    """(exit status, stdout, stderr) of cli.main(args) in this process."""
    with threadpool_limits(1):
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help and usage errors
            rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *fragments):
    assert rc == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert str(fragment) in err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Training bags as a directory of .npy files + a name,label CSV (string labels, rows
    shuffled); test bags as an .npz with stored labels."""
    root = tmp_path_factory.mktemp("cli")
    train_bags, train_y = make_circles_bags(24, 15, random_state=0)
    names = [f"bag{i:02d}" for i in range(len(train_bags))]
    (root / "train").mkdir()
    for name, bag in zip(names, train_bags):
        np.save(root / "train" / f"{name}.npy", bag.astype(np.float32))
    classes = np.array(["inner", "outer"])
    rows = [f"{n},{classes[y]}" for n, y in zip(names, train_y)]
    (root / "train.csv").write_text("name,label\n" + "\n".join(rows[::-1]) + "\n")
    test_bags, test_y = make_circles_bags(10, 15, random_state=1)
    save_npz_bags(root / "test.npz", lfagg.Bags(test_bags.features.astype(np.float32), test_bags.offsets),
                  classes[test_y])
    return root


@pytest.fixture(scope="module")
def t1_model(files):
    """`lfagg train` of T1 in a subprocess: (completed process, model path)."""
    path = files / "t1.lfagg"
    done = run_cli("train", "--bags", files / "train", "--labels", files / "train.csv", "--method", "t1",
                   *TRAIN[:-1], "1", "--gamma-scale", "2", "--model", path)
    return done, path


# ---------------------------------------------------------------------------------------
# Subprocess runs
# ---------------------------------------------------------------------------------------
def test_demo(tmp_path):
    done = run_cli("demo", "--n-bags", 20, "--n-per-bag", 10, "--epochs", 1, "--codewords", 2, "--verbose", 0)
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^(\S+(?: \S+)*?)\s+(\d+)\s+(\d\.\d{3})\s+\d+\.\d+$", done.stdout, re.M)
    assert [r[0] for r in rows] == ["BoW-2", "BoW-32", "VLAD-2", "FV-2", "T1-2 initial (K-Means)", "T1-2 learned",
                                    "T2-2 initial (K-Means)", "T2-2 learned"]
    assert [int(r[1]) for r in rows] == [2, 32, 4, 8, 2, 2, 4, 4]  # representation sizes, D = 2
    # The initial T1 row, computed independently.
    train, test = make_circles_bags(20, 10, random_state=0), make_circles_bags(20, 10, random_state=1)
    with threadpool_limits(1):
        initial = lfagg.LearnedBoW(2, n_epochs=0, random_state=0).fit(*train).score(*test)
    assert float(rows[4][2]) == pytest.approx(initial, abs=5e-4)


def test_train_then_evaluate(files, t1_model):
    done, path = t1_model
    assert done.returncode == 0, done.stderr
    assert "epoch 1/1" in done.stderr  # progress bar with --verbose 1
    assert f"saved to {path}" in done.stdout
    model = lfagg.load(path)
    assert isinstance(model, lfagg.LearnedBoW)
    np.testing.assert_array_equal(model.classes_, ["inner", "outer"])
    # The same training in this process gives the same model: the options reached it.
    bags, y = lfagg.datasets.load_bags(files / "train", files / "train.csv")
    with threadpool_limits(1):
        again = cli.build_model("t1", 3, epochs=1, gamma_scale=2, samples_per_bag=10, learning_rate=0.01,
                                seed=0).fit(bags, y)
    np.testing.assert_allclose(model.centers_, again.centers_, rtol=1e-12)
    assert model.gamma_scale == 2 and model.gamma_ == again.gamma_

    evaluated = run_cli("evaluate", "--model", path, "--bags", files / "test.npz")
    assert evaluated.returncode == 0, evaluated.stderr
    assert re.search(r"lfagg evaluate: predicting [\d,]+ bags \.\.\. [\d.]+ s", evaluated.stderr)
    quiet = run_cli("evaluate", "--model", path, "--bags", files / "test.npz", "--verbose", "0")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == evaluated.stdout
    test_bags, test_y = lfagg.datasets.load_npz_bags(files / "test.npz")
    predicted = model.predict(test_bags)
    expected = np.mean(predicted == test_y)
    assert evaluated.stdout.startswith(f"accuracy {expected:.4f} ({np.sum(predicted == test_y)} of 10 bags)")
    for c in ("inner", "outer"):
        hits = (predicted == test_y)[test_y == c]
        assert re.search(rf"^{c}\s+{hits.size}\s+{hits.sum()}\s", evaluated.stdout, re.M)


def test_missing_file_exits_with_one_line(tmp_path):
    done = run_cli("train", "--bags", tmp_path / "nowhere", "--labels", tmp_path / "y.txt", "--model",
                   tmp_path / "m.lfagg")
    assert_one_line_error(done.returncode, done.stderr, "lfagg train: error:", tmp_path / "nowhere")
    assert not (tmp_path / "m.lfagg").exists()


# ---------------------------------------------------------------------------------------
# In process
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(capsys, command):
    rc, out, _ = run_main(capsys, command, "--help")
    assert rc == 0
    assert out.startswith(f"usage: lfagg {command}")
    assert "--seed" in out or "--model" in out


@pytest.mark.parametrize("command", [["train", "--bags", "b.npz", "--model", "m.lfagg"], ["store", "build", "--bags",
                                     "d", "--out", "s.zarr"], ["demo"]])
def test_an_unknown_option_gets_its_subcommands_usage(capsys, command):
    """It got the top-level usage ("usage: lfagg [-h] COMMAND ..."), which lists no option."""
    rc, _, err = run_main(capsys, *command, "--bogus")
    name = " ".join(command[:2] if command[0] == "store" else command[:1])
    assert rc == 2 and f"usage: lfagg {name}" in err
    assert err.strip().splitlines()[-1] == f"lfagg {name}: error: unrecognized arguments: --bogus"


def test_an_option_before_the_subcommand_is_not_blamed_on_it(capsys):
    """The subcommand's parser takes --threads: "lfagg demo: error: unrecognized
    arguments: --threads=2" would contradict its own usage."""
    for argv, option in ((["--threads=2", "demo"], "--threads=2"),
                         (["store", "--verbose=0", "build", "--bags", "b", "--out", "o"], "--verbose=0")):
        rc, _, err = run_main(capsys, *argv)
        assert rc == 2 and err.strip().splitlines()[-1] == f"lfagg: error: unrecognized arguments: {option}"


def test_encode_equals_transform(capsys, files, t1_model, tmp_path):
    _, path = t1_model
    rc, out, err = run_main(capsys, "encode", "--model", path, "--bags", files / "test.npz",
                            "--out", tmp_path / "r.npy")
    assert rc == 0 and "(10, 3) float32" in out
    assert re.fullmatch(r"lfagg encode: encoding 10 bags \.\.\. \d+\.\d s\n", err), err  # progress, one line
    rc, _, err = run_main(capsys, "encode", "--model", path, "--bags", files / "test.npz", "--out", tmp_path / "q.npy",
                          "--verbose", "0")
    assert rc == 0 and err == ""
    model = lfagg.load(path)
    bags, _ = lfagg.datasets.load_npz_bags(files / "test.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), model.transform(bags))


@pytest.mark.parametrize("method, encoder, dim", [("bow", lfagg.BagOfWords, 3), ("vlad", lfagg.VLAD, 6),
                                                   ("fv", lfagg.FisherVector, 12), ("t2", lfagg.LearnedVLAD, 6)])
def test_train_encode_other_methods(capsys, files, tmp_path, method, encoder, dim):
    model_path = tmp_path / "m.lfagg"
    rc, out, err = run_main(capsys, "train", "--bags", files / "test.npz", "--method", method, *TRAIN,
                            "--model", model_path)
    assert rc == 0, err
    model = lfagg.load(model_path)
    assert isinstance(getattr(model, "encoder_", model), encoder)
    rc, out, err = run_main(capsys, "encode", "--model", model_path, "--bags", files / "train", "--out", tmp_path / "r")
    assert rc == 0 and out.endswith(f"saved to {tmp_path / 'r.npy'}\n"), err
    bags, _ = lfagg.datasets.load_npy_dir(files / "train")
    encoded = np.load(tmp_path / "r.npy")
    assert encoded.shape == (24, dim)
    np.testing.assert_array_equal(encoded, model.transform(bags))


@pytest.mark.parametrize("method", ["t1", "t2"])
def test_train_with_max_pooling(capsys, files, tmp_path, method):
    model_path = tmp_path / "m.lfagg"
    rc, out, err = run_main(capsys, "train", "--bags", files / "test.npz", "--method", method, *TRAIN,
                            "--pooling", "max", "--model", model_path)
    assert rc == 0, err
    assert lfagg.load(model_path).pooling == "max"
    rc, out, err = run_main(capsys, "train", "--bags", files / "test.npz", "--method", "bow", *TRAIN,
                            "--pooling", "max", "--model", model_path)
    assert rc == 1 and "pooling 'max' applies to t1 and t2 only" in err
    for option in (["--gamma", "5"], ["--gamma-scale", "3"]):  # were ignored by the baselines' hard assignment
        rc, out, err = run_main(capsys, "train", "--bags", files / "test.npz", "--method", "vlad", *TRAIN, *option,
                                "--model", model_path)
        assert rc == 1 and "gamma and gamma_scale apply to t1 and t2 only, not to vlad" in err


def test_select_then_evaluate_and_encode(capsys, files, tmp_path):
    model_path = tmp_path / "cv.lfagg"
    search = ["--codewords", "2", "3", "--pooling", "mean", "max", "--gamma-scale", "1", "4", "--lr", "0.01",
              "--max-epochs", "2", "--folds", "2", "--refits", "2"]
    rc, out, err = run_main(capsys, "select", "--bags", files / "train", "--labels", files / "train.csv",
                            "--method", "t2", *search, "--verbose", "0", "--model", model_path)
    assert rc == 0, err
    model = lfagg.load(model_path)
    bags, y = lfagg.datasets.load_bags(files / "train", files / "train.csv")
    expected = lfagg.LearnedVLADCV(n_codewords=(2, 3), pooling=("mean", "max"), gamma_scale=(1.0, 4.0),
                                   learning_rate=(0.01,), max_epochs=2, cv=2, n_estimators=2, random_state=0,
                                   n_threads=1).fit(bags, y)
    assert isinstance(model, lfagg.LearnedVLADCV) and len(model.estimators_) == 2
    assert model.best_params_ == expected.best_params_ and f"chose {expected.best_params_} on 2 folds" in out
    assert model.get_params()["gamma_scale"] == (1.0, 4.0) and model.max_epochs == 2
    test_bags, test_y = lfagg.datasets.load_npz_bags(files / "test.npz")
    rc, out, err = run_main(capsys, "evaluate", "--model", model_path, "--bags", files / "test.npz", "--threads", "1")
    assert rc == 0, err
    assert out.startswith(f"accuracy {np.mean(model.predict(test_bags) == test_y):.4f}")
    rc, out, err = run_main(capsys, "encode", "--model", model_path, "--bags", files / "test.npz",
                            "--out", tmp_path / "r.npy", "--threads", "1")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), model.transform(test_bags))
    rc, _, err = run_main(capsys, "select", "--bags", files / "train", "--labels", files / "train.csv",
                          "--method", "bow", "--model", model_path)
    assert rc == 2 and "invalid choice: 'bow'" in err


def test_select_with_jobs_saves_a_model_on_all_cores(capsys, files, tmp_path):
    # one thread per process during the search, none of that in the saved model
    model_path = tmp_path / "cv.lfagg"
    rc, _, err = run_main(capsys, "select", "--bags", files / "test.npz", "--codewords", "2", "--gamma-scale", "1",
                          "--lr", "0.01", "--max-epochs", "1", "--folds", "2", "--refits", "2", "--jobs", "2",
                          "--verbose", "0", "--model", model_path)
    assert rc == 0, err
    model = lfagg.load(model_path)
    assert model.n_jobs == 2 and model.n_threads is None
    assert [refit.n_threads for refit in model.estimators_] == [None, None]


def test_select_help_states_the_estimators_defaults(capsys):
    t1, t2 = lfagg.LearnedBoWCV(), lfagg.LearnedVLADCV()
    p = t1.get_params()
    assert p["n_codewords"] == "auto" and t2.get_params() == p  # "auto": each class's own sizes
    sizes = [" ".join(map(str, search._AUTO_CODEBOOK_SIZES)) for search in (t1, t2)]
    stated = (f"codebook sizes {sizes[0]} (t1) or {sizes[1]} (t2), gamma scales "
              f"{' '.join(f'{v:g}' for v in p['gamma_scale'])}, learning rates "
              f"{' '.join(f'{v:g}' for v in p['learning_rate'])}, {p['max_epochs']} epochs, {p['cv']} folds, "
              f"{p['n_estimators']} refits, the {p['pooling']} pooling.")
    assert cli.SELECT_DEFAULTS.endswith(stated)
    rc, out, _ = run_main(capsys, "select", "--help")
    assert rc == 0 and "codebook sizes 2 4 16 64 (t1) or 1 2 4 16 64 (t2)" in " ".join(out.split())


def test_errors(capsys, files, tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    (tmp_path / "bad.lfagg").write_bytes(b"not a model")
    lfagg.save(lfagg.BagOfWords(3), tmp_path / "encoder.lfagg")
    lfagg.save(lfagg.LearnedBoW(3), tmp_path / "unfitted.lfagg")
    (tmp_path / "empty.csv").write_text("")
    train = ["train", "--bags", files / "train", "--labels", files / "train.csv", *TRAIN]
    cases = [
        (["train", "--bags", tmp_path / "bad.npz", "--model", tmp_path / "m.lfagg"], "not a readable .npz"),
        ([*train[:4], tmp_path / "empty.csv", *TRAIN, "--model", tmp_path / "m.lfagg"], "no labels in this file"),
        (["train", "--bags", files / "train", *TRAIN, "--model", tmp_path / "m.lfagg"], "no labels; pass --labels"),
        ([*train, "--model", tmp_path / "no" / "m.lfagg"], "no such directory"),
        ([*train, "--model", tmp_path], "is a directory: give the path of the file to write"),
        (["encode", "--model", tmp_path / "encoder.lfagg", "--bags", files / "test.npz", "--out", tmp_path],
         "is a directory: give the path of the file to write"),
        (["encode", "--model", tmp_path / "bad.lfagg", "--bags", files / "test.npz", "--out", tmp_path / "r.npy"],
         "not a model file written by lfagg.save / 'lfagg train' / 'lfagg select'"),
        (["evaluate", "--model", tmp_path / "encoder.lfagg", "--bags", files / "test.npz"],
         "holds a BagOfWords, not a classifier of bags"),
        (["evaluate", "--model", tmp_path / "unfitted.lfagg", "--bags", files / "test.npz"],
         "holds an unfitted LearnedBoW"),
        (["evaluate", "--model", tmp_path / "none.lfagg", "--bags", files / "test.npz"], "no such file"),
        (["reproduce", "--data", tmp_path / "none.npz"], "none.npz"),
    ]
    for lr in ("nan", "0", "-1e-3", "inf"):
        rc, _, err = run_main(capsys, *train, f"--lr={lr}", "--model", tmp_path / "m.lfagg")
        assert rc == 2 and "expected a positive number" in err
    for args, message in cases:
        rc, _, err = run_main(capsys, *args)
        assert_one_line_error(rc, err, message)
    assert not (tmp_path / "m.lfagg").exists()


def test_no_command_writes_over_what_it_reads(capsys, files, t1_model, tmp_path):
    """train and select replaced their bags or labels with the model, encode its model
    with the encodings; an empty path wrote a hidden '.npy' or failed after the fit."""
    victim = tmp_path / "victim.npz"
    victim.write_bytes((files / "test.npz").read_bytes())
    model = tmp_path / "model.npy"  # what encode --out model.npy writes, as numpy.save names it
    model.write_bytes(t1_model[1].read_bytes())
    before = victim.read_bytes(), (files / "train.csv").read_bytes(), model.read_bytes()
    train = ["train", "--bags", files / "train", "--labels", files / "train.csv", *TRAIN]
    encode = ["encode", "--model", model, "--bags", victim, "--out"]
    for args, message in [(["train", "--bags", victim, *TRAIN, "--model", victim], "which this command reads"),
                          ([*train, "--model", files / "train.csv"], "which this command reads"),
                          (["select", "--bags", victim, "--model", victim], "which this command reads"),
                          ([*encode, model], "which this command reads"),
                          ([*encode, tmp_path / "model"], "which this command reads"),  # + ".npy"
                          ([*train, "--model", ""], "the output path is empty"),
                          ([*encode, ""], "the output path is empty"),
                          (["encode", "--model", model, "--bags", files / "train", "--out", files / "train" / "r"],
                           "which this command reads")]:  # read as a bag by every later command
        rc, _, err = run_main(capsys, *args)
        assert_one_line_error(rc, err, message)
    assert (victim.read_bytes(), (files / "train.csv").read_bytes(), model.read_bytes()) == before
    rc, out, _ = run_main(capsys, *encode, victim)  # victim.npz.npy: nothing replaced
    assert rc == 0 and (tmp_path / "victim.npz.npy").exists() and victim.read_bytes() == before[0]


def test_evaluate_warns_about_unknown_labels(capsys, files, t1_model, tmp_path):
    (tmp_path / "y.txt").write_text("0\n1\n" * 5)  # integers, but the model's classes are strings
    rc, out, err = run_main(capsys, "evaluate", "--model", t1_model[1], "--bags", files / "test.npz", "--labels",
                            tmp_path / "y.txt")
    assert rc == 0 and out.startswith("accuracy 0.0000 (0 of 10 bags)")
    assert "warning: labels the model was not trained on: [0, 1] (its classes: ['inner', 'outer'])" in err


def test_demo_names_the_features_its_largest_codebook_needs(capsys):
    """It said 'too few local features to learn 128 codewords ... lower n_codewords' after a
    row of the table, for --codewords 8."""
    rc, out, err = run_main(capsys, "demo", "--codewords", "8", "--n-bags", "4", "--n-per-bag", "10")
    assert_one_line_error(rc, err, "--codewords 8 needs at least 128 training features for the table's BoW-128 row; "
                                   "--n-bags x --n-per-bag gives 40")
    assert out == ""


def test_evaluate_reads_the_models_classes_in_another_kind_and_refuses_nan_labels(capsys, tmp_path):
    """A model of the string classes '0' / '1' (an .npz's) scored 0% against the integers
    0 / 1 of a label file, with exit 0; a NaN label in an .npz was scored as a class."""
    bags, y = make_circles_bags(16, 10, random_state=0)
    model = lfagg.BagClassifier(lfagg.BagOfWords(2, random_state=0)).fit(bags, y.astype(str))
    lfagg.save(model, tmp_path / "m.lfagg")
    save_npz_bags(tmp_path / "b.npz", bags)
    (tmp_path / "y.txt").write_text("".join(f"{v}\n" for v in y))
    rc, out, err = run_main(capsys, "evaluate", "--model", tmp_path / "m.lfagg", "--bags", tmp_path / "b.npz",
                            "--labels", tmp_path / "y.txt", "--verbose", "0")
    assert rc == 0 and out.startswith(f"accuracy {model.score(bags, y.astype(str)):.4f}") and "warning" not in err
    save_npz_bags(tmp_path / "nan.npz", bags, np.where(np.arange(16) == 3, np.nan, y))
    rc, _, err = run_main(capsys, "evaluate", "--model", tmp_path / "m.lfagg", "--bags", tmp_path / "nan.npz")
    assert_one_line_error(rc, err, "nan.npz: the labels must hold class labels", "values like [nan]")


def test_model_of_other_dimension(capsys, files, t1_model, tmp_path):
    save_npz_bags(tmp_path / "wide.npz", [np.ones((3, 5))], ["inner"])
    rc, _, err = run_main(capsys, "evaluate", "--model", t1_model[1], "--bags", tmp_path / "wide.npz",
                          "--verbose", "0")
    assert_one_line_error(rc, err, "dimension 5")
    rc, _, err = run_main(capsys, "evaluate", "--model", t1_model[1], "--bags", tmp_path / "wide.npz")
    assert rc == 1 and err.splitlines()[0] == "lfagg evaluate: predicting 1 bag ... failed"  # not a time


@pytest.mark.parametrize("args", [
    ["train", "--bags", "x", "--model", "m", "--method", "nope"],
    ["train", "--bags", "x", "--model", "m", "--codewords", "0"],
    ["train", "--bags", "x", "--model", "m", "--gamma", "-1"],
    ["train", "--bags", "x", "--model", "m", "--gamma-scale", "0"],
    ["train", "--bags", "x", "--model", "m", "--pooling", "sum"],
    ["train", "--bags", "x"],
    ["demo", "--epochs", "-1"],
    ["demo", "--n-bags", "1"],  # once refused after the parser, by make_circles_bags
    ["select", "--bags", "x", "--model", "m", "--jobs", "99999"],  # once n_jobs' message of negative counts
    ["reproduce"],
    ["figures", "--out-dir", "d", "--codewords", "a"],
    ["figures", "--out-dir", "d", "--epochs", "0"],  # once accepted, and refused after figure1 was written
    [],
])
def test_usage_errors(capsys, args):
    rc, _, err = run_main(capsys, *args)
    assert rc == 2
    assert "usage: lfagg" in err and "Traceback" not in err


def test_reproduce_calls_table1(capsys, monkeypatch):
    calls = []
    rows = [{"method": "BoW-8", "accuracy": 0.25, "seconds": 1.5, "l2": 0.1},
            {"method": "T1-8 learned", "accuracy": 0.5, "seconds": 3.0, "l2": 0.01}]

    def table1(*args, **kwargs):
        calls.append((args, kwargs))
        return rows

    monkeypatch.setattr(experiments, "table1", table1)
    rc, out, _ = run_main(capsys, "reproduce", "--data", "c.npz", "--codewords", 8, 16, "--n-train", 40,
                          "--epochs", 2, "--out-json", "t.json", "--threads", 2, "--verbose", 0)
    assert rc == 0
    table, total = out.rsplit("\n", 2)[:2]
    assert table == experiments.format_table(rows) and total.startswith("whole table")
    assert calls == [(("c.npz",), dict(codebook_sizes=(8, 16), vlad_codewords=64, n_train=40, n_test=None,
                                       n_epochs=2, random_state=0, n_threads=2, verbose=0, out_json="t.json"))]


def test_figures_calls_figure1_and_figure2(capsys, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(experiments, "figure1", lambda *a, **k: calls.append(("figure1", a, k)))
    monkeypatch.setattr(experiments, "figure2", lambda *a, **k: calls.append(("figure2", a, k)))
    out_dir = tmp_path / "new" / "figs"
    rc, out, _ = run_main(capsys, "figures", "--out-dir", out_dir, "--seed", 3, "--epochs", 4, "--threads", 2)
    assert rc == 0 and out_dir.is_dir()
    fig1, fig2 = str(out_dir / "figure1.png"), str(out_dir / "figure2.png")
    assert calls == [("figure1", (fig1,), dict(random_state=3, n_threads=2)),
                     ("figure2", (fig2,), dict(data_path=None, codebook_sizes=None, n_epochs=4, random_state=3,
                                               verbose=1, n_threads=2))]
    assert out == f"wrote {fig1}\nwrote {fig2}\n"


def test_reproduce_and_figures_check_their_paths_before_any_work(capsys, monkeypatch, tmp_path):
    calls = []
    for name in ("table1", "figure1", "figure2"):
        monkeypatch.setattr(experiments, name, lambda *a, name=name, **k: calls.append(name))
    save_npz_bags(tmp_path / "bags.npz", [np.ones((2, 3))])  # not CIFAR-10
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "afile").write_text("")
    reproduce = ["reproduce", "--data", "c.npz", "--out-json"]
    for args, message in [([*reproduce, tmp_path / "no" / "t.json"], "no such directory"),
                          ([*reproduce, tmp_path], "is a directory"),
                          ([*reproduce, tmp_path / "pipe"], "pipe: not a regular file"),  # found after a row
                          (["figures", "--out-dir", tmp_path / "afile"], "afile: a file, not a directory"),  # Errno 17
                          (["figures", "--out-dir", tmp_path / "figs", "--data", tmp_path / "none.npz"],
                           "none.npz: no such file"),
                          (["figures", "--out-dir", tmp_path / "figs", "--data", tmp_path / "bags.npz"],
                           "bags.npz: missing arrays")]:  # once found after figure1 was written
        rc, _, err = run_main(capsys, *args)
        assert_one_line_error(rc, err, message)
    assert calls == [] and not (tmp_path / "figs").exists()


def test_figures_without_matplotlib(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    rc, _, err = run_main(capsys, "figures", "--out-dir", tmp_path)
    assert_one_line_error(rc, err, "pip install")


def test_a_closed_pipe_exits_quietly(files, t1_model):
    """`lfagg evaluate ... | head -1`: the reader goes away; no 'Broken pipe' error line."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(lfagg.__file__)), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "lfagg", "evaluate", "--model", str(t1_model[1]), "--bags",
                             str(files / "test.npz"), "--verbose", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before lfagg has written anything: its first write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


@pytest.mark.parametrize("command", ["evaluate", "encode"])
def test_threads_option_of_commands_that_load_a_model(capsys, files, t1_model, tmp_path, command):
    extra = ["--out", tmp_path / "r.npy"] if command == "encode" else []
    rc, out, err = run_main(capsys, command, "--model", t1_model[1], "--bags", files / "test.npz", *extra,
                            "--threads", "1")
    assert rc == 0, err
    rc, _, err = run_main(capsys, command, "--model", t1_model[1], "--bags", files / "test.npz", *extra,
                          "--threads", "0")
    assert rc == 2 and "expected an integer >= 1" in err


@pytest.mark.parametrize("argv", [["demo", "--threads"], ["figures", "--threads"], ["train", "--threads"],
                                  ["select", "--jobs"]])
def test_thread_and_process_counts_beyond_the_bound_are_refused_before_any_output(capsys, argv):
    """`lfagg demo --threads 100000` printed the table's header, then the error."""
    from lfagg._validation import MAX_THREADS

    rc, out, err = run_main(capsys, *argv, str(MAX_THREADS + 1))
    assert rc == 2 and out == "" and f"expected at most {MAX_THREADS} " in err, (out, err)


def test_warnings_are_one_line_naming_the_command(capsys, tmp_path):
    # three bags: too few to choose l2 on held-out ones, which the fit warns about
    bags, y = make_circles_bags(3, 15, random_state=0)
    save_npz_bags(tmp_path / "few.npz", bags, y)
    rc, out, err = run_main(capsys, "train", "--bags", tmp_path / "few.npz", "--method", "bow", "--codewords", "2",
                            "--verbose", "0", "--model", tmp_path / "m.lfagg")
    assert rc == 0, err
    assert err.strip().splitlines() == ["lfagg train: warning: 3 training examples are too few to choose l2 on "
                                        "held-out ones: l2=0.01"], err
