"""Learners refuse what they cannot use and say which trial failed and why."""

import sys
import types

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tailscope as ts
from tailscope.learners.base import LearnerError, Predictions
from tailscope.learners.sklearn import seed_params
from tailscope.store import TrialStore


def _data(n=60, c=3, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None]
    ytr, yte = y[:48], y[48:]
    if labels is not None:
        ytr, yte = np.asarray(labels)[ytr], np.asarray(labels)[yte]
    return ts.from_arrays(x[:48], ytr, x[48:], yte, name="tiny")


# module level, so worker processes could import them
def _float_labels(xtr, ytr, xev, seed):
    return np.full(len(xev), 0.6), None


def _whole_float_labels(xtr, ytr, xev, seed):
    return np.full(len(xev), float(np.bincount(ytr).argmax())), None


def _short_proba(xtr, ytr, xev, seed):
    return np.zeros(len(xev), dtype=int), np.full((len(xev), 2), 0.5)


# -- 1. only classifiers; predicted labels must be integral ------------------------------------


@pytest.mark.parametrize("est, match", [
    (LinearRegression(), "LinearRegression is a regressor, not a classifier"),
    (KMeans(n_clusters=3, n_init=1), "KMeans is a clusterer, not a classifier"),
    (make_pipeline(StandardScaler(), LinearRegression()),
     "final step of this Pipeline, LinearRegression, is a regressor"),
])
def test_non_classifiers_are_refused(est, match):
    with pytest.raises(TypeError, match=match) as info:
        ts.SklearnLearner(est)
    assert "Pass a classifier" in str(info.value)


def test_classifiers_and_tagless_estimators():
    ts.SklearnLearner(make_pipeline(StandardScaler(), LogisticRegression()))

    class Duck:  # fit/predict/get_params but no sklearn tags: cannot tell, so refused
        def fit(self, x, y):
            return self

        def predict(self, x):
            return np.zeros(len(x), int)

        def get_params(self, deep=True):
            return {}

    with pytest.raises(TypeError, match="ClassifierMixin"):
        ts.SklearnLearner(Duck())

    class Mine(ClassifierMixin, BaseEstimator):
        def fit(self, x, y):
            self.classes_ = np.unique(y)
            return self

        def predict(self, x):
            return np.full(len(x), self.classes_[0])

    ts.SklearnLearner(Mine())


def test_predictions_refuse_non_integer_labels():
    ok = np.ones((1, 2), np.float32)
    with pytest.raises(LearnerError, match=r"non-integer predicted labels in train_pred \(e\.g\. \[0\.6\]\)"):
        Predictions(np.array([[0.6, 1.0]]), ok, np.array([[1, 0]]), ok)
    with pytest.raises(LearnerError, match="non-integer predicted labels in test_pred"):
        Predictions(np.array([[1, 0]]), ok, np.array([[np.nan, 0.0]]), ok)
    with pytest.raises(LearnerError, match="outside"):  # would wrap around in int16
        Predictions(np.array([[40000, 0]]), ok, np.array([[1, 0]]), ok)
    p = Predictions(np.array([[2.0, 1.0]]), ok, np.array([[0.0, 1.0]]), ok)  # whole floats pass
    assert p.train_pred.dtype == np.int16 and p.train_pred.tolist() == [[2, 1]]
    assert p.test_pred.tolist() == [[0, 1]]


def test_callable_learner_refuses_float_labels_and_bad_proba(tmp_path):
    data = _data()
    study = ts.Study(data, ts.CallableLearner(_float_labels, "floats"), trials=4, block_size=4,
                     path=tmp_path / "a")
    with pytest.raises(LearnerError, match=r"non-integer predicted labels .*_float_labels.*0\.6"):
        study.run(progress=False)
    assert not TrialStore.open(tmp_path / "a").done().any()

    with pytest.raises(LearnerError, match=r"proba of shape \(60, 2\); expected \(60, 3\)"):
        ts.CallableLearner(_short_proba, "short").fit_predict(
            data, np.ones((1, 48), bool), np.array([0]))

    preds = ts.CallableLearner(_whole_float_labels, "whole").fit_predict(
        data, np.ones((2, 48), bool), np.array([0, 1]))
    assert preds.train_pred.dtype == np.int16
    assert (preds.train_pred == 0).all() and (preds.test_pred == 0).all()  # 16 of each class: argmax 0


