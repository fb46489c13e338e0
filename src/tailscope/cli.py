"""The ``tailscope`` command line (Typer)."""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import time
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="What a classifier memorizes and which training examples its test predictions lean on.")
console = Console()
err = Console(stderr=True)


class UserError(Exception):
    """An error to show as one line, without a traceback."""


def friendly(fn):
    """Show errors a user can cause as one clear line and exit with status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from tailscope.data.dataset import DataError
        from tailscope.design import DesignError
        from tailscope.runner import WorkerError
        from tailscope.store import DISK_ERRNOS, StoreError

        try:
            with warnings.catch_warnings(), _sigterm_as_interrupt():
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except (UserError, DataError, DesignError, StoreError, WorkerError, ValueError, TypeError,
                FileNotFoundError) as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}")  # escaped: "x[keep]" is not markup
            raise typer.Exit(2) from None
        except OSError as e:  # the system's reason in one line, not a traceback
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            advice = ("; fix that (free space, permissions) and run the same command: stored trials are kept"
                      if e.errno in DISK_ERRNOS else "")
            console.print(f"[bold red]error:[/] {escape(e.strerror or str(e))}{escape(where)}{advice}.")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: finished blocks are stored; run the same command to resume.[/]")
            raise typer.Exit(130) from None

    return wrapper


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``timeout``, Slurm preemption, ``kill``) stops a command like Ctrl-C: finished
    blocks stay stored and the message says how to resume. A worker pool replaces this handler
    with its own while it runs (``yields_to_pools``), which defers the signal while it starts a
    worker."""
    import signal
    import threading

    from tailscope.runner import Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    stop.yields_to_pools = True

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line for people at a terminal, not Python's file:line and source."""
    label = "warning" if issubclass(category, UserWarning) else category.__name__
    console.print(f"[yellow]{label}:[/] {escape(str(message))}", highlight=False)


def parse_options(pairs: list[str] | None) -> dict:
    """``["epochs=5", "widths=(128,)", "augment=true"]`` -> ``{"epochs": 5, "widths": (128,), "augment": True}``.

    Values are Python literals; true/false and none in any case are booleans and None, as
    shell users write them; anything else stays a string.
    """
    words = {"true": True, "false": False, "none": None, "null": None}
    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"option {item!r} must look like key=value, e.g. --opt epochs=5.")
        if value.strip().lower() in words:
            out[key.strip()] = words[value.strip().lower()]
            continue
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    from tailscope.runner import parse_shard as parse
    from tailscope.runner import select_shard

    if not text:
        return None
    try:
        shard = parse(text)
        select_shard({}, shard)  # also checks 0 <= i < N
    except ValueError:
        raise UserError(f"--shard must look like i/N with 0 <= i < N (e.g. 0/4), got {text!r}.") from None
    return shard


DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="digits, fashion-mnist, npz:PATH, csv:PATH, parquet:PATH, idx:DIR, cifar:DIR, folder:DIR")]
LearnerOpt = Annotated[str, typer.Option("--learner", "-l", help="mlp, linear, cnn, resnet (torch population trainer) or logreg, forest, knn (scikit-learn)")]
OptOpt = Annotated[list[str] | None, typer.Option("--opt", help="learner option key=value (repeatable), e.g. --opt epochs=10")]


@app.command(epilog="Examples: tailscope run -d digits -l mlp --trials 1000 -o runs/digits  ·  "
                     "tailscope run -d npz:my.npz -l logreg --workers 2 -o runs/mine  ·  "
                     "tailscope run ... --shard 0/4 --no-estimate (one of 4 shards)")
