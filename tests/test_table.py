"""Tables (csv:PATH, parquet:PATH): columns, labels, splits and the usual mistakes in them."""

import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tailscope as ts
from tailscope.cli import app
from tailscope.data import DataError


def _frame(n=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"height": rng.normal(170, 10, n).round(1), "weight": rng.normal(70, 5, n).round(1),
                         "smoker": rng.random(n) < 0.3, "quality": np.tile([3, 5, 10], n // 3)})


def test_csv_reads_features_labels_and_names(tmp_path):
    df = _frame()
    df.to_csv(tmp_path / "t.csv", index=False)
    data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality")
    # integer codes keep numeric order (10 after 5, not "10" < "3"); the names are the values
    assert data.classes == ["3", "5", "10"]
    assert data.meta["feature_names"] == ["height", "weight", "smoker"]
    assert data.n_train + data.n_test == 60 and data.n_test == 12  # test_fraction 0.2, stratified
    rows = np.concatenate([data.x_train, data.x_test])
    got = {tuple(r) for r in rows.tolist()}
    want = {(h, w, float(s)) for h, w, s in df[["height", "weight", "smoker"]].itertuples(index=False)}
    assert got == want
    names = np.array(data.classes)[np.concatenate([data.y_train, data.y_test])]
    assert sorted(names.tolist()) == sorted(df["quality"].astype(str).tolist())
    assert data.meta["spec"] == f"csv:{tmp_path / 't.csv'}"


def test_label_column_found_by_name_and_text_labels(tmp_path):
    df = _frame().rename(columns={"quality": "Target"})
    df["Target"] = df["Target"].map({3: "low", 5: "mid", 10: "high"})
    df.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    data = ts.load_dataset(str(tmp_path / "t.tsv"))  # a bare .tsv path is a table
    assert data.classes == ["high", "low", "mid"] and data.x_train.shape[1] == 3


def test_semicolons_gzip_and_parquet_by_content(tmp_path):
    df = _frame()
    df.to_csv(tmp_path / "t.csv.gz", index=False, sep=";")
    a = ts.load_dataset(f"csv:{tmp_path / 't.csv.gz'}", label="quality")
    df.to_parquet(tmp_path / "t.bin")  # parquet whatever its name: the file's magic bytes decide
    b = ts.load_dataset(f"parquet:{tmp_path / 't.bin'}", label="quality")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_split_column_and_drop(tmp_path):
    df = _frame()
    df["id"] = np.arange(60)
    df["split"] = np.where(np.arange(60) % 4 == 0, "test", "train")
    df.to_csv(tmp_path / "t.csv", index=False)
    data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality", drop="id")
    assert (data.n_train, data.n_test) == (45, 15)
    np.testing.assert_array_equal(data.x_test[:, 0], df["height"].to_numpy()[::4])
    assert data.meta["feature_names"] == ["height", "weight", "smoker"]
    with pytest.warns(UserWarning, match="look like row numbers.*drop=id"):
        data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality")
    assert data.meta["feature_names"] == ["height", "weight", "smoker", "id"]
    data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality", drop=["id", "split"], split_key=None,
                           split_seed=3)
    assert data.n_test == 12  # the column is left out and a random stratified split made


def test_saved_pandas_index_is_named(tmp_path):
    _frame().to_csv(tmp_path / "t.csv")  # index=True: an "Unnamed: 0" column of row numbers
    with pytest.warns(UserWarning, match="Unnamed: 0"):
        ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality", drop="Unnamed: 0")


@pytest.mark.parametrize(("change", "options", "message"), [
    (lambda d: d.assign(city="Paris"), {"label": "quality"}, r"column\(s\) city hold text.*drop=COLUMN"),
    (lambda d: d, {}, "no column named label.*label=COLUMN.*height, weight"),
    (lambda d: d.assign(y=1), {}, "no column named"),
    (lambda d: d.assign(label=1, target=2), {}, "several label-like columns"),
    (lambda d: d, {"label": "nope"}, "no column 'nope'"),
    (lambda d: d, {"label": "height"}, "non-integer numbers.*bin it"),
    (lambda d: d.assign(quality=[np.nan] + [3.0] * 59), {"label": "quality"}, "empty in 1 rows"),
    (lambda d: d, {"label": "quality", "drop": "height,weight,smoker"}, "no feature column left"),
    (lambda d: d, {"label": "quality", "drop": "bmi"}, "no column 'bmi' \\(drop\\)"),
    (lambda d: d.assign(split=2), {"label": "quality"}, "neither train nor test|0 = train"),
    (lambda d: d.assign(split="test"), {"label": "quality"}, "every row in the test split"),
    (lambda d: d.iloc[:0], {"label": "quality"}, "no rows"),
])
def test_table_mistakes_are_named_with_the_fix(tmp_path, change, options, message):
    df = change(_frame())
    if "y" in df and "label" not in options:
        df = df.drop(columns="y")  # (the "no label" case: only an unrecognised name)
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=message):
        ts.load_dataset(f"csv:{tmp_path / 't.csv'}", **options)


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ts.load_dataset(f"csv:{tmp_path / 'none.csv'}")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="could not be read as a parquet file"):
        ts.load_dataset(f"parquet:{tmp_path / 'bad.parquet'}")
    with pytest.raises(DataError, match="does not take option.*colour.*label, drop, decimal, encoding, split_key"):
        ts.load_dataset(f"csv:{tmp_path / 'none.csv'}", colour=1)


