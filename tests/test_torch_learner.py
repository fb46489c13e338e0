"""Tests for the population trainer (TorchLearner)."""

from __future__ import annotations

import functools
import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from tailscope.data.dataset import Dataset
from tailscope.learners.torch_models import ModelError
from tailscope.learners.torch_population import TorchLearner, prepare_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _masks(n: int, k: int, seed: int = 0, ratio: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((k, n), dtype=bool)
    for i in range(k):
        m[i, rng.choice(n, int(ratio * n), replace=False)] = True
    return m


def _acc(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (pred == y[None]).mean(1)


def small_user_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def bn_net(track: bool = True) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32, track_running_stats=track), nn.ReLU(),
                         nn.Linear(32, 10))


def test_population_equals_models_trained_alone(digits):
    masks = _masks(digits.n_train, 3)
    masks[1, np.flatnonzero(masks[1])[:40]] = False  # unequal subset sizes: more steps for the others
    seeds = np.array([11, 22, 33])
    learner = TorchLearner("mlp", epochs=3, group_size=3, compile=False)
    together = learner.fit_predict(digits, masks, seeds)
    alone = [learner.fit_predict(digits, masks[k:k + 1], seeds[k:k + 1]) for k in range(3)]
    for k in range(3):
        np.testing.assert_allclose(together.test_prob[k], alone[k].test_prob[0], atol=2e-4)
        np.testing.assert_allclose(together.train_prob[k], alone[k].train_prob[0], atol=2e-4)
        assert (together.test_pred[k] != alone[k].test_pred[0]).mean() < 0.005
    # different seeds (and masks) give different models
    assert np.abs(together.test_prob[0] - together.test_prob[1]).mean() > 1e-3
    # same seeds, different seed for one model: same mask, different result
    other = learner.fit_predict(digits, masks[:1], np.array([12]))
    assert np.abs(other.test_prob[0] - alone[0].test_prob[0]).mean() > 1e-3
    # deterministic: the same call gives bit-identical results
    again = learner.fit_predict(digits, masks, seeds)
    np.testing.assert_array_equal(again.test_prob, together.test_prob)


def test_func_path_population_equals_alone(digits):
    masks = _masks(digits.n_train, 2, seed=1)
    seeds = np.array([5, 6])
    learner = TorchLearner(small_user_net, epochs=2, compile=False, vectorize=True)
    together = learner.fit_predict(digits, masks, seeds)
    for k in range(2):
        alone = learner.fit_predict(digits, masks[k:k + 1], seeds[k:k + 1])
        np.testing.assert_allclose(together.test_prob[k], alone.test_prob[0], atol=2e-4)
    # the plain-autograd execution (CPU default) trains the very same models
    each = TorchLearner(small_user_net, epochs=2, compile=False, vectorize=False).fit_predict(digits, masks, seeds)
    np.testing.assert_allclose(each.test_prob, together.test_prob, atol=2e-4)
    np.testing.assert_allclose(each.train_prob, together.train_prob, atol=2e-4)


def test_excluded_class_is_never_predicted(digits):
    masks = _masks(digits.n_train, 4, seed=2)
    masks[:, digits.y_train == 3] = False
    preds = TorchLearner("mlp", epochs=10).fit_predict(digits, masks, np.arange(4))
    assert (preds.test_pred == 3).sum() == 0
    assert (preds.train_pred == 3).sum() == 0
    assert preds.test_prob[:, digits.y_test == 3].max() < 0.2
    # the other classes are still learned
    other = digits.y_test != 3
    assert _acc(preds.test_pred[:, other], digits.y_test[other]).mean() > 0.9


def test_mlp_accuracy_on_digits(digits):
    k = 8
    preds = TorchLearner("mlp").fit_predict(digits, _masks(digits.n_train, k, seed=3), np.arange(k))
    preds.check(k, digits.n_train, digits.n_test, 10)
    acc = _acc(preds.test_pred, digits.y_test)
    assert acc.mean() > 0.95, acc
    # train_prob is the softmax probability of the true label
    assert 0.5 < preds.train_prob.mean() <= 1.0
    np.testing.assert_array_equal(preds.test_prob.argmax(0).shape, (digits.n_test,))


def test_linear_and_bf16(digits):
    k = 4
    masks = _masks(digits.n_train, k, seed=4)
    lin = TorchLearner("linear").fit_predict(digits, masks, np.arange(k))
    assert _acc(lin.test_pred, digits.y_test).mean() > 0.92
    fp32 = TorchLearner("mlp").fit_predict(digits, masks, np.arange(k))
    bf16 = TorchLearner("mlp", precision="bf16").fit_predict(digits, masks, np.arange(k))
    a32, a16 = _acc(fp32.test_pred, digits.y_test).mean(), _acc(bf16.test_pred, digits.y_test).mean()
    assert a16 > 0.95
    assert abs(a32 - a16) < 0.015
    assert np.abs(fp32.test_prob - bf16.test_prob).mean() < 0.02


