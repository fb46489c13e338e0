"""CLI papercuts found by QA: each gets one clear line, and studies can be reported from anywhere."""

import numpy as np
import pytest
from conftest import make_synthetic
from typer.testing import CliRunner

import tailscope as ts
from tailscope.cli import app

runner = CliRunner()


def _one_line(r) -> str:
    return " ".join(r.output.split())


def test_bad_run_settings_are_one_line_errors(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    cases = [
        (["run", "-o", str(f), "-l", "logreg", "--trials", "4"], "is a file, not a directory"),
        (["run", "-o", str(tmp_path / "s"), "-l", "logreg", "--trials", "4", "--block-size", "0"],
         "block_size must be >= 1"),
        (["run", "-o", str(tmp_path / "s"), "-l", "logreg", "--trials", "4", "--data-opt", "limit_train=5"],
         "does not take option(s) 'limit_train'"),
        (["report", str(tmp_path / "nothing"), "-o", str(f)], "is a file, not a directory"),
    ]
    for args, match in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and match in _one_line(r), (args, r.output)
    assert not (tmp_path / "s").exists()


def test_relative_npz_study_reports_from_another_directory(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    (tmp_path / "work").mkdir()
    np.savez(tmp_path / "work" / "d.npz", x=rng.normal(size=(90, 4)).astype("float32") + y[:, None], y=y)
    monkeypatch.chdir(tmp_path / "work")
    r = runner.invoke(app, ["run", "-d", "npz:d.npz", "-o", "s", "-l", "logreg", "--trials", "6"])
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["report", "work/s"])
    assert r.exit_code == 0 and (tmp_path / "work/s/report/index.html").exists(), r.output


def test_in_memory_study_reports_with_its_data(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 4)).astype("float32") + y[:, None]
    data = ts.from_arrays(x, y, name="arrays")
    from sklearn.linear_model import LogisticRegression
    ts.Study(data, ts.SklearnLearner(LogisticRegression()), trials=6, path=tmp_path / "s").run(progress=False)
    r = runner.invoke(app, ["report", str(tmp_path / "s")])
    assert r.exit_code == 2 and "pass the data" in _one_line(r) and "--dataset SPEC" in _one_line(r), r.output
    np.savez(tmp_path / "d.npz", x=x, y=y)  # the same arrays, now as a file
    r = runner.invoke(app, ["report", str(tmp_path / "s"), "--dataset", f"npz:{tmp_path / 'd.npz'}"])
    assert r.exit_code == 0 and (tmp_path / "s/report/index.html").exists(), r.output


def test_errors_keep_brackets_and_warnings_are_one_line(tmp_path):
    y = np.arange(40, dtype=float) % 2
    y[3] = np.nan
    np.savez(tmp_path / "nan.npz", x=np.zeros((40, 3), np.float32), y=y)
    r = runner.invoke(app, ["run", "-d", f"npz:{tmp_path / 'nan.npz'}", "-o", str(tmp_path / "n"), "-l", "logreg"])
    assert r.exit_code == 2 and "x, y = x[keep], y[keep]" in _one_line(r), r.output  # not eaten as markup
    args = ["run", "-o", str(tmp_path / "s"), "-l", "logreg", "--block-size", "4", "--no-estimate"]
    assert runner.invoke(app, [*args, "--trials", "8"]).exit_code == 0
    r = runner.invoke(app, [*args, "--trials", "4"])  # fewer than stored: a warning, as one line
    assert r.exit_code == 0 and "warning: the study at" in _one_line(r), r.output
    assert ".py:" not in r.output and "study.run(" not in r.output, r.output


