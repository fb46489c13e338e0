"""A run killed with SIGKILL and resumed ends with exactly the store of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from tailscope.store import ROW_ARRAYS, TrialStore

SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    import tailscope as ts
    from conftest import make_synthetic

    class SlowSynthetic(ts.SyntheticLearner):
        def fit_predict(self, data, masks, seeds):
            time.sleep(0.15)
            return super().fit_predict(data, masks, seeds)

    data, base = make_synthetic(n=300, n_test=80)
    learner = SlowSynthetic(base.p_in, base.p_out, base.base, base.effect)
    study = ts.Study(data, learner, trials=120, ratio=0.7, seed=5, block_size=4, path=sys.argv[1])
    study.run(workers=int(sys.argv[2]), progress=False)
""")


def _store_arrays(path):
    st = TrialStore.open(path)
    return {k: st.group[k][:] for k in ("mask", "seed", "done", *ROW_ARRAYS)}


def test_sigkill_then_resume_is_identical(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(ref), "1"], check=True, timeout=300)
    rng = np.random.default_rng(0)
    kills, partial = 0, []
    for attempt in range(4):
        workers = 1 + attempt % 2  # kill both the in-process and the worker-process backends
        proc = subprocess.Popen([sys.executable, str(script), str(killed), str(workers)],
                                start_new_session=True)
        time.sleep(float(rng.uniform(1.5, 3.5)))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: workers die too
            kills += 1
        proc.wait()
        if (killed / "trials.zarr").exists():
            partial.append(int(TrialStore.open(killed).done().sum()))
    assert kills >= 2
    assert any(0 < p < 120 for p in partial), partial  # some kill landed mid-way
    subprocess.run([sys.executable, str(script), str(killed), "1"], check=True, timeout=300)
    a, b = _store_arrays(ref), _store_arrays(killed)
    assert b["done"].all()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