@friendly
def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="study directory (created, or resumed if it exists)")] = Path("runs/study"),
    dataset: DatasetOpt = "digits",
    learner: LearnerOpt = "mlp",
    opt: OptOpt = None,
    data_opt: Annotated[list[str] | None, typer.Option("--data-opt", help="dataset loader option key=value (repeatable), e.g. --data-opt limit_train=5000 (fashion-mnist)")] = None,
    trials: Annotated[int, typer.Option(help="number of trained models t")] = 200,
    ratio: Annotated[float, typer.Option(help="subset fraction q (paper: 0.7)")] = 0.7,
    design: Annotated[str, typer.Option(help="uniform (paper) or balanced")] = "uniform",
    seed: Annotated[int, typer.Option(help="seed of the subsets and of every trial's learner seed")] = 0,
    workers: Annotated[int, typer.Option(help="local worker processes")] = 1,
    backend: Annotated[str, typer.Option(help="auto, local, processes or ray")] = "auto",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (implies --backend ray)")] = None,
    gpus_per_block: Annotated[float, typer.Option(help="GPUs per Ray task (implies --backend ray)")] = 0.0,
    shard: Annotated[str | None, typer.Option(help="run only shard i/N of the blocks (Slurm arrays)")] = None,
    block_size: Annotated[int | None, typer.Option(help="trials per block (default: the stored study's, else the learner's)")] = None,
    estimate: Annotated[bool, typer.Option(help="estimate scores when all trials are done")] = True,
):
    """Train the trials of a study (resuming any that are done) and estimate its scores."""
    import tailscope as ts
    from tailscope.learners.registry import make_learner, scale_warning

    _check_out_dir(out)
    data = ts.load_dataset(dataset, **parse_options(data_opt))
    lrn = make_learner(learner, **parse_options(opt))
    advice = scale_warning(learner, parse_options(opt), data)
    if advice:
        console.print(f"[yellow]warning:[/yellow] {advice}", soft_wrap=True, highlight=False)
    study = ts.Study(data, lrn, trials=trials, ratio=ratio, design=design, seed=seed, path=out,
                     block_size=block_size)
    backend_options = {}
    if address is not None or gpus_per_block:  # Ray's options: they say which backend is meant
        if backend not in ("auto", "ray"):
            raise UserError(f"--address and --gpus-per-block are options of the Ray backend; drop them or use "
                            f"--backend ray (not {backend}).")
        backend = "ray"
    if backend == "ray":
        backend_options = {"address": address, "gpus_per_block": gpus_per_block}
    res = study.run(workers=workers, backend=backend, shard=parse_shard(shard), **backend_options)
    console.print(f"trained {res['trained']} trials in {res['seconds']:.1f} s; "
                  f"{res['done']}/{res['trials']} done in {out}", soft_wrap=True)
    if estimate and res["done"] == res["trials"]:
        _estimate_and_print(study)
    elif estimate:
        console.print("not every trial is done yet (other shards?): run `tailscope estimate` when they are.")


def _check_out_dir(path: Path, flag: str = "--out") -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a directory; give a directory (new or existing).")


