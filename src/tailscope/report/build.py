"""write_report: a static, self-contained HTML folder for one study."""

from __future__ import annotations

import contextlib
import math
import posixpath
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.data.duplicates import exact_duplicates
from tailscope.estimate import PAPER_INFL_THRESHOLD
from tailscope.report import figures, gallery
from tailscope.report.analyses import AnalysisEntry, collect_analyses
from tailscope.report.html import (
    anchor,
    esc,
    figure,
    fmt,
    is_num,
    markdown_paragraphs,
    page,
    pct,
    plural,
    sort_value,
    summary_value,
    url,
)
from tailscope.scores import Scores
from tailscope.store import child_location, left_by_dead_process, owner_tag, put_dir
from tailscope.study import Study

MEMORIZED_CAP = 48
TYPICAL_CAP = 48
PAIRS_CAP = 60
DUPLICATE_GROUPS_CAP = 12
DUPLICATE_MEMBERS_CAP = 24
N_FEATURES_SHOWN = 5
UNDERFIT_SHARE = 0.2  # training examples not fitted, as a share, from which the learner is said to underfit
MIN_CURVE_POINTS = 3  # fewer points on the precision curve show no trend


_IMAGE_DIRS = ("img", "figures", "analyses")  # with index.html, all a report folder holds
FIGURE_FILES = ("mem_hist.png", "mem_vs_infl.png", "precision.png")  # under figures/
# the files a report writes in each of those folders; anything else there is the user's, and a
# rewrite (which replaces the folder whole) would delete it
_WRITTEN = {
    "img": re.compile(r"(train|test)_\d+\.png").fullmatch,
    "figures": frozenset(FIGURE_FILES).__contains__,
    "analyses": re.compile(r"[^/]+\.png").fullmatch,  # one figure per analysis, named after its folder
}


CI_SENTENCE = ("The 95% interval is the Agresti&ndash;Caffo interval for a difference of two proportions "
               "(one success and one failure added to the trials with and without the example); unlike "
               "mem &plusmn; 1.96 SE it keeps its coverage when all trials agree.")


