"""Throughput of the population trainer (TorchLearner) against one-model-at-a-time training.

Run from the repository root::

    python benchmarks/train_throughput.py            # full run (a few minutes on 2 cores)
    python benchmarks/train_throughput.py --quick    # small, about a minute

Cases (all ratios measured in this one run):

1. MLP 784-512-10 on the MNIST test set (/work/shared/datasets/mnist_test.npz, or
   --mnist PATH), seeded stratified split 8,000 train / 2,000 test, 70% subsets,
   15 epochs, batch 128: population trainer (bf16, and fp32) vs the same recipe one
   model at a time in plain PyTorch fp32 vs scikit-learn MLPClassifier of the same
   size (one model per round); plus one full 256-model block for peak memory.
2. MLP 64-128-10 on the built-in digits: population (fp32 eager, bf16 compiled) vs
   one at a time.
3. cnn on MNIST: population vs one at a time (few models, measured once).

Cases 1-2 run their trainers in turn for ``--rounds`` rounds and report each one's
fastest round (see :func:`interleaved`): this shared machine's speed drifts.

Useful FLOPs (matmuls only, 2 FLOPs per multiply-add, biases and elementwise work
not counted), per model: for every training step and example,
``2 P`` (forward) + ``2 P`` (weight gradients) + ``2 (P - P_1)`` (input gradients;
the first layer needs none), where ``P`` is the number of weights in the weight
matrices (or conv kernels times output positions) and ``P_1`` those of the first
layer; plus ``2 P`` per evaluated example (all train and test examples). For
784-512-10 this is ``4.07 P`` per training example, close to the usual "6 x
params" once the first layer's unneeded input gradient is dropped.

The batched-matmul peak is the best of several timings of ``torch.bmm`` on the
MLP's shapes (16 x [128 x 784] @ [784 x 512]) in bf16 and fp32, measured in the
same run. Peak memory is the largest resident set size sampled every 5 ms during
a population block, minus the size before it.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailscope.data import load_dataset
from tailscope.data.dataset import Dataset, stratified_split
from tailscope.learners.torch_population import TorchLearner, _lr_curve, _sgd_update, prepare_inputs

MNIST = Path("/work/shared/datasets/mnist_test.npz")
PEAK_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


# ---------------------------------------------------------------- helpers

def mnist(path: Path) -> Dataset:
    """MNIST test set split (seed 0, stratified) into 8,000 train / 2,000 test."""
    with np.load(path, allow_pickle=False) as f:
        x, y = f["x"], f["y"].astype(np.int64)
    tr, te = stratified_split(y, 0.2, seed=0)
    return Dataset(x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], name="mnist8k",
                   image_shape=(28, 28, 1), meta={"pixel_max": 255})


def make_masks(n: int, k: int, seed: int = 0, ratio: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((k, n), dtype=bool)
    for i in range(k):
        m[i, rng.choice(n, int(round(ratio * n)), replace=False)] = True
    return m


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Sample the resident set size every 5 ms in a thread; ``peak`` is the max seen."""

    def __enter__(self):
        self.base = rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())


def bmm_peak(dtype: torch.dtype, g: int = 16, b: int = 128, d: int = 784, h: int = 512, reps: int = 5) -> float:
    """Best GFLOP/s of torch.bmm on the MLP's shapes (forward and weight-gradient layouts)."""
    x = torch.randn(g, b, d).to(dtype)
    w = torch.randn(g, d, h).to(dtype)
    dz = torch.randn(g, b, h).to(dtype)
    xt = x.transpose(1, 2).contiguous()
    best = 0.0
    for _ in range(reps):
        for a, c in ((x, w), (xt, dz)):
            torch.bmm(a, c)
            t = time.perf_counter()
            for _ in range(5):
                torch.bmm(a, c)
            dt = (time.perf_counter() - t) / 5
            best = max(best, 2 * g * b * d * h / dt / 1e9)
    return best


