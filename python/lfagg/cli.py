"""The ``lfagg`` command line: demo, train, select, encode, evaluate, store build, reproduce,
figures.

Errors in the user's files (missing, malformed, not a model) print one line on stderr
and exit with status 1; argparse's usage errors exit with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import warnings

from ._files import refuse_special_file, replaced_input, within

METHODS = ("t1", "t2", "bow", "vlad", "fv")
#: What `lfagg select` searches when not told (LearnedBoWCV's defaults, which a test
#: compares this with: the parser does not import scikit-learn to read them).
SELECT_DEFAULTS = ("Options left out take the estimators' defaults: codebook sizes 2 4 16 64 (t1) or 1 2 4 16 64 "
                   "(t2), gamma scales 0.125 0.5 2 8, learning rates 0.001 0.01, 16 epochs, 5 folds, 5 refits, the "
                   "mean pooling.")


def build_model(method, n_codewords, *, epochs=10, gamma="auto", gamma_scale=1.0, learning_rate=1e-3,
                samples_per_bag=128, pooling="mean", seed=0, threads=None, verbose=0):
    """An unfitted classifier of bags for one of METHODS.

    t1 / t2: LearnedBoW / LearnedVLAD (Algorithm 1), pooled by ``pooling`` ("mean" or
    "max"; ValueError for another method unless "mean", as for gamma and gamma_scale
    unless "auto" and 1). bow, vlad, fv: the unsupervised
    encoder (BagOfWords, VLAD, FisherVector with ``n_codewords`` codewords or Gaussians),
    the chi2 feature map for bow, and the same softmax regression, as in Table I
    (:class:`lfagg.BagClassifier`).
    """
    from .encoders import VLAD, BagOfWords, FisherVector
    from .models import BagClassifier, LearnedBoW, LearnedVLAD

    if method in ("t1", "t2"):
        cls = LearnedBoW if method == "t1" else LearnedVLAD
        return cls(n_codewords, pooling=pooling, gamma=gamma, gamma_scale=gamma_scale, n_epochs=epochs,
                   n_samples_per_bag=samples_per_bag, learning_rate=learning_rate, random_state=seed,
                   n_threads=threads, verbose=verbose)
    encoders = {"bow": BagOfWords, "vlad": VLAD, "fv": FisherVector}
    if method not in encoders:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if pooling != "mean":
        raise ValueError(f"pooling {pooling!r} applies to t1 and t2 only, not to {method}")
    if gamma != "auto" or gamma_scale != 1.0:  # the baselines' hard assignment has no softness: not ignored
        raise ValueError(f"gamma and gamma_scale apply to t1 and t2 only, not to {method}")
    return BagClassifier(encoders[method](n_codewords, random_state=seed, n_threads=threads), random_state=seed,
                         verbose=verbose)


def load_model(path):
    """The fitted classifier of bags written at path by ``lfagg train`` or ``lfagg select``
    (:func:`lfagg.load`: loading runs no code); ValueError for anything else."""
    from ._validation import fitted_names
    from .models import BagClassifier, LearnedBoW, LearnedBoWCV, LearnedVLAD, LearnedVLADCV
    from .persistence import load

    model = load(path)
    if not isinstance(model, (BagClassifier, LearnedBoW, LearnedVLAD, LearnedBoWCV, LearnedVLADCV)):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a classifier of bags from 'lfagg train' "
                         "or 'lfagg select'")
    if not fitted_names(model):
        raise ValueError(f"{path}: holds an unfitted {type(model).__name__}, not a model from 'lfagg train' or "
                         "'lfagg select'")
    return model


def _load_model_with_threads(args):
    """The model of ``--model``, its kernels on ``--threads`` threads (when given; else the
    count it was saved with)."""
    model = load_model(args.model)
    if args.threads is not None:
        _set_threads(model, args.threads)
    return model


def _set_threads(model, threads) -> None:
    """The thread count (None: all cores) of a model's kernels and of its encoder's (of
    every refit's, for a model of ``lfagg select``)."""
    for fitted in [model, *getattr(model, "estimators_", []), getattr(model, "best_estimator_", None)]:
        for estimator in (fitted, getattr(fitted, "encoder_", None)):  # None for a model without one
            if estimator is not None and "n_threads" in estimator.get_params():
                estimator.set_params(n_threads=threads)


# ---------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------
def _demo(args) -> int:
    """Every representation on the embedded synthetic circles bags, as a table."""
    from ._threads import limit_threads
    from .datasets import make_circles_bags

    K = args.codewords
    if args.n_bags * args.n_per_bag < 16 * K:  # the table's largest codebook: BoW-16K, learned on the features
        raise ValueError(f"--codewords {K} needs at least {16 * K} training features for the table's BoW-{16 * K} "
                         f"row; --n-bags x --n-per-bag gives {args.n_bags * args.n_per_bag}")
    train_bags, train_y = make_circles_bags(args.n_bags, args.n_per_bag, random_state=args.seed)
    test_bags, test_y = make_circles_bags(args.n_bags, args.n_per_bag, random_state=args.seed + 1)
    print(f"concentric circles: {len(train_bags)} training and {len(test_bags)} test bags of "
          f"{args.n_per_bag} 2-D local features, two classes")
    learned = dict(samples_per_bag=20, learning_rate=1e-2, seed=args.seed, threads=args.threads,
                   verbose=args.verbose)
    rows = [
        (f"BoW-{K}", build_model("bow", K, seed=args.seed, threads=args.threads)),
        (f"BoW-{16 * K}", build_model("bow", 16 * K, seed=args.seed, threads=args.threads)),
        (f"VLAD-{K}", build_model("vlad", K, seed=args.seed, threads=args.threads)),
        (f"FV-{K}", build_model("fv", K, seed=args.seed, threads=args.threads)),
        (f"T1-{K} initial (K-Means)", build_model("t1", K, epochs=0, **learned)),
        (f"T1-{K} learned", build_model("t1", K, epochs=args.epochs, **learned)),
        (f"T2-{K} initial (K-Means)", build_model("t2", K, epochs=0, **learned)),
        (f"T2-{K} learned", build_model("t2", K, epochs=args.epochs, **learned)),
    ]
    print(f"{'representation':<26}{'dim':>5}{'test accuracy':>15}{'time (s)':>10}")
    with limit_threads(args.threads):  # K-Means, GMM and BLAS too
        for label, model in rows:
            start = time.perf_counter()
            model.fit(train_bags, train_y)
            accuracy, seconds = model.score(test_bags, test_y), time.perf_counter() - start
            dim = model.transform(test_bags[:1]).shape[1]
            print(f"{label:<26}{dim:>5}{accuracy:>15.3f}{seconds:>10.2f}", flush=True)
    return 0


def _labelled_bags(args):
    from ._validation import check_labels
    from .datasets import load_bags

    bags, y = load_bags(args.bags, args.labels)
    if y is None:
        raise ValueError(f"{args.bags}: no labels; pass --labels")
    # as fit checks them, for evaluate too: a NaN label of an .npz was scored as a class
    return bags, check_labels(y, len(bags), f"{args.labels or args.bags}: the labels")


def _check_output_folder(path, store: bool = False, inputs=()) -> None:
    """ValueError before any work when ``path`` is empty, cannot be written for want of its
    folder, is a folder itself (unless ``store``, or a *.zarr store: encode resumes one),
    would replace one of the command's ``inputs`` (paths; None ones skipped) or lie in a
    folder among them (a folder of .npy bags, a bag store)."""
    if not path:
        raise ValueError("the output path is empty")
    if os.path.isdir(path) and not (store or path.endswith(".zarr")):
        raise ValueError(f"{path} is a directory: give the path of the file to write")
    refuse_special_file(path)  # atomic_path finds it too, but after the work
    source = replaced_input(path, inputs)
    if source is not None:
        raise ValueError(f"{path}: writing it would replace {source}, which this command reads: give another path")
    for source in inputs:  # an .npy among .npy bags would be read as one; a file in a store's folder damages it
        if source is not None and os.path.isdir(source) and within(path, source):
            raise ValueError(f"{path}: inside {source}, which this command reads: give a path outside it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{path}: no such directory {folder}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{path}: cannot write in {folder}")


def _train(args) -> int:
    from ._progress import bags_count
    from .persistence import save

    _check_output_folder(args.model, inputs=(args.bags, args.labels))
    bags, y = _labelled_bags(args)
    model = build_model(args.method, args.codewords, epochs=args.epochs, gamma=args.gamma,
                        gamma_scale=args.gamma_scale, learning_rate=args.lr,
                        samples_per_bag=args.samples_per_bag, pooling=args.pooling, seed=args.seed,
                        threads=args.threads, verbose=args.verbose)
    start = time.perf_counter()
    model.fit(bags, y)
    save(model, args.model)
    print(f"{args.method} with {args.codewords} codewords trained on {bags_count(len(bags))} in "
          f"{time.perf_counter() - start:.1f} s, training accuracy {model.score(bags, y):.3f}; saved to {args.model}")
    return 0


def _select(args) -> int:
    from ._progress import bags_count
    from .models import LearnedBoWCV, LearnedVLADCV
    from .persistence import save

    _check_output_folder(args.model, inputs=(args.bags, args.labels))
    bags, y = _labelled_bags(args)
    given = {name: value for name, value in (
        ("n_codewords", args.codewords), ("pooling", args.pooling), ("gamma_scale", args.gamma_scale),
        ("learning_rate", args.lr), ("max_epochs", args.max_epochs), ("cv", args.folds),
        ("n_estimators", args.refits)) if value is not None}
    # Processes in parallel each get one thread unless told otherwise (see LearnedBoWCV).
    threads = 1 if args.threads is None and args.jobs is not None and args.jobs > 1 else args.threads
    search = LearnedBoWCV if args.method == "t1" else LearnedVLADCV
    model = search(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}, random_state=args.seed,
                   n_jobs=args.jobs, n_threads=threads, verbose=args.verbose)
    start = time.perf_counter()
    model.fit(bags, y)
    _set_threads(model, args.threads)  # the one thread per process was for the search only
    save(model, args.model)
    print(f"{args.method}: chose {model.best_params_} on {model.cv} folds of {bags_count(len(bags))} (held-out "
          f"{model.scoring} {model.best_score_:.4f}), refitted {len(model.estimators_)} time(s), in "
          f"{time.perf_counter() - start:.1f} s; saved to {args.model}")
    return 0