def test_regressor_study_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="not a classifier"):
        ts.Study(_data(), ts.SklearnLearner(LinearRegression()), trials=4, path=tmp_path / "r")
    assert not (tmp_path / "r").exists()


# -- 2. every random_state, nested ones included, is set from the trial seed --------------------


def test_seed_params_cover_nested_random_states():
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5))
    sp = seed_params(pipe, 123)
    assert list(sp) == ["randomforestclassifier__random_state"]
    assert sp == seed_params(pipe, 123)  # deterministic
    assert sp != seed_params(pipe, 124)
    assert seed_params(RandomForestClassifier(), 123) == {"random_state": 123}  # top level: the seed itself
    assert seed_params(LogisticRegression(solver="lbfgs"), 5) == {"random_state": 5}
    assert seed_params(StandardScaler(), 5) == {}


def _pipe_study(path, seed):
    est = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5))
    study = ts.Study(_data(), ts.SklearnLearner(est), trials=4, block_size=4, seed=seed, path=path)
    study.run(progress=False)
    store = TrialStore.open(path)
    return {k: np.asarray(store.array(k)[:]) for k in ("train_pred", "train_prob", "test_prob")}


def test_pipeline_studies_are_reproducible(tmp_path):
    a = _pipe_study(tmp_path / "a", seed=0)
    b = _pipe_study(tmp_path / "b", seed=0)
    c = _pipe_study(tmp_path / "c", seed=1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["train_prob"], c["train_prob"])
    # the trial seed reaches the forest: same subsets, other seeds, other forests
    learner = ts.SklearnLearner(make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5)))
    masks = np.ones((2, 48), bool)
    masks[:, ::3] = False
    p1 = learner.fit_predict(_data(), masks, np.array([1, 1]))
    p2 = learner.fit_predict(_data(), masks, np.array([2, 2]))
    np.testing.assert_array_equal(p1.test_prob[0], p1.test_prob[1])
    assert not np.array_equal(p1.test_prob[0], p2.test_prob[0])


# -- 3. a subset that lacks a class -------------------------------------------------------------


def test_fit_failure_names_the_trial_and_the_missing_class():
    data = _data(labels=["cat", "dog", "eel"])  # classes sorted: cat=0, dog=1, eel=2
    masks = np.ones((2, 48), bool)
    masks[1, data.y_train != 0] = False  # row 1: only class 0
    with pytest.raises(LearnerError) as info:
        ts.SklearnLearner(LogisticRegression()).fit_predict(data, masks, np.array([11, 22]))
    msg = str(info.value)
    assert "fitting LogisticRegression failed on the trial with seed 22 (row 1 of the 2 trials" in msg
    assert "16 training examples" in msg and "at least 2 classes" in msg
    assert "held only classes [0 ('cat')] and lacked [1 ('dog'), 2 ('eel')]" in msg
    assert "--ratio" in msg and "merge or drop rare classes" in msg and "RandomForestClassifier" in msg
    assert isinstance(info.value.__cause__, ValueError)


def test_other_fit_failures_name_the_trial():
    data = _data()
    with pytest.raises(LearnerError, match=r"seed 5 \(row 0 .*'C' parameter") as info:
        ts.SklearnLearner(LogisticRegression(C=-1.0)).fit_predict(data, np.ones((1, 48), bool), np.array([5]))
    assert "lacked" not in str(info.value)


def test_rare_class_study_through_the_cli_design(tmp_path):
    # a class with 3 of 63 training examples and ratio 0.5: some subsets lack it
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60, int), [1, 1, 1]]
    data = ts.from_arrays(rng.normal(size=(63, 3)) + 3 * y[:, None], y,
                          rng.normal(size=(10, 3)), np.r_[np.zeros(9, int), [1]])
    study = ts.Study(data, ts.SklearnLearner(LogisticRegression()), trials=32, block_size=32,
                     ratio=0.5, path=tmp_path / "rare")
    with pytest.raises(LearnerError, match=r"held only classes \[0\] and lacked \[1\] .*3 training examples"):
        study.run(progress=False)


