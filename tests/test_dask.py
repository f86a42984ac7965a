"""lfagg.dask: encoding and prediction of a BagStore or a Dask array of features, on the
threaded and process schedulers and on a distributed.LocalCluster of two workers
(started and stopped here, on localhost), equal to the model's own methods in process."""

import numpy as np
import pytest

pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")
ld = pytest.importorskip("lfagg.dask")

import lfagg  # noqa: E402
import lfagg._mapped  # noqa: E402
from lfagg.datasets import make_circles_bags  # noqa: E402


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    bags, y = make_circles_bags(60, 30, random_state=0)
    path = tmp_path_factory.mktemp("dask") / "circles.zarr"
    store = lfagg.BagStore.create(path, dim=bags.dim, dtype=bags.dtype, chunk_rows=256)  # float64 x 2: a page a chunk
    store.append(bags, labels=y)
    model = lfagg.LearnedVLAD(3, n_epochs=1, random_state=0).fit(bags, y)
    return model, bags, lfagg.BagStore.open(path)


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_local_schedulers_equal_the_in_process_methods(fitted, scheduler, monkeypatch):
    model, bags, store = fitted
    monkeypatch.setattr(lfagg._mapped, "MIN_PART_BYTES", 4096)  # the threads map the one-page chunks
    X = ld.transform(model, store, block_features=400)
    assert len(X.chunks[0]) > 1 and X.shape == (len(bags), 6)
    np.testing.assert_array_equal(X.compute(scheduler=scheduler),
                                  np.concatenate([model.transform(b) for b in store.blocks(400)]))
    np.testing.assert_allclose(X.compute(scheduler=scheduler), model.transform(bags), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(ld.predict(model, store).compute(scheduler=scheduler), model.predict(store))


def test_a_distributed_cluster_equals_the_in_process_transform(fitted):
    distributed = pytest.importorskip("distributed")
    model, bags, store = fitted
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster, distributed.Client(cluster) as client:
        X = ld.transform(model, store, block_features=300)
        values = [getattr(task, "value", None) for task in dict(X.__dask_graph__()).values()]
        # the model and the store's handle are one key each, not a copy per task
        assert sum(v is model for v in values) == 1 and sum(v is store for v in values) == 1
        np.testing.assert_array_equal(client.compute(X).result(),
                                      np.concatenate([model.transform(b) for b in store.blocks(300)]))
        proba = client.compute(ld.predict_proba(model, store)).result()
    np.testing.assert_array_equal(proba, model.predict_proba(store))


def test_a_dask_array_of_features_with_bag_aligned_chunks(fitted):
    model, bags, _ = fitted
    sizes = bags.sizes
    chunks = (int(sizes[:20].sum()), int(sizes[20:45].sum()), int(sizes[45:].sum()))
    features = da.from_array(bags.features, chunks=(chunks, 2))
    out = ld.decision_function(model, features, offsets=bags.offsets).compute(scheduler="threads")
    np.testing.assert_allclose(out, model.decision_function(bags), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="bag boundaries"):
        ld.transform(model, features.rechunk((7, 2)), offsets=bags.offsets)
    with pytest.raises(ValueError, match="offsets must be given"):
        ld.transform(model, features)


@pytest.mark.parametrize("chunks", [(5, 6, 0), (0, 5, 6, 0, 0), (5, 0, 6), (11,)])
def test_empty_chunks_and_trailing_empty_bags_give_each_bag_once(chunks):
    bags = lfagg.Bags.from_arrays([np.arange(n * 2, dtype=np.float64).reshape(n, 2) for n in (5, 6, 0, 0)])
    model = lfagg.BagOfWords(2, random_state=0).fit(bags)
    features = da.from_array(bags.features, chunks=(chunks, 2))
    out = ld.transform(model, features, offsets=bags.offsets).compute(scheduler="synchronous")
    np.testing.assert_array_equal(out, model.transform(bags))  # 4 rows, not the trailing empty bags per chunk
    no_rows = da.zeros((0, 2), chunks=((0, 0), 2))
    assert ld.transform(model, no_rows, offsets=[0, 0, 0, 0]).compute().shape == (3, 2)


def test_a_non_finite_feature_is_named_by_its_bag_in_the_whole_array(fitted):
    model, bags, _ = fitted
    features = bags.features.copy()
    features[bags.offsets[47] + 1, 1] = np.inf
    blocks = (int(bags.offsets[30]), int(bags.offsets[-1] - bags.offsets[30]))
    with pytest.raises(ValueError, match=r"\(bag 47\)"):
        ld.transform(model, da.from_array(features, chunks=(blocks, 2)), offsets=bags.offsets).compute()


def test_an_empty_store(fitted, tmp_path):
    model, _, _ = fitted
    empty = lfagg.BagStore.create(tmp_path / "empty.zarr", dim=2, dtype=np.float64)
    assert model.transform(empty).shape == (0, 6)
    assert ld.transform(model, empty).compute().shape == (0, 6)
    assert ld.predict(model, empty).compute().shape == (0,)


def test_bad_arguments(fitted):
    model, bags, store = fitted
    with pytest.raises(ValueError, match="method must be one of"):
        ld.apply(model, store, "fit")
    with pytest.raises(ValueError, match="bags must be a lfagg.BagStore or a Dask array"):
        ld.transform(model, bags)
    with pytest.raises(ValueError, match="block_features"):
        ld.transform(model, store, block_features=0)
    features = da.from_array(bags.features, chunks=(100, 2))
    with pytest.raises(ValueError, match="chunk sizes are unknown.*compute_chunk_sizes"):
        ld.transform(model, features[features[:, 0] > -np.inf], offsets=bags.offsets)
    with pytest.raises(ValueError, match=r"offsets must be None with a BagStore \(it holds its own\)"):
        ld.transform(model, store, offsets=[0, 3])  # were ignored without a word


def test_encode_on_dask_warns_that_it_does_not_reach_a_searchs_processes(fitted):
    """LearnedBoWCV(n_jobs=2) encoded in joblib's processes, silently off the scheduler."""
    _, _, store = fitted
    search = lfagg.LearnedBoWCV(n_codewords=(2,), gamma_scale=(1.0,), learning_rate=(1e-3,), max_epochs=0, cv=2,
                                n_estimators=1, n_jobs=2, random_state=0)
    with ld.encode_on_dask(), pytest.warns(UserWarning, match="does not reach the n_jobs processes of the search"):
        search.fit(store, store.labels)


def test_fit_encodes_the_store_on_the_cluster(fitted, monkeypatch):
    distributed = pytest.importorskip("distributed")
    import lfagg.store

    model, bags, store = fitted
    monkeypatch.setattr(lfagg.store, "BLOCK_BYTES", 4000)  # several blocks, hence several tasks
    make = lambda: lfagg.LearnedVLAD(3, n_epochs=1, validation_fraction=0.25, random_state=0)  # noqa: E731
    in_process = make().fit(store, store.labels)
    mapped = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster, distributed.Client(cluster), ld.encode_on_dask():
        compute = ld.dask.compute
        monkeypatch.setattr(ld.dask, "compute", lambda *a, **k: mapped.append(len(a)) or compute(*a, **k))
        on_cluster = make().fit(store, store.labels)
        proba = on_cluster.predict_proba(store)
    assert len(mapped) >= 3 and min(mapped) > 1  # W0, l2, validation, final fit, predict: each many tasks
    np.testing.assert_array_equal(proba, in_process.predict_proba(store))
    for name in ("centers_", "covariances_"):
        np.testing.assert_array_equal(getattr(on_cluster, name), getattr(in_process, name))
