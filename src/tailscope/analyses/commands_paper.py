"""CLI subcommands of `tailscope analyze` for the paper's experiments.

Each command reopens a study, runs one analysis, saves it under
``<study>/analyses/<name>/`` (shown by the HTML report) and prints its summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tailscope.analyses.cli import StudyArg, analyze_app, not_resumable, save_and_show
from tailscope.cli import friendly

SeedOpt = Annotated[int, typer.Option(help="seed of the analysis' own sampling and training")]


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, e.g. 0.1,0.2, got {text!r}.") from None


@analyze_app.command("marginal-utility")
@friendly
def marginal_utility_cmd(
    study_dir: StudyArg,
    thresholds: Annotated[str, typer.Option(help="remove examples with mem above each (comma-separated)")] = "0.1,0.2,0.3,0.4",
    repeats: Annotated[int, typer.Option(help="models trained per reduced training set")] = 8,
    infl_threshold: Annotated[float, typer.Option(help="high-influence pair threshold (paper: 0.15)")] = 0.15,
    seed: SeedOpt = 0,
):
    """Accuracy drop from removing high-mem training examples vs random ones (paper Fig. 2), and high-influence pairs."""
    from tailscope.analyses.marginal_utility import marginal_utility

    with not_resumable("marginal-utility"):
        result = marginal_utility(study_dir, thresholds=_floats(thresholds), repeats=repeats, seed=seed,
                                  infl_threshold=infl_threshold)
    save_and_show(result, study_dir)


@analyze_app.command("loo")
@friendly
def loo_cmd(
    study_dir: StudyArg,
    k: Annotated[int, typer.Option(help="training examples checked (stratified by mem)")] = 20,
    repeats: Annotated[int, typer.Option(help="models on S and on each S minus i")] = 8,
    seed: SeedOpt = 0,
):
    """Leave-one-out mem on a sample of training examples vs the subsampled estimates."""
    from tailscope.analyses.loo import loo

    with not_resumable("loo"):
        result = loo(study_dir, k=k, repeats=repeats, seed=seed)
    save_and_show(result, study_dir)


@analyze_app.command("subset-ratio")
@friendly
def subset_ratio_cmd(
    study_dir: StudyArg,
    ratios: Annotated[str, typer.Option(help="subset ratios q (comma-separated)")] = "0.5,0.7,0.9",
    trials: Annotated[int, typer.Option(help="trials per ratio")] = 50,
):
    """Studies at several subset ratios: estimates, SE per trial spent, agreement (and with LOO if run)."""
    from tailscope.analyses.subset_ratio import subset_ratio

    save_and_show(subset_ratio(study_dir, ratios=_floats(ratios), trials=trials, progress=True), study_dir)


@analyze_app.command("consistency")
@friendly
def consistency_cmd(
    study_dir: StudyArg,
    other: Annotated[Path | None, typer.Option(help="compare with this existing study of the same data")] = None,
    seed: Annotated[int | None, typer.Option(help="run a sibling study with this seed")] = None,
    learner: Annotated[str | None, typer.Option("--learner", "-l", help="run a sibling study with this learner")] = None,
    trials: Annotated[int | None, typer.Option(help="trials of the sibling study (default: the study's)")] = None,
):
    """Spearman of mem and Jaccard of memorized sets and high-influence pairs between two studies."""
    from tailscope.analyses.consistency import consistency

    save_and_show(consistency(study_dir, other=other, seed=seed, learner=learner, trials=trials, progress=True),
                  study_dir)


@analyze_app.command("label-noise")
@friendly
def label_noise_cmd(
    study_dir: StudyArg,
    fraction: Annotated[float, typer.Option(help="share of training labels flipped")] = 0.05,
    trials: Annotated[int | None, typer.Option(help="trials of the noisy studies (default: the study's)")] = None,
    relabel_top: Annotated[bool, typer.Option(help="also relabel the top-mem examples at random and rerun")] = True,
    seed: SeedOpt = 0,
):
    """Planted label noise: ROC AUC / AP / precision of mem as a detector; mem of relabeled top-mem examples."""
    from tailscope.analyses.label_noise import label_noise

    save_and_show(label_noise(study_dir, fraction=fraction, seed=seed, trials=trials, relabel_top=relabel_top,
                              progress=True), study_dir)


@analyze_app.command("correlation")
@friendly
def correlation_cmd(
    study_dir: StudyArg,
    mem_threshold: Annotated[float, typer.Option(help="memorized at mem >= this (paper: 0.25)")] = 0.25,
    infl_threshold: Annotated[float, typer.Option(help="high influence at infl >= this (paper: 0.15)")] = 0.15,
):
    """Correlation between mem and each training example's largest influence."""
    from tailscope.analyses.correlation import correlation

    save_and_show(correlation(study_dir, mem_threshold=mem_threshold, infl_threshold=infl_threshold), study_dir)
