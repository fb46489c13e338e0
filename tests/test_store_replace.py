"""A store whose first run failed before any trial was done takes a corrected config."""

import numpy as np
import pytest

import tailscope as ts
from tailscope.store import StoreError, TrialStore


def _data():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    return ts.from_arrays(rng.normal(size=(60, 3)).astype(np.float32) + y[:, None], y, name="tiny")


def _broken(xtr, ytr, xev, seed):
    raise RuntimeError("bad option")


def _constant(xtr, ytr, xev, seed):
    return np.full(len(xev), np.bincount(ytr).argmax()), None


def test_failed_first_run_does_not_lock_the_store(tmp_path):
    data, path = _data(), tmp_path / "s"
    bad = ts.Study(data, ts.CallableLearner(_broken, "broken"), trials=8, block_size=4, path=path)
    with pytest.raises(Exception, match="bad option"):
        bad.run(progress=False)
    assert (path / "trials.zarr").exists() and not TrialStore.open(path).done().any()
    good = ts.Study(data, ts.CallableLearner(_constant, "constant"), trials=8, block_size=4, path=path)
    with pytest.warns(UserWarning, match="(?s)no done trial.*learner: stored callable broken, requested callable constant"):
        res = good.run(progress=False)
    assert res["done"] == 8
    assert TrialStore.open(path).config["learner"] == good.config["learner"]
    # now it holds trials: another config is refused again and nothing changes
    other = ts.Study(data, ts.CallableLearner(_constant, "constant"), trials=8, block_size=4, seed=1, path=path)
    with pytest.raises(StoreError, match="design.seed: stored 0, requested 1"):
        other.run(progress=False)
    assert TrialStore.open(path).done().all()


def test_a_writer_whose_store_was_given_another_config_writes_nothing(tmp_path):
    data, path = _data(), tmp_path / "s"
    first = ts.Study(data, ts.CallableLearner(_constant, "constant"), trials=8, block_size=4, path=path)
    stale = first.store  # opened, nothing done yet
    with pytest.warns(UserWarning, match="no done trial"):
        _ = ts.Study(data, ts.CallableLearner(_constant, "constant"), trials=8, block_size=4, seed=5, path=path).store
    with pytest.raises(StoreError, match="another config"):
        first.run(progress=False)
    assert not TrialStore.open(path).done().any()
    assert stale.path == TrialStore.open(path).path


def test_raising_trials_on_the_same_study_object_grows_it(tmp_path):
    study = ts.Study(_data(), ts.CallableLearner(_constant, "constant"), trials=8, block_size=4, path=tmp_path / "s")
    assert study.run(progress=False)["done"] == 8
    study.trials = 12
    res = study.run(progress=False)
    assert (res["trained"], res["done"], res["trials"]) == (4, 12, 12)
    fewer = ts.Study(_data(), ts.CallableLearner(_constant, "constant"), trials=4, block_size=4, path=tmp_path / "s")
    with pytest.warns(UserWarning, match="already holds 12 trials, more than the 4"):
        assert fewer.run(progress=False)["done"] == 12


def test_bad_shard_or_backend_creates_no_store(tmp_path):
    study = ts.Study(_data(), ts.CallableLearner(_constant, "constant"), trials=8, block_size=4, path=tmp_path / "s")
    with pytest.raises(ValueError, match="shard must be two integers i/N"):
        study.run(progress=False, shard=(3, 3))
    with pytest.raises(ValueError, match="unknown backend"):
        study.run(progress=False, backend="foo")
    assert not (tmp_path / "s").exists()


def test_study_paths_are_absolute_and_urls_repaired(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    study = ts.Study(_data(), ts.CallableLearner(_constant, "constant"), trials=4, path="runs/x")
    assert study.path == str(tmp_path / "runs" / "x")  # Ray tasks and workers may start elsewhere
    mem = ts.Study(_data(), ts.CallableLearner(_constant, "constant"), trials=4, path=Path("memory://t/p"))
    assert mem.path == "memory://t/p"
    with pytest.raises(ValueError, match="lives in this process only"):
        mem.run(workers=2, progress=False)
    for bad in ((0.5, 2), (True, 2), (0, 2.0)):
        with pytest.raises(ValueError, match="two integers"):
            study.run(progress=False, shard=bad)
    assert not (tmp_path / "runs").exists()
