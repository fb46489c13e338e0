"""Group memorization: what a model memorizes about a whole subpopulation.

For a group G of training examples of one label (a subpopulation), the group
memorization score generalizes mem(A, S, i) to sets:

    mem(A, S, G) = mean over i in G of ( Pr_{h<-A(S)}[h(x_i) = y_i] - Pr_{h<-A(S \\ G)}[h(x_i) = y_i] ).

Its subsampled estimate uses a *group design*: every trial keeps each group with
probability ``q`` (all its members in or out together) and every ungrouped
example independently with probability ``q``. A trial's mask is a pure function of
(seed, trial), like :class:`tailscope.design.Design`. For group G and trial k let
a_k = the share of G's members that model k classifies correctly; then

    group mem = mean_{k: G in} a_k - mean_{k: G out} a_k,
    SE        = sqrt( var_{G in}(a_k) / t_in + var_{G out}(a_k) / t_out ),

since the a_k are independent across trials given in/out. Each trial's subset has
about q n examples (exactly so only in expectation, unlike the uniform design).
Groups come from k-means on the inputs within each class (seeded) or from the user.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailscope.analyses.base import (
    ANALYSES_DIR,
    AnalysisResult,
    check_count,
    fmt,
    mask_seeds,
    open_study_scores,
    scaled_inputs,
)
from tailscope.data.dataset import Dataset
from tailscope.learners.base import Learner
from tailscope.scores import at_least
from tailscope.store import child_location, read_bytes, stable_spec, write_bytes

NAME = "groups"
_GROUP_STREAM = 0x67727570  # "grup"
_LOOSE_STREAM = 0x6C6F6F73  # "loos"
_SEED_STREAM = 0x67736564
_REDRAW_STREAM = 0x72647277  # "rdrw"


# ----------------------------------------------------------------------------- groups

def check_groups(groups, data: Dataset) -> np.ndarray:
    """Validate a group id per training example (-1 = in no group); returns ids renumbered 0..G-1.

    Every group must hold examples of one label only (a subpopulation of a class).
    """
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != data.n_train:
        raise ValueError(f"groups must be one integer per training example ({data.n_train}), got shape {g.shape}.")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"group ids must be integers (-1 = no group), got dtype {g.dtype}.")
    if (g < -1).any():
        raise ValueError("group ids must be >= 0, or -1 for examples in no group.")
    ids = np.unique(g[g >= 0])
    if not len(ids):
        raise ValueError("no example belongs to a group; give at least one group id >= 0.")
    out = np.full(len(g), -1, dtype=np.int64)
    out[g >= 0] = np.searchsorted(ids, g[g >= 0])
    labels = data.y_train
    for k in range(len(ids)):
        ls = np.unique(labels[out == k])
        if len(ls) > 1:
            raise ValueError(f"group {ids[k]} mixes labels {ls.tolist()}; a group must be a subpopulation of one "
                             "class (split it by label).")
    return out


def kmeans_groups(data: Dataset, per_class: int = 10, seed: int = 0) -> np.ndarray:
    """Group ids from k-means (``per_class`` clusters, seeded) on the scaled inputs of each class.

    Classes with fewer than ``2 * per_class`` training examples get proportionally
    fewer clusters (at least one). Ids run class by class.
    """
    from sklearn.cluster import KMeans

    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}.")
    xtr, _ = scaled_inputs(data)
    out = np.full(data.n_train, -1, dtype=np.int64)
    nxt = 0
    for c in range(data.n_classes):
        idx = np.flatnonzero(data.y_train == c)
        if not len(idx):
            continue
        k = int(max(1, min(per_class, len(idx) // 2)))
        if k == 1:
            lab = np.zeros(len(idx), dtype=np.int64)
        else:
            lab = KMeans(n_clusters=k, n_init=3, random_state=int(seed) + c).fit_predict(xtr[idx])
        out[idx] = nxt + lab
        nxt += k
    return check_groups(out, data)


def load_groups(spec: str, data: Dataset) -> np.ndarray:
    """Groups from ``PATH.npy``, or ``PATH.npz`` / ``PATH.npz:KEY`` (default key ``groups``)."""
    path, _, key = spec.partition(".npz:")
    if key:
        path += ".npz"
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"groups file {p} does not exist; pass PATH.npy or PATH.npz[:KEY].")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as f:
            key = key or "groups"
            if key not in f.files:
                raise ValueError(f"{p} has no array {key!r} (it has {f.files}); pass {p}:KEY.")
            arr = f[key]
    else:
        arr = np.load(p, allow_pickle=False)
    return check_groups(arr, data)


# ----------------------------------------------------------------------------- design

@dataclass(frozen=True)
class GroupDesign:
    """Trials that keep or drop whole groups.

    Parameters
    ----------
    groups : int array (n,)
        Group id per training example, 0..G-1, or -1 for examples in no group.
    q : float
        Probability that a trial keeps a group (and each ungrouped example).
    seed : int
    """

    groups: np.ndarray = field(repr=False)
    q: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.q < 1:
            raise ValueError(f"q must lie strictly between 0 and 1, got {self.q}.")

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1

    def _draw(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(groups kept (G,), ungrouped examples kept) by trial ``t``: a pure function of seed and t.

        A draw that keeps no example at all (likely with few groups, a small q and every
        example grouped) is redrawn from its own stream until it keeps one: a model needs
        training data. This conditions on a non-empty trial, a negligible change where
        empty draws are rare and the only possible design where they are not.
        """
        n_loose = int((self.groups < 0).sum())
        kept = np.random.default_rng([self.seed, _GROUP_STREAM, t]).random(self.n_groups) < self.q
        loose = np.random.default_rng([self.seed, _LOOSE_STREAM, t]).random(n_loose) < self.q
        attempt = 0
        while not kept.any() and not loose.any():
            attempt += 1
            rng = np.random.default_rng([self.seed, _REDRAW_STREAM, t, attempt])
            kept, loose = rng.random(self.n_groups) < self.q, rng.random(n_loose) < self.q
        return kept, loose

    def group_in(self, trials) -> np.ndarray:
        """(T, G) bool: which groups each trial keeps (a pure function of seed and trial)."""
        rows = [self._draw(int(t))[0] for t in np.asarray(trials)]
        return np.stack(rows) if rows else np.zeros((0, self.n_groups), bool)

    def masks(self, trials) -> np.ndarray:
        """(T, n) bool training masks: members follow their group, loose examples their own coin."""
        trials = np.asarray(trials)
        grouped = self.groups >= 0
        out = np.zeros((len(trials), len(self.groups)), dtype=bool)
        for r, t in enumerate(trials):
            kept, loose = self._draw(int(t))
            out[r, grouped] = kept[self.groups[grouped]]
            out[r, ~grouped] = loose
        return out