def test_a_path_to_the_store_means_its_study_folder(tmp_path):
    study = tmp_path / "s"
    assert runner.invoke(app, ["run", "-o", str(study), "-l", "logreg", "--trials", "6", "--no-estimate"]).exit_code == 0
    for args in (["estimate", str(study / "trials.zarr")], ["report", str(study / "trials.zarr")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    assert (study / "scores" / "summary.json").exists() and (study / "report" / "index.html").exists()
    assert sorted(p.name for p in (study / "trials.zarr").iterdir() if p.name in ("scores", "report")) == []


def test_a_learner_that_cannot_use_the_data_writes_nothing(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "vec.npz", x=rng.normal(size=(40, 5)).astype(np.float32), y=np.arange(40) % 2)
    r = runner.invoke(app, ["run", "-d", f"npz:{tmp_path / 'vec.npz'}", "-o", str(tmp_path / "c"), "-l", "cnn"])
    assert r.exit_code == 2 and "needs images" in _one_line(r), r.output
    assert not (tmp_path / "c").exists()


def test_resume_without_repeating_the_block_size(tmp_path):
    args = ["run", "-o", str(tmp_path / "s"), "-l", "logreg", "--no-estimate"]
    assert runner.invoke(app, [*args, "--trials", "8", "--block-size", "4"]).exit_code == 0
    r = runner.invoke(app, [*args, "--trials", "12"])  # grows the study; block size 4 comes from the store
    assert r.exit_code == 0, r.output
    assert ts.TrialStore.open(tmp_path / "s").done().sum() == 12


def test_ray_options_name_their_backend(tmp_path):
    r = runner.invoke(app, ["run", "-o", str(tmp_path / "s"), "-l", "logreg", "--backend", "processes",
                            "--address", "10.0.0.1:6379"])
    assert r.exit_code == 2 and "options of the Ray backend" in _one_line(r), r.output
    assert not (tmp_path / "s").exists()


def test_a_failed_ray_task_is_one_line_with_its_own_error():
    from tailscope.backends.ray import _task_error
    from tailscope.runner import WorkerError

    class RayTaskError(Exception):  # shaped like ray.exceptions.RayTaskError
        def __init__(self):
            super().__init__("\x1b[36mray::_train_block()\x1b[39m long remote traceback")
            self.cause = ValueError("fitting LogisticRegression failed: C must be > 0")

    err = _task_error(RayTaskError(), np.arange(4, 8), retried=False)
    assert isinstance(err, WorkerError) and "\n" not in str(err) and "\x1b" not in str(err)
    assert "trials 4..7 failed: ValueError: fitting LogisticRegression failed" in str(err)
    assert "after retries" not in str(err)


def test_an_unreachable_ray_address_fails_fast():
    import time

    import pytest

    from tailscope.backends.ray import _check_reachable
    from tailscope.runner import WorkerError

    t0 = time.perf_counter()
    with pytest.raises(WorkerError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        _check_reachable("127.0.0.1:1", timeout_s=2.0)
    assert time.perf_counter() - t0 < 5
    _check_reachable("auto")  # left to ray.init, which fails fast itself


def test_a_moved_data_file_is_given_to_report_and_analyses_with_the_recorded_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("d.npz", x=rng.integers(0, 17, (90, 8, 8)).astype(np.uint8), y=np.arange(90) % 3)
    r = runner.invoke(app, ["run", "-d", "npz:d.npz", "--data-opt", "pixel_max=16", "--data-opt", "split_seed=1",
                            "-l", "logreg", "--trials", "6", "-o", "s"])
    assert r.exit_code == 0, r.output
    (tmp_path / "d.npz").rename(tmp_path / "moved.npz")
    r = runner.invoke(app, ["analyze", "correlation", "s"])  # reads only the stored trials and scores
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["analyze", "near-duplicates", "s"])  # needs the inputs
    assert r.exit_code == 2 and "tailscope analyze --dataset SPEC NAME DIR" in _one_line(r), r.output
    r = runner.invoke(app, ["analyze", "--dataset", "npz:moved.npz", "near-duplicates", "s"])
    assert r.exit_code == 0 and (tmp_path / "s/analyses/near_duplicates/result.json").exists(), r.output
    r = runner.invoke(app, ["report", "s", "--dataset", "npz:moved.npz"])  # pixel_max, split_seed as recorded
    assert r.exit_code == 0 and (tmp_path / "s/report/index.html").exists(), r.output
    r = runner.invoke(app, ["report", "s", "--dataset", "npz:moved.npz", "--data-opt", "split_seed=2"])
    assert r.exit_code == 2 and "recorded options" in _one_line(r), r.output
    from tailscope import study as study_module

    assert study_module._DATA_OVERRIDE is None  # a command's --dataset does not outlive it


def test_disk_errors_are_named_not_called_damage(tmp_path, capsys):
    import errno

    import typer

    from tailscope.cli import friendly
    from tailscope.store import StoreError, TrialStore

    data, learner = make_synthetic(n=60, n_test=20)
    study = ts.Study(data, learner, trials=4, block_size=4, path=tmp_path / "s")
    study.run(progress=False)
    store = TrialStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match=r"could not be read or written: No space left on device.*resume") as info:
        with store._chunk_errors(0):
            raise OSError(errno.ENOSPC, "No space left on device", "trials.zarr/mask/c/0/0")
    assert "damaged" not in str(info.value) and "verify" not in str(info.value)

    @friendly
    def command():
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "s" / "scores"))

    with pytest.raises(typer.Exit) as stop:
        command()
    assert stop.value.exit_code == 2
    out = capsys.readouterr().out
    assert "error:" in out and "Read-only file system" in out and "Traceback" not in out


def test_run_says_the_noise_share_of_the_pairs_like_estimate(tmp_path):
    res = runner.invoke(app, ["run", "-d", "digits", "-l", "knn", "--trials", "8", "--block-size", "8",
                              "-o", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "of them are expected to be noise" in " ".join(res.output.split())


def test_estimate_thresholds_outside_0_1_are_refused_and_nothing_is_rewritten(tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app

    out = tmp_path / "s"
    r = CliRunner().invoke(app, ["run", "-o", str(out), "-l", "logreg", "--opt", "max_iter=50", "--trials", "4",
                                 "--block-size", "4"])
    assert r.exit_code == 0, r.output
    before = (out / "scores" / "summary.json").read_bytes()
    for bad in ("-0.1", "0", "1.5"):
        r = CliRunner().invoke(app, ["estimate", str(out), "--threshold", bad])
        assert r.exit_code != 0 and "outside (0, 1]" in r.output, r.output
    assert (out / "scores" / "summary.json").read_bytes() == before


def test_the_cli_noise_sentence_does_not_claim_0_percent():
    from types import SimpleNamespace

    from tailscope.cli import pairs_noise_text

    old = SimpleNamespace(pairs_false_share_est=0.0, n_pairs_negative=0, n_pairs_null=None, infl_threshold=0.15,
                          options={"pairs_found": 2}, pairs=[])  # scores made before the null count
    text = pairs_noise_text(old)
    assert "no sign of noise" in text and "0%" not in text and "re-estimate" in text
    new = SimpleNamespace(pairs_false_share_est=0.5, n_pairs_negative=0, n_pairs_null=3.0, infl_threshold=0.15,
                          options={"pairs_found": 6}, pairs=[])
    text = pairs_noise_text(new)
    assert "about 50% of them" in text and "3.0 pairs would reach it by chance" in text and "rough" in text
