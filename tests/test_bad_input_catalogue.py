"""Bad input catalogue: every public entry point, fed wrong input, raises a clear error that
names the problem, and no stored trial changes (digest of the study directory before/after).

Complements tests/test_bad_input.py (array validation, study settings) and
tests/test_loaders.py (malicious pickles in dataset files).
"""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import tree_digest
from typer.testing import CliRunner

import tailscope as ts
from tailscope.cli import app
from tailscope.data import DataError
from tailscope.design import DesignError
from tailscope.store import StoreError, TrialStore
from tailscope.verify import verify_store

runner = CliRunner()


def arrays(n=40, d=3, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % c, rng.normal(size=(10, d)), np.arange(10) % c


@pytest.fixture(scope="module")
def done_study(tmp_path_factory, ):
    """A finished study on disk (synthetic learner), reused read-only by the entries."""
    from conftest import make_synthetic

    data, learner = make_synthetic(n=120, n_test=30)
    path = tmp_path_factory.mktemp("cat") / "study"
    s = ts.Study(data, learner, trials=20, ratio=0.7, seed=0, block_size=5, path=path)
    s.run(progress=False)
    return data, learner, path


# ---------------------------------------------------------------- data entry points
@pytest.mark.parametrize("mutate, match", [
    (lambda a: (a[0], a[1], np.where(np.arange(10)[:, None] == 2, np.nan, a[2]), a[3]), "NaN"),
    (lambda a: (np.where(np.arange(40)[:, None] == 1, np.inf, a[0]), a[1], a[2], a[3]), r"NaN|inf"),
    (lambda a: (a[0][:0], a[1][:0], a[2], a[3]), "training split is empty"),
    (lambda a: (a[0], a[1], a[2][:0], a[3][:0]), "test split is empty"),
    (lambda a: (a[0], a[1], a[2], a[3].reshape(-1, 1)), "1-D"),
    (lambda a: (a[0].astype(object), a[1], a[2], a[3]), r"dtype|numeric|object"),
    (lambda a: (a[0], a[1], a[2], np.where(np.arange(10) == 0, 99, a[3])), r"y_test has labels \[99\]"),
])
def test_from_arrays_catalogue(mutate, match):
    with pytest.raises(DataError, match=match):
        ts.from_arrays(*mutate(arrays()))


def test_labels_out_of_the_class_list_are_refused():
    x, y, xt, yt = arrays()
    with pytest.raises(DataError, match=r"label|class"):
        ts.from_arrays(x, np.where(np.arange(40) == 0, 99, y), xt, yt, classes=["a", "b", "c"])
    # without a class list, integer codes are the classes: 99 is a fourth class, named "99"
    assert ts.from_arrays(x, np.where(np.arange(40) == 0, 99, y), xt, yt).classes == ["0", "1", "2", "99"]


def test_load_dataset_catalogue(tmp_path):
    with pytest.raises((DataError, ValueError), match="unknown dataset"):
        ts.load_dataset("no-such-set")
    with pytest.raises((DataError, FileNotFoundError), match="missing.npz"):
        ts.load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    # an npz whose array is pickled objects: refused (allow_pickle=False), never unpickled
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.npz"
    x = np.empty(4, dtype=object)
    x[:] = [Boom(marker)] * 4
    np.savez(evil, x_train=x, y_train=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"pickle|object"):
        ts.load_dataset(f"npz:{evil}")
    assert not marker.exists()


class Boom:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# ---------------------------------------------------------------- Study / run / estimate
def test_study_and_run_catalogue(done_study):
    data, learner, path = done_study
    before = tree_digest(path)
    bad = [
        (lambda: ts.Study(data, learner, trials=20, ratio=0.0, path=path), DesignError, "ratio"),
        (lambda: ts.Study(data, learner, trials=20, ratio=1.0, path=path), DesignError, "ratio"),
        (lambda: ts.Study(data, learner, trials="20", path=path), ValueError, "trials"),
        (lambda: ts.Study(data, learner, trials=20, design="balanced", design_block=3, path=path),
         DesignError, "block"),
        (lambda: ts.Study(data, learner, trials=20, ratio=0.7, seed=0, block_size=5, path=path)
         .run(workers=0, progress=False), ValueError, "workers"),
        (lambda: ts.Study(data, learner, trials=20, ratio=0.7, seed=0, block_size=5, path=path)
         .run(shard=(2, 2), progress=False), ValueError, "shard"),
        (lambda: ts.Study(data, learner, trials=20, ratio=0.7, seed=0, block_size=5, path=path)
         .run(backend="nope", progress=False), ValueError, "unknown backend"),
        # a store from another config: seed, ratio, learner, block size
        (lambda: ts.Study(data, learner, trials=20, ratio=0.7, seed=1, block_size=5, path=path)
         .run(progress=False), StoreError, "seed: stored 0, requested 1"),
        (lambda: ts.Study(data, learner, trials=20, ratio=0.5, seed=0, block_size=5, path=path)
         .run(progress=False), StoreError, "ratio"),
        (lambda: ts.Study(data, learner, trials=20, ratio=0.7, seed=0, block_size=4, path=path)
         .estimate(save=False), StoreError, "block_size"),
    ]
    for make, err, match in bad:
        with pytest.raises(err, match=match):
            make()
        assert tree_digest(path) == before, match


def test_estimate_given_a_path(done_study):
    """A study path (str or Path) or a Study is opened; anything else is a TypeError naming the fix."""
    path = done_study[2]
    ref = ts.estimate(ts.TrialStore.open(path))
    for given in (str(path), path):
        np.testing.assert_array_equal(ts.estimate(given).mem, ref.mem)
    with pytest.raises(ts.StoreError, match="no tailscope study"):
        ts.estimate(str(path) + "-missing")
    with pytest.raises(TypeError, match=r"TrialStore\.open\(path\)"):
        ts.estimate(42)
    with pytest.raises(TypeError, match="EstimateOptions"):
        ts.estimate(path, {"infl_threshold": 0.1})


# ---------------------------------------------------------------- tampered stores
def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage, match, where", [
    (lambda p: (p / "trials.zarr/zarr.json").write_text("{not json"), "cannot read the store", "open"),
    (lambda p: (p / "trials.zarr/zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "array"})),
     "cannot read the store", "open"),
    (lambda p: (p / "trials.zarr/test_prob/zarr.json").write_text("garbage"), "test_prob", "estimate"),
    (lambda p: _truncate(p / "trials.zarr/train_prob/c/1/0"), r"block 1 \(trials 5\.\.9\)", "estimate"),
    (lambda p: _truncate(p / "trials.zarr/done/c/2"), "done flags", "run"),
    # a deleted chunk of a done block must not be read as zeros (zarr's fill value)
    (lambda p: (p / "trials.zarr/test_pred/c/2/0").unlink(), r"block 2 .*test_pred are missing", "estimate"),
    (lambda p: (p / "trials.zarr/mask/c/0/0").unlink(), r"block 0 .*mask are missing", "estimate"),
])
def test_tampered_store_catalogue(done_study, tmp_path, damage, match, where):
    data, learner, src = done_study
    path = _copy(src, tmp_path / "s")
    damage(path)
    before = tree_digest(path)
    study = ts.Study(data, learner, trials=20, ratio=0.7, seed=0, block_size=5, path=path)
    with pytest.raises(StoreError, match=match):
        if where == "open":
            TrialStore.open(path)
        elif where == "estimate":
            study.estimate(save=False)
        else:
            study.run(progress=False)
    assert tree_digest(path) == before
    # the CLI says the same in one line, and changes nothing either
    cmd = {"open": ["info", str(path)], "estimate": ["estimate", str(path)],
           "run": ["info", str(path)]}[where]
    r = runner.invoke(app, cmd)
    if cmd[0] == "info" and where == "run":  # info shows what it could read, and says the store is damaged
        assert r.exit_code == 1 and '"damaged"' in r.output and "tailscope verify" in r.output, r.output
    else:
        assert r.exit_code == 2 and "error:" in r.output, r.output
    assert tree_digest(path) == before


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)])


