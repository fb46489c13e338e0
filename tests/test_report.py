"""The HTML report: files, sections, numbers that match the scores, escaping, analyses, a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import make_synthetic
from PIL import Image

import tailscope as ts
from tailscope.learners.registry import make_learner
from tailscope.report import write_report
from tailscope.report.build import MEMORIZED_CAP, PAIRS_CAP, TYPICAL_CAP
from tailscope.report.html import fmt, pct

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "", shutil.which("google-chrome") or "")
                 if p and Path(p).exists()), None)
SECTIONS = ("summary", "memorization", "memorized", "typical", "not-fitted", "influence", "mem-vs-influence",
            "precision")
WEIRD_CLASSES = ["<cat>", 'dog & "co"', "bird"]


# ----------------------------------------------------------------- fixtures
def _write_analysis(study_dir: Path, name: str, title: str, summary: dict, reading: str, figure: bool = True,
                    **extra):
    d = study_dir / "analyses" / name
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"name": name, "title": title, "summary": summary, **extra}))
    (d / "reading.md").write_text(reading)
    if figure:
        Image.new("RGB", (40, 30), (200, 30, 30)).save(d / "figure.png")


@pytest.fixture(scope="module")
def digits_report(tmp_path_factory):
    """12 logistic-regression trials on digits (about 10 s), two analyses, and the report."""
    path = tmp_path_factory.mktemp("digits") / "study"
    study = ts.Study(ts.load_dataset("digits"), make_learner("logreg", max_iter=100), trials=12, ratio=0.7,
                     seed=0, path=path, block_size=4)
    study.run(progress=False)
    scores = study.estimate()
    _write_analysis(path, "b_marginal", "Marginal utility <of> memorized examples",
                    {"acc_drop": 0.0123, "n_removed": 43, "label": "a<b"},
                    "Removing **memorized** examples costs more accuracy than removing random ones & more.")
    _write_analysis(path, "a_noise", "Planted label noise", {"auc": 0.91}, "Flipped labels get *high* mem.",
                    figure=False, study_done_trials=8)  # run before the study grew to 12
    broken = path / "analyses" / "c_broken"
    broken.mkdir()
    (broken / "result.json").write_text("{not json")
    index = write_report(study)
    return study, scores, index, index.read_text()


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    """A non-image dataset (feature vectors) with awkward class names."""
    base, learner = make_synthetic(n=300, n_test=60)
    data = ts.Dataset(base.x_train, base.y_train, base.x_test, base.y_test, classes=WEIRD_CLASSES,
                      name="synthetic <features>")
    path = tmp_path_factory.mktemp("synthetic") / "study"
    study = ts.Study(data, learner, trials=40, ratio=0.7, seed=1, path=path, block_size=20)
    study.run(progress=False)
    scores = study.estimate()
    index = write_report(study)
    return study, scores, index, index.read_text()


def _row(page: str, key: str) -> str:
    m = re.search(rf'<tr data-key="{re.escape(key)}"><td>.*?</td><td>(.*?)</td></tr>', page)
    assert m, f"summary row {key} missing"
    return m.group(1)


def _block(page: str, start: str, end: str) -> str:
    i = page.index(start)
    return page[i: page.index(end, i)]


# ----------------------------------------------------------------- structure
def test_files_sections_and_caps(digits_report):
    study, scores, index, page = digits_report
    out = Path(study.path) / "report"
    assert index == out / "index.html" and index.is_file()
    for fig in ("mem_hist.png", "mem_vs_infl.png", "precision.png"):
        assert (out / "figures" / fig).stat().st_size > 1000
    for sec in SECTIONS + ("analyses",):
        assert f'<section id="{sec}">' in page
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    n_thumbs = len([s for s in srcs if s.startswith("img/")])
    assert n_thumbs <= 2 * MEMORIZED_CAP + TYPICAL_CAP + 2 * PAIRS_CAP  # (memorized and not fitted: one cap each)
    assert len(list((out / "img").glob("*.png"))) == len(set(s for s in srcs if s.startswith("img/")))
    for s in srcs:  # every image the page names is in the folder
        assert (out / s).is_file(), s
    # self-contained: no remote resources, no external scripts or stylesheets
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "<script src" not in page
    # figures have captions
    assert page.count("<figcaption>") >= 3


def test_numbers_match_scores(digits_report):
    study, scores, _, page = digits_report
    s = scores.summary()
    assert _row(page, "trials") == f"{scores.trials} of 12 planned"
    se_row = _row(page, "median_mem_se")
    assert f'<span class="v">{fmt(s["median_mem_se"], 4)}</span>' in se_row
    assert f'<span class="b">{fmt(scores.se_bound, 4)}</span>' in se_row
    finite = np.isfinite(scores.mem_se)
    assert _row(page, "max_mem_se").startswith(fmt(float(scores.mem_se[finite].max()), 4))
    coverage = "every example's estimate" if finite.all() else f"{fmt(int((~finite).sum()))} have none"
    assert coverage in html.unescape(_row(page, "max_mem_se"))
    assert _row(page, "mean_acc_in") == pct(np.nanmean(scores.trial_in_acc), 2)
    assert _row(page, "mean_acc_out") == pct(np.nanmean(scores.trial_out_acc), 2)
    assert _row(page, "mean_test_acc") == pct(np.mean(scores.trial_test_acc), 2)
    n_est = int(np.isfinite(scores.mem).sum())
    assert html.unescape(_row(page, "n_mem")).startswith(f"{s['n_mem_ge_0.25']} of {n_est:,} with an estimate")
    assert "logreg (max_iter=100)" in _row(page, "learner")
    assert "uniform design" in _row(page, "ratio") and "q = 0.70" in _row(page, "ratio")

    # the memorized gallery: highest mem first, capped, values as in the scores
    gal = _block(page, 'data-gallery="memorized"', "</section>")
    idx = [int(i) for i in re.findall(r'<span class="muted">#(\d+)(?: &middot; row \d+)?</span>', gal)]
    assert len(idx) == min(MEMORIZED_CAP, s["n_mem_ge_0.25"])
    assert all(scores.mem[i] >= 0.25 for i in idx)
    assert np.all(np.diff(scores.mem[idx]) <= 0)
    shown = [float(v) for v in re.findall(r'<span class="mem">([-0-9.]+)</span>', gal)]
    np.testing.assert_allclose(shown, scores.mem[idx], atol=5e-4)
    first = idx[0]
    assert f"{scores.classes[scores.out_pred[first]]} ({pct(scores.out_pred_share[first], 0)})" in gal

    # typical examples: same classes as the memorized ones, mem close to 0
    typ = _block(page, 'data-gallery="typical"', "</section>")
    tidx = [int(i) for i in re.findall(r'<span class="muted">#(\d+)(?: &middot; row \d+)?</span>', typ)]
    assert 0 < len(tidx) <= TYPICAL_CAP
    assert set(scores.y_train[tidx]) <= set(scores.y_train[idx])
    assert np.median(np.abs(scores.mem[tidx])) < 0.1

    # influence pairs: total noted, largest first, capped
    tab = _block(page, '<table class="sortable pairs"', "</table>")
    assert f'data-total="{len(scores.pairs)}"' in tab
    infl = [float(v) for v in re.findall(r'<td class="num infl" data-v="([^"]+)"', tab)]
    assert len(infl) == min(PAIRS_CAP, len(scores.pairs))
    np.testing.assert_allclose(infl, np.sort(scores.pairs["infl"].to_numpy())[::-1][: len(infl)])


def test_report_names_the_influence_threshold_used(synthetic_report, tmp_path):
    study, _, index, page = synthetic_report
    # estimated with the paper's threshold: said so, with the number
    assert "infl &ge; 0.150 between examples of the same class (the paper's threshold)" in page
    assert "its threshold (the paper's is 0.15)" not in page
    assert "infl &ge; 0.150" in _row(page, "n_pairs")
    # another threshold: the page shows the one actually used
    scores = study.estimate(save=False, infl_threshold=0.3, same_class=False)
    other = write_report(study, out_dir=tmp_path / "r", scores=scores)
    text = other.read_text()
    assert f"{len(scores.pairs)} pairs at infl &ge; 0.300 across classes too (the paper uses 0.15)" in text
    assert "infl &ge; 0.300" in _row(text, "n_pairs") and "0.150" not in _row(text, "n_pairs")


def test_thumbnails_are_small_upscaled_pngs(digits_report):
    study, _, _, _ = digits_report
    pngs = sorted((Path(study.path) / "report" / "img").glob("train_*.png"))
    im = Image.open(pngs[0])
    assert im.size == (64, 64) and im.mode == "L"  # 8x8 digits, nearest-neighbour x8
    i = int(pngs[0].stem.split("_")[1])
    x = study.data.x_train[i]
    a = np.asarray(im)[::8, ::8]
    np.testing.assert_array_equal(a, np.round(x.astype(float) * 255 / 16).astype(np.uint8))


def test_analyses_section(digits_report):
    study, _, _, page = digits_report
    sec = _block(page, '<section id="analyses">', "</section>")
    # sorted by folder name, titles escaped, reading rendered, numbers from result.json
    assert sec.index("Planted label noise") < sec.index("Marginal utility")
    assert "Marginal utility &lt;of&gt; memorized examples" in sec
    assert "<strong>memorized</strong>" in sec and "&amp; more" in sec and "<em>high</em>" in sec
    assert "0.0123" in sec and ">43<" in sec and "a&lt;b" in sec and "0.9100" in sec
    assert 'src="analyses/b_marginal.png"' in sec
    assert (Path(study.path) / "report" / "analyses" / "b_marginal.png").is_file()
    assert "c_broken" in sec and "could not read result.json" in sec
    # an analysis computed on fewer trials than the study now has is flagged, the others are not
    noise = _block(sec, 'id="analysis-a_noise"', "</div>")
    assert "Computed when the study had 8 done trials; it now has 12" in noise
    assert "tailscope analyze a-noise " in noise
    assert "Computed when" not in _block(sec, 'id="analysis-b_marginal"', "</div>")


def test_saved_analyses_record_the_study_trials(digits_report):
    from tailscope.analyses.base import AnalysisResult

    study = digits_report[0]
    out = AnalysisResult(name="z_recorded", title="t", summary={}, reading="r").save(study.path)
    try:
        assert json.loads((out / "result.json").read_text())["study_done_trials"] == 12
    finally:
        import shutil
        shutil.rmtree(out)


def test_non_image_dataset_gets_tables_and_escaping(synthetic_report):
    study, scores, index, page = synthetic_report
    assert not (index.parent / "img").exists()
    assert not re.search(r'<img [^>]*src="img/', page)
    for sec in SECTIONS:
        assert f'<section id="{sec}">' in page
    assert '<section id="analyses">' not in page  # none written
    assert '<table class="sortable examples" data-gallery="memorized">' in page
    assert '<table class="sortable examples" data-gallery="typical">' in page
    assert "first 5 features" in page
    # feature values of the first memorized example appear
    i = int(scores.memorized()[0])
    first_vals = ", ".join(f"{float(v):.3g}" for v in study.data.x_train[i][:4])
    assert first_vals in page
    # escaping: class and dataset names never appear raw
    assert "<cat>" not in page and "&lt;cat&gt;" in page
    assert 'dog &amp; &quot;co&quot;' in page
    assert "synthetic &lt;features&gt;" in page
    assert f"{scores.trials} of 40 planned" in page


def test_path_estimates_missing_scores_and_out_dir(synthetic_report, tmp_path):
    study, scores, _, _ = synthetic_report
    shutil.rmtree(study.scores_dir)
    index = write_report(study.path, out_dir=tmp_path / "r", data=study.data)
    assert index == tmp_path / "r" / "index.html"
    assert (study.scores_dir / "summary.json").is_file()  # estimated and saved
    again = ts.Scores.load(study.scores_dir)
    np.testing.assert_array_equal(again.mem, scores.mem)


def test_bad_arguments(synthetic_report, digits_report):
    with pytest.raises(TypeError, match="Study or a study directory"):
        write_report(42)
    study, _, _, _ = synthetic_report
    _, digit_scores, _, _ = digits_report
    with pytest.raises(ValueError, match="pass the study's own data"):
        write_report(study, scores=digit_scores)


def test_cli_report(digits_report, tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app

    study, _, _, _ = digits_report
    res = CliRunner().invoke(app, ["report", str(study.path), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "index.html").is_file()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code == 2


# ----------------------------------------------------------------- in a browser
def _chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install -y chromium)")
def test_renders_in_headless_chromium(digits_report, tmp_path):
    study, scores, index, page = digits_report
    res = _chromium(tmp_path, index.as_uri(), "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # no script errors, no failed resource loads
    dom = res.stdout
    n_img = len(re.findall(r"<img ", page))
    m = re.search(r'<html[^>]*data-images-loaded="(\d+)"[^>]*data-images-broken="(\d+)"', dom)
    assert m, dom[:500]
    assert int(m.group(1)) == n_img and int(m.group(2)) == 0
    for sec in SECTIONS + ("analyses",):
        assert f'id="{sec}"' in dom

    # the sorting script: click "train #" and read back the first row
    probe = index.parent / "probe.html"
    probe.write_text(page.replace("</body>", """<script>
      var th = Array.prototype.filter.call(document.querySelectorAll('table.pairs th'),
                                           function (h) { return h.textContent === 'train #'; })[0];
      th.click();
      var first = document.querySelector('table.pairs tbody tr').cells[3].getAttribute('data-v');
      document.documentElement.setAttribute('data-probe', first);
      </script></body>"""))
    res = _chromium(tmp_path, probe.as_uri(), "--dump-dom")
    m = re.search(r'data-probe="(\d+)"', res.stdout)
    tab = _block(page, '<table class="sortable pairs"', "</table>")
    shown = [int(v) for v in re.findall(r'</td><td><img [^>]*></td><td><img [^>]*></td>'
                                        r'<td class="num" data-v="(\d+)">', tab)]
    assert len(shown) == min(PAIRS_CAP, len(scores.pairs))
    assert m and int(m.group(1)) == max(shown)  # descending on first click

    # a screenshot that is not blank
    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, index.as_uri(), f"--screenshot={shot}", "--window-size=1200,2000",
                    "--hide-scrollbars")
    assert shot.is_file(), res.stderr[-2000:]
    a = np.asarray(Image.open(shot).convert("L"))
    assert a.shape == (2000, 1200) and a.std() > 10


# ----------------------------------------------------------------- what the estimates do not know
def test_memorization_intervals_shown_where_the_se_is_zero(digits_report, synthetic_report):
    study, scores, _, page = digits_report
    zero = np.isfinite(scores.mem_se) & (scores.mem_se == 0)
    assert zero.any()  # 12 trials: many examples every model gets right
    row = html.unescape(_row(page, "mem_ci"))
    assert f"the {int(zero.sum()):,} examples with SE 0 (every trial agreed) still have intervals" in row
    assert "SE 0 does not mean mem is known exactly" in row and "Agresti–Caffo" in row
    assert "see the 95% intervals below" in _row(page, "max_mem_se")
    # every memorized card: mem, SE and its 95% interval, as in the scores
    gal = _block(page, 'data-gallery="memorized"', "</section>")
    idx = [int(i) for i in re.findall(r'<span class="muted">#(\d+)(?: &middot; row \d+)?</span>', gal)]
    cis = re.findall(r'<span class="ci">95% CI \[([-0-9.]+), ([-0-9.]+)\]</span>', gal)
    assert len(cis) == len(idx) > 0
    np.testing.assert_allclose(np.array(cis, float), np.c_[scores.mem_ci_low[idx], scores.mem_ci_high[idx]],
                               atol=5e-3)
    assert "Agresti&ndash;Caffo" in _block(page, '<section id="memorized">', "</section>")
    # tables of feature-vector datasets get an interval column
    _, sscores, _, spage = synthetic_report
    tab = _block(spage, '<table class="sortable examples" data-gallery="memorized">', "</table>")
    assert "<th data-sort class=\"num\">95% CI</th>" in tab
    rows = re.findall(r'<td class="num" data-v="(\d+)">\d+</td>.*?<td class="num ci" data-v="[^"]*">'
                      r'\[([-0-9.]+), ([-0-9.]+)\]</td>', tab)
    assert rows
    for i, lo, hi in rows:
        assert float(lo) == pytest.approx(sscores.mem_ci_low[int(i)], abs=5e-3)
        assert float(hi) == pytest.approx(sscores.mem_ci_high[int(i)], abs=5e-3)


def test_pairs_noise_share_is_said_next_to_the_pair_count(synthetic_report, tmp_path):
    study, scores, _, page = synthetic_report
    assert scores.pairs_false_share_est is not None and len(scores.pairs)
    found = scores.options["pairs_found"]
    said = (f"About {pct(scores.pairs_false_share_est, 0)} of the {found:,} pairs found at infl &ge; 0.150 are "
            "expected to be noise at this number of trials, fewer among the largest")
    assert said in _row(page, "n_pairs")
    assert f": {fmt(scores.n_pairs_null, 1)} pairs would reach it by chance" in _row(page, "n_pairs")
    assert "run more trials to sharpen" in _row(page, "n_pairs")
    assert said in _block(page, '<section id="influence">', "</section>")
    # not recorded (older scores, or a threshold with no mirror): nothing claimed
    import dataclasses

    unrecorded = dataclasses.replace(scores, n_pairs_negative=None, n_pairs_null=None)  # (the share comes from them)
    text = write_report(study, out_dir=tmp_path / "r", scores=unrecorded).read_text()
    assert "expected to be noise" not in text


def test_exact_duplicates_are_summarised_and_shown(digits_report, tmp_path):
    _, _, _, page = digits_report  # digits has no identical inputs
    assert "none (no two training inputs are identical" in html.unescape(_row(page, "duplicates"))
    assert 'id="duplicates"' not in page

    from sklearn.neighbors import KNeighborsClassifier

    base = ts.load_dataset("digits")
    x, y, xt = base.x_train.copy(), base.y_train.copy(), base.x_test.copy()
    x[10], y[10] = x[3], (y[3] + 1) % 10  # a copy with another label
    x[20], y[20] = x[5], y[5]             # a plain copy
    xt[0] = x[7]
    data = ts.from_arrays(x, y, xt, base.y_test, classes=base.classes, meta=dict(base.meta))
    study = ts.Study(data, ts.SklearnLearner(KNeighborsClassifier(1)), trials=8, block_size=8, path=tmp_path / "s")
    study.run(progress=False)
    page = write_report(study).read_text()
    row = html.unescape(_row(page, "duplicates"))
    assert "4 training examples in 2 groups" in row and "1 of them with different labels" in row
    assert "test examples identical to a training example: 1" in row
    section = page[page.index('<section id="duplicates">'):]
    section = section[:section.index("</section>")]
    assert section.index("Group 1: 2 copies (labels differ)") < section.index("Group 2: 2 copies")
    assert "#3<" in section and "#10<" in section and "#5<" in section and "#20<" in section
    copies = section[section.index('data-gallery="test-copies"'):]
    assert '<td class="num">0</td>' in copies and '<td class="num">7</td>' in copies
    assert '<a href="#duplicates">' in page
