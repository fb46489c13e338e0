"""Model builders for :class:`~tailscope.learners.torch_population.TorchLearner`.

Each builder returns a plain ``torch.nn.Module`` for one model; the population
trainer stacks K copies (``torch.func.stack_module_state``) and runs them with
``vmap``. ``linear`` and ``mlp`` also have a hand-written batched implementation
in the trainer (faster); the modules here define the same architecture and
initialisation, so a user can inspect or reuse them.

No builder uses BatchNorm: running statistics cannot be carried through ``vmap``
and batch statistics make an example's prediction depend on its batch. The
residual net uses GroupNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MODELS = ("linear", "mlp", "cnn", "resnet")


class ModelError(ValueError):
    """A model that cannot be built for the given data; the message says what to change."""


def build_linear(in_features: int, n_classes: int) -> nn.Module:
    """Softmax regression: one ``nn.Linear`` on flattened inputs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, n_classes))


def build_mlp(in_features: int, n_classes: int, widths: Sequence[int] = (128,)) -> nn.Module:
    """A ReLU multilayer perceptron ``in -> widths... -> n_classes`` on flattened inputs."""
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for w in widths:
        layers += [nn.Linear(prev, int(w)), nn.ReLU()]
        prev = int(w)
    layers.append(nn.Linear(prev, n_classes))
    return nn.Sequential(*layers)


def build_cnn(image_shape: Sequence[int], n_classes: int, widths: Sequence[int] = (32, 64),
              hidden: int = 128) -> nn.Module:
    """A small convnet: per width a 3x3 conv + ReLU + 2x2 max-pool, then a hidden layer.

    Works on any image of at least ``2**len(widths)`` pixels a side (8x8 digits,
    28x28 MNIST, 32x32 CIFAR). ``image_shape`` is ``(H, W, C)``.
    """
    h, w, c = _hwc(image_shape)
    need = 2 ** len(widths)
    if h < need or w < need:
        raise ModelError(
            f"cnn with {len(widths)} pooling stages needs images of at least {need}x{need}, got {h}x{w}; "
            + ("pass fewer widths (e.g. widths=(32,)) or " if len(widths) > 1 else "") + "use model='mlp'."
        )
    layers: list[nn.Module] = []
    prev = c
    for width in widths:
        layers += [nn.Conv2d(prev, int(width), 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        prev = int(width)
        h, w = h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(prev * h * w, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
    return nn.Sequential(*layers)


def _gn(ch: int) -> nn.GroupNorm:
    groups = 8 if ch % 8 == 0 else 1
    return nn.GroupNorm(groups, ch)


class BasicBlock(nn.Module):
    """A pre-activation-free ResNet basic block with GroupNorm."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _gn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _gn(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _gn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def build_resnet(image_shape: Sequence[int], n_classes: int, widths: Sequence[int] = (32, 64, 128)) -> nn.Module:
    """A small residual net for 32x32 colour images (GroupNorm, one basic block per stage).

    Stage i has ``widths[i]`` channels; stages after the first halve the resolution.
    Works on any image of at least ``2**(len(widths)-1)`` pixels a side.
    """
    h, w, c = _hwc(image_shape)
    need = 2 ** (len(widths) - 1)
    if h < need or w < need:
        raise ModelError(f"resnet with {len(widths)} stages needs images of at least {need}x{need}, got {h}x{w}.")
    widths = [int(x) for x in widths]
    layers: list[nn.Module] = [nn.Conv2d(c, widths[0], 3, padding=1, bias=False), _gn(widths[0]), nn.ReLU()]
    prev = widths[0]
    for i, width in enumerate(widths):
        layers.append(BasicBlock(prev, width, stride=1 if i == 0 else 2))
        prev = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, n_classes)]
    return nn.Sequential(*layers)


def _hwc(image_shape: Sequence[int] | None) -> tuple[int, int, int]:
    if image_shape is None:
        raise ModelError("this model needs images, but the dataset has image_shape=None; use model='mlp'.")
    if len(image_shape) == 2:
        return int(image_shape[0]), int(image_shape[1]), 1
    if len(image_shape) != 3:
        raise ModelError(f"image_shape must be (H, W, C), got {tuple(image_shape)}.")
    return int(image_shape[0]), int(image_shape[1]), int(image_shape[2])


def build_model(name: str, *, in_features: int, image_shape: Sequence[int] | None, n_classes: int,
                widths: Sequence[int] | None = None) -> nn.Module:
    """Build one built-in model by name (``linear``, ``mlp``, ``cnn``, ``resnet``)."""
    if name == "linear":
        return build_linear(in_features, n_classes)
    if name == "mlp":
        return build_mlp(in_features, n_classes, widths if widths is not None else (128,))
    if name == "cnn":
        return build_cnn(image_shape, n_classes, widths if widths is not None else (32, 64))
    if name == "resnet":
        return build_resnet(image_shape, n_classes, widths if widths is not None else (32, 64, 128))
    raise ModelError(f"unknown model {name!r}; use one of {MODELS} or pass a callable that returns an nn.Module.")


def check_no_running_stats(module: nn.Module) -> None:
    """Refuse BatchNorm that would normalize with batch statistics: in training mode its running
    statistics cannot be kept per model, and without them (``track_running_stats=False``) a
    prediction would depend on the other examples of its evaluation batch, so the estimates would
    depend on ``eval_batch_size``. A BatchNorm the factory put in eval mode (a pretrained backbone,
    ``backbone.eval()``) stays in eval mode while training: a fixed per-channel scale and shift."""
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not (m.track_running_stats and not m.training):
            why = ("keeps running statistics, which the population trainer cannot keep per model"
                   if m.track_running_stats else
                   "normalizes with batch statistics even when evaluating, so a prediction would depend "
                   "on the other examples of its evaluation batch")
            raise ModelError(
                f"module {name or type(module).__name__!r} is {type(m).__name__}, which {why}; replace it "
                "with nn.GroupNorm or nn.LayerNorm (per-example normalization), or, for a pretrained backbone, "
                "put it in eval mode in the factory (backbone.eval()): modules built in eval mode stay in eval "
                "mode, and their BatchNorm statistics stay fixed."
            )
