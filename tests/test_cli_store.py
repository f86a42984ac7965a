"""The command line with bag stores: 'lfagg store build', train/evaluate/encode reading a
store, encode written block by block into .zarr and resumed after an interruption, Dask
schedulers, and the errors."""

import shutil
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("zarr")

import lfagg  # noqa: E402
import lfagg.outputs  # noqa: E402
import lfagg.store  # noqa: E402
from lfagg.datasets import make_circles_bags, save_npz_bags  # noqa: E402
from test_cli import assert_one_line_error, run_main  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_store")
    bags, y = make_circles_bags(40, 20, random_state=0)
    (root / "bags").mkdir()
    for i in range(len(bags)):  # names whose plain sort differs from bag order
        np.save(root / "bags" / f"v{i}.npy", bags[i])
    (root / "labels.csv").write_text("name,label\n" + "".join(f"v{i},{y[i]}\n" for i in range(len(bags))))
    save_npz_bags(root / "bags.npz", bags, y)
    return root, bags, y


@pytest.fixture(scope="module")
def store_and_model(files, tmp_path_factory):
    root, bags, y = files
    out = tmp_path_factory.mktemp("built") / "s.zarr"
    cli_main(["store", "build", "--bags", root / "bags", "--labels", root / "labels.csv", "--out", out,
              "--chunk-rows", 64, "--verbose", 0])
    model = out.parent / "m.lfagg"
    cli_main(["train", "--bags", out, "--method", "t2", "--codewords", 3, "--epochs", 1, "--model", model,
              "--verbose", 0])
    return out, model


def cli_main(args):
    assert lfagg.cli.main([str(a) for a in args]) == 0


def test_store_build_keeps_order_names_and_labels(files, store_and_model, capsys, tmp_path):
    root, bags, y = files
    store = lfagg.BagStore.open(store_and_model[0])
    assert_bags = lfagg.Bags.from_arrays(list(store[:]))
    np.testing.assert_array_equal(assert_bags.features, bags.features)
    np.testing.assert_array_equal(store.labels, y)
    assert store.names.tolist() == [f"v{i}" for i in range(len(bags))]
    rc, out, err = run_main(capsys, "store", "build", "--bags", root / "bags.npz", "--out", tmp_path / "n.zarr")
    assert rc == 0 and "40 bags, 800 local features of dimension 2" in out and "with labels" in out
    assert "lfagg store build: 40 bags" in err  # the progress, one line in a log
    np.testing.assert_array_equal(lfagg.BagStore.open(tmp_path / "n.zarr")[:].features, bags.features)


def test_store_build_never_replaces_its_own_bags_nor_makes_folders(capsys, tmp_path):
    """--out the bags' directory or a folder above it, with --overwrite, once deleted the
    .npy files; a name that is not UTF-8 once left a half-built store and a traceback."""
    bags = tmp_path / "data" / "bags"
    bags.mkdir(parents=True)
    for i in range(3):
        np.save(bags / f"v{i}.npy", np.ones((2, 2)))
    for out in (bags, tmp_path / "data"):
        rc, _, err = run_main(capsys, "store", "build", "--bags", bags, "--out", out, "--overwrite")
        assert rc == 1 and "the store would replace the files it is built from" in err
        assert sorted(p.name for p in bags.iterdir()) == ["v0.npy", "v1.npy", "v2.npy"]
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "labels.txt").write_text("0\n1\n0\n")  # the labels, an input too
    rc, _, err = run_main(capsys, "store", "build", "--bags", bags, "--labels", tmp_path / "lab" / "labels.txt",
                          "--out", tmp_path / "lab", "--overwrite")
    assert rc == 1 and "the store would replace the files it is built from" in err
    assert (tmp_path / "lab" / "labels.txt").exists()
    rc, _, err = run_main(capsys, "store", "build", "--bags", bags, "--out", tmp_path / "no" / "s.zarr")
    assert_one_line_error(rc, err, "no such directory")  # as the other commands: zarr would create it
    assert not (tmp_path / "no").exists()
    np.save(bags / "v\udcff.npy", np.ones((2, 2)))  # the byte 0xff, undecodable, as Python names it
    rc, _, err = run_main(capsys, "store", "build", "--bags", bags, "--out", tmp_path / "s.zarr")
    assert_one_line_error(rc, err, "names must be UTF-8 text")
    assert not (tmp_path / "s.zarr").exists()


