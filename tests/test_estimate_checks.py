"""The estimator against brute force where float32 sums and concurrent writers could bite,
and its options: validation, truncation warnings, and a full matrix path that must not
delete what is there."""

import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from sklearn.linear_model import LogisticRegression

import tailscope as ts
from tailscope.store import StoreError, TrialStore


def _two_blobs(n=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    y, yt = np.arange(n) % 2, np.arange(n_test) % 2
    return ts.from_arrays(rng.normal(size=(n, 2)) + y[:, None], y, rng.normal(size=(n_test, 2)) + yt[:, None], yt)


def _synthetic(data, effect_at=(0, 0)):
    eff = np.zeros((data.n_train, data.n_test))
    eff[effect_at] = 0.4
    return ts.SyntheticLearner(np.full(data.n_train, 0.9), np.full(data.n_train, 0.4),
                               np.full(data.n_test, 0.3), eff)


def _brute_infl(store, trials):
    """(n, n_test) influence from the stored masks and test predictions of ``trials``."""
    blocks = list(store.iter_blocks())
    keep = np.isin(np.concatenate([b.trials for b in blocks]), trials)
    m = np.concatenate([b.mask for b in blocks])[keep]
    c = (np.concatenate([b.preds.test_pred for b in blocks])[keep] == store.y_test).astype(float)
    return np.array([[c[m[:, i], j].mean() - c[~m[:, i], j].mean() for j in range(c.shape[1])]
                     for i in range(m.shape[1])])


def test_every_tile_counts_the_trials_done_when_the_estimate_started(tmp_path):
    data = _two_blobs()
    learner = _synthetic(data)
    path = tmp_path / "s"

    def study():
        return ts.Study(data, learner, trials=200, seed=0, path=path, block_size=20)

    study().run(progress=False, shard=(0, 2))
    first = np.flatnonzero(TrialStore.open(path).done())
    fired = []

    def other_shard_finishes(done, total):  # e.g. a Slurm shard finishing mid-estimate
        if not fired:
            fired.append(done)
            study().run(progress=False, shard=(1, 2))

    opt = ts.EstimateOptions(top_k=0, infl_threshold=-2.0, same_class=False,
                             memory_budget=36 * data.n_test * 10)  # 3 tiles of 10 rows
    s = ts.estimate(TrialStore.open(path), opt, progress=other_shard_finishes)
    assert fired and TrialStore.open(path).done().all()
    assert s.trials == len(first) == 100 and (s.n_in + s.n_out == 100).all()
    got = np.full((data.n_train, data.n_test), np.nan)
    got[s.pairs["tr_idx"], s.pairs["tt_idx"]] = s.pairs["infl"]
    np.testing.assert_allclose(got, _brute_infl(TrialStore.open(path), first), atol=1e-6)


def confident(x_train, y_train, x_eval, seed):
    """Always class 0, with probability 0.999 +- 1e-4: a tiny spread on a large mean."""
    p0 = 0.999 + 1e-4 * np.random.default_rng(seed).standard_normal(len(x_eval))
    return np.zeros(len(x_eval), dtype=np.int64), np.stack([p0, 1 - p0], 1)


def test_soft_influence_se_is_accurate_for_confident_models(tmp_path):
    data = ts.from_arrays(np.zeros((20, 2)), np.arange(20) % 2, np.zeros((6, 2)), np.zeros(6, dtype=int))
    study = ts.Study(data, ts.CallableLearner(confident, "confident", block=100), trials=300, path=tmp_path / "c")
    study.run(progress=False)
    s = study.estimate(save=False, top_k=0, infl_threshold=-1.0, same_class=False)
    blocks = list(study.store.iter_blocks())
    m = np.concatenate([b.mask for b in blocks])
    p = np.concatenate([b.preds.test_prob for b in blocks]).astype(np.float64)
    for r in s.pairs.itertuples():
        i, j = r.tr_idx, r.tt_idx
        a, b = p[m[:, i], j], p[~m[:, i], j]
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert r.soft_infl_se == pytest.approx(se, rel=1e-4)
        assert r.soft_infl == pytest.approx(a.mean() - b.mean(), abs=1e-7)


def test_full_matrix_path_never_deletes_what_is_there(tmp_path, synthetic):
    data, learner = synthetic
    study = ts.Study(data, learner, trials=20, path=tmp_path / "s")
    study.run(progress=False)
    for taken in (tmp_path / "s", tmp_path / "notes"):
        if taken.name == "notes":
            taken.mkdir()
            (taken / "keep.txt").write_text("mine")
        before = sorted(p.name for p in taken.iterdir())
        with pytest.raises(ValueError, match="would delete them"):
            study.estimate(save=False, full_matrix_path=str(taken))
        assert sorted(p.name for p in taken.iterdir()) == before
    assert TrialStore.open(tmp_path / "s").done().all()
    matrix = tmp_path / "matrix"
    s = study.estimate(save=False, full_matrix_path=str(matrix), infl_threshold=-2.0, same_class=False)
    again = study.estimate(save=False, full_matrix_path=str(matrix))  # its own matrix: replaced
    import zarr

    group = zarr.open_group(str(matrix), mode="r")
    infl = group["infl"][:]
    np.testing.assert_allclose(infl[s.pairs["tr_idx"], s.pairs["tt_idx"]], s.pairs["infl"], rtol=1e-6)
    assert again.trials == s.trials
    assert group.attrs["tailscope_influence_matrix"]["complete"] is True


def test_a_full_matrix_stopped_midway_says_it_is_partial(tmp_path, synthetic, monkeypatch):
    import importlib

    import zarr

    estimate_module = importlib.import_module("tailscope.estimate")  # (the package exports a function of that name)
    data, learner = synthetic
    study = ts.Study(data, learner, trials=8, path=tmp_path / "s")
    study.run(progress=False)

    def stop(self):
        raise KeyboardInterrupt  # killed after the tiles, before the matrix was marked complete

    monkeypatch.setattr(estimate_module._InfluenceCollector, "finish", stop)
    with pytest.raises(KeyboardInterrupt):
        study.estimate(save=False, full_matrix_path=str(tmp_path / "matrix"))
    attrs = zarr.open_group(str(tmp_path / "matrix"), mode="r").attrs["tailscope_influence_matrix"]
    assert attrs["complete"] is False


def test_max_pairs_truncation_is_said_and_recorded(tmp_path, synthetic):
    data, learner = synthetic
    study = ts.Study(data, learner, trials=30, path=tmp_path / "s")
    study.run(progress=False)
    full = study.estimate(save=False, infl_threshold=-2.0, same_class=False)
    assert full.options["pairs_found"] == len(full.pairs) == data.n_train * data.n_test
    with pytest.warns(UserWarning, match="only the 10 largest are kept"):
        cut = study.estimate(save=False, infl_threshold=-2.0, same_class=False, max_pairs=10)
    assert len(cut.pairs) == 10 and cut.options["pairs_found"] == len(full.pairs)
    with pytest.warns(UserWarning, match="largest of"):
        cut.influence_pairs(-2.0, same_class=False)
    # analyses reuse saved scores that max_pairs cut (estimating again would cut them alike), and say so
    import json

    from tailscope.analyses.base import study_scores
    from tailscope.estimate import EstimateOptions

    with pytest.warns(UserWarning, match="only the 10 largest"):
        small = study.estimate(max_pairs=10)  # the user's own small cap: analyses estimate afresh, in memory
    fresh = study_scores(study)
    assert len(fresh.pairs) == fresh.options["pairs_found"] > 10
    assert ts.Scores.load(study.scores_dir).options == small.options  # the user's scores are kept
    # scores the default cap cut (as on a huge study): estimating again would cut them alike, so they
    # are reused, with a warning
    summary = study.scores_dir / "summary.json"
    meta = json.loads(summary.read_text())
    meta["options"].update(max_pairs=EstimateOptions().max_pairs, pairs_found=EstimateOptions().max_pairs + 1)
    summary.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="keep only the 10 largest"):
        again = study_scores(study)
    assert len(again.pairs) == 10