def _encode(args) -> int:
    import numpy as np

    from ._files import atomic_path
    from ._progress import Stopwatch, bags_count
    from .datasets import load_bags
    from .store import BagStore

    given = args.out.rstrip("/" + os.sep) or args.out  # "codes.zarr/", as a shell completes an output's folder
    _check_output_folder(given)  # empty, a directory, no such folder
    out = given if given.endswith((".npy", ".zarr")) else f"{given}.npy"  # what numpy.save writes
    _check_output_folder(out, inputs=(args.model, args.bags))
    model = _load_model_with_threads(args)
    model = getattr(model, "best_estimator_", model)  # a search's representation: its first refit's
    bags, _ = load_bags(args.bags)
    if out.endswith(".zarr") and not isinstance(bags, BagStore):
        raise ValueError("--out *.zarr (written block by block, resumable) needs a bag store as --bags "
                         "(lfagg store build)")
    if (args.scheduler is not None or args.address is not None) and not isinstance(bags, BagStore):
        # before connecting: an unreachable --address took its 30 s timeout first
        raise ValueError("--scheduler/--address need a bag store as --bags (lfagg store build)")
    with _dask_scheduler(args.scheduler, args.address) as use_dask:
        if out.endswith(".zarr"):
            from .outputs import encode_to_zarr, file_digest

            n_bags, width, computed, total = encode_to_zarr(model, bags, out, model_id=file_digest(args.model),
                                                     bags_id=os.path.abspath(args.bags), use_dask=use_dask,
                                                     verbose=args.verbose)
            earlier = f" of {total}; the others by an earlier run" if computed < total else ""
            print(f"{bags_count(n_bags)} encoded as ({n_bags}, {width}); saved to {out} ({computed} blocks "
                  f"computed now{earlier})")
            return 0
        watch = Stopwatch("lfagg encode", args.verbose)
        if use_dask:
            from .dask import transform

            with watch("encode", f"encoding {bags_count(len(bags))} on Dask"):
                R = transform(model, bags).compute()
        else:
            with watch("encode", f"encoding {bags_count(len(bags))}"):
                R = model.transform(bags)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, R)
    print(f"{bags_count(len(bags))} encoded as {R.shape} {R.dtype}; saved to {out}")
    return 0