def test_proba_columns_follow_classes_when_a_class_is_missing():
    data = _data()
    mask = data.y_train != 1  # the middle class is missing: classes_ = [0, 2]
    learner = ts.SklearnLearner(LogisticRegression())
    preds = learner.fit_predict(data, mask[None], np.array([3]))
    ref = LogisticRegression(random_state=3).fit(data.x_train[mask].astype(np.float32), data.y_train[mask])
    assert ref.classes_.tolist() == [0, 2]
    for x, y, pred, prob in ((data.x_train, data.y_train, preds.train_pred[0], preds.train_prob[0]),
                             (data.x_test, data.y_test, preds.test_pred[0], preds.test_prob[0])):
        proba = ref.predict_proba(x.astype(np.float32))
        np.testing.assert_array_equal(pred, ref.classes_[proba.argmax(1)])
        assert set(np.unique(pred)) <= {0, 2}
        np.testing.assert_array_equal(prob[y == 1], 0.0)  # never seen: probability 0
        np.testing.assert_allclose(prob[y == 0], proba[y == 0, 0], rtol=1e-6)
        np.testing.assert_allclose(prob[y == 2], proba[y == 2, 1], rtol=1e-6)  # column 1, not 2
        assert prob[y == 2].mean() > 0.5


# -- 4. learners that cannot reach worker processes ---------------------------------------------


def test_lambda_and_local_functions_are_refused_clearly():
    with pytest.raises(LearnerError, match=r"function .*<lambda> cannot be sent to worker processes "
                                           r"\(lambdas and local functions cannot be pickled") as info:
        ts.CallableLearner(lambda xtr, ytr, xev, seed: (np.zeros(len(xev), int), None), "l").check_picklable()
    assert "define it at module top level" in str(info.value) and "workers=1" in str(info.value)

    def local(xtr, ytr, xev, seed):
        return np.zeros(len(xev), int), None

    with pytest.raises(LearnerError, match=r"refused_clearly\.<locals>\.local cannot be sent"):
        ts.CallableLearner(local, "local").check_picklable()
    ts.CallableLearner(_float_labels, "ok").check_picklable()  # module level: fine
    ts.SklearnLearner(LogisticRegression()).check_picklable()


def test_functions_from_an_interactive_main_are_refused(monkeypatch):
    main = types.ModuleType("__main__")  # like `python -c` or a notebook: no __file__

    def fn(xtr, ytr, xev, seed):
        return np.zeros(len(xev), int), None

    fn.__module__, fn.__qualname__ = "__main__", "fn"
    main.fn = fn
    monkeypatch.setitem(sys.modules, "__main__", main)
    with pytest.raises(LearnerError, match="interactive session.*workers=1"):
        ts.CallableLearner(fn, "main").check_picklable()


def test_any_unpicklable_learner_is_refused_clearly():
    class Holder(ts.SyntheticLearner):
        pass

    lrn = Holder(np.ones(2), np.ones(2), np.ones(2), np.zeros((2, 2)))
    lrn.hook = lambda: None
    with pytest.raises(LearnerError, match="Holder cannot be sent to worker processes.*workers=1"):
        lrn.check_picklable()


def test_sklearn_configs_are_the_same_in_every_process_and_inputs_keep_their_precision(tmp_path):
    import subprocess
    import sys

    from sklearn.ensemble import StackingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier

    from tailscope.learners.sklearn import input_dtype

    script = (
        "import json, numpy as np, tailscope as ts\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import FunctionTransformer\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "est = make_pipeline(FunctionTransformer(np.tanh), LogisticRegression())\n"
        "print(json.dumps(ts.SklearnLearner(est).spec(), sort_keys=True))\n")
    specs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
             for _ in range(2)}
    assert len(specs) == 1 and " at 0x" not in specs.pop()  # no memory address: a study resumes elsewhere
    p1 = np.full(1200, 1 / 1200)
    p2 = p1.copy()
    p2[500] += 0.1
    p2[501] -= 0.1
    assert ts.SklearnLearner(GaussianNB(priors=p1)).spec() != ts.SklearnLearner(GaussianNB(priors=p2)).spec()
    ts.SklearnLearner(StackingClassifier([("lr", LogisticRegression()), ("knn", KNeighborsClassifier())]))
    with pytest.raises(TypeError, match=r"instance of LogisticRegression \(e.g. LogisticRegression\(\)\)"):
        ts.SklearnLearner(LogisticRegression)
    for bad in (0, -1.0, float("nan"), "16"):
        with pytest.raises(ValueError, match="scale must be a positive number"):
            ts.SklearnLearner(LogisticRegression(), scale=bad)
    assert input_dtype(np.random.default_rng(0).normal(size=(20, 3))) is np.float32
    assert input_dtype(1.7e9 + np.arange(120.0)[:, None]) is np.float64  # timestamps: float32 would merge them


