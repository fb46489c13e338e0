"""Shards and concurrent writers: processes writing one store at once give the store of one process."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from tailscope.store import ROW_ARRAYS, TrialStore
from tailscope.verify import verify_store

# argv: study path, shard ("-" for all blocks), workers
SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import tailscope as ts
    from conftest import make_synthetic

    class Slow(ts.SyntheticLearner):
        def fit_predict(self, data, masks, seeds):
            time.sleep({sleep})
            return super().fit_predict(data, masks, seeds)

    # the guard matters: worker processes are spawned and re-import this script
    if __name__ == "__main__":
        data, base = make_synthetic(n=300, n_test=80)
        learner = Slow(base.p_in, base.p_out, base.base, base.effect)
        study = ts.Study(data, learner, trials=96, ratio=0.7, seed=7, block_size=4, path=sys.argv[1])
        shard = None if sys.argv[2] == "-" else tuple(int(v) for v in sys.argv[2].split("/"))
        study.run(workers=int(sys.argv[3]), progress=False, shard=shard)
""")


def write_script(tmp_path, sleep=0.0):
    script = tmp_path / f"run_{str(sleep).replace('.', '_')}.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__), sleep=sleep))
    return script


def store_arrays(path):
    st = TrialStore.open(path)
    return {k: st.group[k][:] for k in ("mask", "seed", "done", *ROW_ARRAYS, "y_train", "y_test")}


def assert_same_store(a_path, b_path):
    a, b = store_arrays(a_path), store_arrays(b_path)
    assert b["done"].all()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert TrialStore.open(a_path).group.attrs.asdict() == TrialStore.open(b_path).group.attrs.asdict()


def test_two_shards_at_once_equal_one_process(tmp_path):
    script = write_script(tmp_path, sleep=0.02)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    subprocess.run([sys.executable, str(script), str(single), "-", "1"], check=True, timeout=120)
    # both shards start together on a store that does not exist yet: concurrent creation,
    # plus a third process that runs every block by mistake, racing both shards
    procs = [subprocess.Popen([sys.executable, str(script), str(sharded), s, "1"])
             for s in ("0/2", "1/2", "-")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert_same_store(single, sharded)
    rep = verify_store(sharded)
    assert rep.ok and rep.checked == 96
    status = TrialStore.open(sharded).block_status()
    assert status["in_flight_blocks"] == [] and status["missing_blocks"] == []


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_cli_shards(tmp_path):
    from tailscope.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["run", "--out", str(out), "--dataset", "digits", "--learner", "logreg", "--trials", "6",
            "--block-size", "2", "--opt", "max_iter=50"]
    r0 = runner.invoke(app, [*args, "--shard", "0/2"])
    assert r0.exit_code == 0, r0.output
    assert "not every trial is done" in r0.output
    done = TrialStore.open(out).done()
    np.testing.assert_array_equal(done, [True, True, False, False, True, True])  # blocks 0 and 2
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and '"missing_blocks": [\n    1\n  ]' in info.output, info.output
    r1 = runner.invoke(app, [*args, "--shard", "1/2"])
    assert r1.exit_code == 0, r1.output
    assert TrialStore.open(out).done().all()
    bad = runner.invoke(app, [*args, "--shard", "2/2"])
    assert bad.exit_code == 2 and "--shard must look like i/N with 0 <= i < N" in bad.output