def test_store_build_of_a_store_says_it_is_one(store_and_model, capsys, tmp_path):
    rc, _, err = run_main(capsys, "store", "build", "--bags", store_and_model[0], "--out", tmp_path / "copy.zarr")
    assert_one_line_error(rc, err, "a Zarr store (a bag store already?), not a directory of .npy files")


def test_train_evaluate_and_encode_read_a_store(files, store_and_model, capsys, tmp_path):
    root, bags, y = files
    store_path, model_path = store_and_model
    model = lfagg.load(model_path)
    rc, out, _ = run_main(capsys, "evaluate", "--bags", store_path, "--model", model_path)
    assert rc == 0 and f"accuracy {np.mean(model.predict(bags) == y):.4f}" in out
    rc, _, _ = run_main(capsys, "encode", "--bags", store_path, "--model", model_path, "--out", tmp_path / "e.npy")
    assert rc == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), model.transform(bags), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scheduler", [None, "threads"])
def test_an_interrupted_zarr_encode_completes_when_rerun(store_and_model, capsys, tmp_path, monkeypatch, scheduler):
    import zarr

    store_path, model_path = store_and_model
    model = lfagg.load(model_path)
    monkeypatch.setattr(lfagg.store, "BLOCK_BYTES", 1600)  # 100 features per block: 8 blocks
    monkeypatch.setattr(lfagg.outputs, "BLOCKS_PER_WAVE", 2)
    compute, calls = lfagg.outputs._compute, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return compute(*args)

    args = ["encode", "--bags", store_path, "--model", model_path, "--out", tmp_path / "e.zarr", "--verbose", 0]
    args += [] if scheduler is None else ["--scheduler", scheduler]
    monkeypatch.setattr(lfagg.outputs, "_compute", interrupted)
    rc, _, err = run_main(capsys, *args)
    assert rc == 130 and "interrupted" in err
    group = zarr.open_group(tmp_path / "e.zarr")
    done, rows = np.asarray(group["done"][:]), np.asarray(group["encodings"][:])
    assert 0 < done.sum() < done.size and "lfagg_complete" not in group.attrs
    bounds = lfagg.BagStore.open(store_path).block_bounds(100)
    for flag, (start, end) in zip(done, bounds):  # unwritten rows read as NaN, never as an empty bag's zeros
        assert np.isnan(rows[start:end]).all() != flag
    monkeypatch.setattr(lfagg.outputs, "_compute", compute)
    slash = [f"{tmp_path / 'e.zarr'}/" if a == tmp_path / "e.zarr" else a for a in args]  # as a shell completes it
    rc, out, err = run_main(capsys, *slash)
    assert rc == 0 and f"({done.size - done.sum()} blocks computed now of {done.size}; the others by an " in out, err
    rc, out, _ = run_main(capsys, *args[:6], tmp_path / "fresh.zarr", *args[7:])  # a first, whole run says so
    assert rc == 0 and f"({done.size} blocks computed now)" in out
    expected = np.concatenate([model.transform(block) for block in lfagg.BagStore.open(store_path).blocks(100)])
    group = zarr.open_group(tmp_path / "e.zarr")
    np.testing.assert_array_equal(np.asarray(group["encodings"][:]), expected)
    assert group.attrs["lfagg_complete"] is True


@pytest.mark.parametrize("interrupted_at", [1, 2])  # before its encodings array, before its done flags
def test_an_encode_interrupted_while_creating_its_output_is_resumed(store_and_model, capsys, tmp_path, monkeypatch,
                                                                   interrupted_at):
    import zarr

    store_path, model_path = store_and_model
    create, calls = zarr.Group.create_array, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == interrupted_at:
            raise KeyboardInterrupt
        return create(self, *args, **kwargs)

    args = ["encode", "--bags", store_path, "--model", model_path, "--out", tmp_path / "e.zarr", "--verbose", 0]
    monkeypatch.setattr(zarr.Group, "create_array", interrupted)
    rc, _, err = run_main(capsys, *args)
    assert rc == 130 and "interrupted" in err
    monkeypatch.setattr(zarr.Group, "create_array", create)
    rc, out, err = run_main(capsys, *args)  # it said the output did not hold an unfinished encode of this model
    assert rc == 0, err
    expected = lfagg.load(model_path).transform(lfagg.BagStore.open(store_path))
    np.testing.assert_array_equal(np.asarray(zarr.open_group(tmp_path / "e.zarr")["encodings"][:]), expected)
    if interrupted_at == 2:  # and done flags without their encodings (an array deleted) claim nothing
        shutil.rmtree(tmp_path / "e.zarr" / "encodings")
        rc, out, err = run_main(capsys, *args)
        assert rc == 0 and "blocks computed now)" in out, err
        np.testing.assert_array_equal(np.asarray(zarr.open_group(tmp_path / "e.zarr")["encodings"][:]), expected)