def test_batchnorm_module_is_refused(digits):
    learner = TorchLearner(bn_net, epochs=1)
    with pytest.raises(ModelError, match="running statistics.*GroupNorm"):
        learner.fit_predict(digits, _masks(digits.n_train, 2), np.arange(2))
    # batch statistics only: predictions would depend on the evaluation batch
    learner = TorchLearner(functools.partial(bn_net, track=False), epochs=1)
    with pytest.raises(ModelError, match="evaluation batch.*GroupNorm"):
        learner.fit_predict(digits, _masks(digits.n_train, 2), np.arange(2))


def test_bad_recipe_settings_are_refused():
    for kw, match in [({"lr": 0}, "lr must be > 0"), ({"lr": -0.1}, "lr must be > 0"),
                      ({"momentum": -1}, "momentum must be in"), ({"weight_decay": -1e-4}, "weight_decay"),
                      ({"label_smoothing": 1.5}, "label_smoothing"), ({"crop_pad": -1}, "crop_pad"),
                      ({"num_threads": 0}, "num_threads"), ({"epochs": 1.5}, "epochs must be a positive integer"),
                      ({"widths": "128"}, "widths must be positive integers"), ({"widths": (0,)}, "positive"),
                      ({"widths": ()}, "without layers")]:
        with pytest.raises(ValueError, match=match):
            TorchLearner("mlp", **kw)
    with pytest.warns(UserWarning, match="widths are ignored"):  # as older versions did, now said
        TorchLearner("linear", widths=(5,))
    assert TorchLearner("mlp", widths=128).widths == (128,)
    with pytest.raises(ModelError, match="not a module instance"):
        TorchLearner(nn.Sequential(nn.Linear(64, 10)))


def test_user_module_factory(digits):
    k = 3
    learner = TorchLearner(functools.partial(small_user_net), epochs=8)
    preds = learner.fit_predict(digits, _masks(digits.n_train, k, seed=5), np.arange(k))
    acc = _acc(preds.test_pred, digits.y_test)
    assert acc.min() > 0.85, acc
    assert "small_user_net" in learner.spec()["model"]


def test_cnn_on_digits_and_errors(digits):
    k = 2
    masks = _masks(digits.n_train, k, seed=6)
    preds = TorchLearner("cnn", epochs=3, batch_size=64).fit_predict(digits, masks, np.arange(k))
    assert _acc(preds.test_pred, digits.y_test).mean() > 0.8
    aug = TorchLearner("cnn", epochs=1, augment=True, crop_pad=1, hflip=True).fit_predict(digits, masks, np.arange(k))
    aug.check(k, digits.n_train, digits.n_test, 10)
    # cnn needs images; too many pooling stages for 8x8 fails clearly
    flat = Dataset(digits.x_train.reshape(len(digits.x_train), -1), digits.y_train,
                   digits.x_test.reshape(len(digits.x_test), -1), digits.y_test, digits.classes)
    with pytest.raises(ModelError, match="needs images"):
        TorchLearner("cnn").fit_predict(flat, masks, np.arange(k))
    with pytest.raises(ModelError, match="at least 16x16"):
        TorchLearner("cnn", widths=(4, 4, 4, 4)).fit_predict(digits, masks, np.arange(k))


def test_resnet_on_tiny_color_images():
    rng = np.random.default_rng(0)
    n, nt = 48, 16
    y = np.arange(n) % 2
    x = rng.integers(0, 100, size=(n, 32, 32, 3)).astype(np.uint8)
    x[y == 1, :, :, 0] += 120  # class 1 is redder
    yt = np.arange(nt) % 2
    xt = rng.integers(0, 100, size=(nt, 32, 32, 3)).astype(np.uint8)
    xt[yt == 1, :, :, 0] += 120
    data = Dataset(x, y, xt, yt, ["a", "b"], image_shape=(32, 32, 3))
    masks = _masks(n, 2, seed=7)
    learner = TorchLearner("resnet", widths=(8, 16), epochs=10, batch_size=8, augment=True, crop_pad=4,
                           hflip=True, lr=0.05)
    preds = learner.fit_predict(data, masks, np.array([1, 2]))
    preds.check(2, n, nt, 2)
    assert _acc(preds.test_pred, yt).mean() >= 0.75