def test_missing_feature_cells_follow_allow_missing(tmp_path):
    df = _frame()
    df.loc[5, "weight"] = np.nan
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="allow_missing"):
        ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality")
    data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality", allow_missing=True)
    assert sum(np.isnan(x).sum() for x in (data.x_train, data.x_test)) == 1


def test_dataframe_columns_name_the_features():
    df = _frame()
    data = ts.from_arrays(df[["height", "weight"]], df["quality"].astype(str))
    assert data.meta["feature_names"] == ["height", "weight"]


def test_cli_runs_a_csv_and_the_report_names_features(tmp_path):
    df = _frame(90)
    df.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "s"
    r = CliRunner().invoke(app, ["run", "-d", f"csv:{tmp_path / 't.csv'}", "--data-opt", "label=quality",
                                 "-l", "knn", "--trials", "8", "--block-size", "4", "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    html = (out / "report" / "index.html").read_text()
    assert "height=" in html and "weight=" in html


def test_scale_sensitive_learners_warn_and_standardize_within_trials(tmp_path):
    from sklearn.pipeline import Pipeline

    from tailscope.learners.registry import make_learner, scale_warning

    df = _frame(90)
    df["income"] = df["height"] * 1000.0  # a feature 1000x wider than the others
    df.to_csv(tmp_path / "t.csv", index=False)
    data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality")
    assert "standardize=true" in scale_warning("knn", {}, data)
    assert scale_warning("knn", {"standardize": True}, data) is None
    assert scale_warning("forest", {}, data) is None
    assert scale_warning("knn", {}, ts.load_dataset("digits")) is None  # images share one scale
    est = make_learner("knn", standardize=True).estimator
    assert isinstance(est, Pipeline) and [n for n, _ in est.steps] == ["standardscaler", "kneighborsclassifier"]
    with pytest.raises(ValueError, match="standardize must be true or false"):
        make_learner("logreg", standardize="yes")
    out = tmp_path / "s"
    args = ["run", "-d", f"csv:{tmp_path / 't.csv'}", "--data-opt", "label=quality", "-l", "knn",
            "--trials", "4", "--block-size", "4", "-o", str(out), "--no-estimate"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "spreads differ" in r.output
    r = CliRunner().invoke(app, [*args[:-3], "-o", str(tmp_path / "s2"), "--opt", "standardize=true"])
    assert r.exit_code == 0 and "spreads differ" not in r.output, r.output


def test_dataframes_are_matched_by_column_name_and_checked_like_tables():
    rng = np.random.default_rng(0)
    tr = pd.DataFrame(rng.normal(size=(50, 3)), columns=["age", "income", "score"])
    y = np.arange(50) % 2
    data = ts.from_arrays(tr, y, tr.iloc[:10][["score", "age", "income"]], y[:10])
    np.testing.assert_array_equal(data.x_test, tr.iloc[:10].to_numpy())  # reordered by name, not position
    with pytest.raises(DataError, match=r"x_test's columns differ.*missing \['age', 'income', 'score'\]"):
        ts.from_arrays(tr, y, tr.iloc[:10].set_axis(["a", "b", "c"], axis=1), y[:10])
    mixed = tr.assign(flag=np.arange(50) % 3 == 0, count=pd.array([1, None] + [2] * 48, dtype="Int64"))
    data = ts.from_arrays(mixed, y, allow_missing=True)
    assert data.meta["feature_names"] == ["age", "income", "score", "flag", "count"]
    assert sum(np.isnan(x).sum() for x in (data.x_train, data.x_test)) == 1
    with pytest.raises(DataError, match=r"column\(s\) city hold text.*df.drop\(columns"):
        ts.from_arrays(tr.assign(city="Paris"), y)


def test_integer_codes_are_classes_in_numeric_order():
    x = np.random.default_rng(0).normal(size=(60, 2))
    for codes, names in (([3, 7, 10], ["3", "7", "10"]), ([1, 2, 3], ["1", "2", "3"]), ([0, 1, 2], ["0", "1", "2"])):
        data = ts.from_arrays(x, np.array(codes)[np.arange(60) % 3])
        assert data.classes == names
        got = np.array(data.classes)[data.y_train]
        assert sorted(set(got)) == sorted(names)


def test_decimal_commas(tmp_path):
    df = pd.DataFrame({"a": [1.5, 2.25] * 20, "b": [0.1, 0.3] * 20, "label": [0, 1] * 20})
    df.to_csv(tmp_path / "t.csv", sep=";", decimal=",", index=False)
    with pytest.raises(DataError, match=r"decimal commas \(e.g. '1,5'\).*decimal=','"):
        ts.load_dataset(f"csv:{tmp_path / 't.csv'}")
    data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", decimal=",")
    assert set(np.concatenate([data.x_train, data.x_test])[:, 0]) == {1.5, 2.25}


def test_scores_name_each_examples_row_in_the_users_data(tmp_path):
    import shutil

    from sklearn.tree import DecisionTreeClassifier

    df = _frame(90)
    df.to_csv(tmp_path / "t.csv", index=False)
    data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality")
    study = ts.Study(data, ts.SklearnLearner(DecisionTreeClassifier()), trials=6, block_size=3, path=tmp_path / "s")
    study.run(progress=False)
    scores = study.estimate(infl_threshold=0.01)
    mem = pd.read_parquet(tmp_path / "s" / "scores" / "memorization.parquet")
    rows = mem["row"].to_numpy()
    np.testing.assert_array_equal(df.loc[rows, "height"].to_numpy(), data.x_train[:, 0])  # the file's rows
    assert sorted(np.concatenate([rows, scores.test_row]).tolist()) == list(range(90))
    pairs = scores.pairs
    assert len(pairs) and (pairs["tr_row"].to_numpy() == rows[pairs["tr_idx"]]).all()
    np.testing.assert_array_equal(ts.Scores.load(tmp_path / "s" / "scores").train_row, rows)
    html = open(ts.write_report(study)).read()
    assert "row in data" in html and "train row" in html
    # a store made before rows were kept: no row column, nothing else changes
    for name in ("row_train", "row_test"):
        shutil.rmtree(tmp_path / "s" / "trials.zarr" / name)
    assert "row" not in ts.Study.open(tmp_path / "s").estimate().memorization_frame()


def test_rows_belong_to_the_data_they_were_recorded_for(tmp_path):
    import dataclasses

    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), np.arange(60) % 3
    a = ts.from_arrays(x, y)  # automatic split: rows recorded
    started = ts.Study(a, ts.SklearnLearner(DecisionTreeClassifier()), trials=4, path=tmp_path / "s")
    assert started.store.rows() is not None  # created with a's rows, then (say) the run crashed
    b = ts.from_arrays(x[a.meta["rows"]["train"]][::-1].copy(), a.y_train[::-1].copy(), a.x_test, a.y_test)
    with pytest.warns(UserWarning, match="config is replaced"):
        study = ts.Study(b, ts.SklearnLearner(DecisionTreeClassifier()), trials=4, path=tmp_path / "s")
        study.run(progress=False)
    assert study.estimate(save=False).train_row is None  # not a's rows
    moved = dataclasses.replace(a, x_train=a.x_train[::-1].copy(), y_train=a.y_train[::-1].copy())
    assert ts.data.dataset.recorded_rows(moved) is None and ts.data.dataset.recorded_rows(a) is not None
    carried = ts.from_arrays(b.x_train, b.y_train, b.x_test, b.y_test, meta=dict(a.meta))  # another dataset's meta
    assert ts.data.dataset.recorded_rows(carried) is None


def test_pandas_rows_in_different_orders_are_refused():
    df = pd.DataFrame({"a": np.arange(20.0), "label": np.arange(20) % 2})
    with pytest.raises(DataError, match=r"same rows in different orders.*y.loc\[x.index\]"):
        ts.from_arrays(df[["a"]].sample(frac=1, random_state=0), df["label"])
    assert ts.from_arrays(df[["a"]], df["label"]).n_train == 16


def test_excel_files_byte_order_mark_and_other_encodings(tmp_path):
    df = _frame()
    df.insert(0, "id", np.arange(60) * 3 + 7)
    df.to_csv(tmp_path / "bom.csv", index=False, encoding="utf-8-sig")
    data = ts.load_dataset(f"csv:{tmp_path / 'bom.csv'}", label="quality", drop="id")
    assert data.meta["feature_names"] == ["height", "weight", "smoker"]
    df.rename(columns={"height": "Größe"}).to_csv(tmp_path / "l1.csv", index=False, sep=";", encoding="latin-1")
    with pytest.raises(DataError, match="is not utf-8 text.*encoding=latin-1"):
        ts.load_dataset(f"csv:{tmp_path / 'l1.csv'}", label="quality")
    data = ts.load_dataset(f"csv:{tmp_path / 'l1.csv'}", label="quality", drop="id", encoding="latin-1")
    assert data.meta["feature_names"][0] == "Größe"


def test_label_columns_that_are_measurements_or_dirty_are_named(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=400), "target": rng.integers(25, 350, 400).astype(float)})
    df.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"looks like a measurement.*pd.cut"):
        ts.load_dataset(f"csv:{tmp_path / 'm.csv'}")
    df["target"] = np.array(["setosa", "Setosa", "versicolor", "?"])[np.arange(400) % 4]
    df.loc[:2, "target"] = "virginica"
    df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.warns(UserWarning) as caught:
        ts.load_dataset(f"csv:{tmp_path / 'd.csv'}")
    said = " ".join(str(w.message) for w in caught)
    assert "differ only in case" in said and "'Setosa', 'setosa'" in said and "['?']" in said


