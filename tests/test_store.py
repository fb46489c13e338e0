"""Trial store: refusal of foreign configs, growth, half-written blocks, reopening."""


import numpy as np
import pytest
from conftest import tree_digest
from sklearn.linear_model import LogisticRegression

import tailscope as ts
from tailscope.store import StoreError, TrialStore


def small_study(synthetic, path, **kw):
    data, learner = synthetic
    args = {"trials": 40, "ratio": 0.7, "seed": 0, "block_size": 10} | kw
    return ts.Study(data, learner, path=path, **args)


def test_reopen_with_other_config_is_refused_and_nothing_changes(synthetic, tmp_path):
    s = small_study(synthetic, tmp_path / "s")
    s.run(progress=False)
    before = tree_digest(tmp_path / "s")
    data, learner = synthetic
    other_data = ts.from_arrays(data.x_train + 1, data.y_train, data.x_test, data.y_test)
    other_learner = ts.SyntheticLearner(learner.p_in * 0.9, learner.p_out, learner.base, learner.effect)
    variants = [
        lambda: small_study(synthetic, tmp_path / "s", ratio=0.5),
        lambda: small_study(synthetic, tmp_path / "s", seed=1),
        lambda: small_study(synthetic, tmp_path / "s", design="balanced"),
        lambda: small_study(synthetic, tmp_path / "s", block_size=20),
        lambda: ts.Study(data, other_learner, trials=40, block_size=10, path=tmp_path / "s"),
        lambda: ts.Study(other_data, learner, trials=40, block_size=10, path=tmp_path / "s"),
    ]
    for make in variants:
        with pytest.raises(StoreError, match="different study config"):
            make().run(progress=False)
    assert tree_digest(tmp_path / "s") == before


def test_growing_keeps_earlier_trials(synthetic, tmp_path):
    small = small_study(synthetic, tmp_path / "a", trials=25)
    small.run(progress=False)
    first = TrialStore.open(tmp_path / "a")
    rows = {k: first.group[k][:25] for k in ("mask", "seed", "train_pred", "test_prob")}
    big = small_study(synthetic, tmp_path / "a", trials=60)
    res = big.run(progress=False)
    assert res["trained"] == 35 and res["done"] == 60
    again = TrialStore.open(tmp_path / "a")
    for k, v in rows.items():
        np.testing.assert_array_equal(again.group[k][:25], v)
    # and equals a study made at 60 trials from the start
    direct = small_study(synthetic, tmp_path / "b", trials=60)
    direct.run(progress=False)
    ref = TrialStore.open(tmp_path / "b")
    for k in ("mask", "seed", "train_pred", "test_pred", "train_prob", "test_prob", "done"):
        np.testing.assert_array_equal(again.group[k][:60], ref.group[k][:60])


def test_half_written_block_is_not_done(synthetic, tmp_path):
    s = small_study(synthetic, tmp_path / "s")
    store = s.store
    trials = store.block_trials(1)
    masks, seeds = s.design.masks(trials), s.design.trial_seeds(trials)
    preds = s.learner.fit_predict(s.data, masks, seeds)
    # a worker dies after writing the data but before the done flags
    store.group["mask"][trials[0]:trials[-1] + 1] = masks
    store.group["train_pred"][trials[0]:trials[-1] + 1] = preds.train_pred
    assert store.done().sum() == 0
    assert 1 in store.missing()
    assert store.read_block(1) is None
    s.run(progress=False)
    assert store.done().all()


def test_estimate_needs_trials(synthetic, tmp_path):
    s = small_study(synthetic, tmp_path / "s")
    with pytest.raises(StoreError, match="no tailscope study"):
        s.estimate()  # reading creates nothing
    assert not (tmp_path / "s").exists()
    assert s.store.trials == s.trials  # created (as a first run that failed would leave it), no trial done
    with pytest.raises(ValueError, match="only 0 trials"):
        s.estimate()


def test_study_reopens_from_disk(tmp_path):
    data = ts.load_dataset("digits")
    s = ts.Study(data, ts.SklearnLearner(LogisticRegression(max_iter=100)), trials=6, block_size=3,
                 path=tmp_path / "d")
    s.run(progress=False)
    again = ts.Study.open(tmp_path / "d")
    assert again.data.fingerprint == data.fingerprint
    assert again.info()["done"] == 6
    np.testing.assert_array_equal(again.estimate(save=False).mem, s.estimate(save=False).mem)


def test_open_missing_store_is_clear(tmp_path):
    with pytest.raises(StoreError, match="no tailscope study"):
        TrialStore.open(tmp_path / "nothing")
