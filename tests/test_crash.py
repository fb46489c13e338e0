"""Crash safety under concurrency: shard writers SIGKILLed at random points, then resumed,
give a store byte-identical to an uninterrupted single run, with stale claims reported."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import done_trials
from test_shards import assert_same_store, write_script

import tailscope as ts
from tailscope.store import StoreError, TrialStore
from tailscope.verify import verify_store


def test_kill_concurrent_shards_then_resume_is_identical(tmp_path):
    script = write_script(tmp_path, sleep=0.1)
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    subprocess.run([sys.executable, str(script), str(ref), "-", "1"], check=True, timeout=120)
    rng = np.random.default_rng(1)
    kills, partial = 0, []
    for attempt in range(3):
        # two shards (one with worker processes) and a duplicate of shard 0, all at once
        runs = [("0/2", "1"), ("1/2", "2" if attempt % 2 else "1"), ("0/2", "1")]
        procs = [subprocess.Popen([sys.executable, str(script), str(crashed), s, w],
                                  start_new_session=True) for s, w in runs]
        # kill at a random point: once a random number of trials is done (never all)
        target = int(rng.integers(4, 80))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if done_trials(crashed) >= target:
                break
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0, 0.15)))
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                kills += 1
        for p in procs:
            p.wait()
        try:
            st = TrialStore.open(crashed)
        except StoreError:  # killed while creating the store: no trial yet
            partial.append(0)
        else:
            partial.append(int(st.done().sum()))
            status = st.block_status()
            # killed writers leave claims; their processes are gone, so none counts as in flight
            assert status["in_flight_blocks"] == [], status
            rep = verify_store(crashed)  # what is done after a crash is whole and right
            assert rep.ok, rep.summary()
    assert kills >= 3
    print("done after each kill:", partial)
    assert any(0 < p < 96 for p in partial), partial
    subprocess.run([sys.executable, str(script), str(crashed), "-", "1"], check=True, timeout=120)
    assert_same_store(ref, crashed)
    assert TrialStore.open(crashed).block_status()["stale_claims"] == []


def _done_study(path):
    from conftest import make_synthetic

    data, learner = make_synthetic(n=60, n_test=20)
    ts.Study(data, learner, trials=8, block_size=4, path=path).run(progress=False)
    return path


def test_a_missing_label_chunk_is_refused_not_read_as_zeros(tmp_path):
    path = _done_study(tmp_path / "s")
    (path / "trials.zarr" / "y_test" / "c" / "0").unlink()
    rep = verify_store(path)
    assert not rep.ok and any(p.array == "y_test" and "missing chunk files" in p.detail for p in rep.problems)
    with pytest.raises(StoreError, match=r"y_test labels .* missing chunk files"):
        ts.estimate(path)


def test_repair_never_clears_good_trials_for_damaged_array_metadata(tmp_path):
    path = _done_study(tmp_path / "s")
    meta = path / "trials.zarr" / "test_pred" / "zarr.json"
    saved = meta.read_bytes()
    meta.unlink()
    rep = verify_store(path, repair=True)
    assert rep.bad_trials == [] and rep.repaired == [] and "not repaired" in rep.summary()
    assert "trials.zarr/test_pred/zarr.json" in rep.repair_refused
    meta.write_bytes(saved)
    assert int(TrialStore.open(path).done().sum()) == 8 and verify_store(path).ok


def test_writes_of_one_block_wait_for_each_other(tmp_path):
    """Runs with different trial counts share the partial block's chunks: a writer holds the block's
    lock while it reads, changes and rewrites them."""
    from conftest import make_synthetic

    data, learner = make_synthetic(n=60, n_test=20)
    study = ts.Study(data, learner, trials=6, block_size=4, path=tmp_path / "s")
    store = study.store
    lock = tmp_path / "s" / "claims" / "block-000001.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(1.5)"), str(lock)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    trials = np.array([4, 5])
    preds = learner.fit_predict(data, study.design.masks(trials), study.design.trial_seeds(trials))
    t0 = time.monotonic()
    assert store.write(trials, study.design.masks(trials), study.design.trial_seeds(trials), preds) == 2
    assert time.monotonic() - t0 > 0.8  # waited for the other writer
    holder.wait(timeout=10)
    assert store.done()[4:6].all()


def test_done_trials_holding_only_fill_values_are_found_and_repaired(tmp_path):
    from tailscope.store import ROW_ARRAYS

    path = _done_study(tmp_path / "s")
    store = TrialStore.open(path, mode="r+")
    for name in ROW_ARRAYS:  # what a lost race left: done flags set, rows back at the fill value
        store.array(name)[5] = 0
    rep = verify_store(path, repair=True)
    assert rep.bad_trials == [5] and any(p.kind == "blank" for p in rep.problems)
    assert not TrialStore.open(path).done()[5] and TrialStore.open(path).done().sum() == 7


def test_labels_of_one_class_are_not_taken_for_damage_after_a_replaced_creation(tmp_path):
    """zarr drops a chunk equal to the fill value unless told to keep it: labels all 0."""
    from conftest import make_synthetic

    base, learner = make_synthetic(n=60, n_test=20)
    data = ts.Dataset(base.x_train, base.y_train, base.x_test, np.zeros(base.n_test, np.int64), base.classes)
    assert ts.Study(data, learner, trials=4, ratio=0.5, block_size=4, path=tmp_path / "s").store  # created only
    study = ts.Study(data, learner, trials=4, ratio=0.7, block_size=4, path=tmp_path / "s")
    with pytest.warns(UserWarning, match="its config is replaced"):
        study.run(progress=False)
    assert verify_store(tmp_path / "s").ok and study.estimate().trials == 4


def test_a_filesystem_without_file_locks_still_takes_trials(tmp_path, monkeypatch):
    import errno
    import fcntl

    from conftest import make_synthetic

    from tailscope import store as store_module

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setattr(store_module, "_WARNED", set())
    data, learner = make_synthetic(n=60, n_test=20)
    with pytest.warns(UserWarning, match="does not support file locks"):
        ts.Study(data, learner, trials=8, block_size=4, path=tmp_path / "s").run(progress=False)
    assert TrialStore.open(tmp_path / "s").done().all()


def test_old_temporary_files_of_killed_writes_are_listed_and_repair_deletes_them(tmp_path):
    path = _done_study(tmp_path / "s")
    old = path / "trials.zarr" / "mask" / "c" / "0" / "0.0123abcd.partial"
    new = path / "trials.zarr" / "mask" / "c" / "1" / "0.4567ef01.partial"
    tmp = path / "claims" / "block-000001.json.tmp"
    tmp.parent.mkdir(exist_ok=True)
    for f in (old, new, tmp):
        f.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for f in (old, tmp):
        os.utime(f, (two_hours_ago, two_hours_ago))
    rep = verify_store(path)
    assert rep.ok and sorted(rep.stray_files) == sorted(str(f.relative_to(path)) for f in (old, tmp))
    assert "--repair deletes them" in rep.summary()
    rep = verify_store(path, repair=True)
    assert rep.stray_deleted and not old.exists() and not tmp.exists() and new.exists()  # a write may own it
    assert verify_store(path).ok and int(TrialStore.open(path).done().sum()) == 8
