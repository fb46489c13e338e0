"""A run killed with SIGKILL and resumed ends with exactly the store of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from conftest import done_trials
from test_shards import assert_same_store

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

    # the guard matters: worker processes are spawned and re-import this script
    if __name__ == "__main__":
        data, base = make_synthetic(n=300, n_test=80)
        learner = SlowSynthetic(base.p_in, base.p_out, base.base, base.effect)
        study = ts.Study(data, learner, trials=120, ratio=0.7, seed=5, block_size=4, path=sys.argv[1])
        study.run(workers=int(sys.argv[2]), progress=False)
""")


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
        # Kill at a random point once this attempt has made progress (not a fixed delay: the
        # store may not exist yet after a slow import). Steps of 4..28 trials keep the total
        # after four attempts below 120, so every kill lands before the run could finish.
        target = done_trials(killed) + int(rng.integers(4, 29))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if done_trials(killed) >= target:
                break
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0, 0.2)))  # anywhere in the next block, mid-write included
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: workers die too
            kills += 1
        proc.wait()
        partial.append(done_trials(killed))
    print("done after each kill:", partial)
    assert kills >= 2, partial
    assert any(0 < p < 120 for p in partial), partial  # some kill landed mid-way
    subprocess.run([sys.executable, str(script), str(killed), "1"], check=True, timeout=300)
    assert_same_store(ref, killed)  # every array byte-identical, all done, same attributes
