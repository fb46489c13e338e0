"""Missing values (NaN inputs): refused by default, accepted with allow_missing=True by the
learners that handle them, refused by the others before a study writes anything."""

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from typer.testing import CliRunner

import tailscope as ts
from tailscope.analyses.base import scaled_inputs
from tailscope.cli import app, parse_options
from tailscope.data import DataError
from tailscope.data.preprocess import preprocess


def with_holes(n=120, d=5, seed=0, frac=0.1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    x[rng.random(x.shape) < frac] = np.nan
    return x, y


def test_nan_is_refused_by_default_and_the_error_names_the_switch():
    x, y = with_holes()
    with pytest.raises(DataError, match=r"NaN.*allow_missing=True.*--data-opt allow_missing=true"):
        ts.from_arrays(x, y)


def test_inf_is_refused_even_with_allow_missing():
    x, y = with_holes()
    x[3, 2] = np.inf
    with pytest.raises(DataError, match=r"1 with inf.*replace inf"):
        ts.from_arrays(x, y, allow_missing=True)


def test_allow_missing_counts_rows_and_keeps_the_name():
    x, y = with_holes()
    data = ts.from_arrays(x, y, allow_missing=True, name="holes")
    n_tr, n_te = data.missing_rows
    assert data.name == "holes" and data.meta["allow_missing"] is True
    assert n_tr + n_te == int(np.isnan(x).any(axis=1).sum()) and n_tr > 0
    assert ts.from_arrays(np.nan_to_num(x), y).missing_rows == (0, 0)


def test_learners_without_nan_support_are_refused_before_anything_is_written(tmp_path):
    data = ts.from_arrays(*with_holes(), allow_missing=True)
    for learner, match in ((ts.TorchLearner("mlp", epochs=1), r"TorchLearner cannot train on missing values"),
                           (ts.SklearnLearner(LogisticRegression()), r"LogisticRegression cannot take the "
                                                                      r"missing values.*SimpleImputer")):
        path = tmp_path / type(learner).__name__
        with pytest.raises(DataError, match=match):
            ts.Study(data, learner, trials=4, block_size=4, path=path).run(progress=False)
        assert not path.exists()


@pytest.mark.parametrize("estimator", [make_pipeline(SimpleImputer(), LogisticRegression()),
                                       HistGradientBoostingClassifier(max_iter=10)])
def test_estimators_that_handle_nan_give_finite_scores(estimator):
    data = ts.from_arrays(*with_holes(), allow_missing=True)
    study = ts.Study(data, ts.SklearnLearner(estimator), trials=8, block_size=4, path="memory://holes-"
                     + type(estimator).__name__)
    study.run(progress=False)
    scores = study.estimate()
    seen_both_ways = (scores.n_in > 0) & (scores.n_out > 0)  # the others have no estimate (NaN)
    assert seen_both_ways.sum() > 50 and np.isfinite(scores.mem[seen_both_ways]).all()
    assert 0.5 < scores.summary()["mean_test_acc"] <= 1


def test_preprocess_leaves_nan_out_of_its_statistics_and_keeps_it():
    x, y = with_holes(n=400, frac=0.2)
    x = x * 3 + 7
    data = ts.from_arrays(x, y, x_test=x[:20], y_test=y[:20], allow_missing=True)
    out = preprocess(data, normalize="per_feature")
    record = out.meta["preprocess"][0]
    assert np.allclose(record["mean"], np.nanmean(x, 0)) and np.allclose(record["std"], np.nanstd(x, 0))
    assert np.array_equal(np.isnan(out.x_train), np.isnan(x)) and out.meta["allow_missing"]


def test_distances_treat_missing_values_as_the_training_mean():
    x = np.array([[0.0, 1.0], [2.0, np.nan], [4.0, 3.0], [np.nan, 5.0]])
    data = ts.from_arrays(x, [0, 1, 0, 1], x_test=x[:2], y_test=[0, 1], allow_missing=True)
    xtr, xte = scaled_inputs(data)
    assert np.isfinite(xtr).all() and np.isfinite(xte).all()
    filled = np.where(np.isnan(x), [2.0, 3.0], x)
    assert np.allclose(xtr, (filled - filled.mean(0)) / filled.std(0), atol=1e-6)


def test_cli_options_take_shell_booleans():
    assert parse_options(["a=true", "b=False", "c=none", "d=5", "e=(1, 2)", "f=text"]) == \
        {"a": True, "b": False, "c": None, "d": 5, "e": (1, 2), "f": "text"}


def test_cli_runs_and_reopens_a_study_with_missing_values(tmp_path):
    x, y = with_holes(n=150)
    np.savez(tmp_path / "holes.npz", x=x, y=y)
    out = tmp_path / "study"
    args = ["run", "--dataset", f"npz:{tmp_path / 'holes.npz'}", "--learner", "forest", "--opt",
            "n_estimators=10", "--trials", "8", "--block-size", "4", "--out", str(out)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "allow_missing" in refused.output and not out.exists()
    ran = CliRunner().invoke(app, [*args, "--data-opt", "allow_missing=true"])
    assert ran.exit_code == 0, ran.output
    again = CliRunner().invoke(app, ["estimate", str(out)])  # reopens the data with its recorded options
    assert again.exit_code == 0, again.output


def test_missing_pixels_do_not_blank_a_thumbnail():
    from tailscope.report.gallery import to_uint8

    img = np.array([[0.0, 0.5], [np.nan, 1.0]])
    data = ts.from_arrays(np.stack([img] * 6), np.arange(6) % 2, allow_missing=True)
    out = to_uint8(data, img)
    assert out.tolist() == [[0, 128], [0, 255]]


def test_a_refused_learner_leaves_no_analysis_store(tmp_path):
    from tailscope.analyses.consistency import consistency

    data = ts.from_arrays(*with_holes(), allow_missing=True)
    study = ts.Study(data, ts.SklearnLearner(HistGradientBoostingClassifier(max_iter=5)), trials=4, block_size=4,
                     path=tmp_path / "s")
    study.run(progress=False)
    with pytest.raises(DataError, match="cannot train on missing values"):
        consistency(study, learner=ts.TorchLearner("mlp", epochs=1), trials=4)
    assert not list((tmp_path / "s").glob("analyses/consistency/studies/*/trials.zarr"))


def test_report_says_the_data_has_missing_values(tmp_path):
    from tailscope.report import write_report

    data = ts.from_arrays(*with_holes(), allow_missing=True)
    study = ts.Study(data, ts.SklearnLearner(HistGradientBoostingClassifier(max_iter=5)), trials=4, block_size=4,
                     path=tmp_path / "s")
    study.run(progress=False)
    page = write_report(study).read_text()
    n_train, n_test = data.missing_rows
    assert f"{n_train} training and {n_test} test rows have missing values (NaN)" in page
