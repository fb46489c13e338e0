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