@pytest.mark.parametrize("bad", [dict(infl_threshold="0.1"), dict(infl_threshold=True), dict(same_class="no"),
                                 dict(memory_budget=0), dict(memory_budget=-5), dict(memory_budget=None),
                                 dict(full_matrix_path=3)])
def test_estimate_options_refuse_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ts.EstimateOptions(**bad)


def test_study_estimate_merges_options_and_keywords_and_writes_nothing(tmp_path, synthetic):
    data, learner = synthetic
    path = tmp_path / "s"
    ts.Study(data, learner, trials=20, path=path).run(progress=False)
    bigger = ts.Study(data, learner, trials=100, path=path)  # asks for more, but only reads here
    s = bigger.estimate(ts.EstimateOptions(top_k=2), save=False, infl_threshold=0.0)
    assert s.options["infl_threshold"] == 0.0 and s.options["top_k"] == 2
    assert TrialStore.open(path).trials == 20 == s.trials
    with pytest.raises(StoreError, match="different study config"):
        ts.Study(data, learner, trials=20, seed=5, path=path).estimate(save=False)
    with pytest.raises(StoreError, match="no tailscope study"):
        ts.Study(data, learner, path=tmp_path / "typo").estimate()
    assert not (tmp_path / "typo").exists()


def test_study_settings_checked_before_anything_is_written(tmp_path, synthetic):
    data, learner = synthetic
    with pytest.raises(ValueError, match="seed must be >= 0"):
        ts.Study(data, learner, seed=-1, path=tmp_path / "a")
    for name in ("block_size", "design_block"):
        with pytest.raises(TypeError, match=name):
            ts.Study(data, learner, path=tmp_path / "a", **{name: 2.5})
    assert not (tmp_path / "a").exists()
    study = ts.Study(data, learner, trials=4, path=tmp_path / "b")
    assert study.run(workers=np.int64(1), progress=False)["done"] == 4
    with pytest.raises(ValueError, match="shape"):
        ts.Study(data, ts.SyntheticLearner([0.9], [0.4], [0.3], [[0.0]]), trials=4, path=tmp_path / "c").run(
            progress=False)