@contextlib.contextmanager
def _dask_scheduler(scheduler, address):
    """Dask's scheduler for --scheduler, or a distributed.Client for --address, while the
    encode runs; yields whether Dask is to be used."""
    if scheduler is None and address is None:
        yield False
        return
    if scheduler is not None and address is not None:
        raise ValueError("give --scheduler or --address, not both")
    try:
        import dask
        if address is not None:
            import distributed
    except ImportError:
        raise ImportError('--scheduler/--address need dask and distributed: pip install "lfagg[dask]"') from None
    if scheduler == "processes":  # one pool for the whole encode: dask's own lasts one compute (a --out
        # *.zarr wave of blocks), and every new one started its processes and imported lfagg again
        import dask.multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(dask.config.get("num_workers", None) or os.cpu_count(),
                                 mp_context=dask.multiprocessing.get_context()) as pool, \
                dask.config.set(scheduler=scheduler, pool=pool):
            yield True
        return
    with distributed.Client(address, timeout=30) if address is not None else dask.config.set(scheduler=scheduler):
        yield True


def _store_build(args) -> int:
    from .datasets.files import build_store

    _check_output_folder(args.out, store=True)  # zarr would create missing folders, which the other commands refuse
    store = build_store(args.bags, args.out, args.labels, chunk_rows=args.chunk_rows, verbose=args.verbose,
                        overwrite=args.overwrite)
    print(f"{len(store)} bags, {store.n_features:,} local features of dimension {store.dim} ({store.dtype}) "
          f"written to {args.out}" + ("" if store.labels is None else ", with labels"))
    return 0