def test_split_columns_in_any_case_and_their_fixes(tmp_path):
    df = _frame()
    df["Split"] = np.where(np.arange(60) % 5 == 0, "test", "train")
    df.to_csv(tmp_path / "t.csv", index=False)
    assert ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality").n_test == 12
    df["Split"] = np.where(np.arange(60) % 5 == 0, "validation", "train")
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="split_key=None and drop=Split"):
        ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality")


def test_empty_feature_cells_are_named_by_column_and_row(tmp_path):
    df = _frame()
    df.loc[[4, 9], "weight"] = np.nan
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"empty feature cells in 2 rows \(first rows \[4, 9\].*weight \(2\)"):
        ts.load_dataset(f"csv:{tmp_path / 't.csv'}", label="quality")


def test_decimal_commas_with_thousands_points(tmp_path):
    (tmp_path / "t.csv").write_text("area;label\n" + "".join(f"1.{i:03d},5;{i % 2}\n" for i in range(40)))
    with pytest.raises(DataError, match=r"decimal commas \(e.g. '1.000,5'\)"):
        ts.load_dataset(f"csv:{tmp_path / 't.csv'}")
    data = ts.load_dataset(f"csv:{tmp_path / 't.csv'}", decimal=",")
    assert sorted(np.concatenate([data.x_train, data.x_test])[:, 0])[:2] == [1000.5, 1001.5]