def test_verify_names_each_fault_and_repair_clears_only_bad_trials(done_study, tmp_path):
    data, learner, src = done_study
    path = _copy(src, tmp_path / "s")
    st = TrialStore.open(path, mode="r+")
    st.group["test_prob"][2, 4] = np.nan          # NaN
    st.group["train_prob"][6, 0] = 1.5            # probability out of range
    st.group["test_pred"][8, 1] = 7               # label out of range (3 classes)
    m = st.group["mask"][11]
    st.group["mask"][11] = ~m                     # mask not the design's
    st.group["seed"][12] = 12345                  # seed not the design's
    good_rows = {k: st.group[k][:] for k in ("mask", "train_pred")}
    _truncate(path / "trials.zarr/train_pred/c/3/0")  # undecodable chunk: block 3 = trials 15..19
    (path / "trials.zarr/test_prob/c/3/0").unlink()   # and a missing one in the same block

    before = tree_digest(path)
    rep = verify_store(path)
    assert tree_digest(path) == before  # verify alone changes nothing
    kinds = {(p.kind, p.array): p.trials for p in rep.problems}
    assert kinds[("nan", "test_prob")] == [2]
    assert kinds[("prob range", "train_prob")] == [6]
    assert kinds[("pred range", "test_pred")] == [8]
    assert kinds[("mask", "mask")] == [11]
    assert kinds[("seed", "seed")] == [12]
    assert kinds[("unreadable chunk", "train_pred")] == [15, 16, 17, 18, 19]
    assert kinds[("missing chunk", "test_prob")] == [15, 16, 17, 18, 19]
    assert rep.bad_trials == [2, 6, 8, 11, 12, 15, 16, 17, 18, 19]

    r = runner.invoke(app, ["verify", str(path)])
    assert r.exit_code == 1 and "trials 15-19: train_pred: unreadable chunk" in r.output, r.output
    r = runner.invoke(app, ["verify", str(path), "--repair"])
    assert r.exit_code == 0 and "cleared the done flags of trials 2,6,8,11-12,15-19" in r.output
    after = TrialStore.open(path)
    np.testing.assert_array_equal(np.flatnonzero(~after.done()), rep.bad_trials)
    ok = np.setdiff1d(np.arange(15), rep.bad_trials)
    for k, v in good_rows.items():  # good rows untouched
        np.testing.assert_array_equal(after.group[k][ok], v[ok])
    # a rerun redoes exactly the bad trials and the store is whole again
    res = ts.Study(data, learner, trials=20, ratio=0.7, seed=0, block_size=5, path=path).run(progress=False)
    assert res["trained"] == 10
    assert verify_store(path).ok
    ref = TrialStore.open(src)
    for k in ("mask", "seed", "done", "train_pred", "train_prob", "test_pred", "test_prob"):
        assert after.group[k][:].tobytes() == ref.group[k][:].tobytes(), k