def _evaluate(args) -> int:
    import numpy as np

    from ._progress import Stopwatch, bags_count

    model = _load_model_with_threads(args)
    bags, y = _labelled_bags(args)
    if len(bags) == 0:
        raise ValueError(f"{args.bags}: no bags to evaluate")
    known = set(model.classes_.tolist())
    as_known = {str(c): c for c in known}
    if not set(y.tolist()) <= known and {str(c) for c in y.tolist()} <= set(as_known):
        # the model's classes in another kind (an .npz's '1' against a file's 1, or True / 'True'): the same labels
        y = np.array([as_known[str(c)] for c in y.tolist()], dtype=model.classes_.dtype)
    unknown = [c for c in np.unique(y).tolist() if c not in known]
    if unknown:
        print(f"lfagg evaluate: warning: labels the model was not trained on: {unknown[:5]} (its classes: "
              f"{sorted(known)[:5]})", file=sys.stderr)
    with Stopwatch("lfagg evaluate", args.verbose)("predict", f"predicting {bags_count(len(bags))}"):
        correct = model.predict(bags) == y
    print(f"accuracy {correct.mean():.4f} ({correct.sum()} of {len(y)} bags)")
    print(f"{'class':<16}{'bags':>8}{'correct':>9}{'accuracy':>10}")
    for c in np.unique(y):
        hits = correct[y == c]
        print(f"{str(c):<16}{hits.size:>8}{hits.sum():>9}{hits.mean():>10.4f}")
    return 0


