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


def test_scores_on_a_memory_url_round_trip(synthetic, tmp_path):
    """Study.estimate and `tailscope estimate` write scores next to a store on an fsspec URL."""
    import fsspec

    from tailscope.cli import app

    mem_url = f"memory://ts-{uuid.uuid4().hex}/study"
    s = study(synthetic, mem_url)
    s.run(progress=False)
    assert s.scores_dir == f"{mem_url}/scores"
    scores = s.estimate(infl_threshold=0.1)
    fs = fsspec.filesystem("memory")
    for name in ("memorization.parquet", "influence_pairs.parquet", "influence_topk.npz",
                 "summary.json", "paper_format.npz"):
        assert fs.isfile(f"{mem_url}/scores/{name}"), name
    back = ts.Scores.load(s.scores_dir)
    np.testing.assert_array_equal(back.mem, scores.mem)
    np.testing.assert_array_equal(back.topk_idx, scores.topk_idx)
    assert back.pairs.equals(scores.pairs) and len(back.pairs) > 0
    # the same numbers as a plain directory
    plain = study(synthetic, tmp_path / "plain")
    plain.run(progress=False)
    plain.estimate(infl_threshold=0.1)
    np.testing.assert_array_equal(ts.Scores.load(tmp_path / "plain" / "scores").mem, back.mem)

    # the CLI, with the URL as pathlib mangles it (memory:/...) and a full matrix
    fs.rm(f"{mem_url}/scores", recursive=True)
    r = CliRunner().invoke(app, ["estimate", mem_url, "--threshold", "0.1", "--full-matrix"])
    assert r.exit_code == 0, r.output
    assert f"{mem_url}/scores" in r.output, r.output
    cli_scores = ts.Scores.load(f"{mem_url}/scores")
    np.testing.assert_array_equal(cli_scores.mem, scores.mem)
    assert fs.exists(f"{mem_url}/scores/influence.zarr")
    with pytest.raises(FileNotFoundError, match="tailscope estimate"):
        ts.Scores.load(f"memory://ts-{uuid.uuid4().hex}/nothing/scores")


def test_report_and_analyses_of_a_url_study_are_written_there(synthetic, tmp_path, monkeypatch):
    import fsspec
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tailscope.analyses.base import AnalysisResult
    from tailscope.analyses.subset_ratio import _loo_result
    from tailscope.report import write_report

    monkeypatch.chdir(tmp_path)  # nothing may appear in the working directory
    url = f"memory://ts-{uuid.uuid4().hex}/study"
    s = study(synthetic, url)
    s.run(progress=False, workers=1)
    s.estimate()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    result = AnalysisResult(name="loo", title="Leave one out", summary={"spearman": 0.5}, reading="Agrees.",
                            data={"x": [1, 2]}, figure=fig)
    assert result.save(url) == f"{url}/analyses/loo"
    assert _loo_result(url) == {"x": [1, 2]}  # read back through fsspec, as subset-ratio does

    index = write_report(url, data=synthetic[0])
    assert index == f"{url}/report/index.html"
    fs, root = fsspec.core.url_to_fs(url)
    page = fs.cat_file(f"{root}/report/index.html").decode()
    assert "Leave one out" in page and "Agrees." in page
    assert fs.isfile(f"{root}/report/analyses/loo.png")
    fs.pipe_file(f"{root}/report/img/stale.png", b"x")  # an older report's image
    assert write_report(url, data=synthetic[0]) == index
    assert not fs.exists(f"{root}/report/img/stale.png") and fs.isfile(f"{root}/report/analyses/loo.png")
    assert list(tmp_path.iterdir()) == []