def write_report(study_or_path: Study | str | Path, out_dir: str | Path | None = None,
                 data: Dataset | None = None, scores: Scores | None = None) -> Path | str:
    """Write the HTML report of a study and return the path of its ``index.html``.

    Parameters
    ----------
    study_or_path : Study or path
        A study, or the directory of one (reopened with ``Study.open``, which reloads
        the dataset from its recorded source unless ``data`` is given).
    out_dir : path, optional
        Where to write; default ``<study>/report``. The folder holds ``index.html``,
        ``figures/``, ``img/`` (thumbnails of the examples shown) and ``analyses/``;
        it opens from disk with no network. The new report is rendered beside it and
        replaces the whole folder once complete (an interrupted run leaves the old one);
        a folder holding anything else, there or in those subfolders, is refused.
    data : Dataset, optional
        The study's dataset (needed when it cannot be reloaded from its source).
    scores : Scores, optional
        Default: ``<study>/scores`` if it exists, else estimated now (and saved).

    Returns
    -------
    Path or str
        ``out_dir / "index.html"``; for a study on an fsspec URL with no ``out_dir``,
        the report is built locally and copied to ``<study URL>/report``, and the URL
        of its ``index.html`` is returned.
    """
    if isinstance(study_or_path, Study):
        study = study_or_path
    elif isinstance(study_or_path, str | Path):
        study = Study.open(study_or_path, data=data)
    else:
        raise TypeError(f"write_report needs a Study or a study directory, got {type(study_or_path).__name__}.")
    data = data if data is not None else study.data
    if scores is None:
        try:
            scores = Scores.load(study.scores_dir)
        except FileNotFoundError:
            scores = study.estimate()
    if len(scores.mem) != data.n_train or len(scores.y_test) != data.n_test:
        raise ValueError(f"these scores cover {len(scores.mem)} training / {len(scores.y_test)} test examples "
                         f"but the dataset has {data.n_train} / {data.n_test}; pass the study's own data.")
    if out_dir is None and study.in_memory:
        raise ValueError(f"the study lives in this process's memory ({study.path}), where no browser can open "
                         "a report; pass out_dir, a local folder (e.g. write_report(study, 'report')).")
    dest = Path(out_dir) if out_dir is not None else child_location(study.path, "report")
    if isinstance(dest, str):  # a study on an fsspec URL: build locally, then copy it there
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp, "report")
            _write(study, data, scores, local)
            _publish(local, Path(tmp, "index.html"), dest)
        return dest + "/index.html"
    _check_replaceable(dest)
    # rendered beside the old report and swapped in whole once complete, so that an
    # interrupted run leaves the old report intact (its page never points at deleted images)
    real = dest.resolve()  # a symlinked folder is replaced where it points
    real.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(real)
    tmp = real.with_name(f"{real.name}.tmp-{owner_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)  # ours from a reused pid
    try:
        _write(study, data, scores, tmp)
        _swap(tmp, real)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / "index.html"


def _check_replaceable(dest: Path) -> None:
    """Refuse (before rendering) a folder holding anything but a report: it is replaced whole."""
    with contextlib.suppress(OSError):
        if dest.resolve() in (Path.cwd(), *Path.cwd().parents):  # moving it away would strand the shell
            raise ValueError(f"report folder {dest} is (or holds) the current directory; pass another folder.")
    if not dest.exists():
        return
    other = _foreign_files(dest) if dest.is_dir() else None
    if other is None or other:
        what = "is a file" if other is None else f"holds other files ({', '.join(other[:5])})"
        raise ValueError(f"report folder {dest} {what}; the report replaces the whole folder, which would "
                         "delete them. Pass a new folder (an earlier report may be replaced).")


def _foreign_files(dest: Path) -> list[str]:
    """What a report folder holds that no report wrote, as paths relative to it (sorted).

    Files a file browser leaves (.DS_Store, Thumbs.db, desktop.ini) go with the folder.
    """
    other = []
    for p in sorted(dest.iterdir()):
        if _browser_litter(p.name) or p.name == "index.html":
            continue
        if p.name not in _WRITTEN or not p.is_dir():
            other.append(p.name)
            continue
        other += [f"{p.name}/{f.name}" for f in sorted(p.iterdir())
                  if not (_browser_litter(f.name) or (f.is_file() and _WRITTEN[p.name](f.name)))]
    return other


def shown_path(path) -> str:
    """A study path as a report shows it: relative to the working directory when inside it (reports
    are shared; an absolute path tells readers about the author's home folder), URLs as they are."""
    text = str(path)
    if "://" in text:
        return text
    try:
        return str(Path(text).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return text


def _browser_litter(name: str) -> bool:
    """Files a file browser leaves in a folder it showed (other dotfiles, e.g. .git, are the user's)."""
    return name in (".DS_Store", ".localized") or name.startswith("._") or name.lower() in ("thumbs.db", "desktop.ini")


def _remove_leftovers(real: Path) -> None:
    """Delete temporary folders of killed runs on this host (those of running ones are kept)."""
    for kind in ("tmp", "old"):
        prefix = f"{real.name}.{kind}-"
        for p in real.parent.glob(f"{prefix}*"):
            if left_by_dead_process(p.name[len(prefix):]):
                shutil.rmtree(p, ignore_errors=True)


def _swap(new: Path, dest: Path) -> None:
    """Put the folder ``new`` in the place of ``dest``: the old one is moved aside, then deleted."""
    old = None
    if dest.exists():
        old = dest.with_name(f"{dest.name}.old-{owner_tag()}")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        if old is not None:  # put the old report back
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _publish(local: Path, index_aside: Path, url: str) -> None:
    """Copy a report built in ``local`` to ``url``: images, then index.html, then delete stale images.

    Object stores cannot swap a folder, so the order keeps every image the remote page
    references present if the copy is interrupted.
    """
    import fsspec

    (local / "index.html").rename(index_aside)
    put_dir(local, url)
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    fs.put_file(str(index_aside), root + "/index.html")
    for sub in _IMAGE_DIRS:
        keep = {p.name for p in (local / sub).glob("*.png")}
        for f in fs.glob(f"{root}/{sub}/*.png"):
            if posixpath.basename(f) not in keep:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(f)


def _write(study: Study, data: Dataset, scores: Scores, out: Path) -> Path:
    out.mkdir(parents=True)
    (out / "figures").mkdir()
    store = study.store
    # the store's counts, not the scores': it may have grown (more trials done or planned) since
    builder = _Builder(study, data, scores, out, int(store.done().sum()), int(store.trials))
    index = out / "index.html"
    index.write_text(builder.render(), encoding="utf-8")
    return index


def learner_label(config: dict) -> str:
    """A short name for the study's learner, from its recorded config."""
    source = (config.get("source") or {}).get("learner")
    if source and source.get("name"):
        opts = ", ".join(f"{k}={v}" for k, v in (source.get("options") or {}).items())
        return f"{source['name']} ({opts})" if opts else str(source["name"])
    spec = config.get("learner") or {}
    if spec.get("kind") == "sklearn":
        return "scikit-learn " + str(spec.get("estimator", "?")).rsplit(".", 1)[-1]
    if spec.get("learner") == "torch_population":
        return f"torch {spec.get('model')} ({spec.get('epochs')} epochs)"
    if spec.get("kind") in ("synthetic", "callable"):
        return f"{spec['kind']} {spec.get('name', '')}".strip()
    return str(spec.get("kind") or spec.get("learner") or "unknown")


class _Builder:
    def __init__(self, study: Study, data: Dataset, scores: Scores, out: Path, done: int, planned: int):
        self.study, self.data, self.s, self.out = study, data, scores, out
        self.done, self.planned = done, planned
        self.summary = scores.summary()
        self.config = scores.config or study.config
        self.classes = list(scores.classes)
        self.images = data.is_image
        self.thumbs = gallery.Thumbnails(data, out) if self.images else None
        self.dups = exact_duplicates(data)
        self.dup_counts = self.dups.summary(data)

    # ------------------------------------------------------------- helpers
    def se_coverage_text(self) -> str:
        """What the largest SE covers: every example, or only those with an SE."""
        missing = int((~np.isfinite(self.s.mem_se)).sum())
        if not missing:
            return "every example's estimate has an SE at most this"
        return (f"over the examples with an SE; {fmt(missing)} have none (n/a: in every or no trial, or in or "
                "out of fewer than 2)")

    def max_se_bound_text(self) -> str:
        """A note when the largest SE of mem exceeds the theoretical bound printed just above it (HTML; "" if not)."""
        top, bound = self.summary.get("max_mem_se"), self.summary.get("se_bound")
        if not (is_num(top) and is_num(bound) and math.isfinite(top) and math.isfinite(bound)) or top <= bound:
            return ""
        return (f'<br><span class="muted">Above the theoretical bound {fmt(bound, 4)}: the bound is on the standard '
                "deviation of an estimate for an example in exactly qt of t trials, with many trials in and out; "
                "with the uniform design an example's count in and out varies, and with few trials an example's "
                "plug-in SE (from sample variances) can exceed it (see the precision section).</span>")

    def ci_text(self, i: int) -> str:
        """The 95% interval of example i's mem, as "[low, high]" (n/a without one)."""
        lo, hi = self.s.mem_ci_low[i], self.s.mem_ci_high[i]
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return "n/a"
        return f"[{fmt(lo, 2)}, {fmt(hi, 2)}]"

    def ci_summary_text(self) -> str:
        """The summary row on the 95% intervals of mem (HTML)."""
        s = self.s
        if self.summary["median_mem_ci_width"] is None:
            return "n/a (no example was both in and out of some trials)"
        width = np.asarray(s.mem_ci_high, float) - np.asarray(s.mem_ci_low, float)
        text = f"median width {fmt(self.summary['median_mem_ci_width'], 3)}"
        zero = np.isfinite(s.mem_se) & (s.mem_se == 0) & np.isfinite(width)
        if zero.any():
            text += (f"; the {fmt(int(zero.sum()))} examples with SE 0 (every trial agreed) still have intervals "
                     f"about {fmt(float(np.median(width[zero])), 3)} wide: SE 0 does not mean mem is known exactly")
        return text + ". " + CI_SENTENCE

    def pairs_noise_text(self) -> str:
        """One sentence on the estimated share of noise among the kept pairs (HTML; empty if not recorded)."""
        share, null, neg = self.s.pairs_false_share_est, self.s.n_pairs_null, self.s.n_pairs_negative
        if share is None or self.s.infl_threshold is None:
            return ""
        t = fmt(self.s.infl_threshold, 3)
        found = int(self.s.options.get("pairs_found", len(self.s.pairs)))
        if null is None and not neg:  # scores made before the null count; "about 0%" would read as measured
            return (f"No pair reached infl &le; &minus;{t}, so the mirror check saw no sign of noise among the "
                    f"{plural(found, 'pair')} found at infl &ge; {t}; it misses noise when test examples are almost "
                    "always right: re-estimate the study for the null count.")
        if null is None:  # scores made before the null count: the mirror count at -threshold
            return (f"About {pct(share, 0)} of the {plural(found, 'pair')} found at infl &ge; {t} are expected to be "
                    f"noise by the mirror count ({plural(int(neg), 'pair')} at infl &le; &minus;{t}), which misses "
                    "noise when test examples are almost always right; re-estimate the study for the null count.")
        return (f"About {pct(share, 0)} of the {plural(found, 'pair')} found at infl &ge; {t} are expected to be "
                f"noise at this number of trials, fewer among the largest: {fmt(null, 1)} pairs would reach it by "
                "chance if no training example influenced any test example (the exact count under that null, given "
                "how often each test example is right)" + ("; run more trials to sharpen." if share >= 0.1 else "."))

    def infl_threshold_text(self) -> str:
        """The influence threshold these scores were estimated with, in words (HTML)."""
        t = self.s.infl_threshold
        if t is None:  # scores saved before the options were recorded
            return "its influence threshold (not recorded with these scores; the paper's is 0.15)"
        same = self.s.options.get("same_class")
        scope = " between examples of the same class" if same else (
            " across classes too" if same is False else "")
        paper = "the paper's threshold" if math.isclose(t, PAPER_INFL_THRESHOLD) else "the paper uses 0.15"
        return f"infl &ge; {fmt(t, 3)}{scope} ({paper})"

    def cname(self, c) -> str:
        c = int(c)
        return self.classes[c] if 0 <= c < len(self.classes) else str(c)

    def features(self, split: str, i: int) -> str:
        x = self.data.x_train if split == "train" else self.data.x_test
        row = np.asarray(x[int(i)]).reshape(-1)
        names = self.data.meta.get("feature_names") or []
        names = names if len(names) == len(row) else [None] * len(row)  # (names of other data: not shown)
        vals = ", ".join(f"{float(v):.3g}" if n is None else f"{n}={float(v):.3g}"
                         for n, v in zip(names[:N_FEATURES_SHOWN], row[:N_FEATURES_SHOWN], strict=True))
        return vals + (", ..." if len(row) > N_FEATURES_SHOWN else "")

    def row_head(self, title: str) -> str:
        """A column header for the examples' rows in the user's data (where recorded)."""
        if self.s.train_row is None:
            return ""
        return (f'<th data-sort class="num" title="the example\'s row in the data file or arrays, counted from 0">'
                f"{esc(title)}</th>")

    def split_text(self) -> str:
        """Where a table's labels and train/test split came from (HTML; empty for other data)."""
        meta = self.data.meta
        parts = []
        if meta.get("label_column"):
            parts.append(f"label column <code>{esc(meta['label_column'])}</code>")
        dropped = (meta.get("spec_options") or {}).get("drop")
        if dropped:
            parts.append(f"left out: <code>{esc(dropped if isinstance(dropped, str) else ', '.join(dropped))}</code>")
        if isinstance(meta.get("split"), dict) and meta["split"].get("key"):
            parts.append(f"train/test split given by <code>{esc(meta['split']['key'])}</code>")
        elif "test_fraction" in meta and "split_seed" in meta:
            parts.append(f"stratified split made by tailscope (test_fraction {fmt(meta['test_fraction'], 2)}, "
                         f"split_seed {esc(meta['split_seed'])})")
        return ("; " + "; ".join(parts)) if parts else ""

    def row_tag(self, i: int) -> str:
        """' · row r' after a card's split position, where rows are recorded."""
        return "" if self.s.train_row is None else f" &middot; row {int(self.s.train_row[int(i)])}"

    def row_note(self) -> str:
        """What the 'row in data' column holds (tables only, where recorded), for a section's lead."""
        if not self.row_head("row"):
            return ""
        if self.images:
            return (" <b>row</b> is the example's position in your file or arrays, counted from 0 "
                    "(<code>x[row]</code>); <b>#</b> is its position in the training or test split.")
        return (" <b>row in data</b> is the example's position in your file or arrays, counted from 0 (the first "
                "row after a CSV's header; <code>df.iloc[row]</code>, not <code>df.loc</code>); <b>index</b> is its "
                "position in the training or test split.")

    def row_cell(self, split: str, i: int) -> str:
        if self.s.train_row is None:
            return ""
        r = int((self.s.train_row if split == "train" else self.s.test_row)[int(i)])
        return f'<td class="num" data-v="{r}">{r}</td>'

    def img(self, split: str, i: int, alt: str, cls: str = "thumb") -> str:
        src = self.thumbs(split, i)
        return f'<img class="{cls}" src="{url(src)}" alt="{esc(alt)}">'

    def out_pred_text(self, i: int) -> str:
        if self.s.n_out[i] <= 0:
            return "n/a (never held out)"
        return f"{esc(self.cname(self.s.out_pred[i]))} ({pct(self.s.out_pred_share[i], 0)})"

    # ------------------------------------------------------------- sections
    def render(self) -> str:
        analyses = collect_analyses(self.study.path, self.out)
        sections = [self.sec_summary(), self.sec_histogram(), self.sec_memorized(), self.sec_typical(),
                    self.sec_not_fitted(), self.sec_influence(), self.sec_scatter(), self.sec_precision()]
        nav = [("summary", "Summary"), ("memorization", "Memorization"), ("memorized", "Most memorized"),
               ("typical", "Typical"), ("not-fitted", "Not fitted"), ("influence", "Influence pairs"),
               ("mem-vs-influence", "Mem vs influence"), ("precision", "Precision")]
        if self.dups.n_groups or self.dups.n_test_with_copy:
            sections.append(self.sec_duplicates())
            nav.append(("duplicates", "Duplicates"))
        if analyses:
            sections.append(self.sec_analyses(analyses))
            nav.append(("analyses", "Analyses"))
        name = (self.config.get("source") or {}).get("name") or self.data.name
        title = f"tailscope report: {name}"
        subtitle = (f"Memorization and influence estimates (Feldman &amp; Zhang, NeurIPS 2020) from "
                    f"{fmt(int(self.s.trials))} trained models &middot; study <code>{esc(shown_path(self.study.path))}</code>")
        from tailscope import __version__

        footer = (f"Written by tailscope {esc(__version__)}. Every number on this page comes from the study's "
                  f"scores (<code>{esc(shown_path(self.study.scores_dir))}</code>) and its recorded config; "
                  f"memorized means mem &ge; 0.25 (the paper's threshold); high influence means "
                  f"{self.infl_threshold_text()}.")
        return page(title, subtitle, nav, sections, footer)

    def sec_summary(self) -> str:
        s, cfg = self.summary, self.config
        dcfg, design = cfg.get("dataset") or {}, cfg.get("design") or {}
        name = (cfg.get("source") or {}).get("name") or self.data.name
        shape = self.data.image_shape
        kind = (f"images {'x'.join(str(v) for v in shape)}" if shape
                else f"{int(np.prod(self.data.x_train.shape[1:]))} features")
        design_text = str(design.get("kind", "?"))
        if design.get("kind") == "balanced" and design.get("block"):
            design_text += f" (blocks of {fmt(int(design['block']))} trials)"
        stats = [
            ("trials", fmt(int(s["trials"])),
             "trials (trained models)" if self.done == s["trials"] else "trials behind these scores"),
            ("mean_acc_in", pct(s["mean_acc_in"]), "accuracy on examples a model trained on"),
            ("mean_acc_out", pct(s["mean_acc_out"]), "accuracy on training examples it did not see"),
            ("mean_test_acc", pct(s["mean_test_acc"]), "test accuracy (mean over models)"),
            ("n_mem", f"{fmt(s['n_mem_ge_0.25'])}", f"memorized (mem \u2265 0.25), {pct(s['frac_mem_ge_0.25'])}"),
            # the interval, not the SE: with most examples always right the median SE is 0
            ("median_mem_ci_width", fmt(s.get("median_mem_ci_width"), 3),
             "median width of mem's 95% interval" + self.bound_width_text()),
        ]
        cards = "".join(f'<div class="stat" data-key="{esc(k)}"><div class="v">{esc(v)}</div>'
                        f'<div class="k">{esc(label)}</div></div>' for k, v, label in stats)
        rows = [
            ("dataset", "Dataset", f"{esc(name)}: {fmt(int(dcfg.get('n_train', self.data.n_train)))} train, "
                                   f"{fmt(int(dcfg.get('n_test', self.data.n_test)))} test, "
                                   f"{fmt(len(self.classes))} classes, {esc(kind)}" + self.missing_text()
                                   + self.split_text()),
            ("learner", "Learner", esc(learner_label(cfg))),
            ("trials", "Trials done", self.trials_text()),
            ("ratio", "Subset ratio q and design",
             f"q = {esc(fmt(s['ratio'], 2))} (each model trains on {pct(s['ratio'], 0)} of the training set), "
             f"{esc(design_text)} design, seed {esc(design.get('seed', '?'))}"),
            ("mean_acc_in", "Mean accuracy on examples models trained on", pct(s["mean_acc_in"], 2)),
            ("mean_acc_out", "Mean accuracy on training examples held out", pct(s["mean_acc_out"], 2)),
            ("mean_test_acc", "Mean test accuracy", pct(s["mean_test_acc"], 2)),
            ("median_mem_se", "Median standard error of mem",
             f"<span class=\"v\">{fmt(s['median_mem_se'], 4)}</span> (theoretical bound "
             f"<span class=\"b\">{fmt(s['se_bound'], 4)}</span>)"),
            ("max_mem_se", "Largest standard error of mem",
             f"{fmt(s.get('max_mem_se'), 4)} (" + self.se_coverage_text()
             + "; examples every model gets right have SE 0, which pulls the median down: see the 95% "
             "intervals below)" + self.max_se_bound_text()),
            ("mem_ci", "95% confidence intervals of mem", self.ci_summary_text()),
            ("n_mem", "Memorized examples (mem \u2265 0.25)",
             f"{fmt(s['n_mem_ge_0.25'])} of {fmt(s.get('n_mem_estimated', s['n_train']))} with an estimate "
             f"({pct(s['frac_mem_ge_0.25'], 2)})"),
            ("n_pairs", "High-influence pairs kept",
             f"{fmt(s['n_pairs'])} ({self.infl_threshold_text()})"
             + (f"<br>{self.pairs_noise_text()}" if self.pairs_noise_text() else "")),
            ("min_counts", "Fewest trials with / without an example",
             f"{fmt(s['min_n_in'])} / {fmt(s['min_n_out'])}"),
            ("duplicates", "Exact duplicate inputs", self.duplicates_text()),
        ]
        table = "".join(f'<tr data-key="{esc(k)}"><td>{esc(label)}</td><td>{v}</td></tr>' for k, label, v in rows)
        notes = []
        if self.done > self.s.trials:
            notes.append(f'<p class="note warn">The trial store has {fmt(self.done)} done trials but these scores '
                         f"come from {fmt(int(self.s.trials))}: run <code>tailscope estimate</code> to update them.</p>")
        notes.append(self.few_trials_note())
        return (
            '<section id="summary"><h2>Summary</h2>'
            '<p class="lead">Each of the trained models saw a random subset of the training set. An example is '
            "<em>memorized</em> when models that trained on it classify it correctly much more often than models "
            "that did not: mem = accuracy with it &minus; accuracy without it. The gap between the two accuracies "
            "below is roughly the average memorization.</p>"
            f'<div class="cards">{cards}</div><table class="kv">{table}</table>{"".join(notes)}</section>'
        )

    def trials_text(self) -> str:
        """The "Trials done" row: the trials behind the scores and, when it differs, the store's count."""
        n, of = int(self.s.trials), f"of {fmt(self.planned)} planned"
        if self.done == n:
            return f"{fmt(n)} {of}"
        return f"scores from {plural(n, 'trial')}; {fmt(self.done)} done in the store, {of}"

    def bound_width_text(self) -> str:
        """The SE bound as an interval width, so the card compares widths with widths (plain text)."""
        bound = self.summary["se_bound"]
        if bound is None or not math.isfinite(bound):
            return ""
        return f" (\u00b11.96 \u00d7 SE bound {fmt(bound, 3)}: {fmt(2 * 1.96 * bound, 3)} wide)"

    def few_trials_note(self) -> str:
        """A warning naming how many examples have no SE for want of trials ("" when none; HTML).

        An SE needs an example in 2 trials and out of 2: at 3 trials no example has both.
        """
        few = int(((np.asarray(self.s.n_in) < 2) | (np.asarray(self.s.n_out) < 2)).sum())
        if not few:
            return ""
        if few == len(self.s.n_out):
            who, whose = "All training examples were", "so no mem has a standard error"
        else:
            who = f"{plural(few, 'training example')} {'was' if few == 1 else 'were'}"
            whose = "so their mem has no standard error"
        return (f'<p class="note warn">{who} in fewer than 2 trials or out of fewer than 2, {whose} '
                "(shown as n/a); more trials fix this.</p>")

    def missing_text(self) -> str:
        """", N training and M test rows with missing values (NaN)", or "" when there are none."""
        n_train, n_test = self.data.missing_rows
        if not (n_train or n_test):
            return ""
        return (f"; {fmt(n_train)} training and {fmt(n_test)} test rows have missing values (NaN), "
                "which the learner handled itself")

    def duplicates_text(self) -> str:
        """The summary row on identical inputs (HTML)."""
        d = self.dup_counts
        if not d["groups"] and not d["test_with_train_copy"]:
            return "none (no two training inputs are identical, and no test input is a training input)"
        parts = []
        if d["groups"]:
            parts.append(f"{fmt(d['train_in_groups'])} training examples in {plural(d['groups'], 'group')} of "
                         f"identical inputs, {fmt(d['conflicting_groups'])} of them with different labels (likely label "
                         "errors); a duplicated example's mem is lowered, since models trained without one copy "
                         "usually saw another")
        if d["test_with_train_copy"]:
            parts.append(f"test examples identical to a training example: {fmt(d['test_with_train_copy'])}"
                         + (f" ({fmt(d['test_copy_other_label'])} with another label)" if d["test_copy_other_label"]
                            else ""))
        return "; ".join(parts) + ' (<a href="#duplicates">see below</a>).'

    def sec_duplicates(self) -> str:
        dups = self.dups
        conflicting = set(dups.conflicting_groups.tolist())
        sizes = np.bincount(dups.train_group[dups.train_group >= 0], minlength=dups.n_groups)
        # groups with different labels first, then the largest
        order = sorted(range(dups.n_groups), key=lambda g: (g not in conflicting, -sizes[g], g))
        shown = order[:DUPLICATE_GROUPS_CAP]
        lead = (f"Training examples whose inputs are byte-for-byte identical ({plural(dups.n_groups, 'group')}"
                + (f", the first {fmt(len(shown))} shown" if len(shown) < dups.n_groups else "")
                + "; groups whose copies carry different labels first). Copies with one label have low mem, "
                "since models trained without one copy usually trained on another; copies with different "
                "labels point to label errors. "
                "<code>ts.exact_duplicates(data)</code> lists them all.") if dups.n_groups else (
                "No two training inputs are identical, but some test inputs equal a training input.")
        blocks = []
        for number, g in enumerate(shown, start=1):
            members = dups.members(g)
            tag = " (labels differ)" if g in conflicting else ""
            more = (f'<p class="note">and {plural(len(members) - DUPLICATE_MEMBERS_CAP, "more copy", "more copies")}</p>'
                    if len(members) > DUPLICATE_MEMBERS_CAP else "")
            blocks.append(f'<h3>Group {fmt(number)}: {fmt(len(members))} copies{tag} '
                          f'<span class="muted">(train_group {int(g)} in ts.exact_duplicates)</span></h3>'
                          + self.examples(members[:DUPLICATE_MEMBERS_CAP], f"duplicates-{int(g)}") + more)
        tests = ""
        if dups.n_test_with_copy:
            d = self.dup_counts
            other = (f" ({fmt(d['test_copy_other_label'])} of them with another label)"
                     if d["test_copy_other_label"] else "")
            tests = ('<h3>Test examples identical to a training example</h3><p class="note">'
                     f'{fmt(d["test_with_train_copy"])}{other}; their influence comes mostly from that copy '
                     "(different labels first).</p>" + self.test_copies_table())
        return (f'<section id="duplicates"><h2>Exact duplicates</h2><p class="lead">{lead}</p>'
                + "".join(blocks) + tests + "</section>")

    def test_copies_table(self) -> str:
        """Test examples with a training copy: each beside its copy, labels differing first (capped)."""
        copy_of = self.dups.test_copy_of
        tests = np.flatnonzero(copy_of >= 0)
        differs = self.s.y_train[copy_of[tests]] != self.s.y_test[tests]
        tests = tests[np.lexsort((tests, ~differs))][:DUPLICATE_MEMBERS_CAP]
        imgs = "<th>test example</th><th>training copy</th>" if self.images else ""
        rows = []
        for j in tests:
            i = int(copy_of[j])
            pics = (f"<td>{self.img('test', int(j), f'test example {j}')}</td>"
                    f"<td>{self.img('train', i, f'training example {i}')}</td>") if self.images else ""
            rows.append(f'<tr>{pics}<td class="num">{int(j)}</td>{self.row_cell("test", int(j))}'
                        f'<td>{esc(self.cname(self.s.y_test[j]))}</td>'
                        f'<td class="num">{i}</td>{self.row_cell("train", i)}<td>{esc(self.cname(self.s.y_train[i]))}</td>'
                        "</tr>")
        more = (f'<p class="note">and {fmt(self.dups.n_test_with_copy - len(tests))} more</p>'
                if self.dups.n_test_with_copy > len(tests) else "")
        return (f'<table class="examples" data-gallery="test-copies"><thead><tr>{imgs}<th>test #</th>'
                + self.row_head("test row") + "<th>test label</th><th>train #</th>" + self.row_head("train row")
                + "<th>train label</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>{more}")

    def sec_histogram(self) -> str:
        path = figures.mem_histogram(self.s, self.out / "figures" / "mem_hist.png")
        s = self.summary
        n_est = s.get("n_mem_estimated", s["n_train"])
        unestimated = (f"(of {fmt(s['n_train'])}; the others were never held out, or never trained on) "
                       if n_est < s["n_train"] else "")
        cap = (f"Distribution of the memorization estimates of the {fmt(n_est)} training examples that have one "
               + unestimated + f"(log scale; {self.near_zero_text()}). The dashed line is the paper's "
               f"threshold 0.25; {fmt(s['n_mem_ge_0.25'])} examples ({pct(s['frac_mem_ge_0.25'], 2)}) lie at or "
               "above it." + (" Negative values are estimation noise around 0."
                              if np.nanmin(np.asarray(self.s.mem, float), initial=0.0) < 0 else ""))
        return ('<section id="memorization"><h2>Memorization estimates</h2>'
                + figure(f"figures/{path.name}", "histogram of memorization estimates", cap) + "</section>")

    def near_zero_text(self) -> str:
        """How many estimates sit near 0 and what that means here, from the numbers, not assumed: near 0
        is 'learned from its class' only where the models get the example right."""
        mem = np.asarray(self.s.mem, float)
        ok = np.isfinite(mem)
        near_mask = ok & (np.abs(np.where(ok, mem, 0)) < gallery.NEAR_ZERO)
        near = int(near_mask.sum())
        where = f"within {gallery.NEAR_ZERO:g} of 0"
        if not near:
            return f"no example sits {where}"
        share = near / int(ok.sum())
        text = f"most examples ({pct(share)}) sit {where}" if share > 0.5 else f"only {fmt(near)} ({pct(share)}) sit {where}"
        unlearned = int((near_mask & ~gallery.learned(self.s)).sum())
        if not unlearned:
            return text + ", learned from their class"
        return (text + f"; {fmt(near - unlearned)} of them are learned from their class, while {fmt(unlearned)} are "
                "misclassified by most models with or without them (not learned at all, so there is nothing to "
                "memorize)")

    def sec_memorized(self) -> str:
        idx, above = gallery.most_memorized(self.s, MEMORIZED_CAP)
        n_above = self.summary["n_mem_ge_0.25"]
        if above:
            lead = (f"The {fmt(len(idx))} most memorized training examples "
                    + (f"(of {fmt(n_above)} with mem &ge; 0.25)" if n_above > len(idx) else "(all with mem &ge; 0.25)")
                    + f", highest first. {'Under each' if self.images else 'Each row'}: the label it was given, "
                    "mem &plusmn; standard error, its 95% interval, and the label the models that did not train on "
                    "it predict most often, with its share (its own label when they mostly get it right)"
                    + ("" if self.images else f", then its first {N_FEATURES_SHOWN} features")
                    + ". " + CI_SENTENCE + " "
                    "Atypical, ambiguous or mislabeled examples are learned only by fitting them individually.")
        else:
            lead = (f"No training example reaches mem &ge; 0.25; these are the {fmt(len(idx))} with the highest "
                    "estimates.")
        lead += self.row_note()
        body = self.examples(idx, "memorized")
        return f'<section id="memorized"><h2>Most memorized training examples</h2><p class="lead">{lead}</p>{body}</section>'

    def sec_typical(self) -> str:
        idx, _ = gallery.most_memorized(self.s, MEMORIZED_CAP)
        classes = np.unique(self.s.y_train[idx]) if len(idx) else np.unique(self.s.y_train)
        per_class = max(2, min(8, TYPICAL_CAP // max(len(classes), 1)))
        sel = gallery.typical_examples(self.s, classes, per_class, TYPICAL_CAP)
        lead = "For contrast: " + self.typical_text(sel, per_class) + self.typical_missing_text(classes, sel)
        return (f'<section id="typical"><h2>Typical examples of the same classes</h2><p class="lead">{lead}</p>'
                f"{self.examples(sel, 'typical')}</section>")

    def sec_not_fitted(self) -> str:
        idx, total = gallery.not_fitted(self.s, MEMORIZED_CAP)
        head = '<section id="not-fitted"><h2>Training examples the models do not fit</h2>'
        if not total:
            return (head + '<p class="lead">Every training example is classified correctly by most of the models '
                    "that trained on it.</p></section>")
        s = self.s
        wrong_label = int(np.sum((s.out_pred[idx] != s.y_train[idx]) & (s.out_pred_share[idx] >= 0.9)))
        lead = (f"{fmt(total)} training {'example is' if total == 1 else 'examples are'} misclassified by most of the "
                f"models that trained on {'it' if total == 1 else 'them'} (accuracy with the example below 50%)"
                + (f"; the {fmt(len(idx))} fitted least are shown" if total > len(idx) else "")
                + ", fewest right first. Memorization flags them poorly: training on an example the learner cannot "
                "fit helps it little, so its mem stays low. When the models that did not train on it agree on "
                "another class, its label may be wrong"
                + (f" ({fmt(wrong_label)} of those shown: held-out models predict another class at least 90% of the "
                   "time)" if wrong_label else "")
                + "; otherwise the learner may be too weak for it (a more flexible one memorizes such examples "
                "instead, and they appear above)." + self.one_class_text(idx) + self.underfit_text(total)
                + " Each shows mem &plusmn; SE and what held-out models predict." + self.row_note())
        return head + f'<p class="lead">{lead}</p>{self.examples(idx, "not-fitted")}</section>'

    def underfit_text(self, total: int) -> str:
        """A note when the learner fits few of its training examples overall (then this list shows where it
        fails more than which labels are wrong)."""
        share = total / max(len(self.s.mem), 1)
        if share < UNDERFIT_SHARE:
            return ""
        return (f" The learner underfits overall: {pct(share, 0)} of the training examples are not fitted, so this "
                "list mostly shows where it fails, not which labels are wrong; a more flexible learner (or more "
                "epochs) would tell them apart.")

    def one_class_text(self, idx: np.ndarray) -> str:
        """A warning when most examples shown are predicted as one class by held-out models: a learner
        that predicts mostly one class puts every other class's examples here, whatever their labels."""
        if len(idx) < 5:
            return ""
        values, counts = np.unique(self.s.out_pred[idx], return_counts=True)
        if counts.max() < 0.8 * len(idx):
            return ""
        c = values[np.argmax(counts)]
        return (f" But held-out models predict {esc(self.cname(c))} for {pct(counts.max() / len(idx), 0)} of them: a "
                "learner that predicts mostly one class lists the other classes' examples here whatever their "
                "labels, so this points to the learner rather than to the labels.")

    def typical_missing_text(self, classes: np.ndarray, sel: np.ndarray) -> str:
        """Which classes of the memorized examples have no typical example shown, and why ("" if none)."""
        y = self.s.y_train
        candidate = gallery.typical_candidates(self.s)
        empty = [c for c in classes if not (candidate & (y == c)).any()]
        capped = len(classes) - len(empty) - len(np.unique(y[sel]))
        text = ""
        if empty and len(sel):
            text += (f" {fmt(len(empty))} of the {plural(len(classes), 'class', 'classes')} "
                     f"{'has' if len(empty) == 1 else 'have'} no example with mem below 0.25 to show.")
        if capped:  # many classes: per_class * classes passes the cap
            text += (f" {plural(capped, 'class', 'classes')} of the memorized examples "
                     f"{'is' if capped == 1 else 'are'} not shown: the section holds at most {fmt(TYPICAL_CAP)} "
                     "examples.")
        return text

    def typical_text(self, sel: np.ndarray, per_class: int) -> str:
        """What the typical examples shown are, worded from their estimates (HTML)."""
        if not len(sel):
            return "no example of these classes has a memorization estimate below 0.25, so none is shown."
        what = f"up to {fmt(per_class)} examples per class, of the same classes, whose memorization estimate is closest to 0"
        far = float(np.max(np.abs(self.s.mem[sel])))
        if far < gallery.NEAR_ZERO:
            within = "have mem 0" if far == 0 else f"lie within {fmt(far, 3)} of 0"
            return (f"{what} (models classify them about equally well whether or not they trained on them); all "
                    f"shown {within}.")
        return (f"{what}. Not all are near 0 in this study: the estimates shown reach |mem| = {fmt(far, 3)}, so some "
                "of these are also learned mostly by training on them.")

    def examples(self, idx: np.ndarray, what: str) -> str:
        s = self.s
        if not len(idx):
            return '<p class="note">No examples to show.</p>'
        if self.images:
            cards = []
            for i in idx:
                i = int(i)
                tip = (f"trained on in {s.n_in[i]} trials, held out of {s.n_out[i]}; correct "
                       f"{pct(s.acc_in[i], 0)} with it, {pct(s.acc_out[i], 0)} without")
                cards.append(
                    f'<figure class="card" title="{esc(tip)}">'
                    + self.img("train", i, f"training example {i}, label {self.cname(s.y_train[i])}")
                    + f'<figcaption class="cap"><span class="lab">{esc(self.cname(s.y_train[i]))}</span> '
                    f'<span class="muted">#{i}{self.row_tag(i)}</span><br><span class="nw">mem <span class="mem">{fmt(s.mem[i])}</span>'
                    f' &plusmn; {fmt(s.mem_se[i])}</span><br><span class="ci">95% CI {self.ci_text(i)}</span>'
                    f'<br><span class="muted">held out &rarr;</span> {self.out_pred_text(i)}'
                    "</figcaption></figure>")
            return f'<div class="gallery" data-gallery="{esc(what)}">' + "".join(cards) + "</div>"
        row_head = self.row_head("row in data")
        head = ("<tr><th data-sort class=\"num\">index</th>" + row_head + "<th data-sort>label</th>"
                "<th data-sort class=\"num\">mem</th>"
                "<th data-sort class=\"num\">SE</th><th data-sort class=\"num\">95% CI</th>"
                "<th>held-out models predict</th>"
                f"<th>first {N_FEATURES_SHOWN} features</th></tr>")
        rows = []
        for i in idx:
            i = int(i)
            rows.append(
                f'<tr><td class="num" data-v="{i}">{i}</td>{self.row_cell("train", i)}'
                f'<td data-v="{esc(self.cname(s.y_train[i]))}">'
                f'{esc(self.cname(s.y_train[i]))}</td><td class="num mem" data-v="{sort_value(s.mem[i])}">'
                f'{fmt(s.mem[i])}</td><td class="num" data-v="{sort_value(s.mem_se[i])}">{fmt(s.mem_se[i])}</td>'
                f'<td class="num ci" data-v="{sort_value(s.mem_ci_low[i])}">{self.ci_text(i)}</td>'
                f"<td>{self.out_pred_text(i)}</td><td><code>{esc(self.features('train', i))}</code></td></tr>")
        return (f'<table class="sortable examples" data-gallery="{esc(what)}"><thead>{head}</thead>'
                f"<tbody>{''.join(rows)}</tbody></table>")

    def sec_influence(self) -> str:
        s = self.s
        total = len(s.pairs)
        top = gallery.top_pairs(s, PAIRS_CAP)
        if not total:
            return ('<section id="influence"><h2>High-influence pairs</h2><p class="lead">The estimate kept no '
                    f"train/test pairs: none reached {self.infl_threshold_text()}.</p></section>")
        lead = (f"Training examples that a test prediction leans on: infl = how much more often models that trained "
                f"on the training example classify the test example correctly. The estimate kept "
                f"{fmt(total)} pairs at {self.infl_threshold_text()}. "
                + (self.pairs_noise_text() + " " if self.pairs_noise_text() else "")
                + f"The {fmt(len(top))} with the largest influence are shown. "
                + "Click a column header to sort. Near-duplicates and "
                "rare sub-populations show up here as a single training example carrying a test example."
                + self.row_note())
        img_cols = "<th>training example</th><th>test example</th>" if self.images else ""
        feat_cols = ("" if self.images else
                     f"<th>train: first {N_FEATURES_SHOWN} features</th><th>test: first {N_FEATURES_SHOWN} features</th>")
        head = ('<tr><th data-sort class="num">rank</th>' + img_cols
                + '<th data-sort class="num">train #</th>' + self.row_head("train row") + "<th data-sort>train label</th>"
                '<th data-sort class="num">test #</th>' + self.row_head("test row") + "<th data-sort>test label</th>"
                '<th data-sort class="num">influence</th><th data-sort class="num">SE</th>'
                '<th data-sort class="num">mem of train example</th>' + feat_cols + "</tr>")
        rows = []
        for rank, r in enumerate(top.itertuples(index=False), start=1):
            tr, tt = int(r.tr_idx), int(r.tt_idx)
            trl, ttl = self.cname(r.tr_label), self.cname(r.tt_label)
            imgs = ""
            if self.images:
                imgs = (f"<td>{self.img('train', tr, f'training example {tr}, label {trl}')}</td>"
                        f"<td>{self.img('test', tt, f'test example {tt}, label {ttl}')}</td>")
            feats = ("" if self.images else
                     f"<td><code>{esc(self.features('train', tr))}</code></td>"
                     f"<td><code>{esc(self.features('test', tt))}</code></td>")
            rows.append(
                f'<tr><td class="num" data-v="{rank}">{rank}</td>{imgs}'
                f'<td class="num" data-v="{tr}">{tr}</td>{self.row_cell("train", tr)}<td data-v="{esc(trl)}">{esc(trl)}</td>'
                f'<td class="num" data-v="{tt}">{tt}</td>{self.row_cell("test", tt)}<td data-v="{esc(ttl)}">{esc(ttl)}</td>'
                f'<td class="num infl" data-v="{sort_value(r.infl)}">{fmt(r.infl)}</td>'
                f'<td class="num nw" data-v="{sort_value(r.infl_se)}">&plusmn; {fmt(r.infl_se)}</td>'
                f'<td class="num" data-v="{sort_value(s.mem[tr])}">{fmt(s.mem[tr])}</td>{feats}</tr>')
        return ('<section id="influence"><h2>High-influence pairs</h2>'
                f'<p class="lead">{lead}</p><table class="sortable pairs" data-total="{total}">'
                f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></section>")

    def sec_scatter(self) -> str:
        path, (pearson, spearman, n) = figures.mem_vs_influence(self.s, self.out / "figures" / "mem_vs_infl.png")
        cap = (f"Each dot is a training example ({fmt(n)} with both estimates): its memorization (x) against its "
               f"largest influence on {self.influence_scope_text()} (y). "
               f"Pearson r = {fmt(pearson)}{self.correlation_strength_text(pearson)}, "
               f"Spearman &rho; = {fmt(spearman)}. A clear positive correlation would mean that the examples "
               "that must be memorized to be learned tend to be the ones a test example leans on (what the paper "
               "reports for its datasets). " + self.scatter_noise_text())
        return ('<section id="mem-vs-influence"><h2>Memorization vs influence</h2>'
                + figure(f"figures/{path.name}", "scatter of memorization against largest influence", cap)
                + "</section>")

    @staticmethod
    def correlation_strength_text(r) -> str:
        """" (weak)" and the like after a correlation, by its size ("" when not a number)."""
        if not (is_num(r) and math.isfinite(float(r))):
            return ""
        a = abs(float(r))
        word = ("essentially none" if a < 0.1 else "weak" if a < 0.3 else "moderate" if a < 0.5 else "strong")
        sign = "" if a < 0.1 else (" positive" if r > 0 else " negative")
        return f" ({word}{sign})"

    def scatter_noise_text(self) -> str:
        """What the estimated noise share of the pairs allows the scatter to say (HTML)."""
        share = self.s.pairs_false_share_est
        t = self.s.infl_threshold
        at = f" at infl &ge; {fmt(t, 3)}" if t is not None else ""
        if share is None or not (is_num(share) and math.isfinite(float(share))):
            if self.s.n_pairs_negative is not None and self.s.options.get("pairs_found") == 0:  # none found
                return (f"No pair was found{at}, so there is no share of noise to give; with few "
                        "trials the largest influence of an example is inflated by noise.")
            return ("The share of noise among the high-influence pairs was not estimated, so read the y axis "
                    "with care: with few trials the largest influence of an example is inflated by noise.")
        if share >= 0.5:
            return (f"The null count estimates that about {pct(share, 0)} of the high-influence pairs{at} are "
                    "noise at this number of trials, so the large influences here are mostly noise and no "
                    "conclusion is drawn from this correlation; run more trials to sharpen.")
        return (f"The null count estimates that about {pct(share, 0)} of the high-influence pairs{at} are noise "
                "at this number of trials; the largest influences of an example are still inflated by noise.")

    def influence_scope_text(self) -> str:
        """Which test examples a training example's largest influence is taken over, per the scores' option."""
        same = self.s.options.get("same_class")
        if same is None:  # scores saved before the option was recorded
            return "a test example"
        return "a test example of its class" if same else "any test example, of any class (estimated across classes)"

    def sec_precision(self) -> str:
        path = figures.precision_curve(self.s, self.out / "figures" / "precision.png")
        s = self.summary
        med, bound = s["median_mem_se"], s["se_bound"]
        mem_se = figures.memorized_median_se(self.s)
        verdict = " " + self.trend_text()
        if med is not None and bound is not None and math.isfinite(med) and math.isfinite(bound):
            verdict = (f" At {fmt(int(s['trials']))} trials the median SE is {fmt(med, 4)} against a bound of "
                       f"{fmt(bound, 4)}." + verdict)
        cap = ("Median standard error of the memorization estimates as trials were added (blue), and the "
               "theoretical bound on the standard deviation of a subsampled estimate, "
               f"0.5&radic;(1/(qt) + 1/((1&minus;q)t)) with q = {fmt(self.s.ratio, 2)} (red, dashed), the worst "
               "case for an example in exactly qt trials; with the uniform design the count varies from "
               "example to example, so some SEs exceed it. "
               "Examples that every model gets right (or wrong) have SE 0, so the median can sit well below "
               "the bound (SE 0 is not certainty: their 95% intervals, in the summary, are not 0 wide)"
               + (f"; the orange triangle is the median SE of the memorized examples (mem &ge; 0.25), "
                  f"{fmt(mem_se, 4)}, the estimates that matter most." if mem_se is not None else ".")
               + verdict)
        return ('<section id="precision"><h2>Precision: are there enough trials?</h2>'
                + figure(f"figures/{path.name}", "median standard error of mem against number of trials", cap)
                + "</section>")

    def trend_text(self) -> str:
        """What the precision curve can tell about more trials, given how many points it has (HTML)."""
        se = np.asarray(self.s.se_curve_median, float)
        se = se[np.isfinite(se)]
        resume = "run more trials: the study resumes where it stopped."
        if not len(se):
            return "The curve has no point yet: no example has an SE at this number of trials; " + resume
        if_large = ("if the bound is large next to the effects you care about (0.25 for memorization, 0.15 for "
                    "influence), ")
        if len(se) < MIN_CURVE_POINTS:  # one block of trials draws a single point: no trend to read
            return (f"The curve has only {plural(len(se), 'point')} (one per block of trials), too few to show "
                    f"whether it is still falling; {if_large}{resume}")
        if not se.any():
            return ("Here the median SE is 0 at every point (most examples get the same answer from every model), "
                    f"so the blue line shows no trend; {if_large}{resume}")
        return f"If the blue curve is still falling steeply, or {if_large}{resume}"

    @staticmethod
    def analysis_id(name: str, taken: set[str]) -> str:
        """A safe, unique id for an analysis folder name (which may hold spaces or "#"); added to ``taken``."""
        base = f"analysis-{anchor(name)}"
        key, n = base, 1
        while key in taken:
            n += 1
            key = f"{base}-{n}"
        taken.add(key)
        return key

    def sec_analyses(self, entries: list[AnalysisEntry]) -> str:
        parts = ['<section id="analyses"><h2>Analyses</h2><p class="lead">Experiments run on this study '
                 f"(from <code>{esc(shown_path(child_location(self.study.path, 'analyses')))}</code>).</p>"]
        ids: set[str] = set()
        for e in entries:
            parts.append(f'<div class="analysis" id="{self.analysis_id(e.name, ids)}"><h3>{esc(e.title)}</h3>')
            if e.problem:
                parts.append(f'<p class="note warn">{esc(e.problem)}</p></div>')
                continue
            if e.study_done_trials is not None and e.study_done_trials != self.s.trials:
                parts.append(f'<p class="note warn">Computed when the study had {e.study_done_trials} done trials; '
                             f"it now has {self.s.trials}. Rerun <code>tailscope analyze {esc(e.name.replace('_', '-'))} "
                             f"{esc(shown_path(self.study.path))}</code> (with its options) to update it.</p>")
            if e.figure:
                parts.append(figure(e.figure, e.title, f"Figure of the analysis <code>{esc(e.name)}</code>."))
            if e.reading:
                parts.append(markdown_paragraphs(e.reading))
            if e.summary:
                rows = "".join(f'<tr><td>{esc(k)}</td><td class="num">{summary_value(v)}</td></tr>'
                               for k, v in e.summary.items())
                parts.append(f'<table class="kv analysis-summary">{rows}</table>')
            parts.append("</div>")
        parts.append("</section>")
        return "".join(parts)