def test_encode_errors(files, store_and_model, capsys, tmp_path):
    root, _, _ = files
    store_path, model_path = store_and_model
    base = ["encode", "--model", model_path]
    rc, _, err = run_main(capsys, *base, "--bags", root / "bags", "--out", tmp_path / "e.zarr")
    assert_one_line_error(rc, err, "needs a bag store")
    started = time.perf_counter()  # refused before connecting: an unreachable address took 30 s first
    rc, _, err = run_main(capsys, *base, "--bags", root / "bags", "--out", tmp_path / "e.npy", "--address",
                          "tcp://127.0.0.1:9")
    assert_one_line_error(rc, err, "--scheduler/--address need a bag store as --bags")
    assert time.perf_counter() - started < 10
    rc, _, err = run_main(capsys, *base, "--bags", store_path, "--out", tmp_path / "e.npy", "--scheduler", "threads",
                          "--address", "127.0.0.1:1")
    assert_one_line_error(rc, err, "not both")
    run_main(capsys, *base, "--bags", store_path, "--out", tmp_path / "x.zarr")
    other = tmp_path / "other.lfagg"
    lfagg.save(lfagg.BagClassifier(lfagg.BagOfWords(3, random_state=0)).fit(*make_circles_bags(10, 5)), other)
    rc, _, err = run_main(capsys, "encode", "--model", other, "--bags", store_path, "--out", tmp_path / "x.zarr")
    assert_one_line_error(rc, err, "does not hold an unfinished encode of this model")
    rc, _, err = run_main(capsys, "store", "build", "--bags", root / "bags", "--out", store_path)
    assert_one_line_error(rc, err, "already exists")
    rc, _, err = run_main(capsys, "evaluate", "--model", model_path, "--bags", tmp_path / "x.zarr")
    assert_one_line_error(rc, err, "not a bag store")


def test_outputs_inside_the_store_read_are_refused(store_and_model, capsys):
    """A model written as the store's zarr.json (or any file in its folder) exited 0 and left
    the store unreadable."""
    store_path, model_path = store_and_model
    before = {p: p.read_bytes() for p in store_path.rglob("*") if p.is_file()}
    for args in (["train", "--bags", store_path, "--method", "bow", "--codewords", 2, "--model",
                  store_path / "zarr.json"],
                 ["encode", "--model", model_path, "--bags", store_path, "--out", store_path / "r.npy"]):
        rc, _, err = run_main(capsys, *args)
        assert_one_line_error(rc, err, "which this command reads")
    assert {p: p.read_bytes() for p in store_path.rglob("*") if p.is_file()} == before


def test_a_zarr_encode_of_a_store_rebuilt_at_the_same_path_is_refused(files, store_and_model, capsys, tmp_path):
    """The output named the bags by path, number and blocks: a store rebuilt from other bags
    at the same path resumed the encode, mixing the two stores' encodings."""
    root, bags, y = files
    _, model_path = store_and_model
    store = tmp_path / "s.zarr"
    cli_main(["store", "build", "--bags", root / "bags", "--out", store, "--verbose", 0])
    args = ["encode", "--bags", store, "--model", model_path, "--out", tmp_path / "e.zarr", "--verbose", 0]
    assert run_main(capsys, *args)[0] == 0
    save_npz_bags(tmp_path / "other.npz", lfagg.Bags(bags.features[::-1].copy(), bags.offsets), y)
    cli_main(["store", "build", "--bags", tmp_path / "other.npz", "--out", store, "--overwrite", "--verbose", 0])
    rc, _, err = run_main(capsys, *args)
    assert_one_line_error(rc, err, "does not hold an unfinished encode of this model and these bags")