def _reproduce(args) -> int:
    from . import experiments

    if args.out_json is not None:  # before the table's minutes of work, not after its first row
        _check_output_folder(args.out_json, inputs=(args.data,))
    start = time.perf_counter()
    rows = experiments.table1(args.data, codebook_sizes=tuple(args.codewords), vlad_codewords=args.vlad_codewords,
                              n_train=args.n_train, n_test=args.n_test, n_epochs=args.epochs,
                              random_state=args.seed, n_threads=args.threads, verbose=args.verbose,
                              out_json=args.out_json)
    print(experiments.format_table(rows))
    print(f"whole table (patches, ZCA and every fit): {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def _figures(args) -> int:
    from . import experiments

    if not args.out_dir:
        raise ValueError("the output path is empty")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):  # makedirs said "[Errno 17] File exists"
        raise ValueError(f"{args.out_dir}: a file, not a directory: give the folder to write the figures in")
    if args.data is not None:  # Fig. 2's data, checked whole before Fig. 1 is written
        if not os.path.isfile(args.data):
            raise ValueError(f"{args.data}: " + ("a directory, not" if os.path.isdir(args.data) else "no such")
                             + " file")
        from .datasets import load_cifar10

        load_cifar10(args.data)
    os.makedirs(args.out_dir, exist_ok=True)
    fig1, fig2 = (os.path.join(args.out_dir, f"figure{i}.png") for i in (1, 2))
    experiments.figure1(fig1, random_state=args.seed, n_threads=args.threads)
    print(f"wrote {fig1}", flush=True)
    experiments.figure2(fig2, data_path=args.data, codebook_sizes=args.codewords and tuple(args.codewords),
                        n_epochs=args.epochs, random_state=args.seed, verbose=args.verbose,
                        n_threads=args.threads)
    print(f"wrote {fig2}")
    return 0


# ---------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------
_FILE_BAGS_HELP = ("a directory of .npy files, one (n_i, D) array per bag, taken in natural file-name order (bag2 "
                   "before bag10), or an .npz file with 'features' (N, D), 'offsets' (n_bags + 1,) and optionally "
                   "'labels'")
_BAGS_HELP = f"the bags: {_FILE_BAGS_HELP}, or a bag store written by 'lfagg store build' (read block by block)"
_FILE_LABELS_HELP = ("class labels: a .txt file with one label per line in bag order, or a .csv file with one "
                     "column (label) or two (name,label: name = the .npy file name, for a directory); optional "
                     "header (default: the 'labels' array of the .npz")
_LABELS_HELP = _FILE_LABELS_HELP + ", or the labels a bag store holds)"
_MODEL_HELP = "a model file written by 'lfagg train' or 'lfagg select' (lfagg.save; loading it runs no code)"


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _gamma(text):
    if text == "auto":
        return text
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}") from None


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


_positive_int, _count = _int_at_least(1), _int_at_least(0)


def _up_to_max_threads(noun: str):
    """A parser of 1 to MAX_THREADS ``noun`` (threads; processes for --jobs, whose API
    counterpart n_jobs also takes joblib's negative counts, which this option does not),
    refused as the command line is read, before a subcommand prints anything."""
    def parse(text):
        from ._validation import MAX_THREADS

        value = _positive_int(text)
        if value > MAX_THREADS:
            raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} {noun}, got {text!r}")
        return value
    return parse


_processes, _threads = _up_to_max_threads("processes"), _up_to_max_threads("threads")


def _add_threads(parser):
    parser.add_argument("--threads", type=_threads, default=None,
                        help="threads of the encoders (default: all cores)")


def _add_progress(parser):
    parser.add_argument("--verbose", type=_count, default=1, help="1 reports the progress on stderr, 0 hides it")


