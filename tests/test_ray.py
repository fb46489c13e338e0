"""Ray backend: a worker killed mid-task is retried and every trial ends up stored exactly once."""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

import tailscope as ts
from tailscope.store import ROW_ARRAYS, TrialStore

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'tailscope[ray]'")

from conftest import make_synthetic  # noqa: E402


class KillOnce(ts.SyntheticLearner):
    """Kills its own worker process (SIGKILL) the first time it trains block ``victim``."""

    def __init__(self, base, marker: str, victim_trial: int):
        super().__init__(base.p_in, base.p_out, base.base, base.effect)
        self.marker, self.victim_trial = marker, victim_trial

    def spec(self):  # same identity as the plain learner: same store config
        return ts.SyntheticLearner.spec(self)

    def fit_predict(self, data, masks, seeds):
        attempts = Path(self.marker + ".calls")
        with attempts.open("a") as f:
            f.write(f"{os.getpid()} {len(masks)}\n")
        if self.victim_seed in {int(s) for s in seeds} and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit_predict(data, masks, seeds)

    @property
    def victim_seed(self):
        return int(ts.Design(n=len(self.p_in), ratio=0.7, seed=3).trial_seeds([self.victim_trial])[0])


def _arrays(path):
    st = TrialStore.open(path)
    return {k: st.group[k][:] for k in ("mask", "seed", "done", *ROW_ARRAYS)}


def test_ray_run_survives_a_killed_worker(tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    data, base = make_synthetic(n=300, n_test=60)
    marker = str(tmp_path / "killed")
    learner = KillOnce(base, marker, victim_trial=13)
    ray_study = ts.Study(data, learner, trials=40, ratio=0.7, seed=3, block_size=5,
                         path=tmp_path / "ray")
    res = ray_study.run(backend="ray", progress=False, num_cpus=2, max_retries=2)
    assert os.path.exists(marker), "the victim task never ran"
    calls = Path(marker + ".calls").read_text().split()
    assert len(calls) // 2 == 8 + 1  # 8 blocks, one of them attempted twice
    assert res["done"] == 40

    local = ts.Study(data, base, trials=40, ratio=0.7, seed=3, block_size=5, path=tmp_path / "local")
    local.run(progress=False)
    a, b = _arrays(tmp_path / "ray"), _arrays(tmp_path / "local")
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    s_ray, s_local = ray_study.estimate(save=False), local.estimate(save=False)
    np.testing.assert_array_equal(s_ray.mem, s_local.mem)
    np.testing.assert_array_equal(s_ray.topk_infl, s_local.topk_infl)
    assert s_ray.trials == 40
    # every claim was released; a second run has nothing to do
    assert TrialStore.open(tmp_path / "ray").block_status()["in_flight_blocks"] == []
    again = ray_study.run(backend="ray", progress=False, num_cpus=2)
    assert again["trained"] == 0


def test_ray_missing_is_a_clear_error(monkeypatch, tmp_path):
    import builtins

    from tailscope.backends import ray as backend

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'tailscope\[ray\]'"):
        backend._import_ray()


def test_gpus_asked_of_a_ray_instance_without_them_are_refused_or_warned_about():
    from tailscope.backends.ray import _check_gpus
    from tailscope.runner import WorkerError

    class Ray:
        def __init__(self, gpus):
            self.gpus = gpus

        def cluster_resources(self):
            return {"CPU": 2.0, **({"GPU": self.gpus} if self.gpus else {})}

    with pytest.raises(WorkerError, match="has 0: its tasks would wait forever. Drop --gpus-per-block"):
        _check_gpus(Ray(0), 0.25, None)  # a private instance on this machine
    with pytest.warns(UserWarning, match="cluster at head:6379 has 0 now"):
        _check_gpus(Ray(0), 0.25, "head:6379")  # an autoscaler may add GPU nodes
    _check_gpus(Ray(1), 0.25, None)
    _check_gpus(Ray(0), 0.0, None)
