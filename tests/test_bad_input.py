"""Bad input raises a clear error before anything is written."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import tailscope as ts
from tailscope.data import DataError
from tailscope.design import DesignError


def arrays(n=40, d=3, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    return rng.normal(size=(n, d)), y, rng.normal(size=(10, d)), np.arange(10) % c


@pytest.mark.parametrize("mutate, match", [
    (lambda a: (a[0][:-1], a[1], a[2], a[3]), "rows but y_train"),
    (lambda a: (a[0], a[1].reshape(-1, 1), a[2], a[3]), "1-D"),
    (lambda a: (np.where(np.arange(40)[:, None] == 3, np.nan, a[0]), a[1], a[2], a[3]), "NaN"),
    (lambda a: (a[0], a[1], a[2], a[3] + 5), "that no training example has"),
    (lambda a: (a[0], a[1] - 1, a[2], a[3]), r"y_test has labels \[2\] that no training example has"),
    (lambda a: (a[0], a[1] + 0.5, a[2], a[3]), "integer"),
    (lambda a: (a[0], a[1], a[2][:, :2], a[3]), "same per-example shape"),
    (lambda a: (a[0], a[1], a[2][:0], a[3][:0]), "empty"),
    (lambda a: (a[0][:, 0], a[1], a[2][:, 0], a[3]), "at least 2-D"),
    (lambda a: (a[0], a[1].astype(str), a[2], a[3]), "labels must be integers"),
    (lambda a: (a[0], a[1].astype(str), a[2], (a[3] + 7).astype(str)), "never occur in y_train"),
])
def test_bad_arrays_are_refused(mutate, match):
    with pytest.raises(DataError, match=match):
        ts.from_arrays(*mutate(arrays()))


def test_string_labels_become_classes():
    x, y, xt, yt = arrays()
    names = np.array(["cat", "dog", "eel"])
    d = ts.from_arrays(x, names[y], xt, names[yt])
    assert d.classes == ["cat", "dog", "eel"]
    np.testing.assert_array_equal(d.y_train, y)


def test_empty_class_is_refused():
    x, y, xt, yt = arrays()
    with pytest.raises(DataError, match="no training examples"):
        ts.from_arrays(x, np.where(y == 1, 0, y), xt, yt, classes=["a", "b", "c"])


@pytest.mark.parametrize("kw, err, match", [
    ({"ratio": 0.0}, DesignError, "ratio"),
    ({"ratio": 1.0}, DesignError, "ratio"),
    ({"ratio": 1.2}, DesignError, "ratio"),
    ({"trials": 1}, ValueError, "trials"),
    ({"trials": 0}, ValueError, "trials"),
    ({"trials": 2.5}, ValueError, "trials"),
    ({"design": "nope"}, DesignError, "unknown design"),
    ({"block_size": -1}, ValueError, "block_size"),
])
def test_bad_study_settings_write_nothing(tmp_path, kw, err, match):
    data = ts.from_arrays(*arrays())
    args = {"trials": 10, "ratio": 0.7, "path": tmp_path / "s"} | kw
    with pytest.raises(err, match=match):
        ts.Study(data, ts.SklearnLearner(LogisticRegression()), **args).run(progress=False)
    assert not (tmp_path / "s").exists()


def test_wrong_learner_and_data_types(tmp_path):
    data = ts.from_arrays(*arrays())
    with pytest.raises(TypeError, match="Learner"):
        ts.Study(data, LogisticRegression(), path=tmp_path / "s")
    with pytest.raises(DataError, match="Dataset"):
        ts.Study(arrays(), ts.SklearnLearner(LogisticRegression()), path=tmp_path / "s")
    with pytest.raises(TypeError, match="classifier"):
        ts.SklearnLearner(object())
    assert not (tmp_path / "s").exists()


def test_path_none_is_a_study_in_memory_and_other_types_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = ts.from_arrays(*arrays())
    study = ts.Study(data, ts.SklearnLearner(LogisticRegression()), trials=4, block_size=4, path=None)
    study.run(progress=False)
    assert study.path.startswith("memory://") and study.estimate().summary()["trials"] == 4
    assert list(tmp_path.iterdir()) == []  # (a folder named "None" was made once)
    with pytest.raises(TypeError, match="path must be a folder path or URL"):
        ts.Study(data, ts.SklearnLearner(LogisticRegression()), path=5)


def test_learner_returning_bad_shapes_writes_nothing(tmp_path):
    class Broken(ts.SyntheticLearner):
        def fit_predict(self, data, masks, seeds):
            p = super().fit_predict(data, masks, seeds)
            p.test_pred = p.test_pred[:, :-1]
            return p

    data = ts.from_arrays(*arrays())
    lrn = Broken(np.full(40, 0.8), np.full(40, 0.5), np.full(10, 0.5), np.zeros((40, 10)))
    study = ts.Study(data, lrn, trials=4, block_size=4, path=tmp_path / "s")
    with pytest.raises(ValueError, match="test_pred of shape"):
        study.run(progress=False)
    assert study.store.done().sum() == 0


def test_label_forms_users_bring():
    x = np.random.default_rng(0).normal(size=(30, 2))
    flags = ts.from_arrays(x, np.arange(30) % 2 == 0)  # bool: False is class 0
    assert flags.classes == ["0", "1"] and set(flags.y_train.tolist()) == {0, 1}
    for raw in (np.array([b"cat", b"dog", b"eel"] * 10), np.array([b"cat", b"dog", b"eel"] * 10, dtype=object)):
        assert ts.from_arrays(x, raw).classes == ["cat", "dog", "eel"]
    with pytest.raises(DataError, match=r"labels are the class names themselves.*y.astype\(str\)"):
        ts.from_arrays(x, np.array([3, 7, 9] * 10), classes=["3", "7", "9"])
    with pytest.raises(DataError, match=r"no example in the test split.*larger test_fraction"):
        ts.from_arrays(x[:10], np.arange(10) % 5)
    assert ts.from_arrays(x, np.array([3, 7, 9] * 10).astype(str), classes=["3", "7", "9"]).classes == ["3", "7", "9"]


def test_bytes_class_names_and_undecodable_labels():
    x = np.random.default_rng(0).normal(size=(30, 2))
    data = ts.from_arrays(x, np.array([b"neg", b"pos"] * 15), classes=[b"neg", b"pos"])
    assert data.classes == ["neg", "pos"]
    with pytest.raises(DataError, match=r"not UTF-8 text"):
        ts.from_arrays(x, np.array([b"\xff", b"pos"] * 15))


def test_a_report_of_a_study_in_memory_needs_a_folder(tmp_path):
    from tailscope.report import write_report

    study = ts.Study(ts.from_arrays(*arrays()), ts.SklearnLearner(LogisticRegression()), trials=4, block_size=4,
                     path=None)
    study.run(progress=False)
    with pytest.raises(ValueError, match="pass out_dir"):
        write_report(study)
    assert write_report(study, tmp_path / "report").exists()


def test_boolean_labels_of_one_value_are_named():
    x = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(DataError, match="every label is True: a classifier needs examples of both classes"):
        ts.from_arrays(x, np.ones(30, bool))
    data = ts.from_arrays(x, np.arange(30) % 2 == 0, x_test=x[:3], y_test=np.ones(3, bool))  # one-class test: fine
    assert data.y_test.tolist() == [1, 1, 1]