def _estimate_and_print(study, **options) -> None:
    t0 = time.perf_counter()
    scores = study.estimate(**options)
    s = scores.summary()
    table = Table(title=f"scores ({time.perf_counter() - t0:.1f} s)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in s.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else "n/a" if v is None else str(v))
    console.print(table)
    noise = pairs_noise_text(scores)
    if noise:
        console.print(noise, soft_wrap=True, highlight=False)
    console.print(f"scores: {study.scores_dir}", soft_wrap=True, highlight=False)  # one line, to copy


@app.command("estimate")
@friendly
def estimate_cmd(
    study_dir: Annotated[Path, typer.Argument(help="study directory or URL")],
    threshold: Annotated[float, typer.Option(help="keep pairs with influence >= this (paper: 0.15)")] = 0.15,
    any_class: Annotated[bool, typer.Option(help="keep pairs across classes too")] = False,
    top_k: Annotated[int, typer.Option(help="most influential training examples per test example, in "
                                            "scores/influence_topk.npz (the pairs file keeps every pair at or above "
                                            "--threshold)")] = 10,
    full_matrix: Annotated[bool, typer.Option(help="also write the full influence matrix (scores/influence.zarr)")] = False,
):
    """Estimate memorization and influence from the done trials of a study."""
    from tailscope.estimate import EstimateOptions, estimate
    from tailscope.scores import scores_location
    from tailscope.store import TrialStore

    if not 0 < threshold <= 1:
        raise UserError(f"--threshold {threshold:g} is outside (0, 1]: pairs kept are those with influence at or "
                        "above it (the paper: 0.15). For every pair, write the full matrix with --full-matrix.")
    store = TrialStore.open(study_dir)
    scores_dir = scores_location(study_dir)  # a local Path, or a URL for s3://, memory://, ...
    opts = EstimateOptions(infl_threshold=threshold, same_class=not any_class, top_k=top_k,
                           full_matrix_path=f"{scores_dir}/influence.zarr" if full_matrix else None)
    t0 = time.perf_counter()
    scores = estimate(store, opts)
    scores.save(scores_dir)
    planned = f" (of {store.trials} planned: the rest are not done yet)" if scores.trials < store.trials else ""
    console.print(f"estimated from {scores.trials} trials{planned} in {time.perf_counter() - t0:.1f} s -> "
                  f"{scores_dir}", soft_wrap=True)
    console.print_json(json.dumps(scores.summary()))
    noise = pairs_noise_text(scores)
    if noise:
        console.print(noise, soft_wrap=True, highlight=False)


def pairs_noise_text(scores) -> str | None:
    """One plain sentence on the estimated share of noise among the kept pairs (None if not recorded)."""
    share, null, neg, t = scores.pairs_false_share_est, scores.n_pairs_null, scores.n_pairs_negative, \
        scores.infl_threshold
    if share is None or t is None:
        return None
    found = int(scores.options.get("pairs_found", len(scores.pairs)))
    head = f"high-influence pairs: {found:,} at infl >= {t:g}; "
    rough = f" With {found} pairs this share is rough." if found < FEW_PAIRS else ""
    if null is None:  # scores made before the null count: the mirror count at -threshold
        if not neg:  # "about 0%" would read as a measured share
            return head + (f"none at <= -{t:g}, so the mirror check saw no sign of noise among them (an estimate "
                           "that misses noise when test examples are almost always right: re-estimate for a better "
                           "one).")
        return head + (f"{neg:,} at <= -{t:g} (mirror): about {100 * share:.0f}% of them are expected to be noise "
                       f"(re-estimate for the null count, which does not miss noise when test examples are almost "
                       f"always right).{rough}")
    sharpen = "; run more trials to sharpen" if share >= 0.1 else ""
    return head + (f"about {100 * share:.0f}% of them are expected to be noise at this number of trials ({null:,.1f} "
                   "pairs would reach it by chance if no training example influenced any test example; fewer among "
                   f"the largest{sharpen}).{rough}")


FEW_PAIRS = 20  # below this many pairs, a noise share (a ratio of small counts) is rough


@app.command()
@friendly
def info(study_dir: Annotated[Path, typer.Argument(help="study directory")]):
    """Config, progress and accuracy of a study, and its done, missing and in-flight blocks."""
    from tailscope.store import TrialStore
    from tailscope.study import study_info

    store = TrialStore.open(study_dir)
    info_ = study_info(store)
    if "damaged" not in info_:
        info_ |= store.block_status()
    console.print_json(json.dumps(info_, default=str))
    if "damaged" in info_:  # shown with what could be read; verify names the trials
        err.print(f"the store is damaged: run `tailscope verify {study_dir}` (then --repair).", highlight=False)
        raise typer.Exit(1)


TOP_KINDS = ("memorized", "not-fitted", "pairs")


@app.command(epilog="Examples: tailscope top runs/digits  ·  tailscope top runs/mine --what not-fitted -n 30  ·  "
                    "tailscope top runs/mine --what pairs")
@friendly
def top(
    study_dir: Annotated[Path, typer.Argument(help="study directory (its saved scores are read)")],
    what: Annotated[str, typer.Option(help="memorized (highest mem), not-fitted (wrong even when trained on) "
                                           "or pairs (highest influence)")] = "memorized",
    n: Annotated[int, typer.Option("-n", help="rows to show")] = 20,
):
    """Print the most memorized training examples, those the models do not fit, or the top influence pairs."""
    from tailscope.scores import Scores, scores_location

    if what not in TOP_KINDS:
        raise UserError(f"--what must be one of {', '.join(TOP_KINDS)}, got {what!r}.")
    if n < 1:
        raise UserError(f"-n must be a positive number of rows, got {n}.")
    try:
        scores = Scores.load(scores_location(study_dir))
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    table = _pairs_table(scores, n) if what == "pairs" else _examples_table(scores, what, n)
    console.print(table)


def _examples_table(scores, what: str, n: int) -> Table:
    from tailscope.report.gallery import most_memorized, not_fitted

    idx = most_memorized(scores, n)[0] if what == "memorized" else not_fitted(scores, n)[0]
    title = ("most memorized training examples" if what == "memorized"
             else "training examples most models get wrong even when trained on them")
    table = Table(title=f"{title} ({scores.trials} trials)")
    rows = scores.train_row is not None
    for name in ("index", *(["row"] if rows else []), "label", "mem ± SE", "95% CI", "right with / without",
                 "held-out predict"):
        table.add_column(name, justify="left" if name in ("label", "held-out predict") else "right")
    for i in idx:
        i = int(i)
        held = ("n/a" if scores.n_out[i] == 0 else
                f"{scores.class_names([scores.out_pred[i]])[0]} {100 * scores.out_pred_share[i]:.0f}%")
        table.add_row(str(i), *([str(int(scores.train_row[i]))] if rows else []),
                      str(scores.class_names([scores.y_train[i]])[0]), f"{scores.mem[i]:.3f} ± {scores.mem_se[i]:.3f}",
                      f"{scores.mem_ci_low[i]:.2f}..{scores.mem_ci_high[i]:.2f}",
                      f"{100 * scores.acc_in[i]:.0f}% / {100 * scores.acc_out[i]:.0f}%", held)
    if not len(idx):
        table.caption = "none"
    return table


def _pairs_table(scores, n: int) -> Table:
    pairs = scores.pairs.head(n)
    table = Table(title=f"highest-influence pairs ({scores.trials} trials)")
    rows = "tr_row" in pairs
    cols = ["train #", *(["train row"] if rows else []), "test #", *(["test row"] if rows else []), "label",
            "infl ± SE", "95% CI", "mem of train"]
    for name in cols:
        table.add_column(name, justify="left" if name == "label" else "right")
    for r in pairs.itertuples(index=False):
        ci = f"{r.infl_ci_low:.2f}..{r.infl_ci_high:.2f}" if hasattr(r, "infl_ci_low") else "n/a"
        table.add_row(str(r.tr_idx), *([str(r.tr_row)] if rows else []), str(r.tt_idx),
                      *([str(r.tt_row)] if rows else []), str(r.tt_label_name), f"{r.infl:.3f} ± {r.infl_se:.3f}", ci,
                      f"{scores.mem[int(r.tr_idx)]:.3f}")
    noise = pairs_noise_text(scores)
    table.caption = noise if noise else ("none kept" if not len(pairs) else None)
    return table


@app.command()
@friendly
def verify(
    study_dir: Annotated[Path, typer.Argument(help="study directory or URL")],
    repair: Annotated[bool, typer.Option(help="clear the done flags of bad trials so a rerun redoes them")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
):
    """Check every done trial: chunks readable, mask and seed as designed, no NaN, values in range, rows equal to their checksum."""
    from tailscope.verify import verify_store

    rep = verify_store(study_dir, repair=repair)
    if as_json:
        console.print_json(json.dumps(rep.to_dict()))
    else:
        console.print(rep.summary(), markup=False, highlight=False)
    if not rep.ok and not (repair and not rep.store_problems):
        raise typer.Exit(1)


@app.command()
@friendly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="study directory (its report goes to OUT/report)")] = Path("runs/demo"),
    trials: Annotated[int, typer.Option(help="trained models (SE bound 0.05 needs ~480)")] = 500,
    learner: LearnerOpt = "mlp",
    report: Annotated[bool, typer.Option(help="write the HTML report")] = True,
):
    """Run, estimate and report a complete study on the built-in digits."""
    import tailscope as ts
    from tailscope.learners.registry import make_learner

    t0 = time.perf_counter()
    study = ts.Study(ts.load_dataset("digits"), make_learner(learner), trials=trials, ratio=0.7, seed=0, path=out)
    study.run()
    _estimate_and_print(study)
    if report:
        from tailscope.report import write_report

        index = write_report(study)
        console.print(f"report: {index}", soft_wrap=True)
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")