def test_sparse_inputs_are_named():
    import scipy.sparse

    with pytest.raises(ts.DataError, match=r"sparse matrix.*toarray\(\)"):
        ts.from_arrays(scipy.sparse.csr_matrix(np.eye(6)), np.arange(6) % 2)


def test_sklearn_failures_name_their_cause():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.concatenate([np.repeat([0, 1, 2], 20), [3, 3]])
    data = ts.from_arrays(rng.normal(size=(len(y), 3)) + y[:, None], y, rng.normal(size=(8, 3)),
                          np.arange(8) % 4)
    everything = np.ones((1, data.n_train), bool)
    with pytest.raises(ts.LearnerError, match=r"Classes \[3\] had only 1-2 examples in this subset"):
        ts.SklearnLearner(CalibratedClassifierCV(LogisticRegression(), cv=3)).fit_predict(data, everything,
                                                                                          np.zeros(1))

    class Unstable(LogisticRegression):
        def predict_proba(self, x):
            p = super().predict_proba(x)
            p[0] = np.nan
            return p

    with pytest.raises(ts.LearnerError, match="returned NaN or inf.*Scale the inputs"):
        ts.SklearnLearner(Unstable()).fit_predict(data, everything, np.zeros(1))
    # labels 1..K are classes named by their values (with an explicit class list they index it)
    assert ts.from_arrays(np.zeros((30, 2)), np.arange(30) % 3 + 1).classes == ["1", "2", "3"]
    with pytest.raises(ts.DataError, match=r"labels start at 1.*\(y - 1\)"):
        ts.from_arrays(np.zeros((30, 2)), np.arange(30) % 3 + 1, classes=["a", "b", "c", "d"])


def test_class_weights_keyed_by_class_names():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.array(["bird", "cat", "dog"])[np.arange(60) % 3]
    data = ts.from_arrays(rng.normal(size=(60, 2)), y, rng.normal(size=(9, 2)), y[:9])
    by_name = ts.SklearnLearner(LogisticRegression(class_weight={"cat": 5.0, "dog": 1.0, "bird": 1.0}))
    by_id = ts.SklearnLearner(LogisticRegression(class_weight={1: 5.0, 2: 1.0, 0: 1.0}))
    masks = np.ones((1, data.n_train), bool)
    a, b = by_name.fit_predict(data, masks, np.zeros(1)), by_id.fit_predict(data, masks, np.zeros(1))
    np.testing.assert_array_equal(a.test_prob, b.test_prob)


def test_sklearn_hard_predictions_equal_predict_where_a_second_pass_is_skipped():
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    data = ts.load_dataset("digits")
    rng = np.random.default_rng(0)
    masks = rng.random((2, data.n_train)) < 0.3  # small subsets: many ties and near-ties
    for est in (KNeighborsClassifier(4), KNeighborsClassifier(6, weights="distance"), DecisionTreeClassifier(),
                RandomForestClassifier(10), ExtraTreesClassifier(10)):
        learner = ts.SklearnLearner(est)
        preds = learner.fit_predict(data, masks, np.arange(2))
        x_train, x_test = learner._inputs(data)
        for k in range(2):
            from sklearn.base import clone

            from tailscope.learners.sklearn import seed_params

            fitted = clone(est).set_params(**seed_params(est, k)).fit(x_train[masks[k]], data.y_train[masks[k]])
            np.testing.assert_array_equal(preds.test_pred[k], fitted.predict(x_test), err_msg=repr(est))
            np.testing.assert_array_equal(preds.train_pred[k], fitted.predict(x_train), err_msg=repr(est))
