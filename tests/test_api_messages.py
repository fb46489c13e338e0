"""Python API mistakes get messages that name the problem and the fix (as the CLI's do)."""

import numpy as np
import pytest
from conftest import make_synthetic

import tailscope as ts


@pytest.fixture()
def done_study(tmp_path):
    data, learner = make_synthetic(n=60, n_test=20)
    study = ts.Study(data, learner, trials=8, block_size=4, path=tmp_path / "s")
    study.run(progress=False)
    return study


def test_a_study_path_that_is_a_file_is_named(tmp_path):
    data, learner = make_synthetic(n=60, n_test=20)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        ts.Study(data, learner, trials=4, path=tmp_path / "afile")


def test_scores_written_to_a_file_or_a_folder_by_mistake_are_refused(done_study, tmp_path):
    scores = done_study.estimate(save=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file; scores are saved into a folder"):
        scores.save(tmp_path / "afile")
    with pytest.raises(ValueError, match="is a study's trial store; scores go beside it"):
        scores.save(done_study.path + "/trials.zarr")
    with pytest.raises(ValueError, match="is a folder; give the file to write"):
        scores.export_paper_format(tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        scores.influence_pairs(threshold=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        scores.memorized(float("nan"))


def test_estimate_options_are_named_with_the_one_meant(done_study):
    with pytest.raises(TypeError, match="unknown option 'threshold'. Did you mean infl_threshold"):
        done_study.estimate(threshold=0.1)
    with pytest.raises(TypeError, match="Did you mean top_k"):
        done_study.estimate(topk=3)


def test_run_options_and_shards_as_on_the_command_line(done_study):
    with pytest.raises(TypeError, match=r"unknown options \['foo'\].*address"):
        done_study.run(foo=1, progress=False)
    with pytest.raises(ValueError, match="for the Ray backend"):
        done_study.run(address="auto", progress=False)
    assert done_study.run(shard="1/2", progress=False)["done"] == 8  # "i/N" as with --shard
    with pytest.raises(ValueError, match="shard must be"):
        done_study.run(shard="0-4", progress=False)
    assert np.isfinite(done_study.estimate(save=False).mem).any()


def test_small_api_corners(done_study):
    assert "Any" not in dir(ts) and "Study" in dir(ts) and "TorchLearner" in dir(ts)
    with pytest.raises(ValueError, match="trials must be a positive number"):
        ts.theoretical_se_bound(0, 0.7)
    with pytest.raises(ValueError, match="ratio must lie in"):
        ts.theoretical_se_bound(100, 1.0)
    scores = done_study.estimate(save=False)
    assert scores.class_names([0, 1.0]).tolist() == [scores.classes[0], scores.classes[1]]
    with pytest.raises(ValueError, match="integer class ids"):
        scores.class_names([1.5])
    dups = ts.exact_duplicates(done_study.data)
    assert repr(dups).startswith("ExactDuplicates(") and len(repr(dups)) < 200


def test_an_estimator_clone_cannot_copy_is_refused_when_wrapped():
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Renamed(ClassifierMixin, BaseEstimator):
        def __init__(self, c=1.0):
            self.cc = c  # breaks the convention get_params and clone rely on

        def fit(self, x, y):
            return self

    with pytest.raises(TypeError, match=r"cannot be copied with sklearn.base.clone.*self.c = c"):
        ts.SklearnLearner(Renamed())


def test_estimating_an_unfinished_study_says_so(tmp_path):
    data, learner = make_synthetic(n=60, n_test=20)
    ts.Study(data, learner, trials=8, block_size=4, path=tmp_path / "s").run(progress=False)
    bigger = ts.Study(data, learner, trials=12, block_size=4, path=tmp_path / "s")
    assert bigger.store.trials == 12  # grown: 12 planned trials, 8 done
    with pytest.warns(UserWarning, match="estimated from 8 of the 12 planned trials"):
        assert bigger.estimate(save=False).trials == 8


def test_reprs_are_short(done_study):
    assert len(repr(done_study.data)) < 200 and "60 train, 20 test" in repr(done_study.data)
    text = repr(done_study.estimate(save=False))
    assert text.startswith("Scores(8 trials, q=0.7: 60 train, 20 test;") and len(text) < 200
