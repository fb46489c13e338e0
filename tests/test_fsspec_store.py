"""Studies on fsspec URLs: file:// (through the atomic local store) and memory:// (FsspecStore)."""

import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

import tailscope as ts
from tailscope.store import ROW_ARRAYS, TrialStore, is_remote, local_path, study_location
from tailscope.verify import verify_store


def arrays(path):
    st = TrialStore.open(path)
    return {k: st.group[k][:] for k in ("mask", "seed", "done", *ROW_ARRAYS)}


def study(synthetic, path, trials=30):
    data, learner = synthetic
    return ts.Study(data, learner, trials=trials, ratio=0.7, seed=2, block_size=10, path=path)


@pytest.mark.parametrize("given, want", [
    ("s3://bucket/study/", "s3://bucket/study"),
    ("s3:/bucket/study", "s3://bucket/study"),  # what pathlib.Path makes of an URL (CLI options)
    ("memory://x/y", "memory://x/y"),
    ("file:///tmp/a/b", "/tmp/a/b"),
    ("file:/tmp/a/b", "/tmp/a/b"),
    ("runs/study", "runs/study"),
])
def test_study_location(given, want):
    assert study_location(given) == want
    assert is_remote(given) == ("://" in want)
    assert (local_path(given) is None) == ("://" in want)


def test_file_url_and_memory_url_match_a_plain_directory(synthetic, tmp_path):
    plain = study(synthetic, tmp_path / "plain")
    plain.run(progress=False)
    ref = plain.estimate(save=False)

    file_url = f"file://{tmp_path}/viaurl"
    s = study(synthetic, file_url)
    s.run(progress=False)
    assert (tmp_path / "viaurl" / "trials.zarr" / "zarr.json").exists()  # really a local store
    mem_url = f"memory://ts-{uuid.uuid4().hex}/study"
    m = study(synthetic, mem_url)
    m.run(progress=False, workers=1)
    for other in (file_url, mem_url):
        a, b = arrays(tmp_path / "plain"), arrays(other)
        for k in a:
            assert a[k].tobytes() == b[k].tobytes(), (other, k)
        assert verify_store(other).ok
    np.testing.assert_array_equal(m.estimate(save=False).mem, ref.mem)
    np.testing.assert_array_equal(ts.estimate(TrialStore.open(mem_url)).topk_infl, ref.topk_infl)

    # growing and refusing work the same way on an object store
    bigger = study(synthetic, mem_url, trials=40)
    assert bigger.run(progress=False)["trained"] == 10
    data, learner = synthetic
    with pytest.raises(ts.StoreError, match="different study config"):
        ts.Study(data, learner, trials=40, ratio=0.5, seed=2, block_size=10, path=mem_url).run(progress=False)
    # claims live next to the store, through the same filesystem
    st = TrialStore.open(mem_url, mode="r+")
    token = st.claim(3)
    assert st.block_status()["in_flight_blocks"] == []  # block 3 is done: its claim is ignored
    st.release(3, token)
    assert st.claims() == []


def test_cli_info_and_verify_on_a_file_url(synthetic, tmp_path):
    from tailscope.cli import app

    s = study(synthetic, tmp_path / "s")
    s.run(progress=False)
    url = f"file://{tmp_path}/s"
    runner = CliRunner()
    r = runner.invoke(app, ["info", url])
    assert r.exit_code == 0 and '"done": 30' in r.output and '"in_flight_blocks": []' in r.output, r.output
    v = runner.invoke(app, ["verify", url])
    assert v.exit_code == 0 and "every done trial is complete" in v.output, v.output
