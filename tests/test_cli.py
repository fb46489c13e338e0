"""The command line: run, resume, estimate, info, and clear errors."""

import json
import subprocess
import sys

import pandas as pd
from typer.testing import CliRunner

from tailscope.cli import app

runner = CliRunner()


def test_run_estimate_info(tmp_path):
    out = tmp_path / "s"
    r = runner.invoke(app, ["run", "-o", str(out), "-l", "logreg", "--opt", "max_iter=50",
                            "--trials", "8", "--block-size", "4"])
    assert r.exit_code == 0, r.output
    assert "8/8 done" in r.output
    mem = pd.read_parquet(out / "scores" / "memorization.parquet")
    assert len(mem) == 1347 and mem["n_in"].add(mem["n_out"]).eq(8).all()
    # resuming trains nothing new
    r = runner.invoke(app, ["run", "-o", str(out), "-l", "logreg", "--opt", "max_iter=50",
                            "--trials", "8", "--block-size", "4", "--no-estimate"])
    assert "trained 0 trials" in r.output
    r = runner.invoke(app, ["info", str(out)])
    info = json.loads(r.output)
    assert info["done"] == 8 and info["missing_blocks"] == [] and info["mean_acc_in"] > 0.9
    r = runner.invoke(app, ["estimate", str(out), "--threshold", "0.3", "--top-k", "3"])
    assert r.exit_code == 0, r.output
    pairs = pd.read_parquet(out / "scores" / "influence_pairs.parquet")
    assert (pairs["infl"] >= 0.3).all()


def test_cli_errors_are_one_clear_line(tmp_path):
    r = runner.invoke(app, ["run", "-o", str(tmp_path / "x"), "-d", "nope"])
    assert r.exit_code == 2 and "unknown dataset" in r.output
    r = runner.invoke(app, ["run", "-o", str(tmp_path / "x"), "-l", "logreg", "--ratio", "1.0"])
    assert r.exit_code == 2 and "ratio" in r.output
    r = runner.invoke(app, ["run", "-o", str(tmp_path / "x"), "-l", "nope"])
    assert r.exit_code == 2 and "unknown learner" in r.output
    r = runner.invoke(app, ["run", "-o", str(tmp_path / "x"), "-l", "logreg", "--opt", "oops"])
    assert r.exit_code == 2 and "key=value" in r.output
    r = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no tailscope study" in r.output
    assert not (tmp_path / "x").exists()


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tailscope", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout
