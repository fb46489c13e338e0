"""Per-trial checksums: verify finds rows changed after they were written, even when every
value is still in range, and stores made before checksums keep working and gain them."""

import shutil

import numpy as np
from conftest import make_synthetic

import tailscope as ts
from tailscope.store import DIGEST, NO_DIGEST, TrialStore, row_digests
from tailscope.verify import verify_store


def _as_made_before_checksums(path) -> None:
    import zarr

    from tailscope.store import DIGESTS_FROM_START

    shutil.rmtree(path / "trials.zarr" / DIGEST)
    group = zarr.open_group(str(path / "trials.zarr"), mode="r+")
    group.attrs.put({k: v for k, v in group.attrs.asdict().items() if k != DIGESTS_FROM_START})


def _study(path, trials=8):
    data, learner = make_synthetic(n=60, n_test=20)
    return ts.Study(data, learner, trials=trials, block_size=4, path=path)


def test_every_done_trial_has_the_checksum_of_its_rows(tmp_path):
    _study(tmp_path / "s").run(progress=False)
    store = TrialStore.open(tmp_path / "s")
    blk = store.read_block(1)
    stored = store.array(DIGEST)[4:8]
    np.testing.assert_array_equal(stored, row_digests(blk.trials, blk.seed, blk.mask, blk.preds))
    assert (stored != NO_DIGEST).all() and verify_store(tmp_path / "s").ok


def test_a_chunk_copied_from_another_block_is_found_and_repaired(tmp_path):
    """Values in range, masks and seeds as designed: only the checksum tells the rows are not this trial's."""
    path = tmp_path / "s"
    _study(path).run(progress=False)
    chunks = path / "trials.zarr" / "test_prob" / "c"
    shutil.copyfile(chunks / "0" / "0", chunks / "1" / "0")  # block 0's test probabilities into block 1
    rep = verify_store(path, repair=True)
    assert rep.bad_trials == [4, 5, 6, 7] and {p.kind for p in rep.problems} == {"digest"}
    assert "copied from another block" in rep.summary()
    assert TrialStore.open(path).done().tolist() == [True] * 4 + [False] * 4
    _study(path).run(progress=False)  # redone, and good again
    assert verify_store(path).ok


def test_one_changed_probability_is_found(tmp_path):
    path = tmp_path / "s"
    _study(path).run(progress=False)
    store = TrialStore.open(path, mode="r+")
    p = store.array("train_prob")[2]
    p[7] = 1.0 - p[7] if p[7] != 0.5 else 0.25
    store.array("train_prob")[2] = p
    assert verify_store(path).bad_trials == [2]


def test_a_store_made_before_checksums_verifies_and_gains_them_when_resumed(tmp_path):
    path = tmp_path / "s"
    _study(path, trials=4).run(progress=False)
    _as_made_before_checksums(path)
    store = TrialStore.open(path)
    assert not store.has_digests and verify_store(path).ok
    _study(path, trials=8).run(progress=False)  # grows: the new rows get checksums, the old ones none
    store = TrialStore.open(path)
    digests = store.array(DIGEST)[:8]
    assert (digests[:4] == NO_DIGEST).all() and (digests[4:] != NO_DIGEST).all()
    assert verify_store(path).ok and ts.estimate(path).trials == 8


def test_an_undecodable_checksum_chunk_of_a_partial_block_is_deleted_so_the_rerun_can_write(tmp_path):
    path = tmp_path / "s"
    _study(path, trials=6).run(progress=False)  # blocks of 4: block 1 is partial
    (path / "trials.zarr" / DIGEST / "c" / "1").write_bytes(b"garbage")
    rep = verify_store(path, repair=True)
    assert rep.bad_trials == [4, 5] and f"{DIGEST}/c/1" in " ".join(rep.deleted_chunks)
    _study(path, trials=6).run(progress=False)  # rewriting part of the block needs no read of garbage
    assert verify_store(path).ok and TrialStore.open(path).done().all()


def test_a_missing_checksum_chunk_is_damage_in_a_store_that_always_had_them(tmp_path):
    path = tmp_path / "s"
    _study(path).run(progress=False)
    (path / "trials.zarr" / DIGEST / "c" / "1").unlink()
    rep = verify_store(path)
    assert rep.bad_trials == [4, 5, 6, 7] and any(p.kind == "missing chunk" for p in rep.problems)


def test_reading_a_store_made_before_checksums_does_not_write_to_it(tmp_path):
    from conftest import tree_digest

    path = tmp_path / "s"
    _study(path, trials=4).run(progress=False)
    _as_made_before_checksums(path)
    before = tree_digest(path)
    study = _study(path, trials=4)
    assert study.store.trials == 4  # opened as a study does for estimate, report and analyses
    assert study.estimate(save=False).trials == 4
    assert tree_digest(path) == before