def test_review_corner_cases_of_tables_and_frames(tmp_path):
    # dates and dotted codes stay text (refused as features), grouped thousands become numbers
    (tmp_path / "d.csv").write_text("datum;area;label\n" + "".join(
        f"0{1 + i % 9}.05.2020;1.{i:03d},5;{i % 2}\n" for i in range(40)))
    with pytest.raises(DataError, match=r"column\(s\) datum hold text"):
        ts.load_dataset(f"csv:{tmp_path / 'd.csv'}", decimal=",")
    data = ts.load_dataset(f"csv:{tmp_path / 'd.csv'}", decimal=",", drop="datum")
    assert np.concatenate([data.x_train, data.x_test])[:, 0].min() == 1000.5
    # a list of labels with a DataFrame of features
    frame = pd.DataFrame({"a": np.arange(40.0)})
    assert ts.from_arrays(frame, [0, 1] * 20).n_train == 32
    # a long tail of one-row classes is taken as classes when the label column is named
    codes = np.concatenate([np.repeat(np.arange(20), 20), 100 + np.arange(200)])
    pd.DataFrame({"a": np.arange(600.0), "label": codes}).to_csv(tmp_path / "tail.csv", index=False)
    with pytest.raises(DataError, match="looks like a measurement.*label=COLUMN"):
        ts.load_dataset(f"csv:{tmp_path / 'tail.csv'}")
    assert ts.load_dataset(f"csv:{tmp_path / 'tail.csv'}", label="label").n_classes == 220