class ConfidentOnly(LogisticRegression):
    """A classifier whose predict() is not the argmax of predict_proba: class 1 only above 0.9."""

    def predict(self, x):
        return (self.predict_proba(x)[:, 1] > 0.9).astype(np.int64)


def test_sklearn_hard_predictions_are_the_estimators_own():
    data = _two_blobs(n=60, n_test=40, seed=1)
    preds = ts.SklearnLearner(ConfidentOnly()).fit_predict(data, np.ones((1, data.n_train), bool), np.zeros(1))
    est = ConfidentOnly().fit(data.x_train, data.y_train)
    np.testing.assert_array_equal(preds.test_pred[0], est.predict(data.x_test))
    assert (preds.test_pred[0] != est.predict_proba(data.x_test).argmax(1)).any()


def test_scores_save_is_all_or_nothing_and_damage_is_named(tmp_path, synthetic, monkeypatch):
    data, learner = synthetic
    study = ts.Study(data, learner, trials=20, path=tmp_path / "s")
    study.run(progress=False)
    first = study.estimate()  # saved
    folder = study.scores_dir
    (folder / "influence.zarr").mkdir()  # a full matrix: not the save's to touch
    study.trials = 40
    study.run(progress=False)
    later = study.estimate(save=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ts.Scores, "export_paper_format", killed)
    with pytest.raises(KeyboardInterrupt):
        later.save(folder)
    assert ts.Scores.load(folder).trials == 20  # the previous scores, whole
    monkeypatch.undo()
    later.save(folder)
    assert ts.Scores.load(folder).trials == 40
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporaries left
    assert (folder / "influence.zarr").is_dir()

    first_dir = tmp_path / "first"
    first.save(first_dir)
    (folder / "influence_topk.npz").write_bytes((first_dir / "influence_topk.npz").read_bytes())  # 20 of 40
    with pytest.raises(ts.ScoresUnreadable, match="mix files of"):
        ts.Scores.load(folder)
    (folder / "influence_topk.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(FileNotFoundError, match="cannot be read"):  # callers that re-estimate on missing do here
        ts.Scores.load(folder)


class _NoFolders(MemoryFileSystem):
    """Like an object store: no folder entries, and a prefix exists only while files are under it."""

    protocol = "nofolders"
    store: dict = {}
    pseudo_dirs = [""]

    def makedirs(self, path, exist_ok=False):
        pass

    def mkdir(self, path, create_parents=True, **kwargs):
        pass

    def rm(self, path, recursive=False, maxdepth=None):
        if not self.exists(self._strip_protocol(path)):
            raise FileNotFoundError(path)
        return super().rm(path, recursive=recursive, maxdepth=maxdepth)


def test_scores_save_on_a_store_without_folders_and_saves_that_collide(tmp_path, synthetic):
    import fsspec

    fsspec.register_implementation("nofolders", _NoFolders, clobber=True)
    data, learner = synthetic
    study = ts.Study(data, learner, trials=12, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate(save=False)
    for _ in range(2):  # the second save replaces the first
        s.save("nofolders://bucket/scores")
    assert ts.Scores.load("nofolders://bucket/scores").trials == 12

    folder = tmp_path / "scores"
    s.save(folder)
    other = study.estimate(save=False, top_k=3)  # same trials, another save
    other.save(tmp_path / "other")
    (folder / "influence_topk.npz").write_bytes((tmp_path / "other" / "influence_topk.npz").read_bytes())
    with pytest.raises(ts.ScoresUnreadable, match="mix files of two saves"):
        ts.Scores.load(folder)

    import os
    import socket

    live = folder / f".saving-{socket.gethostname()}-{os.getppid()}-aaaaaaaaaaaa"  # a save still running
    dead = folder / f".saving-{socket.gethostname()}-999999999-bbbbbbbbbbbb"
    for d in (live, dead):
        d.mkdir()
        (d / "summary.json").write_text("{}")
    s.save(folder)
    assert live.is_dir() and not dead.exists()
    assert ts.Scores.load(folder).trials == 12


def test_scores_saved_by_an_older_version_load(tmp_path, synthetic):
    """Files written before write ids existed: nothing to compare, so they load."""
    import json

    data, learner = synthetic
    study = ts.Study(data, learner, trials=10, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate()
    folder = study.scores_dir
    meta = json.loads((folder / "summary.json").read_text())
    del meta["write_id"]
    (folder / "summary.json").write_text(json.dumps(meta))
    with np.load(folder / "influence_topk.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "write_id"}
    np.savez_compressed(folder / "influence_topk.npz", **arrays)
    import pandas as pd

    for name in ("influence_pairs.parquet", "memorization.parquet"):
        frame = pd.read_parquet(folder / name)
        frame.attrs = {}
        frame.to_parquet(folder / name, index=False)
    assert ts.Scores.load(folder).trials == s.trials


def test_info_accuracies_are_the_scores_per_trial_means_with_a_partial_last_block(tmp_path):
    data = _two_blobs(n=40)
    study = ts.Study(data, ts.SklearnLearner(LogisticRegression()), trials=10, block_size=4, path=tmp_path / "s")
    study.run(progress=False)
    summary = study.estimate().summary()
    info = study.info()
    for key in ("mean_acc_in", "mean_acc_out", "mean_test_acc"):
        assert info[key] == pytest.approx(summary[key], abs=1e-9), key


def test_share_memorized_counts_only_examples_with_an_estimate(tmp_path, synthetic):
    data, learner = synthetic
    study = ts.Study(data, learner, trials=3, block_size=3, path=tmp_path / "s")
    study.run(progress=False)
    scores = study.estimate()
    s, finite = scores.summary(), np.isfinite(scores.mem)
    assert 0 < finite.sum() < len(finite)  # 3 trials: some examples are in all of them or none
    assert s["n_mem_estimated"] == finite.sum()
    assert s["frac_mem_ge_0.25"] == pytest.approx(np.mean(scores.mem[finite] >= 0.25))


def test_values_exactly_at_a_threshold_count_whatever_the_rounding():
    from tailscope.scores import at_least

    assert 0.3 - 0.2 < 0.1 and at_least(np.array([0.3 - 0.2]), 0.1).all()  # 0.09999999999999998
    assert not at_least(np.array([0.0999, np.nan]), 0.1).any()
    assert at_least(-np.array([0.2 - 0.3]), 0.1).all()  # the mirror side: -0.1 counts at <= -0.1