def _add_common(parser, threads=True):
    parser.add_argument("--seed", type=_count, default=0, help="random seed (an integer >= 0)")
    if threads:
        _add_threads(parser)
    parser.add_argument("--verbose", type=_count, default=1,
                        help="1 reports the progress on stderr (a bar on a terminal, lines in a log): a fit's "
                        "phases and epochs, a search's folds and refits (a refit's epochs with one refit), 0 hides it")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (their help says what None means)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    formatter = _Formatter
    parser = argparse.ArgumentParser(
        prog="lfagg", description="Learnable local feature aggregation: encode bags of local descriptors with "
        "soft BoW (T1) or soft VLAD (T2) learned by backpropagation, or with BoW, VLAD and Fisher Vectors.",
        epilog="Run 'lfagg COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="compare every representation on embedded synthetic data (seconds)",
        description="Fit BoW, VLAD, Fisher Vectors and T1/T2 before (K-Means) and after learning, each with a "
        "softmax regression (after the chi2 map for BoW and T1), on the synthetic 'concentric circles' bags of the "
        "paper's Fig. 1, and print each one's test accuracy, representation size and fit + test time.",
        formatter_class=formatter)
    demo.add_argument("--codewords", type=_positive_int, metavar="K", default=4, help="codebook size K")
    demo.add_argument("--epochs", type=_count, default=10, help="training epochs of T1 and T2")
    demo.add_argument("--n-bags", type=_int_at_least(2), default=400, help="bags per split (two classes: at least 2)")
    demo.add_argument("--n-per-bag", type=_positive_int, default=50, help="local features per bag")
    _add_common(demo, threads=False)
    demo.add_argument("--threads", type=_threads, default=1,
                      help="threads (more only add synchronisation cost on bags this small)")
    demo.set_defaults(run=_demo, parser=demo)

    train = sub.add_parser(
        "train", help="fit a representation and a classifier on your bags; save the model",
        description="Fit a classifier of bags and save it (lfagg.save). t1/t2: soft BoW/VLAD learned jointly with "
        "softmax regression (lfagg.LearnedBoW/LearnedVLAD); bow/vlad/fv: the unsupervised encoder (lfagg.BagOfWords, "
        "VLAD, FisherVector) followed by the same softmax regression, after the chi2 feature map for bow and t1.",
        formatter_class=formatter)
    train.add_argument("--bags", required=True, metavar="PATH", help=_BAGS_HELP)
    train.add_argument("--labels", metavar="PATH", help=_LABELS_HELP)
    train.add_argument("--method", choices=METHODS, default="t1", help="representation")
    train.add_argument("--codewords", type=_positive_int, metavar="K", default=64,
                       help="codebook size K (Gaussians for fv)")
    train.add_argument("--epochs", type=_count, default=10, help="SGD epochs (t1, t2)")
    train.add_argument("--gamma", type=_gamma, default="auto", help="softness of the assignment, or 'auto' (t1, t2)")
    train.add_argument("--gamma-scale", type=_positive_float, default=1.0,
                       help="multiplies the 'auto' gamma; above 1, sharper assignments (t1, t2)")
    train.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (t1, t2)")
    train.add_argument("--samples-per-bag", type=_positive_int, default=128,
                       help="local features drawn from each bag per SGD step (t1, t2)")
    train.add_argument("--pooling", choices=("mean", "max"), default="mean",
                       help="over a bag's features: mean (the paper) or max, for multiple-instance data (t1, t2)")
    train.add_argument("--model", required=True, metavar="OUT", help="output model file (lfagg.save; e.g. model.lfagg)")
    _add_common(train)
    train.set_defaults(run=_train, parser=train)

    select = sub.add_parser(
        "select", help="choose t1's or t2's hyper-parameters on folds of your bags, refit; save the model",
        description="Choose the codebook size, gamma scale, learning rate, number of epochs and (given two) the "
        "pooling of t1 or t2 on stratified folds of the training bags, then refit the choice on all of them with "
        "several seeds and average their probabilities (lfagg.LearnedBoWCV / LearnedVLADCV); save the model for "
        "encode and evaluate. " + SELECT_DEFAULTS,
        formatter_class=formatter)
    select.add_argument("--bags", required=True, metavar="PATH", help=_BAGS_HELP)
    select.add_argument("--labels", metavar="PATH", help=_LABELS_HELP)
    select.add_argument("--method", choices=("t1", "t2"), default="t1", help="representation")
    select.add_argument("--codewords", type=_positive_int, nargs="+", metavar="K", default=None,
                        help="codebook sizes searched")
    select.add_argument("--pooling", choices=("mean", "max"), nargs="+", default=None,
                        help="poolings searched: mean, max or both")
    select.add_argument("--gamma-scale", type=_positive_float, nargs="+", metavar="S", default=None,
                        help="multipliers of the 'auto' gamma searched")
    select.add_argument("--lr", type=_positive_float, nargs="+", metavar="LR", default=None,
                        help="learning rates searched")
    select.add_argument("--max-epochs", type=_count, default=None,
                        help="epochs of each candidate's run (0, 1, 2, 4, ... up to it are scored)")
    select.add_argument("--folds", type=_int_at_least(2), default=None, help="folds of the search")
    select.add_argument("--refits", type=_positive_int, default=None,
                        help="refits of the choice with different seeds, their probabilities averaged")
    select.add_argument("--jobs", type=_processes, default=None,
                        help="folds (and refits) in parallel processes, each on one thread unless --threads says "
                        "otherwise (default: 1 process)")
    select.add_argument("--model", required=True, metavar="OUT", help="output model file (lfagg.save)")
    _add_common(select)
    select.set_defaults(run=_select, parser=select)

    encode = sub.add_parser(
        "encode", help="write the representation of bags as an .npy array or a Zarr group",
        description="Encode bags with a trained model's representation (before the classifier) and save the "
        "(n_bags, dim) array with numpy.save, or, for a bag store, block by block to a resumable Zarr group (an "
        "--out ending in .zarr).", formatter_class=formatter)
    encode.add_argument("--model", required=True, metavar="PATH", help=_MODEL_HELP)
    encode.add_argument("--bags", required=True, metavar="PATH", help=_BAGS_HELP)
    encode.add_argument("--out", required=True,
                        help="output: an .npy file (written when done), or for a bag store a .zarr directory "
                        "written block by block: rerunning an interrupted encode completes it")
    encode.add_argument("--scheduler", choices=("threads", "processes", "synchronous"), default=None,
                        help="encode a bag store with Dask on this local scheduler (pip install 'lfagg[dask]')")
    encode.add_argument("--address", default=None, metavar="HOST:PORT",
                        help="encode a bag store on this Dask distributed scheduler")
    _add_progress(encode)
    _add_threads(encode)
    encode.set_defaults(run=_encode, parser=encode)

    store = sub.add_parser(
        "store", help="bag stores (Zarr) for collections larger than memory",
        description="Bag stores hold ragged bags on disk (lfagg.BagStore, Zarr v3); train, select, encode and "
        "evaluate take one as --bags and read it block by block. Needs zarr (pip install 'lfagg[store]').",
        formatter_class=formatter)
    store_sub = store.add_subparsers(dest="store_command", required=True, metavar="STORE_COMMAND")
    build = store_sub.add_parser(
        "build", help="convert bag files into a bag store, a block at a time",
        description="Write the bags of a directory of .npy files (one per bag, natural order, file names kept as "
        "bag names) or of an .npz file, and their labels, into a new bag store.", formatter_class=formatter)
    build.add_argument("--bags", required=True, metavar="PATH", help=f"the bags to store: {_FILE_BAGS_HELP}")
    build.add_argument("--labels", metavar="PATH", help=_FILE_LABELS_HELP + ")")
    build.add_argument("--out", required=True, metavar="STORE", help="the new store (a directory, e.g. bags.zarr)")
    build.add_argument("--chunk-rows", type=_positive_int, default=None,
                       help="local features per Zarr chunk (default: 8192)")
    build.add_argument("--overwrite", action="store_true",
                       help="replace an existing bag store at --out (never a file or another folder)")
    build.add_argument("--verbose", type=_count, default=1, help="1 shows the progress on stderr")
    build.set_defaults(run=_store_build, parser=build)

    evaluate = sub.add_parser(
        "evaluate", help="print a trained model's accuracy on labelled bags",
        description="Predict the class of each bag with a trained model; print the accuracy, overall and per class.",
        formatter_class=formatter)
    evaluate.add_argument("--model", required=True, metavar="PATH", help=_MODEL_HELP)
    evaluate.add_argument("--bags", required=True, metavar="PATH", help=_BAGS_HELP)
    evaluate.add_argument("--labels", metavar="PATH", help=_LABELS_HELP)
    _add_progress(evaluate)
    _add_threads(evaluate)
    evaluate.set_defaults(run=_evaluate, parser=evaluate)

    reproduce = sub.add_parser(
        "reproduce", help="the paper's Table I on CIFAR-10 patch descriptors",
        description="BoW-K, T1-K initial and learned for each K, and VLAD, FV, T2 initial and learned, on dense "
        "whitened 6x6 patches of CIFAR-10 images; prints the table of test accuracies and run times.",
        formatter_class=formatter)
    reproduce.add_argument("--data", required=True, metavar="NPZ",
                           help="CIFAR-10 .npz with train_images, train_labels, test_images, test_labels")
    reproduce.add_argument("--codewords", type=_positive_int, nargs="+", metavar="K", default=[64, 256, 1024],
                           help="codebook sizes K of BoW and T1")
    reproduce.add_argument("--vlad-codewords", type=_positive_int, default=64, help="codebook size of VLAD, FV, T2")
    reproduce.add_argument("--n-train", type=_positive_int, default=None,
                           help="class-balanced subset of training images (default: all)")
    reproduce.add_argument("--n-test", type=_positive_int, default=None,
                           help="class-balanced subset of test images (default: all)")
    reproduce.add_argument("--epochs", type=_count, default=10, help="training epochs of T1 and T2")
    reproduce.add_argument("--out-json", default=None, help="also write the rows to this JSON file")
    _add_common(reproduce)
    reproduce.set_defaults(run=_reproduce, parser=reproduce)

    figures = sub.add_parser(
        "figures", help="draw the paper's Figures 1 and 2 as PNG files (needs matplotlib)",
        description="Fig. 1: codewords of K-Means, GMM and LearnedBoW on the synthetic bags; Fig. 2: test accuracy "
        "per epoch for several codebook sizes, with BoW for comparison. Writes DIR/figure1.png and "
        "DIR/figure2.png; needs matplotlib (pip install 'lfagg[plot]').", formatter_class=formatter)
    figures.add_argument("--out-dir", required=True, metavar="DIR",
                         help="directory of the PNG files (created if missing)")
    figures.add_argument("--data", default=None, metavar="NPZ",
                         help="CIFAR-10 .npz for Fig. 2 (default: synthetic bags)")
    figures.add_argument("--codewords", type=_positive_int, nargs="+", metavar="K", default=None,
                         help="codebook sizes of Fig. 2 (default: 4 8 on the synthetic bags, 16 64 on CIFAR-10)")
    figures.add_argument("--epochs", type=_positive_int, default=10, help="training epochs of Fig. 2")
    _add_common(figures, threads=False)
    figures.add_argument("--threads", type=_threads, default=None,
                         help="threads (default: one on the synthetic bags, all cores on CIFAR-10)")
    figures.set_defaults(run=_figures, parser=figures)
    return parser


