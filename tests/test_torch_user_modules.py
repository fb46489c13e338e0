"""User modules in the population trainer: frozen, unused, tied and lazy parameters, factories
that share modules or want arguments, outputs that are not logits, and inputs with a large
offset. Both executions (vmap and one module at a time) must train the same models."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn

import tailscope as ts
from tailscope.learners import torch_population
from tailscope.learners.torch_models import ModelError
from tailscope.learners.torch_population import (
    TorchLearner,
    _FuncPopulation,
    prepare_inputs,
    prepare_rows,
)
from tailscope.store import StoreError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _masks(n, k, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) < int(0.7 * n) for _ in range(k)])


def both_paths(factory, data, k=2, epochs=1):
    """Predictions of the vmap execution and of the one-module-at-a-time execution."""
    masks, seeds = _masks(data.n_train, k), np.arange(k) + 3
    out = [TorchLearner(factory, epochs=epochs, compile=False, vectorize=v).fit_predict(data, masks, seeds)
           for v in (True, False)]
    np.testing.assert_allclose(out[0].test_prob, out[1].test_prob, atol=2e-4)
    return out[0]


def frozen_first_layer():
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))  # digits: 8x8 images
    m[1].requires_grad_(False)
    return m


class UnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.aux = nn.Linear(64, 10), nn.Linear(64, 3)

    def forward(self, x):
        return self.body(x.flatten(1))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.a, self.b, self.out = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.out(torch.relu(self.b(torch.relu(self.a(torch.relu(self.inp(x.flatten(1))))))))


def lazy_net():
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.Linear(32, 10))


def test_frozen_parameters_stay_fixed_on_both_paths(digits):
    frozen = both_paths(frozen_first_layer, digits)
    free = TorchLearner(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), epochs=1,
                        compile=False, vectorize=True).fit_predict(digits, _masks(digits.n_train, 2), np.arange(2) + 3)
    assert not np.allclose(frozen.test_prob, free.test_prob)
    learner = TorchLearner(frozen_first_layer, epochs=1, compile=False, vectorize=True)
    xtr, _ = prepare_inputs(digits, images=True)
    pop = _FuncPopulation(learner, digits, xtr, 10, torch.device("cpu"))
    start = pop._build(3)
    params, _ = pop.train(xtr, torch.as_tensor(digits.y_train), _masks(digits.n_train, 1), np.array([3]))
    assert torch.equal(params["1.weight"][0], start[1].weight) and not torch.equal(params["3.weight"][0], start[3].weight)


def test_unused_tied_and_lazy_parameters_train_the_same_models_on_both_paths(digits):
    for factory in (UnusedHead, Tied, lazy_net):
        preds = both_paths(factory, digits, epochs=4)
        assert (preds.test_pred == digits.y_test).mean() > 0.5, factory


def test_a_factory_sharing_modules_is_refused_and_the_users_module_is_untouched(digits):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
    before = copy.deepcopy(backbone.state_dict())
    for vectorize in (True, False):
        learner = TorchLearner(lambda: nn.Sequential(backbone, nn.Linear(32, 10)), epochs=1, vectorize=vectorize)
        with pytest.raises(ModelError, match=r"share trained parameters.*copy.deepcopy"):
            learner.fit_predict(digits, _masks(digits.n_train, 2), np.arange(2))
    after = backbone.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], before[k]) for k in before)


def test_a_factory_ignoring_the_seed_is_warned_about(digits):
    template = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.warns(UserWarning, match="identical weights for two different seeds"):
        TorchLearner(lambda: copy.deepcopy(template), epochs=1).fit_predict(digits, _masks(digits.n_train, 2),
                                                                            np.arange(2))


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)), x


class NoParameters(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


def net_with_width(width):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


@pytest.mark.parametrize("factory, match", [
    (TupleOut, r"returned a tuple, not a tensor of logits"),
    (lambda: nn.Sequential(nn.Embedding(17, 4), nn.Flatten(), nn.Linear(256, 10)), r"Embedding.*integer ids"),
    (net_with_width, r"takes arguments \['width'\].*functools.partial"),
    (NoParameters, r"no trainable parameters"),
])
def test_modules_the_trainer_cannot_use_get_a_message(digits, factory, match):
    with pytest.raises(ModelError, match=match):
        TorchLearner(factory, epochs=1).fit_predict(digits, _masks(digits.n_train, 2), np.arange(2))


def test_a_bound_factory_works(digits):
    preds = TorchLearner(functools.partial(net_with_width, 16), epochs=1).fit_predict(
        digits, _masks(digits.n_train, 2), np.arange(2))
    assert (preds.test_pred == digits.y_test).mean() > 0.5


@pytest.mark.parametrize("dense", [True, False])
def test_features_with_a_large_offset_keep_their_spread(dense, monkeypatch):
    """Timestamps: 1.7e9 + a few units. float32 before centring would leave chance accuracy."""
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(400, 2)) * 2
    y = (signal[:, 0] + signal[:, 1] > 0).astype(int)
    data = ts.from_arrays(signal + 1.7e9, y)
    if not dense:
        monkeypatch.setattr(torch_population, "DENSE_INPUT_BYTES", 0)
    for model in ("linear", "mlp"):
        preds = TorchLearner(model, epochs=10).fit_predict(data, _masks(data.n_train, 2), np.arange(2))
        assert (preds.test_pred == data.y_test).mean() > 0.9, model
    rows, _ = prepare_rows(data)
    assert np.allclose(rows[:].std(0, correction=0).numpy(), 1, atol=1e-3)


def test_a_shared_frozen_backbone_is_fine(digits):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU()).requires_grad_(False)
    before = copy.deepcopy(backbone.state_dict())
    preds = both_paths(lambda: nn.Sequential(backbone, nn.Linear(32, 10)), digits, epochs=3)
    assert (preds.test_pred == digits.y_test).mean() > 0.5
    assert all(torch.equal(backbone.state_dict()[k], before[k]) for k in before)


class PretrainedBackbone(nn.Module):
    """A frozen backbone with BatchNorm, put in eval mode by the factory, and a trained head."""

    template = None

    def __init__(self):
        super().__init__()
        if PretrainedBackbone.template is None:
            torch.manual_seed(123)
            bb = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU())
            bb[2].running_mean.normal_()
            bb[2].running_var.uniform_(0.5, 2.0)
            PretrainedBackbone.template = bb
        self.backbone = copy.deepcopy(PretrainedBackbone.template).requires_grad_(False).eval()
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_batchnorm_in_eval_mode_stays_fixed_while_training(digits):
    preds = both_paths(PretrainedBackbone, digits, epochs=3)
    assert (preds.test_pred == digits.y_test).mean() > 0.5
    learner = TorchLearner(PretrainedBackbone, epochs=1, compile=False, vectorize=True)
    xtr, _ = prepare_inputs(digits, images=True)
    pop = _FuncPopulation(learner, digits, xtr, 10, torch.device("cpu"))
    _, buffers = pop.train(xtr, torch.as_tensor(digits.y_train), _masks(digits.n_train, 2), np.array([3, 4]))
    want = PretrainedBackbone.template[2].running_mean
    assert all(torch.equal(m, want) for m in buffers["backbone.2.running_mean"])  # statistics not updated
    with pytest.raises(ModelError, match=r"BatchNorm1d.*GroupNorm.*or, for a pretrained backbone.*eval"):
        TorchLearner(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 10)),
                     epochs=1).fit_predict(digits, _masks(digits.n_train, 2), np.arange(2))


def test_dropout_that_drops_nothing_is_not_dropout(digits, recwarn):
    xtr, _ = prepare_inputs(digits, images=True)
    for p, warned in ((0.0, False), (0.2, True)):
        learner = TorchLearner(lambda p=p: nn.Sequential(nn.Flatten(), nn.Dropout(p), nn.Linear(64, 10)),
                               epochs=1, vectorize=True)
        recwarn.clear()
        _FuncPopulation(learner, digits, xtr, 10, torch.device("cpu"))
        assert any("vectorize=True with Dropout" in str(w.message) for w in recwarn) == warned, p


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.out = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 10)

    def forward(self, x):  # digits' 8x8 images as 8 steps of 8 features
        return self.out(self.rnn(x.reshape(len(x), 8, 8))[0][:, -1])


def test_a_model_vmap_cannot_batch_is_refused_or_trained_one_by_one(digits):
    xtr, _ = prepare_inputs(digits, images=True)
    with pytest.raises(ModelError, match=r"cannot be trained vectorized.*vectorize=False"):
        _FuncPopulation(TorchLearner(Recurrent, epochs=1, vectorize=True), digits, xtr, 10, torch.device("cpu"))
    learner = TorchLearner(Recurrent, epochs=1, vectorize=False)
    pop = _FuncPopulation(learner, digits, xtr, 10, torch.device("cpu"))
    learner.vectorize = "auto"  # what a GPU's default does: fall back, with a warning, before any trial
    with pytest.warns(UserWarning, match="cannot be trained vectorized.*train one by one"):
        assert pop._vectorizable(pop._build(0), pop._build(1), 10) is False


WIDTH = 8


def global_width_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))


def test_a_factory_building_another_network_is_another_study(digits, tmp_path, monkeypatch):
    study = ts.Study(digits, TorchLearner(global_width_net, epochs=1), trials=2, path=tmp_path / "s")
    study.run(progress=False)
    monkeypatch.setitem(globals(), "WIDTH", 16)  # same source, another architecture
    other = TorchLearner(global_width_net, epochs=1)
    assert other.spec()["model_structure"] != study.learner.spec()["model_structure"]
    assert other.spec()["model_source"] == study.learner.spec()["model_source"]
    with pytest.raises(StoreError, match="model_structure.*builds another network"):
        ts.Study(digits, other, trials=2, path=tmp_path / "s").run(progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_refused_before_the_study_is_written(digits, tmp_path):
    study = ts.Study(digits, TorchLearner("mlp", epochs=1, device="cuda"), trials=2, path=tmp_path / "s")
    with pytest.raises(ModelError, match="CUDA is not available"):
        study.run(progress=False)
    assert not (tmp_path / "s").exists()
