"""An interrupted report leaves the previous one whole; a finished one replaces it with no leftovers."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import make_synthetic, tree_digest
from PIL import Image

import tailscope as ts
from tailscope.report import build, figures, write_report


@pytest.fixture(scope="module")
def image_study(tmp_path_factory):
    """A synthetic study whose 4 features are drawn as 2x2 images (thumbnails under img/), with an analysis."""
    base, learner = make_synthetic(n=200, n_test=40)
    data = ts.Dataset(base.x_train, base.y_train, base.x_test, base.y_test, classes=base.classes,
                     image_shape=(2, 2), name="tiny")
    path = tmp_path_factory.mktemp("atomic") / "study"
    study = ts.Study(data, learner, trials=30, ratio=0.7, seed=0, path=path, block_size=10)
    study.run(progress=False)
    study.estimate()
    d = path / "analyses" / "noise"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"name": "noise", "title": "Noise", "summary": {"auc": 0.9}}))
    Image.new("RGB", (20, 10), (0, 90, 200)).save(d / "figure.png")
    return study


def _referenced(index: Path) -> list[Path]:
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', index.read_text())
    return [index.parent / s for s in srcs]


def _siblings(report: Path) -> list[str]:
    return sorted(p.name for p in report.parent.iterdir() if p.name.startswith(report.name))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("error", [RuntimeError("plotting broke"), KeyboardInterrupt()])
def test_failed_report_leaves_the_old_one_and_a_rerun_replaces_it(image_study, monkeypatch, error):
    study = image_study
    report = Path(study.path) / "report"
    index = write_report(study)
    assert index == report / "index.html"
    images = _referenced(index)
    assert any("img/" in str(p) for p in images) and any("figures/" in str(p) for p in images)
    assert any("analyses/" in str(p) for p in images)
    assert all(p.is_file() for p in images)
    before = tree_digest(report)

    seen = {}
    real_precision = figures.precision_curve

    def broken(scores, path):  # the last figure: thumbnails and other figures are written by now
        seen["out"] = Path(path).parent.parent
        seen["files"] = sorted(p.name for p in seen["out"].rglob("*.png"))
        raise error

    monkeypatch.setattr(figures, "precision_curve", broken)
    with pytest.raises(type(error)):
        write_report(study)
    assert tree_digest(report) == before  # untouched: the page and every image it shows
    assert all(p.is_file() for p in _referenced(index))
    assert seen["out"] != report and seen["out"].parent == report.parent  # rendered beside it
    assert "mem_hist.png" in seen["files"] and any(n.startswith("train_") for n in seen["files"])
    assert _siblings(report) == ["report"]  # the temporary folder is gone

    monkeypatch.setattr(figures, "precision_curve", real_precision)
    (report / "img" / "train_99999.png").write_bytes(b"x")  # an earlier report's image no new page references
    scores = study.estimate(save=False, infl_threshold=0.3)  # a different page
    assert write_report(study, scores=scores) == index
    assert tree_digest(report) != before and "infl &ge; 0.300" in index.read_text()
    assert not (report / "img" / "train_99999.png").exists()
    assert all(p.is_file() for p in _referenced(index))
    assert _siblings(report) == ["report"]


def test_leftovers_of_a_killed_run_do_not_break_the_next(image_study, tmp_path):
    study = image_study
    out = tmp_path / "r"
    host = socket.gethostname()
    dead, alive = _dead_pid(), os.getppid()
    for name in (f"r.tmp-{host}-{dead}", f"r.old-{host}-{dead}", f"r.tmp-{host}-{alive}",
                 f"r.tmp-{host}-{os.getpid()}"):  # the last: a reused pid of ours
        (tmp_path / name / "img").mkdir(parents=True)
        (tmp_path / name / "index.html").write_text("half written")
    index = write_report(study, out_dir=out)
    assert index == out / "index.html" and all(p.is_file() for p in _referenced(index))
    # a running report's folder (live pid) is left alone; a killed run's ones are cleaned up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", f"r.tmp-{host}-{alive}"]


def test_a_folder_holding_other_files_is_refused(image_study, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "index.html").write_text("mine too")
    with pytest.raises(ValueError, match=r"holds other files \(notes.txt\)"):
        write_report(image_study, out_dir=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "index.html").read_text() == "mine too"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        write_report(image_study, out_dir=tmp_path / "file")
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "index.html").unlink()
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # left by a file browser: replaced with the folder
    (tmp_path / "Thumbs.db").write_bytes(b"\0")
    assert write_report(image_study, out_dir=tmp_path / "r").is_file()
    (tmp_path / "r" / ".DS_Store").write_bytes(b"\0")
    assert write_report(image_study, out_dir=tmp_path / "r").is_file()
    (tmp_path / "r" / ".git").mkdir()  # other dotfiles are the user's: refused, not deleted
    with pytest.raises(ValueError, match=r"holds other files \(.git\)"):
        write_report(image_study, out_dir=tmp_path / "r")
    assert (tmp_path / "r" / ".git").is_dir()
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    with pytest.raises(ValueError, match="current directory"):
        write_report(image_study, out_dir=".")
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_failed_swap_puts_the_old_folder_back(tmp_path):
    old = tmp_path / "report"
    old.mkdir()
    (old / "index.html").write_text("old")
    with pytest.raises(FileNotFoundError):
        build._swap(tmp_path / "missing", old)  # renaming the new folder in fails
    assert (old / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_failed_report_of_a_url_study_leaves_the_remote_one(synthetic, monkeypatch):
    import fsspec

    data, learner = synthetic
    url = f"memory://ts-{uuid.uuid4().hex}/study"
    image_data = ts.Dataset(data.x_train, data.y_train, data.x_test, data.y_test, classes=data.classes,
                            image_shape=(2, 2))
    study = ts.Study(image_data, learner, trials=20, ratio=0.7, seed=2, block_size=10, path=url)
    study.run(progress=False, workers=1)
    study.estimate()
    index = write_report(url, data=image_data)
    fs, root = fsspec.core.url_to_fs(url)
    files = {f: fs.cat_file(f) for f in fs.find(f"{root}/report")}
    assert any("/img/" in f for f in files)

    def broken(scores, path):
        raise RuntimeError("plotting broke")

    monkeypatch.setattr(figures, "precision_curve", broken)
    with pytest.raises(RuntimeError):
        write_report(url, data=image_data)
    assert {f: fs.cat_file(f) for f in fs.find(f"{root}/report")} == files
    monkeypatch.undo()
    fs.pipe_file(f"{root}/report/img/stale.png", b"x")
    assert write_report(url, data=image_data) == index
    page = fs.cat_file(f"{root}/report/index.html").decode()
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert srcs and all(fs.isfile(f"{root}/report/{s}") for s in srcs)
    assert not fs.exists(f"{root}/report/img/stale.png")


@pytest.mark.parametrize(("mine", "named"), [
    ("img/notes.txt", "img/notes.txt"), ("img/my_digit.png", "img/my_digit.png"),
    ("figures/my_plot.png", "figures/my_plot.png"), ("img/sub/x.png", "img/sub"),
    ("analyses/keep/figure.png", "analyses/keep")])
def test_user_files_inside_the_report_subfolders_are_refused_not_deleted(image_study, tmp_path, mine, named):
    out = tmp_path / "r"
    write_report(image_study, out_dir=out)
    (out / "img" / ".DS_Store").write_bytes(b"\0")  # browser litter inside goes with the folder
    assert write_report(image_study, out_dir=out).is_file()
    (out / mine).parent.mkdir(parents=True, exist_ok=True)
    (out / mine).write_text("mine")
    before = tree_digest(out)
    with pytest.raises(ValueError, match=rf"holds other files \({re.escape(named)}\); the report replaces"):
        write_report(image_study, out_dir=out)
    assert tree_digest(out) == before  # refused before anything was written or deleted