def update_seconds(n_params: int, g: int = 16, reps: int = 5) -> float:
    """Best time per model of the trainer's compiled fp32 master-weight update.

    The same fused momentum-SGD update the population trainer runs after the weight
    gradients (read weights, momentum and bf16 gradient; write weights, momentum and
    the bf16 copy: 20 bytes per parameter), on ``g`` stacked models of ``n_params``.
    It is memory bound, so it sets a floor under every step that faster matrix
    products cannot remove (see :func:`roofline`).
    """
    p = torch.randn(g, n_params)
    m = torch.zeros_like(p)
    grad = torch.randn(g, n_params).to(torch.bfloat16)
    lr = torch.full((g,), 0.01)

    def update(p, m, grad, lr):
        _sgd_update(p, m, grad, lr, 0.9, 5e-4, False)
        return p.to(torch.bfloat16)
    fn = torch.compile(update, dynamic=False)
    fn(p, m, grad, lr)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(5):
            fn(p, m, grad, lr)
        best = min(best, (time.perf_counter() - t) / 5 / g)
    return best


def roofline(dims: list[int], batch: int, peak_gflops: float, update_s: float) -> str:
    """The highest % of the bf16 peak one training step of this MLP could reach here.

    A step is its matrix products plus the weight update; with the products at the
    measured peak and the update at its measured (memory-bound) time, the useful
    FLOP rate is at most products / (products + update) of the peak.
    """
    p = sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))
    products_s = mlp_flops(dims, batch, 0) / (peak_gflops * 1e9)
    ceiling = products_s / (products_s + update_s)
    return (f"roofline {'-'.join(map(str, dims))}, batch {batch}: products at the bf16 peak "
            f"{products_s * 1e6:.0f} us per model-step, fp32 master-weight update {update_s * 1e6:.0f} us "
            f"({20 * p / update_s / 1e9:.0f} GB/s), so a step reaches at most {100 * ceiling:.0f}% of the peak")


def mlp_flops(dims: list[int], train_examples: float, eval_examples: int) -> float:
    p = [a * b for a, b in zip(dims[:-1], dims[1:], strict=True)]
    per_train = 2 * sum(p) + 2 * sum(p) + 2 * (sum(p) - p[0])
    return per_train * train_examples + 2 * sum(p) * eval_examples


def cnn_flops(model: nn.Module, shape: tuple[int, ...], train_examples: float, eval_examples: int) -> float:
    """Count conv/linear multiply-adds with forward hooks; same formula as mlp_flops."""
    macs: list[int] = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs.append(out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, nn.Linear):
            macs.append(m.in_features * m.out_features)
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    per_train = 6 * sum(macs) - 2 * macs[0]
    return per_train * train_examples + 2 * sum(macs) * eval_examples


