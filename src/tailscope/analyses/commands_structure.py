"""CLI subcommands of `tailscope analyze` for structure: near-duplicates, groups, layers.

Each command reopens a study, runs one analysis, saves it under
``<study>/analyses/<name>/`` (shown by the HTML report) and prints its summary and reading.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tailscope.analyses.cli import StudyArg, analyze_app, save_and_show
from tailscope.cli import friendly


@analyze_app.command("near-duplicates")
@friendly
def near_duplicates_cmd(
    study_dir: StudyArg,
    threshold: Annotated[float, typer.Option(help="high-influence pairs: same class and infl >= this (paper: 0.15)")] = 0.15,
    percentile: Annotated[float, typer.Option(help="near-duplicate: rank 1 and distance <= this percentile of "
                                                   "test examples' nearest-neighbour distances")] = 10.0,
    gallery: Annotated[int, typer.Option(help="closest pairs shown in the figure")] = 12,
    seed: Annotated[int, typer.Option(help="seed of the random same-class baseline pairs")] = 0,
):
    """Distance and same-class rank of high-influence train/test pairs vs random pairs; gallery of the closest."""
    from tailscope.analyses.near_duplicates import near_duplicates

    save_and_show(near_duplicates(study_dir, threshold=threshold, percentile=percentile, n_gallery=gallery, seed=seed),
                  study_dir)


@analyze_app.command("groups")
@friendly
def groups_cmd(
    study_dir: StudyArg,
    groups: Annotated[str | None, typer.Option(help="group id per training example (-1 = none): PATH.npy or "
                                                    "PATH.npz[:KEY] (key 'groups'); default k-means per class")] = None,
    per_class: Annotated[int, typer.Option(help="k-means clusters per class (without --groups)")] = 10,
    trials: Annotated[int, typer.Option(help="models trained on the group design")] = 100,
    q: Annotated[float | None, typer.Option(help="probability a trial keeps a group (default: the study's ratio)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the clustering, the design and the models")] = 0,
):
    """Group memorization mem(A, S, G) of same-label subpopulations vs their members' individual mem."""
    from tailscope.analyses.groups import group_memorization

    save_and_show(group_memorization(study_dir, groups=groups, per_class=per_class, trials=trials, q=q, seed=seed),
                  study_dir)


@analyze_app.command("last-layer")
@friendly
def last_layer_cmd(
    study_dir: StudyArg,
    k: Annotated[list[int] | None, typer.Option("--k", help="retrain the last k layers (repeatable; default: "
                                                            "every k below the full depth)")] = None,
    trials: Annotated[int | None, typer.Option(help="trials per k (default: the study's)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the full-data network and of the subsets")] = 0,
    threshold: Annotated[float, typer.Option(help="memorized: mem >= this (paper: 0.25)")] = 0.25,
):
    """Memorization when only the last k layers are trained on the frozen network's features, vs the full network."""
    from tailscope.analyses.last_layer import last_layer_memorization

    save_and_show(last_layer_memorization(study_dir, ks=k or None, trials=trials, seed=seed, threshold=threshold,
                                          progress=True), study_dir)
