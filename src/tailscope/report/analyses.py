"""Finding the analysis folders of a study (``<study>/analyses/<name>/``) for the report."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AnalysisEntry:
    """One analysis as the report shows it."""

    name: str
    title: str
    reading: str = ""
    summary: dict = field(default_factory=dict)
    figure: str | None = None  # path relative to the report folder
    problem: str | None = None  # set when the folder could not be read
    study_done_trials: int | None = None  # the study's done trials when the analysis ran


def collect_analyses(study_dir: str | Path, out_dir: Path) -> list[AnalysisEntry]:
    """Every ``analyses/*/result.json`` under the study, sorted by folder name.

    Figures are copied into ``out_dir/analyses/`` so the report folder stands alone.
    A folder whose result.json cannot be read is listed with its problem, not dropped.
    A study on an fsspec URL has its analyses fetched into a temporary folder first.
    """
    from tailscope.store import child_location, get_dir

    root = child_location(study_dir, "analyses")
    if isinstance(root, str):
        with tempfile.TemporaryDirectory() as tmp:
            get_dir(root, tmp)
            return _collect(Path(tmp), out_dir)
    return _collect(root, out_dir)


def _collect(root: Path, out_dir: Path) -> list[AnalysisEntry]:
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "result.json").is_file()):
        entry = AnalysisEntry(name=folder.name, title=folder.name)
        try:
            result = json.loads((folder / "result.json").read_text())
            if not isinstance(result, dict):
                raise ValueError("result.json does not hold a JSON object")
        except (OSError, ValueError) as e:
            entry.problem = f"could not read result.json: {e}"
            entries.append(entry)
            continue
        entry.title = str(result.get("title") or folder.name)
        done = result.get("study_done_trials")
        entry.study_done_trials = int(done) if isinstance(done, int) else None
        summary = result.get("summary")
        entry.summary = summary if isinstance(summary, dict) else {}
        reading = folder / "reading.md"
        if reading.is_file():
            entry.reading = reading.read_text(errors="replace").strip()
        fig = folder / "figure.png"
        if fig.is_file():
            dest = out_dir / "analyses"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig, dest / f"{folder.name}.png")
            entry.figure = f"analyses/{folder.name}.png"
        entries.append(entry)
    return entries
