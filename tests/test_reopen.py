"""Reopening a study made in Python: built-in torch learners are rebuilt; others say how to pass them."""

import numpy as np
import pytest

import tailscope as ts
from tailscope.learners.base import LearnerError


def _const(xtr, ytr, xev, seed):
    return np.full(len(xev), np.bincount(ytr).argmax()), None


def test_python_torch_study_reopens_with_its_learner(tmp_path):
    data = ts.load_dataset("digits")
    learner = ts.TorchLearner("mlp", widths=(16,), epochs=1, lr=0.05)
    ts.Study(data, learner, trials=4, path=tmp_path / "s").run(progress=False)
    back = ts.Study.open(tmp_path / "s")
    assert isinstance(back.learner, ts.TorchLearner) and back.learner.spec() == learner.spec()
    back.trials = 6
    assert back.run(progress=False)["done"] == 6  # more trials train with the rebuilt learner


def test_unrebuildable_learner_says_how_to_pass_it(tmp_path):
    data = ts.load_dataset("digits")
    ts.Study(data, ts.CallableLearner(_const, "const"), trials=4, path=tmp_path / "s").run(progress=False)
    back = ts.Study.open(tmp_path / "s")
    back.trials = 6
    with pytest.raises(LearnerError, match=r"learner \(callable: const\) .*learner=..."):
        back.run(progress=False)
    assert ts.Study.open(tmp_path / "s", learner=ts.CallableLearner(_const, "const")).run(progress=False)["done"] == 6


def test_memory_study_refuses_other_processes():
    study = ts.Study(ts.load_dataset("digits"), ts.CallableLearner(_const, "const"), trials=4,
                     path="memory://reopen-test/s")
    with pytest.raises(ValueError, match="memory:// study lives in this process"):
        study.run(workers=2, progress=False)


def test_two_factories_with_one_name_are_two_configs():
    import torch.nn as nn

    a = ts.TorchLearner(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    b = ts.TorchLearner(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    assert a.spec()["model"] == b.spec()["model"]  # both '<lambda>' of this module
    assert a.spec()["model_source"] != b.spec()["model_source"]


def test_wrong_types_name_the_argument(tmp_path):
    data = ts.load_dataset("digits")
    with pytest.raises(TypeError, match="got the class TorchLearner"):
        ts.Study(data, ts.TorchLearner)
    with pytest.raises(TypeError, match="seed must be an integer"):
        ts.Study(data, ts.CallableLearner(_const, "const"), seed="a")
    study = ts.Study(data, ts.CallableLearner(_const, "const"), trials=4, path=tmp_path / "s")
    study.run(progress=False)
    scores = study.estimate(save=False)
    with pytest.raises(TypeError, match="threshold must be a number"):
        scores.memorized("0.25")
    with pytest.raises(TypeError, match="threshold must be a number"):
        scores.influence_pairs("0.3")
    assert np.array_equal(scores.memorized(0.25), scores.memorized(np.float32(0.25)))


def test_store_made_before_model_source_was_recorded_reopens(tmp_path):
    data = ts.load_dataset("digits")
    learner = ts.TorchLearner(_tiny_net, epochs=1)
    assert "model_source" in learner.spec()
    study = ts.Study(data, learner, trials=4, block_size=2, path=tmp_path / "s")
    study.run(progress=False)
    _drop_config_key(tmp_path / "s", "model_source")
    again = ts.Study(data, learner, trials=6, block_size=2, path=tmp_path / "s")
    assert again.run(progress=False)["trained"] == 2  # resumed and grown, not refused


def test_sklearn_store_made_before_hard_predictions_were_recorded_reopens(tmp_path):
    from sklearn.linear_model import LogisticRegression

    data = ts.load_dataset("digits")
    learner = ts.SklearnLearner(LogisticRegression(max_iter=1000))
    assert learner.spec()["hard"] == "predict"
    ts.Study(data, learner, trials=4, block_size=2, path=tmp_path / "s").run(progress=False)
    _drop_config_key(tmp_path / "s", "hard")
    again = ts.Study(data, learner, trials=6, block_size=2, path=tmp_path / "s")
    assert again.run(progress=False)["trained"] == 2  # resumed and grown, not refused
    assert again.estimate(save=False).trials == 6


def _drop_config_key(study_dir, key: str) -> None:
    """Rewrite a store's config without learner[key], as a version before that key wrote it."""
    import json

    import zarr

    from tailscope.store import config_hash

    group = zarr.open_group(str(study_dir / "trials.zarr"), mode="r+")
    cfg = json.loads(json.dumps(group.attrs["config"]))
    del cfg["learner"][key]
    group.attrs.update({"config": cfg, "config_hash": config_hash(cfg)})


def _tiny_net():
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_pixel_max_is_part_of_the_study(tmp_path):
    from tailscope.store import StoreError

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 17, size=(60, 4, 4)).astype(np.uint8), y=y)
    spec = f"npz:{tmp_path / 'd.npz'}"
    plain = ts.Study(ts.load_dataset(spec), ts.CallableLearner(_const, "const"), trials=4, path=tmp_path / "s")
    plain.run(progress=False)
    scaled = ts.Study(ts.load_dataset(spec, pixel_max=16), ts.CallableLearner(_const, "const"), trials=4,
                      path=tmp_path / "s")
    with pytest.raises(StoreError, match="dataset.pixel_max"):
        scaled.run(progress=False)


def test_npz_study_made_before_split_keys_were_honoured_reopens(tmp_path):
    import json

    import zarr

    from tailscope.store import config_hash

    rng = np.random.default_rng(0)
    y = np.arange(80) % 2
    split = np.where(np.arange(80) < 60, "train", "test")
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(80, 3)).astype(np.float32), y=y, split=split)
    spec = f"npz:{tmp_path / 'd.npz'}"
    old_data = ts.load_dataset(spec, split_key=None)  # as older versions loaded it (ignored as asked: no warning)
    study = ts.Study(old_data, ts.CallableLearner(_const, "const"), trials=4, path=tmp_path / "s")
    study.run(progress=False)
    group = zarr.open_group(str(tmp_path / "s" / "trials.zarr"), mode="r+")
    cfg = json.loads(json.dumps(group.attrs["config"]))
    cfg["source"]["options"] = {}  # older versions recorded no split_key
    group.attrs.update({"config": cfg, "config_hash": config_hash(cfg)})
    back = ts.Study.open(tmp_path / "s")
    assert back.data.fingerprint == old_data.fingerprint