def test_augmentation_is_a_crop_and_flip(digits):
    learner = TorchLearner("cnn", augment=True, crop_pad=0, hflip=True)
    from tailscope.learners.torch_population import _FuncPopulation

    xtr, _ = prepare_inputs(digits, images=True)
    pop = _FuncPopulation(learner, digits, xtr, 10, torch.device("cpu"))
    aug = pop._augmenter(xtr, np.array([3, 4]), (2, 2, 5))
    it = torch.arange(10).reshape(2, 5)
    out = aug(0, it)
    ref = xtr[it]
    flipped = (out == ref.flip(-1)).flatten(2).all(-1)
    same = (out == ref).flatten(2).all(-1)
    assert bool((flipped | same).all())
    assert 0 < int(flipped.sum()) < 10


def test_inputs_are_scaled_and_standardized(digits):
    xtr, xte = prepare_inputs(digits, images=False)
    assert xtr.shape == (digits.n_train, 64)
    assert abs(float(xtr.mean())) < 1e-5
    assert abs(float(xtr.std()) - 1) < 1e-3
    raw = digits.x_train.reshape(digits.n_train, -1).astype(np.float64) / 16
    np.testing.assert_allclose(xtr.numpy(), (raw - raw.mean()) / raw.std(), atol=1e-5)


def test_spec_and_pickle():
    a = TorchLearner("mlp", widths=(64,))
    b = TorchLearner("mlp", widths=(64,), lr=0.2)
    assert json.loads(json.dumps(a.spec())) == a.spec()
    assert a.spec() != b.spec()
    assert TorchLearner("mlp", precision="bf16").spec() != TorchLearner("mlp").spec()
    c = pickle.loads(pickle.dumps(a))
    assert c.spec() == a.spec()
    with pytest.raises(ValueError, match="precision"):
        TorchLearner(precision="fp16")


def test_augmented_cnn_same_models_either_execution(digits):
    masks = _masks(digits.n_train, 2, seed=4)
    seeds = np.array([8, 9])
    kw = dict(widths=(4,), epochs=1, augment=True, hflip=True, compile=False)
    vec = TorchLearner("cnn", vectorize=True, **kw).fit_predict(digits, masks, seeds)
    each = TorchLearner("cnn", vectorize=False, **kw).fit_predict(digits, masks, seeds)
    np.testing.assert_allclose(each.test_prob, vec.test_prob, atol=2e-4)


def test_mlp_rows_stay_uint8_until_gathered(digits):
    from tailscope.learners.torch_population import prepare_rows

    rows_tr, rows_te = prepare_rows(digits)
    assert rows_tr.raw.dtype == torch.uint8 and rows_tr.shape == (digits.n_train, 64)
    dense_tr, dense_te = prepare_inputs(digits, images=False)
    np.testing.assert_allclose(rows_tr[:].numpy(), dense_tr.numpy(), atol=1e-5)
    np.testing.assert_allclose(rows_te[torch.arange(5)].numpy(), dense_te[:5].numpy(), atol=1e-5)


def test_bf16_rows_are_standardised_before_the_cast():
    """A feature of mean 500 and spread 1, cast to bf16 raw (8 bits), would keep a handful of values."""
    from tailscope.learners.torch_population import prepare_rows

    rng = np.random.default_rng(0)
    x = (500 + rng.standard_normal((400, 3))).astype(np.float32)
    data = Dataset(x, rng.integers(0, 2, 400), x[:50], rng.integers(0, 2, 50), ["a", "b"])
    rows, _ = prepare_rows(data)
    wide = rows[torch.arange(400)]
    narrow = rows.to(torch.bfloat16)[torch.arange(400)]
    assert narrow.dtype == torch.bfloat16 and len(torch.unique(narrow[:, 0])) > 100
    np.testing.assert_allclose(narrow.float().numpy(), wide.numpy(), atol=0.02)


def test_large_set_path_trains_the_same_models(digits, monkeypatch):
    """Sets over DENSE_INPUT_BYTES keep uint8 rows and scale per batch: same models."""
    from tailscope.learners import torch_population

    masks, seeds = _masks(digits.n_train, 3, seed=5), np.array([1, 2, 3])
    learner = TorchLearner("mlp", epochs=2, compile=False)
    dense = learner.fit_predict(digits, masks, seeds)
    monkeypatch.setattr(torch_population, "DENSE_INPUT_BYTES", 0)
    rows = learner.fit_predict(digits, masks, seeds)
    np.testing.assert_allclose(rows.test_prob, dense.test_prob, atol=2e-4)
    np.testing.assert_allclose(rows.train_prob, dense.train_prob, atol=2e-4)