def group_mem_estimate(correct: np.ndarray, group_in: np.ndarray, groups: np.ndarray) -> dict:
    """Group memorization from per-trial correctness.

    Parameters
    ----------
    correct : bool (T, n)
        Whether trial k's model classifies training example i correctly.
    group_in : bool (T, G)
    groups : int (n,), ids 0..G-1 or -1

    Returns
    -------
    dict of arrays over groups: ``mem``, ``se``, ``acc_in``, ``acc_out``, ``t_in``, ``t_out``, ``size``.
    """
    correct = np.asarray(correct, dtype=np.float64)
    G = group_in.shape[1]
    size = np.bincount(groups[groups >= 0], minlength=G)
    onehot = np.zeros((len(groups), G))
    onehot[np.flatnonzero(groups >= 0), groups[groups >= 0]] = 1.0
    acc = correct @ onehot / np.maximum(size, 1)  # (T, G): a_k per group
    gi = group_in.astype(bool)
    t_in, t_out = gi.sum(0), (~gi).sum(0)

    def mean_var(w, t):
        m = (acc * w).sum(0) / np.maximum(t, 1)
        v = (((acc - m) ** 2) * w).sum(0) / np.maximum(t - 1, 1)
        return np.where(t > 0, m, np.nan), np.where(t > 1, v, np.nan)

    m_in, v_in = mean_var(gi, t_in)
    m_out, v_out = mean_var(~gi, t_out)
    return {"mem": m_in - m_out, "se": np.sqrt(v_in / np.maximum(t_in, 1) + v_out / np.maximum(t_out, 1)),
            "acc_in": m_in, "acc_out": m_out, "t_in": t_in, "t_out": t_out, "size": size}