def test_preprocessing_and_relabeling_keep_the_rows():
    from tailscope.analyses.label_noise import relabel
    from tailscope.data.dataset import recorded_rows

    data = ts.from_arrays(np.random.default_rng(0).normal(size=(60, 3)), np.arange(60) % 3)
    for derived in (ts.preprocess(data, normalize="per_feature"), relabel(data, np.arange(3), 0, "x")):
        assert recorded_rows(derived) is not None and derived.fingerprint != data.fingerprint
        np.testing.assert_array_equal(recorded_rows(derived)["train"], data.meta["rows"]["train"])
    assert recorded_rows(data) is not None  # the original keeps its own stamp


def test_cli_top_lists_examples_and_pairs_from_the_saved_scores(tmp_path):
    df = _frame(90)
    df.loc[:5, "quality"] = df.loc[:5, "quality"].map({3: 5, 5: 10, 10: 3})  # a few wrong labels
    df.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "s"
    runner = CliRunner()
    r = runner.invoke(app, ["run", "-d", f"csv:{tmp_path / 't.csv'}", "--data-opt", "label=quality", "-l", "forest",
                            "--trials", "12", "--block-size", "6", "-o", str(out)])
    assert r.exit_code == 0, r.output
    scores = ts.Scores.load(out / "scores")
    r = runner.invoke(app, ["top", str(out), "-n", "3"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "most memorized training examples (12 trials)" in r.output, r.output
    first = int(np.argsort(-np.nan_to_num(scores.mem, nan=-9), kind="stable")[0])
    assert f"{scores.mem[first]:.3f} ± {scores.mem_se[first]:.3f}" in r.output and "row" in r.output
    r = runner.invoke(app, ["top", str(out), "--what", "pairs", "-n", "2"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "highest-influence pairs" in r.output and "train row" in r.output
    r = runner.invoke(app, ["top", str(out), "--what", "not-fitted"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "get wrong even when trained on them" in r.output
    r = runner.invoke(app, ["top", str(out), "--what", "nonsense"])
    assert r.exit_code != 0 and "--what must be one of" in r.output
    r = runner.invoke(app, ["top", str(tmp_path / "none")])
    assert r.exit_code != 0 and "no scores" in r.output


def test_sklearn_warnings_are_said_once_per_process():
    import warnings as w

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from tailscope.store import _WARNED

    _WARNED.difference_update({k for k in _WARNED if k.startswith("sklearn-")})
    data = ts.from_arrays(np.random.default_rng(0).normal(size=(80, 5)) * 100, np.arange(80) % 2)
    masks = np.stack([np.random.default_rng(k).random(data.n_train) < 0.7 for k in range(6)])
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        ts.SklearnLearner(LogisticRegression(max_iter=1)).fit_predict(data, masks, np.arange(6))
    said = [c for c in caught if issubclass(c.category, ConvergenceWarning)]
    assert len(said) == 1 and "said once" in str(said[0].message)


def test_dim_integer_images_and_the_same_factory_from_another_module():
    from tailscope.store import _as_stored_main, _same_but_newer

    x = np.random.default_rng(0).integers(0, 17, (60, 8, 8)).astype(np.uint8)
    with pytest.warns(UserWarning, match="go up to 16 only.*pixel_max=16"):
        ts.from_arrays(x, np.arange(60) % 2)
    stored = {"learner": {"model": "__main__.Net", "model_source": "abc", "model_structure": "s1"}, "trials": 4}
    same = {"learner": {"model": "probe.Net", "model_source": "abc", "model_structure": "s1"}, "trials": 4}
    assert _same_but_newer(stored, _as_stored_main(stored, same))
    other = {"learner": {"model": "probe.Net", "model_source": "xyz", "model_structure": "s1"}, "trials": 4}
    assert not _same_but_newer(stored, _as_stored_main(stored, other))
    renamed = {"learner": {"model": "probe.Other", "model_source": "abc", "model_structure": "s1"}, "trials": 4}
    assert not _same_but_newer(stored, _as_stored_main(stored, renamed))