def test_a_zarr_encode_on_the_processes_scheduler_starts_its_processes_once(store_and_model, capsys, tmp_path,
                                                                            monkeypatch):
    """Dask's processes scheduler made a pool per compute, one per wave of blocks, each
    starting its processes and importing lfagg again (59 s against 8 for one compute)."""
    import concurrent.futures

    import dask.multiprocessing
    import zarr

    store_path, model_path = store_and_model
    monkeypatch.setattr(lfagg.store, "BLOCK_BYTES", 1600)  # 8 blocks
    monkeypatch.setattr(lfagg.outputs, "BLOCKS_PER_WAVE", 2)  # 4 waves
    pools = []
    monkeypatch.setattr(dask.multiprocessing, "ProcessPoolExecutor",
                        lambda *a, **k: pools.append(1) or concurrent.futures.ProcessPoolExecutor(*a, **k))
    rc, out, err = run_main(capsys, "encode", "--bags", store_path, "--model", model_path, "--out",
                            tmp_path / "e.zarr", "--scheduler", "processes", "--verbose", 0)
    assert rc == 0 and "(8 blocks computed now)" in out, err
    assert pools == []  # the command's one pool, not dask's per compute
    expected = np.concatenate([lfagg.load(model_path).transform(block)
                               for block in lfagg.BagStore.open(store_path).blocks(100)])
    np.testing.assert_array_equal(np.asarray(zarr.open_group(tmp_path / "e.zarr")["encodings"][:]), expected)


def test_a_build_stopped_part_way_leaves_a_store_marked_unfinished(files, capsys, tmp_path, monkeypatch):
    """Each append is committed alone: an interrupted or failed build left a store that
    read as complete with the bags before the stop (encode and train exited 0 on them)."""
    root, bags, _ = files
    folder = tmp_path / "bags"
    folder.mkdir()
    for i in range(6):
        np.save(folder / f"b{i}.npy", bags[i] if i != 4 else np.full_like(bags[i], np.nan))
    out = tmp_path / "s.zarr"
    rc, _, err = run_main(capsys, "store", "build", "--bags", folder, "--out", out, "--chunk-rows", 8,
                          "--verbose", 0)
    assert_one_line_error(rc, err, "NaN")
    with monkeypatch.context() as patch:  # appends of 3 bags: the file, not the append's own number (bag 1)
        patch.setattr(lfagg.store, "BLOCK_BYTES", 3 * bags[0].nbytes)
        rc, _, err = run_main(capsys, "store", "build", "--bags", folder, "--out", out, "--overwrite",
                              "--verbose", 0)
    assert_one_line_error(rc, err, "bag 4 (b4) contains NaN or infinity")
    with pytest.raises(ValueError, match=r"an unfinished bag store: lfagg store build stopped after \d of its bags"):
        lfagg.store.BagStore.open(out)
    rc, _, err = run_main(capsys, "train", "--bags", out, "--method", "bow", "--codewords", 2, "--model",
                          tmp_path / "m.lfagg")
    assert_one_line_error(rc, err, "an unfinished bag store")
    np.save(folder / "b4.npy", bags[4])
    cli_main(["store", "build", "--bags", folder, "--out", out, "--overwrite", "--verbose", 0])
    assert len(lfagg.store.BagStore.open(out)) == 6


def test_an_interrupted_command_exits_quietly(files, capsys, tmp_path, monkeypatch):
    """After "interrupted", the exit tore down Zarr's pending writes with ~100 lines of
    "Exception ignored ... Event loop is closed" (unraisable errors) and asyncio's "Task
    was destroyed but it is pending!": the command line's own process silences them; a
    caller of main(argv) keeps its hooks."""
    import logging
    import sys

    root, _, _ = files

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lfagg.store.BagStore, "append", interrupted)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    monkeypatch.setattr(logging.getLogger("asyncio"), "level", logging.getLogger("asyncio").level)
    hook = sys.unraisablehook
    rc, _, err = run_main(capsys, "store", "build", "--bags", root / "bags.npz", "--out", tmp_path / "a.zarr")
    assert rc == 130 and err.strip().endswith("interrupted") and sys.unraisablehook is hook
    monkeypatch.setattr(sys, "argv", ["lfagg", "store", "build", "--bags", str(root / "bags.npz"), "--out",
                                      str(tmp_path / "b.zarr"), "--verbose", "0"])
    with warnings.catch_warnings():
        assert lfagg.cli.main() == 130
        sys.unraisablehook(None)  # silenced: it would print the unraisable's traceback
        assert logging.getLogger("asyncio").level == logging.CRITICAL
    assert capsys.readouterr().err == "lfagg store: interrupted\n"