SAVE_EVERY_S = 30.0  # how often run_group_trials rewrites its npz of trials done


def run_group_trials(learner: Learner, data: Dataset, design: GroupDesign, trials: int,
                     store: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train ``trials`` models on the group design; returns ``(group_in (T, G), correct (T, n))``.

    With ``store`` (a local path or an fsspec URL) the trials done so far are written
    there as an npz (after the last block, and after a block when ``SAVE_EVERY_S``
    seconds have passed since the last write), and a later call with the same
    groups, q, seed and learner resumes from them: after a crash only the unfinished
    blocks are trained again, and asking for more trials trains only the new ones.
    Trial k's mask and model seed depend only on (design, k), so resumed and
    uninterrupted runs give the same arrays.
    """
    if trials < 2:
        raise ValueError(f"trials must be >= 2, got {trials}.")
    t = np.arange(trials)
    masks, gin = design.masks(t), design.group_in(t)
    seeds = mask_seeds(int(np.random.default_rng([design.seed, _SEED_STREAM]).integers(2**31 - 1)), trials)
    key = json.dumps({"learner": stable_spec(learner.spec()), "q": design.q, "seed": design.seed}, sort_keys=True,
                     default=str)
    correct = np.zeros((trials, data.n_train), dtype=bool)
    k = _stored_trials(store, design, key, correct) if store is not None else 0
    block = max(1, int(learner.preferred_block))
    saved = time.monotonic()
    for a in range(k, trials, block):
        b = min(a + block, trials)
        preds = learner.fit_predict(data, masks[a:b], seeds[a:b])
        correct[a:b] = preds.train_pred == data.y_train
        # the whole file is rewritten each time: at most every SAVE_EVERY_S seconds (a crash
        # loses at most that much work), else many small blocks would make the writing quadratic
        if store is not None and (b == trials or time.monotonic() - saved >= SAVE_EVERY_S):
            saved = time.monotonic()
            buf = io.BytesIO()
            np.savez_compressed(buf, group_in=gin[:b], correct=correct[:b], groups=design.groups, q=design.q,
                                seed=design.seed, masks=masks[:b], key=np.array(key))
            write_bytes(store, buf.getvalue())
    return gin, correct


def _stored_trials(store: str | Path, design: GroupDesign, key: str, correct: np.ndarray) -> int:
    """Copy the rows of an earlier run with the same settings into ``correct``; return how many."""
    raw = read_bytes(store)
    if raw is None:
        return 0
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            same = (str(f["key"]) == key and np.array_equal(f["groups"], design.groups)
                    and np.array_equal(f["masks"], design.masks(np.arange(len(f["masks"])))))
            rows = f["correct"] if same else None
    except (KeyError, ValueError, OSError):  # an older file without a key, or a damaged one
        rows = None
    if rows is None or rows.shape[1:] != correct.shape[1:]:
        moved = _set_aside_file(store)
        warnings.warn(f"{store} holds group trials made with other settings (or is unreadable); they are not "
                      f"reused, and were moved to {moved} (never deleted: move the file back to resume them "
                      "with their settings).", stacklevel=3)
        return 0
    k = min(len(rows), len(correct))
    correct[:k] = rows[:k]
    return k


def _set_aside_file(store: str | Path) -> str:
    """Move the trials file ``store`` to ``<its folder>/.replaced/<stem>-<time>.npz`` and return
    where: trained trials that another run's settings cannot use are kept, as ``set_aside`` keeps
    replaced sub-studies."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(store))
    folder, name = root.rstrip("/").rsplit("/", 1)
    stem, _, ext = name.rpartition(".")
    base = f"{folder}/.replaced/{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    dest, k = f"{base}.{ext}", 1
    while fs.exists(dest):  # two replacements within a second
        dest, k = f"{base}-{k}.{ext}", k + 1
    fs.makedirs(f"{folder}/.replaced", exist_ok=True)
    fs.mv(root, dest)
    return fs.unstrip_protocol(dest) if "://" in str(store) else dest


# ----------------------------------------------------------------------------- the analysis

def group_memorization(study, groups=None, per_class: int = 10, trials: int = 100, q: float | None = None,
                       seed: int = 0, learner: Learner | None = None, scores=None) -> AnalysisResult:
    """Estimate mem(A, S, G) for subpopulations G and compare with their members' individual mem.

    Parameters
    ----------
    study : Study or path
        Gives the data, the learner (unless ``learner`` is passed) and the individual mem.
    groups : int array (n,), str or None
        Group per training example (-1 = none), a path ``PATH.npy`` / ``PATH.npz[:KEY]``,
        or None for k-means with ``per_class`` clusters in every class.
    trials : int
        Models trained on the group design (each trial keeps each group with prob ``q``).
    q : float, optional
        Keep probability (default: the study's ratio).
    seed : int
        Seed of the clustering, the design and the learner seeds.

    Returns
    -------
    AnalysisResult named ``groups``; the trials are kept (and resumed) in ``analyses/groups/trials.npz``.
    """
    trials = check_count(trials, "trials", 2, "--trials")  # before the clustering and the scores
    study, scores = open_study_scores(study, scores)
    data = study.data
    source = "user"
    if groups is None:
        groups, source = kmeans_groups(data, per_class=per_class, seed=seed), f"k-means ({per_class} per class)"
    elif isinstance(groups, str | Path):
        groups = load_groups(str(groups), data)
    else:
        groups = check_groups(groups, data)
    learner = learner or study.learner
    q = float(study.design.ratio if q is None else q)
    design = GroupDesign(groups, q=q, seed=seed)
    store = child_location(study.path, ANALYSES_DIR, NAME, "trials.npz")
    gin, correct = run_group_trials(learner, data, design, trials, store=store)
    est = group_mem_estimate(correct, gin, groups)
    G = design.n_groups
    indiv = np.array([np.nanmean(scores.mem[groups == g]) if np.isfinite(scores.mem[groups == g]).any()
                      else np.nan for g in range(G)])
    label = np.array([data.y_train[groups == g][0] for g in range(G)])
    se = est["se"]
    summary = {
        "groups_from": source, "n_groups": G, "n_grouped": int((groups >= 0).sum()),
        "median_group_size": float(np.median(est["size"])), "trials": int(trials), "q": q,
        **group_summary(est, indiv),
    }
    return AnalysisResult(
        name=NAME, title="Group memorization of subpopulations", summary=summary,
        reading=_reading(summary),
        data={"groups": groups, "label": label, "group_mem": est["mem"], "group_se": se,
              "member_mem": indiv, "size": est["size"], "acc_in": est["acc_in"], "acc_out": est["acc_out"],
              "t_in": est["t_in"], "t_out": est["t_out"]},
        figure=_figure(est, indiv, label, summary, data.classes),
    )


def group_summary(est: dict, indiv: np.ndarray) -> dict:
    """Headline numbers over the groups whose estimate has a standard error.

    A group kept (or dropped) in fewer than two trials has no SE: its estimate rests on
    one model and can be anything (mem 1.0 from a single trial), so it is counted in
    ``n_groups_no_se`` and left out of the means, counts and maximum.
    """
    mem, se = np.asarray(est["mem"], float), np.asarray(est["se"], float)
    has_se = np.isfinite(mem) & np.isfinite(se)
    ok = has_se & np.isfinite(indiv)
    diff = mem - indiv
    return {
        "n_groups_with_se": int(has_se.sum()), "n_groups_no_se": int((~has_se).sum()),
        "mean_group_mem": float(np.mean(mem[ok])) if ok.any() else float("nan"),
        "mean_member_mem": float(np.mean(indiv[ok])) if ok.any() else float("nan"),
        "median_group_se": float(np.median(se[has_se])) if has_se.any() else float("nan"),
        "n_groups_mem_ge_0.25": int(np.sum(at_least(mem[has_se], 0.25))),
        "n_groups_above_members_2se": int(np.sum(diff[ok] > 2 * se[ok])),
        "corr_group_vs_member": float(np.corrcoef(mem[ok], indiv[ok])[0, 1])
        if ok.sum() > 2 and np.ptp(mem[ok]) > 0 and np.ptp(indiv[ok]) > 0 else float("nan"),
        "max_group_mem": float(np.max(mem[has_se])) if has_se.any() else float("nan"),
    }


def _reading(s: dict) -> str:
    n_se, none = s["n_groups_with_se"], s["n_groups_no_se"]
    text = (
        f"{s['n_groups']} same-label groups ({s['groups_from']}; median size {s['median_group_size']:.0f}) were "
        f"kept or dropped whole in {s['trials']} trials (keep probability {s['q']:g}). "
    )
    if none:
        text += (f"{none} of them were kept or dropped in fewer than two trials, so their estimate has no standard "
                 f"error; they are left out of every figure below, which covers the other {n_se}. ")
    if not n_se:
        return text + "No group has a standard error: run more trials."
    return text + (
        f"Dropping a group costs its members on average {fmt(s['mean_group_mem'])} in accuracy (group "
        f"memorization; median SE {fmt(s['median_group_se'])}), while their individual memorization scores "
        f"average {fmt(s['mean_member_mem'])}. {s['n_groups_above_members_2se']} of {n_se} groups lie more than "
        f"2 SE above their members' mean individual score, and {s['n_groups_mem_ge_0.25']} reach group mem >= 0.25 "
        f"(largest {fmt(s['max_group_mem'])}); the correlation between the two is "
        f"{fmt(s['corr_group_vs_member'], 2)}. "
        + _verdict(s)
    )


#: a mean difference between group and member scores at most this large is called close
CLOSE = 0.05


def _verdict(s: dict) -> str:
    """The conclusion, from the share of groups whose mem lies 2 SE above their members' scores;
    "close" only when the mean difference is small, "not resolved" when merely not tested beyond noise."""
    n, k = s["n_groups_with_se"], s["n_groups_above_members_2se"]
    diff = s["mean_group_mem"] - s["mean_member_mem"]
    if n and k / n >= 0.5:
        return (f"{'Most' if k / n > 0.5 else 'Half of the'} groups ({k} of {n}) are memorized well beyond what single examples show: members of a "
                "subpopulation support each other, so leaving out one hides what leaving out all of them reveals.")
    if k:
        return (f"Only {k} of {n} groups are memorized beyond what their members' single scores show; for the "
                "others the difference is not resolved, so support among members of a subpopulation shows in a "
                "minority of groups here.")
    if np.isfinite(diff) and abs(diff) <= CLOSE:
        return (f"Group and individual scores are close (mean difference {fmt(diff)}): these groups do not hold "
                "much redundant memorized information.")
    return (f"No group lies 2 SE above its members' score, but the mean difference ({fmt(diff)}) is not small: it "
            "is not resolved at these trials; more trials would narrow the group SEs.")


def _figure(est: dict, indiv: np.ndarray, label: np.ndarray, s: dict, classes: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c in np.unique(label):
        sel = label == c
        ax.errorbar(indiv[sel], est["mem"][sel], yerr=est["se"][sel], fmt="o", ms=4, alpha=0.8, lw=0.8,
                    color=cmap(int(c) % cmap.N), label=f"class {classes[int(c)]}")
    lo = float(np.nanmin([0.0, np.nanmin(indiv), np.nanmin(est["mem"])]))
    hi = float(np.nanmax([np.nanmax(indiv), np.nanmax(est["mem"] + np.nan_to_num(est["se"]))])) + 0.02
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="group mem = mean member mem")
    ax.set_xlabel("mean individual memorization of the group's members (study scores)")
    ax.set_ylabel("group memorization mem(A, S, G) (± 1 SE)")
    ax.set_title(f"{s['n_groups']} groups, {s['trials']} group trials: mean {s['mean_group_mem']:.3f} (group) "
                 f"vs {s['mean_member_mem']:.3f} (members)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