def _one_line_warning(command: str):
    """warnings.showwarning for the command line: one line naming the command, no source line."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"lfagg {command}: warning: {message}", file=sys.stderr)
    return show


def _rejecting_parser(parser, args, argv, unknown):
    """The subcommand's parser when every unknown argument follows the subcommand's name in
    argv (its usage then lists the options it takes), else the top-level one."""
    words, position = list(argv), -1
    try:
        for name in args.parser.prog.split()[1:]:  # "lfagg store build" -> store, then build
            position = words.index(name, position + 1)
    except ValueError:  # not spelt out in argv: let the top-level parser say it
        return parser
    after = words[position + 1:]
    return args.parser if all(word in after for word in unknown) else parser


def main(argv=None) -> int:
    parser = build_parser()
    from_command_line = argv is None  # the process is lfagg's: its exit may be made quiet
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _rejecting_parser(parser, args, argv, unknown).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            return args.run(args)
    except BrokenPipeError:  # the reader (e.g. `| head -1`) stopped: exit quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError, ImportError, ArithmeticError) as exc:
        print(f"lfagg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lfagg {args.command}: interrupted", file=sys.stderr)
        if from_command_line:
            _quiet_teardown()
        return 130


def _quiet_teardown() -> None:
    """After an interrupt, the process's exit tears down work cut short: Zarr's event loop
    closing on its pending writes printed some 100 lines of "Exception ignored ... Event
    loop is closed" and "Task was destroyed but it is pending!" after the one line that
    says what happened. Such late errors of this exiting process are silenced."""
    sys.unraisablehook = lambda unraisable: None
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")  # "coroutine ... was never awaited"