def train_examples(masks: np.ndarray, epochs: int, batch: int) -> float:
    """Examples processed in training, summed over models (steps x batch)."""
    return float(sum(-(-int(m.sum()) // batch) * batch * epochs for m in masks))


# ------------------------------------------------------ one model at a time

def plain_torch(data: Dataset, masks: np.ndarray, seeds: np.ndarray, make_model, *, images: bool,
                epochs: int, batch: int, lr: float, momentum: float, wd: float, ls: float,
                warmup: float) -> np.ndarray:
    """The same recipe, one model at a time, plain PyTorch fp32 (nn.Module + optim.SGD)."""
    xtr, xte = prepare_inputs(data, images=images)
    ytr = torch.as_tensor(data.y_train)
    yte = torch.as_tensor(data.y_test)
    accs = []
    for mask, seed in zip(masks, seeds, strict=True):
        torch.manual_seed(int(seed))
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
        subset = np.flatnonzero(mask)
        spe = -(-len(subset) // batch)
        lrs = _lr_curve("onecycle", lr, warmup, spe * epochs)
        rng = np.random.default_rng(int(seed))
        t = 0
        model.train()
        for _ in range(epochs):
            order = torch.as_tensor(np.resize(rng.permutation(subset), spe * batch))
            for s in range(spe):
                it = order[s * batch:(s + 1) * batch]
                for group in opt.param_groups:
                    group["lr"] = float(lrs[t])
                loss = F.cross_entropy(model(xtr[it]), ytr[it], label_smoothing=ls)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                t += 1
        model.eval()
        with torch.no_grad():
            model(xtr[:2048]).argmax(1)  # evaluate train too, as the population does
            for s in range(2048, len(xtr), 2048):
                model(xtr[s:s + 2048])
            pred = torch.cat([model(xte[s:s + 2048]).argmax(1) for s in range(0, len(xte), 2048)])
        accs.append(float((pred == yte).float().mean()))
    return np.array(accs)


def sklearn_mlp(data: Dataset, masks: np.ndarray, width: int, epochs: int, batch: int) -> np.ndarray:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    xtr, xte = prepare_inputs(data, images=False)
    xtr, xte = xtr.numpy(), xte.numpy()
    accs = []
    for k, mask in enumerate(masks):
        clf = MLPClassifier(hidden_layer_sizes=(width,), solver="sgd", momentum=0.9, learning_rate_init=0.05,
                            batch_size=batch, max_iter=epochs, alpha=5e-4, random_state=k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xtr[mask], data.y_train[mask])
        clf.predict(xtr)
        accs.append(float((clf.predict(xte) == data.y_test).mean()))
    return np.array(accs)


# ------------------------------------------------------------------ cases

def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def report(rows: list[dict], peaks: dict) -> None:
    for r in rows:  # percentages against the highest peak seen in the whole run
        for name in PEAK_DTYPES:
            r[f"%{name}"] = f"{100 * r['_gflops'] / peaks[name]:.0f}%"
    cols = ["case", "trainer", "models", "seconds", "models/s", "GFLOP/s", "%bf16", "%fp32", "peak MiB",
            "test acc"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


def row(case, trainer, k, secs, flops, acc, peak_mib=None, note=""):
    gf = flops / secs / 1e9
    return {"case": case, "trainer": trainer + (f" ({note})" if note else ""), "models": k,
            "seconds": f"{secs:.1f}", "models/s": f"{k / secs:.2f}", "GFLOP/s": f"{gf:.0f}", "_gflops": gf,
            "peak MiB": "" if peak_mib is None else f"{peak_mib:.0f}",
            "test acc": f"{100 * np.mean(acc):.2f}"}


def population(learner: TorchLearner, data: Dataset, masks: np.ndarray, seeds: np.ndarray):
    with PeakRSS() as mem:
        preds, secs = timed(lambda: learner.fit_predict(data, masks, seeds))
    acc = (preds.test_pred == data.y_test[None]).mean(1)
    return acc, secs, (mem.peak - mem.base) / 2**20


def interleaved(case: str, trainers: dict, rounds: int, peaks: dict, notes: dict) -> list[dict]:
    """Run every trainer once per round, in turn, and keep each one's fastest round.

    This machine's speed drifts by up to 2x over minutes (shared host), so trainers
    timed one after the other can land in different phases; interleaving them and
    taking the best round of each compares them under the same conditions. The
    batched-matmul peak is re-measured every round (the highest is kept), and the
    accuracy is the mean over all models of all rounds.
    """
    best: dict[str, tuple] = {}
    accs: dict[str, list] = {name: [] for name in trainers}
    for r in range(rounds):
        for name, dtype in PEAK_DTYPES.items():
            peaks[name] = max(peaks[name], bmm_peak(dtype))
        for name, fn in trainers.items():
            acc, secs, k, flops, mib = fn(r)
            accs[name].extend(np.atleast_1d(acc).tolist())
            if name not in best or k / secs > best[name][1] / best[name][0]:
                best[name] = (secs, k, flops, mib)
    out = []
    for name, (secs, k, flops, mib) in best.items():
        note = ", ".join(filter(None, [notes.get(name, ""), f"best of {rounds} interleaved rounds"]))
        out.append(row(case, name, k, secs, flops, np.array(accs[name]), mib, note=note))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (fewer models and epochs)")
    ap.add_argument("--mnist", type=Path, default=MNIST)
    ap.add_argument("--models", type=int, default=None, help="population size for case 1 (default 256)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--skip", default="", help="comma-separated cases to skip: 1,2,3")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds for cases 1-2 (default 3; 2 quick)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    quick = args.quick
    rounds = args.rounds or (2 if quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu cores {os.cpu_count()}, "
          f"cuda {torch.cuda.is_available()}")
    peaks = {name: bmm_peak(dtype) for name, dtype in PEAK_DTYPES.items()}
    rows: list[dict] = []
    ceilings: list[tuple] = []  # (dims, batch, update seconds) for the roofline lines
    recipe = dict(lr=0.1, momentum=0.9, wd=5e-4, ls=0.1, warmup=0.1)

    if "1" not in skip:
        data = mnist(args.mnist)
        epochs, batch = (3, 128) if quick else (15, 128)
        k_block = args.models or (32 if quick else 256)
        per_round = {"bf16": 16 if quick else 64, "fp32": 8 if quick else 16}
        dims = [784, 512, 10]
        n_masks = max(k_block, rounds * per_round["bf16"])
        masks = make_masks(data.n_train, n_masks, seed=1)
        seeds = np.arange(n_masks)
        ev = data.n_train + data.n_test
        kw = dict(widths=(512,), epochs=epochs, batch_size=batch, lr=recipe["lr"], momentum=recipe["momentum"],
                  weight_decay=recipe["wd"], label_smoothing=recipe["ls"], warmup=recipe["warmup"])
        learners = {prec: TorchLearner("mlp", precision=prec, **kw) for prec in ("bf16", "fp32")}
        notes = {}
        for prec, learner in learners.items():
            _, tc = timed(lambda learner=learner: learner.fit_predict(data, masks[:16], seeds[:16]))  # compile
            notes[f"population {prec}"] = f"warm-up incl. compile {tc:.0f}s"
        # one full block: its peak memory (the 2 GiB bound) and its throughput
        acc, secs, mib = population(learners["bf16"], data, masks[:k_block], seeds[:k_block])
        fl = mlp_flops(dims, train_examples(masks[:k_block], epochs, batch), k_block * ev)
        rows.append(row("MLP 784-512-10 MNIST", f"population bf16, one block of {k_block}", k_block, secs, fl,
                        acc, mib))

        def make():
            return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))

        def pop(prec):
            def run(r):
                k = per_round[prec]
                m, sd = masks[r * k:(r + 1) * k], seeds[r * k:(r + 1) * k]
                acc, secs, mib = population(learners[prec], data, m, sd)
                return acc, secs, k, mlp_flops(dims, train_examples(m, epochs, batch), k * ev), mib
            return run

        def loop(r):
            m, sd = masks[r:r + 1], seeds[r:r + 1]
            acc, secs = timed(lambda: plain_torch(data, m, sd, make, images=False, epochs=epochs, batch=batch,
                                                  **recipe))
            return acc, secs, 1, mlp_flops(dims, train_examples(m, epochs, batch), ev), None

        def sk(r):
            m = masks[r:r + 1]
            acc, secs = timed(lambda: sklearn_mlp(data, m, 512, epochs, batch))
            return acc, secs, 1, mlp_flops(dims, train_examples(m, epochs, batch), ev), None
        rows += interleaved("MLP 784-512-10 MNIST", {"population bf16": pop("bf16"), "population fp32": pop("fp32"),
                                                     "one at a time, plain torch fp32": loop,
                                                     "sklearn MLPClassifier": sk}, rounds, peaks, notes)
        update_s = min(update_seconds(sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True)))
                       for _ in range(rounds))
        ceilings.append((dims, batch, update_s))

    if "2" not in skip:
        data = load_dataset("digits")
        epochs, batch = 20, 64
        k_pop = 100 if quick else 400
        k_loop = 3 if quick else 5
        dims = [64, 128, 10]
        masks = make_masks(data.n_train, k_pop, seed=2)
        seeds = np.arange(k_pop)
        ev = data.n_train + data.n_test
        trainers, notes = {}, {}
        for prec, comp in (("fp32", "auto"), ("bf16", True)):
            learner = TorchLearner("mlp", widths=(128,), epochs=epochs, batch_size=batch, precision=prec,
                                   compile=comp)
            _, tc = timed(lambda learner=learner: learner.fit_predict(data, masks[:64], seeds[:64]))  # warm-up
            name = f"population {prec}" + (", compiled" if comp is True else "")
            if comp is True:
                notes[name] = f"warm-up incl. compile {tc:.0f}s"

            def run(r, learner=learner):
                acc, secs, mib = population(learner, data, masks, seeds)
                return acc, secs, k_pop, mlp_flops(dims, train_examples(masks, epochs, batch), k_pop * ev), mib
            trainers[name] = run

        def make_small():
            return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

        def loop_small(r):
            m, sd = masks[r * k_loop:(r + 1) * k_loop], seeds[r * k_loop:(r + 1) * k_loop]
            acc, secs = timed(lambda: plain_torch(data, m, sd, make_small, images=False, epochs=epochs, batch=batch,
                                                  **recipe))
            return acc, secs, k_loop, mlp_flops(dims, train_examples(m, epochs, batch), k_loop * ev), None
        trainers["one at a time, plain torch fp32"] = loop_small
        rows += interleaved("MLP 64-128-10 digits", trainers, rounds, peaks, notes)

    if "3" not in skip:
        data = mnist(args.mnist)
        epochs, batch = (1, 128) if quick else (3, 128)
        k_pop, k_loop = (4, 1) if quick else (16, 2)
        masks = make_masks(data.n_train, k_pop, seed=3)
        seeds = np.arange(k_pop)
        ev = data.n_train + data.n_test
        from tailscope.learners.torch_models import build_cnn
        probe = build_cnn((28, 28, 1), 10)
        for prec in ("bf16", "fp32"):
            learner = TorchLearner("cnn", epochs=epochs, batch_size=batch, precision=prec)
            acc, secs, mib = population(learner, data, masks, seeds)
            fl = cnn_flops(probe, (1, 28, 28), train_examples(masks, epochs, batch), k_pop * ev)
            rows.append(row("cnn MNIST", f"population {prec}", k_pop, secs, fl, acc, mib))
        acc, secs = timed(lambda: plain_torch(data, masks[:k_loop], seeds[:k_loop],
                                              lambda: build_cnn((28, 28, 1), 10), images=True,
                                              epochs=epochs, batch=batch, **recipe))
        fl = cnn_flops(probe, (1, 28, 28), train_examples(masks[:k_loop], epochs, batch), k_loop * ev)
        rows.append(row("cnn MNIST", "one at a time, plain torch fp32", k_loop, secs, fl, acc))

    print(f"\nbatched-matmul peak measured in this run: bf16 {peaks['bf16']:.0f} GFLOP/s, "
          f"fp32 {peaks['fp32']:.0f} GFLOP/s (torch.bmm 16 x [128x784]@[784x512])\n")
    report(rows, peaks)
    by = {(r["case"], r["trainer"].split(" (")[0]): float(r["models/s"]) for r in rows}
    for case, pop in (("MLP 784-512-10 MNIST", "population bf16"), ("MLP 64-128-10 digits", "population fp32"),
                      ("MLP 64-128-10 digits", "population bf16, compiled"), ("cnn MNIST", "population bf16")):
        base = by.get((case, "one at a time, plain torch fp32"))
        if base and (case, pop) in by:
            print(f"{case}: {pop} is {by[(case, pop)] / base:.1f}x the one-at-a-time fp32 loop")
    for dims, batch, update_s in ceilings:
        print(roofline(dims, batch, peaks["bf16"], update_s))


if __name__ == "__main__":
    main()