def _register_analyses() -> None:
    from tailscope.analyses.cli import load_commands

    app.add_typer(load_commands(), name="analyze")


_register_analyses()


@app.command()
@friendly
def report(
    study_dir: Annotated[Path, typer.Argument(help="study directory")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="report folder (default: STUDY_DIR/report)")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="the study's data, when it cannot be reloaded from where it was recorded (moved file, in-memory arrays)")] = None,
    data_opt: Annotated[list[str] | None, typer.Option("--data-opt", help="dataset loader option key=value (repeatable)")] = None,
):
    """Write the static HTML report of a study (estimating its scores first if there are none)."""
    from tailscope.report import write_report
    from tailscope.study import use_data

    if out is not None:
        _check_out_dir(out)
    use_data(dataset, parse_options(data_opt))  # loaded with the study's recorded loader options
    try:
        _warn_if_stale(study_dir)
        index = write_report(study_dir, out_dir=out)
    finally:
        use_data(None)
    console.print(f"report: {index}", soft_wrap=True)


def _warn_if_stale(study_dir: Path) -> None:
    """Say on the terminal (the report says it too) when saved scores predate trials done since."""
    from tailscope.scores import SUMMARY_FILE, scores_location
    from tailscope.store import StoreError, TrialStore, child_location

    try:
        import fsspec

        with fsspec.open(str(child_location(scores_location(study_dir), SUMMARY_FILE)), "rb") as f:
            saved = int(json.loads(f.read().decode())["trials"])
        done = int(TrialStore.open(study_dir).done().sum())
    except (OSError, ValueError, KeyError, StoreError):  # no or unreadable scores: the report estimates anew
        return
    if done != saved:
        console.print(f"[yellow]warning:[/] the saved scores come from {saved} trials but {done} are done now; "
                      f"run `tailscope estimate {study_dir}` to update them.", highlight=False)