# ---------------------------------------------------------------- CLI
def test_cli_catalogue(done_study, tmp_path):
    _, _, src = done_study
    path = _copy(src, tmp_path / "s")
    before = tree_digest(path)
    cases = [
        (["run", "-o", str(path), "-l", "logreg", "--ratio", "0"], "ratio"),
        (["run", "-o", str(path), "-l", "logreg", "--ratio", "1"], "ratio"),
        (["run", "-o", str(path), "-l", "logreg", "--trials", "1"], "trials"),
        (["run", "-o", str(path), "-l", "logreg", "--shard", "1of2"], "--shard must look like i/N"),
        (["run", "-o", str(path), "-l", "logreg", "--trials", "20", "--block-size", "5"],
         "different study config"),
        (["run", "-o", str(path), "-l", "logreg", "--backend", "warp"], "unknown backend"),  # checked first
        (["estimate", str(tmp_path / "nothing")], "no tailscope study"),
        (["info", str(tmp_path / "nothing")], "no tailscope study"),
        (["verify", str(tmp_path / "nothing")], "no tailscope study"),
    ]
    for args, match in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert match in " ".join(r.output.split()), (args, r.output)
        assert tree_digest(path) == before, args
    assert not (tmp_path / "nothing").exists()
    # the pickled-object npz through the CLI
    evil = tmp_path / "evil.npz"
    x = np.empty(2, dtype=object)
    np.savez(evil, x_train=x, y_train=np.arange(2))
    r = runner.invoke(app, ["run", "-o", str(tmp_path / "e"), "-d", f"npz:{evil}"])
    assert r.exit_code == 2 and ("pickle" in r.output or "object" in r.output), r.output
    assert not (tmp_path / "e").exists()
    assert pickle  # (module used by Boom via numpy's object arrays)