def test_compiled_groups_are_balanced():
    from tailscope.learners.torch_population import balanced_group_size
    assert balanced_group_size(16, 15) == 8
    assert balanced_group_size(256, 16) == 16
    assert balanced_group_size(17, 16) == 9
    assert balanced_group_size(1, 16) == 1
    for k in range(1, 200):
        for cap in (1, 7, 15, 64):
            g = balanced_group_size(k, cap)
            n = -(-k // g)
            assert g <= cap and n == -(-k // cap) and n * g - k < n


def dropout_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


def test_dropout_trials_do_not_depend_on_their_group(digits):
    masks, seeds = _masks(digits.n_train, 3, seed=2), np.array([5, 6, 7])
    with pytest.warns(UserWarning, match="vectorize=True with Dropout"):
        TorchLearner(dropout_net, epochs=1, vectorize=True).fit_predict(digits, masks[:1], seeds[:1])
    # one by one (auto on CPU, and on GPU for Dropout models): each trial draws from its own seed
    learner = TorchLearner(dropout_net, epochs=2)
    together = learner.fit_predict(digits, masks, seeds)
    alone = learner.fit_predict(digits, masks[1:2], seeds[1:2])
    np.testing.assert_array_equal(together.test_prob[1], alone.test_prob[0])


def _fake_compile(monkeypatch, fail=None):
    """torch.compile replaced by a counting wrapper of the eager function (real compiling is slow
    on CPU); ``fail(call_number)`` may return an exception to raise on that call."""
    compiled = []

    def fake(fn, **kw):
        calls = [0]

        def run(*args):
            calls[0] += 1
            err = fail(calls[0]) if fail else None
            if err is not None:
                raise err
            return fn(*args)
        compiled.append(fn)
        return run

    from tailscope.learners import torch_population

    monkeypatch.setattr(torch, "compile", fake)
    monkeypatch.setattr(torch_population, "_COMPILED", {})  # no fake step outlives the test
    return compiled


def test_a_module_trainer_and_its_compiled_step_are_reused_across_blocks(digits, monkeypatch):
    compiled = _fake_compile(monkeypatch)
    masks, seeds = _masks(digits.n_train, 2, seed=3), np.array([1, 2])
    learner = TorchLearner(small_user_net, epochs=1, compile=True, vectorize=True)
    first = learner.fit_predict(digits, masks, seeds)
    second = learner.fit_predict(digits, masks, seeds)  # the next block of a study
    assert len(compiled) == 1 and len(learner._trainers) == 1
    np.testing.assert_array_equal(first.test_prob, second.test_prob)
    assert "_trainers" not in pickle.loads(pickle.dumps(learner)).__dict__
    eager = TorchLearner(small_user_net, epochs=1, compile=False, vectorize=True).fit_predict(digits, masks, seeds)
    np.testing.assert_array_equal(first.test_prob, eager.test_prob)


def test_a_compile_failure_falls_back_but_running_out_of_memory_is_raised(digits, monkeypatch):
    masks, seeds = _masks(digits.n_train, 2, seed=3), np.array([1, 2])
    _fake_compile(monkeypatch, fail=lambda n: RuntimeError("no C++ compiler") if n == 1 else None)
    with pytest.warns(UserWarning, match="torch.compile failed.*no C.. compiler"):
        TorchLearner("mlp", epochs=1, compile=True).fit_predict(digits, masks, seeds)
    # out of memory on a later step is the step's own: smaller groups are tried, compiling stays on
    _fake_compile(monkeypatch, fail=lambda n: torch.OutOfMemoryError("CUDA out of memory") if n == 3 else None)
    with pytest.warns(UserWarning) as seen, pytest.raises(ModelError, match="out of memory"):
        TorchLearner("mlp", widths=(12,), epochs=1, compile=True).fit_predict(digits, masks, seeds)
    said = " ".join(str(w.message) for w in seen)
    assert "ran out of memory" in said and "torch.compile failed" not in said


def test_running_out_of_memory_halves_the_group_and_trains_the_same_models(digits, monkeypatch):
    from tailscope.learners import torch_population

    masks, seeds = _masks(digits.n_train, 6, seed=4), np.arange(6) + 20
    reference = TorchLearner("mlp", widths=(16,), epochs=1, group_size=2, compile=False).fit_predict(digits, masks, seeds)
    real_train = torch_population._HandMLP.train

    def small_device(self, xtr, ytr, masks, seeds):  # room for two models at a time
        if len(seeds) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real_train(self, xtr, ytr, masks, seeds)

    monkeypatch.setattr(torch_population._HandMLP, "train", small_device)
    learner = TorchLearner("mlp", widths=(16,), epochs=1, group_size=8, compile=False)
    with pytest.warns(UserWarning) as seen:
        got = learner.fit_predict(digits, masks, seeds)
    assert [str(w.message).split(" (")[0] for w in seen] == [
        "cpu ran out of memory training 6 models at once; going on with groups of 3",
        "cpu ran out of memory training 3 models at once; going on with groups of 2"]
    np.testing.assert_array_equal(got.test_prob, reference.test_prob)
    np.testing.assert_array_equal(got.train_pred, reference.train_pred)

    monkeypatch.setattr(torch_population._HandMLP, "train",
                        lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")))
    with pytest.warns(UserWarning), pytest.raises(ModelError, match="one model at a time.*Lower batch_size"):
        learner.fit_predict(digits, masks, seeds)


def test_gpu_groups_and_evaluation_batches_fit_the_free_memory(monkeypatch):
    """Sized from a probe's activations, not from the parameter count alone: a small convnet on
    32x32 color images has few weights but large activations per model and example."""
    from tailscope.learners import torch_population as tp
    from tailscope.learners.torch_models import build_model

    net = build_model("cnn", in_features=32 * 32 * 3, image_shape=(32, 32, 3), n_classes=10, widths=None)
    act, peak = tp._activation_bytes(net, torch.zeros(2, 3, 32, 32))
    assert 0 < peak < act
    n_params = sum(p.numel() for p in net.parameters())
    free = 10 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (free, 80 << 30))
    g = tp._gpu_group_size(torch.device("cuda"), n_params, act, batch_size=128)
    assert 1 <= g < tp._GPU_GROUP_PARAMS // n_params  # the parameter count alone would allow far more
    assert g * (16 * n_params + 3 * 128 * act) <= 0.6 * free

    class Pop:
        dev, peak_act_bytes = torch.device("cuda"), peak
        cfg = TorchLearner("cnn")
    rows = tp._eval_rows(Pop, g)
    assert 1 <= rows <= 2048 and 3 * g * rows * peak <= 0.5 * free
    Pop.dev = torch.device("cpu")
    assert tp._eval_rows(Pop, g) == 2048


def test_each_model_sees_its_subset_once_an_epoch_and_then_waits_at_learning_rate_0():
    from tailscope.learners.torch_population import _Schedule

    masks = np.zeros((2, 50), bool)
    masks[0, :20], masks[1, 30:40] = True, True  # 3 and 2 steps per epoch with batches of 8
    cfg = TorchLearner("mlp", epochs=3, batch_size=8, schedule="constant", warmup=0.0)
    steps = list(_Schedule(cfg, masks, np.array([1, 2]), torch.device("cpu")))
    assert len(steps) == 9 and [t for t, _, _ in steps] == list(range(9))
    idx = torch.stack([it for _, it, _ in steps]).numpy()  # (T, G, B)
    lrs = torch.stack([lr for _, _, lr in steps]).numpy()
    for e in range(3):
        epoch = idx[3 * e:3 * e + 3, 0].reshape(-1)
        assert set(epoch[:20]) == set(range(20)) and len(set(epoch[:20])) == 20  # a permutation, then wrap
        assert set(idx[2 * e:2 * e + 2, 1].reshape(-1)) == set(range(30, 40))
    assert (lrs[:, 0] == 0.1).all() and (lrs[:6, 1] == 0.1).all() and (lrs[6:, 1] == 0).all()
    assert (idx[6:, 1] == idx[0, 1]).all()  # the shorter model repeats its first batch
    # each model's batches are its own: the same seed alone gives the same batches
    alone = torch.stack([it[0] for _, it, _ in _Schedule(cfg, masks[1:], np.array([2]), torch.device("cpu"))])
    np.testing.assert_array_equal(alone.numpy(), idx[:6, 1])


def test_worker_processes_spread_over_the_gpus(monkeypatch):
    from tailscope.runner import _pick_gpu

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for rank in range(5):
        _pick_gpu(rank)
    assert chosen == [0, 1, 2, 0, 1]


def test_a_ray_task_without_a_gpu_trains_on_cpus_and_devices_are_checked_where_training_runs(digits):
    learner = TorchLearner("mlp", device="auto")
    learner.use_cpu_only()
    assert learner.device == "cpu"
    cuda = TorchLearner("mlp", device="cuda")  # a driver without a GPU may send it to nodes with one
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available here"):
            cuda.fit_predict(digits, _masks(digits.n_train, 1), np.array([1]))
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        TorchLearner("mlp", device="gpu")
