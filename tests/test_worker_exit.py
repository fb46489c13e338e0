"""Worker processes never outlive their run: a SIGKILLed parent's workers exit on their own, SIGTERM
stops the pool like Ctrl-C (finished blocks kept, rerun resumes), Ctrl-C prints no worker tracebacks."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import done_trials

from tailscope.store import TrialStore
from tailscope.verify import verify_store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# argv: study path, workers; env SLEEP: seconds per block; exits 130 on an interrupt, like the CLI
SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.modules["torch"] = None  # workers skip importing torch (seconds each on a busy machine)
    sys.path.insert(0, {tests!r})
    import tailscope as ts
    from conftest import make_synthetic

    class Slow(ts.SyntheticLearner):  # module level: workers unpickle it
        def fit_predict(self, data, masks, seeds):
            open(os.path.join(os.environ["MARKERS"], str(os.getpid())), "w").close()  # this worker runs
            time.sleep(float(os.environ["SLEEP"]))
            return super().fit_predict(data, masks, seeds)

    if __name__ == "__main__":
        data, base = make_synthetic(n=200, n_test=50)
        learner = Slow(base.p_in, base.p_out, base.base, base.effect)
        study = ts.Study(data, learner, trials=48, ratio=0.7, seed=3, block_size=4, path=sys.argv[1])
        try:
            study.run(workers=int(sys.argv[2]), progress=False)
        except KeyboardInterrupt as e:
            print("interrupted:", type(e).__name__, flush=True)
            sys.exit(130)
""")


def _stat(pid):
    """(ppid, state, start time) of ``pid`` from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(rest[1]), rest[0], rest[19]


def _children(pid):
    """{pid: start time} of the live children of ``pid``."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st and st[0] == pid and st[1] != "Z":
                out[int(name)] = st[2]
    return out


def _alive(procs):
    """The processes of ``procs`` ({pid: start time}) still running (not zombies, pid not reused)."""
    return {p: t for p, t in procs.items() if (st := _stat(p)) and st[2] == t and st[1] != "Z"}


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _start_and_wait_for_workers(tmp_path, study):
    """Start the script; return it with its children (two workers, resource tracker) once both workers
    train and a block is done."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MARKERS": str(markers), "SLEEP": "0.3"}
    proc = subprocess.Popen([sys.executable, str(script), str(study), "2"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    kids = {}
    while time.monotonic() < deadline and proc.poll() is None:
        kids = _children(proc.pid)
        workers = [p for p in kids if "spawn_main" in _cmdline(p)]
        started = {int(f.name) for f in markers.iterdir()}
        if len(workers) == 2 and started >= set(workers) and done_trials(study) >= 4:
            return proc, script, env, kids, workers
        time.sleep(0.1)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"workers never started (rc={proc.returncode}):\n{out}\n{err}")


def _wait_gone(procs, timeout):
    deadline = time.monotonic() + timeout
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(procs)


def _cleanup(procs):
    for p in _alive(procs):
        os.kill(p, signal.SIGKILL)


def test_sigkilled_parent_leaves_no_workers(tmp_path):
    study = tmp_path / "study"
    proc, _, _, kids, workers = _start_and_wait_for_workers(tmp_path, study)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)  # not communicate(): orphaned workers would hold its pipes open
        t0 = time.monotonic()
        left = _wait_gone(kids, 10)  # workers first; the resource tracker follows once they are gone
        assert not left, {p: _cmdline(p) for p in left}
        assert time.monotonic() - t0 < 5
        proc.communicate(timeout=10)
    finally:
        _cleanup(kids)
    rep = verify_store(study)  # whatever was in flight did not count
    assert rep.ok, rep.summary()


def _ignores_sigint(pid):
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGINT - 1)))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_stops_the_pool_and_rerun_resumes(tmp_path, sig):
    study = tmp_path / "study"
    proc, script, env, kids, workers = _start_and_wait_for_workers(tmp_path, study)
    try:
        # workers leave Ctrl-C to the parent (an idle worker would print a KeyboardInterrupt traceback)
        assert all(_ignores_sigint(p) for p in workers)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C: the whole process group
        else:
            os.kill(proc.pid, sig)  # the parent alone: it must stop its workers itself
        proc.wait(timeout=15)
        # the parent stopped and reaped its workers before exiting
        assert not _alive({p: kids[p] for p in workers})
        assert not _wait_gone(kids, 5)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, (out, err)
        assert ("Terminated" if sig == signal.SIGTERM else "KeyboardInterrupt") in out
        assert "Traceback" not in err, err
    finally:
        _cleanup(kids)
    st = TrialStore.open(study)
    partial = int(st.done().sum())
    assert 4 <= partial < 48
    assert verify_store(study).ok
    if sig == signal.SIGTERM:  # one resume is enough to show the store is consistent
        subprocess.run([sys.executable, str(script), str(study), "1"], env={**env, "SLEEP": "0"},
                       check=True, timeout=60, capture_output=True)
        st = TrialStore.open(study)
        assert st.done().all()
        rep = verify_store(study)
        assert rep.ok and rep.checked == 48, rep.summary()
        status = st.block_status()
        assert status["missing_blocks"] == [] and status["in_flight_blocks"] == [] and status["stale_claims"] == []


def test_sigterm_stops_a_single_process_cli_run_with_the_resume_message(tmp_path):
    study = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "tailscope", "run", "-d", "digits", "-l", "logreg", "--trials",
                             "400", "--block-size", "4", "-o", str(study)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while done_trials(study) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "interrupted: finished blocks are stored" in out and "Traceback" not in err, (out, err)
    assert verify_store(study).ok and 4 <= done_trials(study) < 400


def test_a_script_without_the_main_guard_fails_with_the_reason_instead_of_hanging(tmp_path):
    """Its workers die while re-importing it; a large job (the dataset) written into their start-up
    pipe once blocked the parent forever."""
    script = tmp_path / "noguard.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import numpy as np
        import tailscope as ts
        from conftest import make_synthetic

        data, learner = make_synthetic(n=20000, n_test=50)  # a job far larger than a pipe's buffer
        ts.Study(data, learner, trials=8, block_size=4, path={str(tmp_path / "s")!r}).run(workers=2, progress=False)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and 'if __name__ == "__main__":' in proc.stderr.splitlines()[-1]
    assert not list(tmp_path.glob("tailscope-job-*"))


def test_job_files_of_dead_runs_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    import tempfile

    from tailscope import runner

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"tailscope-job-{dead.stdout.strip()}-x.pkl"
    live = tmp_path / f"tailscope-job-{os.getppid()}-y.pkl"
    stale.write_bytes(b"job")
    live.write_bytes(b"job")
    runner._remove_stale_job_files()
    assert not stale.exists() and live.exists()
