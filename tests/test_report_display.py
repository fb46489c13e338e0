"""What the report shows: thumbnails on one scale, cards that fit, figures and wording that follow the numbers."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tailscope as ts
from tailscope.report import figures, gallery, write_report
from tailscope.report.build import TYPICAL_CAP
from tailscope.report.html import CSS, markdown_paragraphs, pct, summary_value

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "", shutil.which("google-chrome") or "")
                 if p and Path(p).exists()), None)


# ----------------------------------------------------------------- studies (synthetic learner: fast)
def _study(path: Path, *, mem, n=120, n_test=30, n_classes=3, trials=40, block=40, x=None, image_shape=None,
           classes=None, seed=0) -> ts.Study:
    """A study whose learner memorizes example i by exactly ``mem[i]`` (test j leans on train j)."""
    rng = np.random.default_rng(seed)
    y, yt = np.arange(n) % n_classes, np.arange(n_test) % n_classes
    dim = int(np.prod(image_shape)) if image_shape else 4
    x = rng.normal(size=(n, dim)).astype(np.float32) if x is None else x
    xt = np.zeros((n_test, *x.shape[1:]), x.dtype)
    data = ts.Dataset(x, y, xt, yt, classes=classes or [f"c{i}" for i in range(n_classes)],
                      image_shape=image_shape, name="display")
    p_in = np.full(n, 0.95)
    effect = np.zeros((n, n_test))
    effect[np.arange(n_test), np.arange(n_test)] = 0.3
    learner = ts.SyntheticLearner(p_in, p_in - np.broadcast_to(mem, (n,)), np.full(n_test, 0.3), effect)
    study = ts.Study(data, learner, trials=trials, ratio=0.7, seed=seed, path=path, block_size=block)
    study.run(progress=False)
    return study


@pytest.fixture(scope="module")
def heavy(tmp_path_factory):
    """Nearly every example memorized (no estimate near 0), 2x2 images, one block of 40 trials, scores
    estimated across classes, and analyses with awkward names, lists and null values."""
    path = tmp_path_factory.mktemp("heavy") / "study"
    mem = np.where(np.arange(120) % 10 == 0, 0.3, 0.7)
    study = _study(path, mem=mem, image_shape=(2, 2))
    scores = study.estimate(same_class=False)
    for name, summary in (("my run #2", {"missing": None, "n_removed": 13.0, "share": 0.5}),
                          ("my-run-2", {"auc": 0.9})):
        d = path / "analyses" / name
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"title": name, "summary": summary}))
        (d / "reading.md").write_text("Findings:\n\n- first point\n- second `point`\n  wrapped on\n\nAfter.")
    return study, scores, write_report(study).read_text()


def _section(page: str, sid: str) -> str:
    i = page.index(f'<section id="{sid}">')
    return page[i: page.index("</section>", i)]


def _caption(page: str, sid: str) -> str:
    return html.unescape(re.search(r"<figcaption>(.*?)</figcaption>", _section(page, sid), re.S).group(1))


def _lead(page: str, sid: str) -> str:
    return html.unescape(re.search(r'<p class="lead">(.*?)</p>', _section(page, sid), re.S).group(1))


def _row(page: str, key: str) -> str:
    return re.search(rf'<tr data-key="{key}"><td>.*?</td><td>(.*?)</td></tr>', page).group(1)


# ----------------------------------------------------------------- 1. thumbnails on one scale
def _images(x, **meta):
    return ts.Dataset(x, np.arange(len(x)) % 2, x[:2], np.arange(2) % 2, classes=["a", "b"],
                      image_shape=x.shape[1:], meta=meta)


def test_float_and_uint16_thumbnails_use_pixel_max_or_one_range_not_per_image_contrast():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 6, 6, 3)).astype(np.uint8)
    x[7] //= 4  # a dark example: must stay dark
    expected = gallery.to_uint8(_images(x), x[7])
    assert expected.max() <= 64
    # the same pixels as floats (with or without pixel_max) and as 16-bit (0..4080) draw identically
    for data in (_images(x.astype(np.float32), pixel_max=255), _images(x.astype(np.float32)),
                 _images(x.astype(np.uint16) * 16)):
        assert gallery.display_range(data)[0] == 0.0
        got = gallery.to_uint8(data, data.x_train[7])
        assert np.abs(got.astype(int) - expected).max() <= 1, data.x_train.dtype
    # a low-contrast float image is not stretched to black..white
    flat = np.full((50, 6, 6), 0.4, np.float32)
    flat[:, 0, 0] = 1.0
    flat[3] = 0.45
    data = _images(flat)
    assert gallery.display_range(data) == (0.0, 1.0)
    np.testing.assert_array_equal(gallery.to_uint8(data, flat[3]), np.full((6, 6), 115, np.uint8))


def test_standardized_images_display_through_the_dataset_range():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 255, (200, 8, 8)).astype(np.float32)
    raw[5] = 10.0  # a uniformly dark example
    std = (raw - raw.mean()) / raw.std()
    data = _images(std)
    lo, hi = gallery.display_range(data)
    assert lo < std.mean() < hi and -2.5 < lo < -1.5 and 1.5 < hi < 2.5  # robust percentiles of the set
    dark, mid = gallery.to_uint8(data, std[5]), gallery.to_uint8(data, np.zeros((8, 8, 1)))
    assert dark.max() < 20 and 100 < int(mid.mean()) < 155  # dark stays dark, the mean is mid grey
    # NaN-safe: missing pixels are black and do not set the range
    holed = std.copy()
    holed[0, 0, 0] = np.nan
    missing = ts.Dataset(holed, np.arange(200) % 2, holed[:2], np.arange(2) % 2, classes=["a", "b"],
                         image_shape=(8, 8), meta={"allow_missing": True})
    assert gallery.display_range(missing) == pytest.approx((lo, hi), abs=0.05)
    assert gallery.to_uint8(missing, holed[0])[0, 0] == 0


def test_large_images_are_shrunk_and_small_ones_upscaled(tmp_path):
    big = _images(np.random.default_rng(0).integers(0, 256, (4, 160, 120, 3)).astype(np.uint8))
    small = _images(np.random.default_rng(0).integers(0, 256, (4, 8, 8)).astype(np.uint8))
    assert Image.open(gallery.thumbnail(big, big.x_train[0], tmp_path / "b.png")).size == (96, 128)
    assert Image.open(gallery.thumbnail(small, small.x_train[0], tmp_path / "s.png")).size == (64, 64)


# ----------------------------------------------------------------- 2 and 6. cards fit; header contrast
def _luminance(hex_color: str) -> float:
    rgb = [int(hex_color[i: i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_study_path_in_the_dark_header_is_readable():
    rule = re.search(r"header\.top code \{([^}]*)\}", CSS).group(1)
    fg = re.search(r"(?<!-)color:(#[0-9a-f]{6})", rule).group(1)
    bg = re.search(r"background:(#[0-9a-f]{6})", rule).group(1)
    light, dark = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    assert (light + 0.05) / (dark + 0.05) >= 7  # WCAG AAA for small text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install -y chromium)")
def test_cards_hold_big_images_and_long_class_names_in_a_browser(tmp_path):
    names = ["american_pit_bull_terrier_with_a_name_that_never_ends", "b", "c"]
    x = np.random.default_rng(0).integers(0, 256, (60, 160, 160, 3)).astype(np.uint8)
    study = _study(tmp_path / "s", mem=np.where(np.arange(60) % 2 == 0, 0.6, 0.0), n=60, n_test=20, trials=20,
                   block=20, x=x, image_shape=(160, 160, 3), classes=names)
    index = write_report(study)
    probe = index.parent / "probe.html"
    probe.write_text(index.read_text().replace("</body>", """<script>
      var bad = 0, n = 0;
      document.querySelectorAll('.card').forEach(function (card) {
        n++;
        var box = card.getBoundingClientRect();
        card.querySelectorAll('img, .cap, .lab').forEach(function (el) {
          var r = el.getBoundingClientRect();
          if (r.left < box.left - 0.5 || r.right > box.right + 0.5) bad++;
        });
        if (card.scrollWidth > card.clientWidth) bad++;
      });
      document.documentElement.setAttribute('data-cards', n + ':' + bad);
      </script></body>"""))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,900", "--virtual-time-budget=10000",
           "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    n, bad = map(int, re.search(r'data-cards="(\d+):(\d+)"', dom).groups())
    assert n >= 10 and bad == 0


# ----------------------------------------------------------------- 3 and 11. figures
@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the report functions draw, by file name."""
    out = {}
    save = figures._save

    def keep(fig, path):
        out[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", keep)
    return out


def test_precision_plot_with_one_block_of_trials(heavy, drawn, tmp_path):
    _, scores, page = heavy
    assert len(scores.se_curve_trials) == 1  # one block: a single point
    figures.precision_curve(scores, tmp_path / "p.png")
    ax = drawn["p.png"].axes[0]
    by_label = {ln.get_label(): ln for ln in ax.get_lines()}
    bound = next(ln for k, ln in by_label.items() if k.startswith("bound"))
    assert bound.get_xdata()[0] == 2 and bound.get_xdata()[-1] == scores.trials  # from t = 2, not a dot
    curve = by_label["median SE of mem (this study)"]
    assert curve.get_marker() == "o" and curve.get_markersize() >= 5
    assert curve.get_zorder() > by_label[next(k for k in by_label if k.startswith("median SE of memorized"))].get_zorder()
    assert ax.get_xlim()[0] <= 2 and ax.get_ylim()[0] < 0  # the bound's start shown; an SE of 0 above the axis
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks) and len(ticks) >= 3
    cap = _caption(page, "precision")
    assert "The curve has only 1 point (one per block of trials), too few to show whether it is still falling" in cap
    assert "still falling steeply" not in cap


def test_precision_caption_when_the_median_se_is_zero_throughout(heavy, tmp_path):
    study, scores, _ = heavy
    flat = dataclasses.replace(scores, se_curve_trials=np.array([10, 20, 30, 40]), se_curve_median=np.zeros(4))
    cap = _caption(write_report(study, out_dir=tmp_path / "r", scores=flat).read_text(), "precision")
    assert "median SE is 0 at every point" in cap and "still falling steeply" not in cap


def test_legends_and_labels_stay_off_the_data(heavy, drawn, tmp_path):
    _, scores, _ = heavy
    figures.mem_histogram(scores, tmp_path / "h.png")
    figures.mem_vs_influence(scores, tmp_path / "s.png")
    figures.precision_curve(scores, tmp_path / "p.png")
    for name, fig in drawn.items():
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        legend, box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert legend.y1 <= box.y0, name  # below the axes, never over the bars or dots
        assert not ax.texts, name  # counts and correlations go in the title, not a box over the data


# ----------------------------------------------------------------- 4, 5. wording from the numbers
def test_heavy_memorization_is_not_described_as_near_zero(heavy):
    _, scores, page = heavy
    mem = scores.mem[np.isfinite(scores.mem)]
    near = int((np.abs(mem) < 0.1).sum())
    assert near / len(mem) < 0.5
    cap = _caption(page, "memorization")
    assert "most examples sit near 0" not in cap and "most examples" not in cap
    said = "no example sits within 0.1 of 0" if not near else f"only {near} ({pct(near / len(mem))}) sit within 0.1"
    assert said in cap
    # typical: never a memorized example, and the lead says how far from 0 the shown ones are
    typ = _section(page, "typical")
    shown = [int(i) for i in re.findall(r'<span class="muted">#(\d+)(?: &middot; row \d+)?</span>', typ)]
    assert shown and all(scores.mem[i] < 0.25 for i in shown)
    far = np.abs(scores.mem[shown]).max()
    assert far >= 0.1  # this study has no typical example near 0 ...
    assert f"Not all are near 0 in this study: the estimates shown reach |mem| = {far:.3f}" in _lead(page, "typical")
    assert "closest to 0 (models classify them" not in _lead(page, "typical")  # ... so it is not claimed


def test_scatter_caption_follows_the_same_class_option(heavy, tmp_path):
    study, scores, page = heavy
    assert scores.options["same_class"] is False
    assert "largest influence on any test example, of any class" in _caption(page, "mem-vs-influence")
    assert "of its class (y)" not in _caption(page, "mem-vs-influence")
    same = study.estimate(save=False)
    text = write_report(study, out_dir=tmp_path / "r", scores=same).read_text()
    assert "largest influence on a test example of its class (y)" in _caption(text, "mem-vs-influence")


# ----------------------------------------------------------------- 7. no absolute path
def test_footer_shows_the_scores_path_as_the_subtitle_does(heavy, tmp_path, monkeypatch):
    study, scores, _ = heavy
    monkeypatch.chdir(Path(study.path).parent)
    text = write_report(study, out_dir=tmp_path / "r", scores=scores).read_text()
    footer = re.search(r"<footer>(.*?)</footer>", text, re.S).group(1)
    assert "scores (<code>study/scores</code>)" in footer
    assert str(Path(study.path).parent) not in text  # the author's folders appear nowhere


# ----------------------------------------------------------------- 9. ties at the threshold
def test_most_memorized_counts_ties_at_the_threshold_like_the_summary(heavy):
    _, scores, _ = heavy
    mem = np.full(len(scores.mem), 0.1)
    mem[[3, 8]] = [0.25 - 1e-12, 0.2]  # 0.25 after rounding: memorized in the summary and the figures
    tied = dataclasses.replace(scores, mem=mem)
    idx, above = gallery.most_memorized(tied)
    assert above and idx.tolist() == [3] and tied.summary()["n_mem_ge_0.25"] == 1


# ----------------------------------------------------------------- 10. trials behind the scores vs the store
def test_trials_row_shows_the_scores_trials_and_the_store_count(tmp_path):
    study = _study(tmp_path / "s", mem=0.2, trials=20, block=10)  # both blocks done
    partial = ts.Study(study.data, study.learner, trials=40, ratio=0.7, seed=0, path=tmp_path / "s", block_size=10)
    scores = partial.estimate()  # from 20 trials
    partial.run(progress=False, shard=(0, 2))  # 30 of 40 now done
    page = write_report(partial, scores=scores).read_text()
    assert _row(page, "trials") == "scores from 20 trials; 30 done in the store, of 40 planned"
    assert "trials behind these scores" in page
    fresh = write_report(partial, out_dir=tmp_path / "r", scores=partial.estimate(save=False)).read_text()
    assert _row(fresh, "trials") == "30 of 40 planned"


# ----------------------------------------------------------------- 11. the smaller things
def test_three_trials_say_all_examples_lack_an_se(tmp_path):
    study = _study(tmp_path / "s", mem=0.2, trials=3, block=3)
    page = write_report(study).read_text()
    assert "All training examples were in fewer than 2 trials or out of fewer than 2, so no mem has a" in page
    assert "Some training examples" not in page


def test_one_duplicate_group_and_one_more_copy_are_singular(tmp_path):
    x = np.random.default_rng(0).normal(size=(120, 4)).astype(np.float32)
    x[1:25] = x[0]  # 25 copies: 24 shown and 1 more
    page = write_report(_study(tmp_path / "s", mem=0.0, x=x, trials=10, block=10)).read_text()
    text = html.unescape(page)
    assert "in 1 group of identical inputs" in text and "identical (1 group;" in text
    assert "and 1 more copy<" in text
    assert re.search(r"\b1 (groups|more copies)\b", text) is None


def test_no_mirror_pairs_is_said_as_such(heavy, tmp_path):
    study, scores, _ = heavy
    assert len(scores.pairs)
    none = dataclasses.replace(scores, n_pairs_negative=0, n_pairs_null=None)  # older scores: the mirror count
    row = html.unescape(_row(write_report(study, out_dir=tmp_path / "r", scores=none).read_text(), "n_pairs"))
    assert "No pair reached infl ≤ −0.150" in row and "saw no sign of noise" in row and "null count" in row
    assert "About 0%" not in row and "(0 pairs" not in row


def test_tables_are_described_as_rows_and_values_keep_their_se(heavy, tmp_path):
    _, _, page = heavy
    assert "Under each:" in _lead(page, "memorized")  # image cards
    card = re.search(r'<figure class="card".*?</figure>', page, re.S).group(0)
    assert re.search(r'<span class="nw">mem <span class="mem">[-0-9.]+</span> &plusmn; [0-9.n/a]+</span>', card)
    assert re.search(r"\.nw, \.ci \{ white-space:nowrap; \}", CSS)
    study = _study(tmp_path / "s", mem=np.where(np.arange(120) % 4 == 0, 0.5, 0.0), trials=20, block=20)
    lead = _lead(write_report(study).read_text(), "memorized")
    assert "Under each" not in lead and "Each row: the label" in lead and "first 5 features" in lead


def test_summary_card_compares_interval_widths(heavy):
    _, scores, page = heavy
    card = html.unescape(re.search(r'data-key="median_mem_ci_width">.*?class="k">(.*?)</div>', page).group(1))
    width = 2 * 1.96 * scores.se_bound
    assert card == f"median width of mem's 95% interval (±1.96 × SE bound {scores.se_bound:.3f}: {width:.3f} wide)"


def test_analysis_summaries_readings_and_ids(heavy):
    _, _, page = heavy
    sec = _section(page, "analyses")
    ids = re.findall(r'<div class="analysis" id="([^"]+)">', sec)
    assert ids == ["analysis-my-run-2", "analysis-my-run-2-2"]  # safe and unique
    assert summary_value(None) == "&mdash;" and summary_value(13.0) == "13" and summary_value(0.5) == "0.5000"
    assert '<td>missing</td><td class="num">&mdash;</td>' in sec and '<td class="num">13</td>' in sec
    assert "None" not in sec and "13.0000" not in sec
    assert "<ul><li>first point</li><li>second <code>point</code> wrapped on</li></ul>" in sec
    assert "<p>Findings:</p>" in sec and "<p>After.</p>" in sec


def test_markdown_lists_and_paragraphs():
    text = "# Title\nintro *here*\n\n1. one\n2. two & more\nplain after\n\n- a\n- b"
    assert markdown_paragraphs(text) == ("<p>Title intro <em>here</em></p>\n<ol><li>one</li><li>two &amp; more</li>"
                                         "</ol>\n<p>plain after</p>\n<ul><li>a</li><li>b</li></ul>")


def test_typical_section_says_how_many_classes_are_not_shown(tmp_path):
    n, k = 300, 30  # memorized examples in all 30 classes: 2 per class would pass the cap of 48
    study = _study(tmp_path / "s", mem=np.where(np.arange(n) < 2 * k, 0.6, 0.0), n=n, n_classes=k,
                   trials=20, block=20)
    page = write_report(study).read_text()
    mem_classes = set(re.findall(r'<td data-v="(c\d+)">', _section(page, "memorized")))
    typ_classes = set(re.findall(r'<td data-v="(c\d+)">', _section(page, "typical")))
    assert len(mem_classes) > TYPICAL_CAP // 2 and typ_classes < mem_classes
    missing = len(mem_classes) - len(typ_classes)
    assert (f"{missing} classes of the memorized examples are not shown: the section holds at most "
            f"{TYPICAL_CAP} examples.") in _lead(page, "typical")


# ----------------------------------------------------------------- 12. the top-level export
def test_write_report_is_exported_at_the_top_level():
    assert ts.write_report is write_report and "write_report" in ts.__all__


# ----------------------------------------------------------------- 12. captions that follow the data
def test_scatter_caption_draws_no_conclusion_when_the_pairs_are_mostly_noise(heavy, tmp_path):
    study, scores, _ = heavy
    claim = "Examples that must be memorized to be learned are often the ones"
    found = int(scores.options.get("pairs_found", len(scores.pairs)))
    assert found >= 10

    def caption(noise, name):
        s = dataclasses.replace(scores, n_pairs_negative=noise, n_pairs_null=noise)
        cap = _caption(write_report(study, out_dir=tmp_path / name, scores=s).read_text(), "mem-vs-influence")
        return cap, s.pairs_false_share_est

    cap, share = caption(int(0.8 * found), "noisy")
    assert share >= 0.5
    assert claim not in cap  # the paper's finding is not stated as this study's fact
    assert "A clear positive correlation would mean" in cap and "what the paper reports" in cap
    assert re.search(r"Pearson r = -?[0-9.]+( \((essentially none|weak|moderate|strong)[a-z ]*\))?, Spearman", cap)
    assert f"about {pct(share, 0)} of the high-influence pairs" in cap and "mostly noise" in cap
    assert "no conclusion is drawn" in cap
    cap, share = caption(int(0.2 * found), "clean")
    assert share < 0.5
    assert claim not in cap and "no conclusion is drawn" not in cap
    assert f"about {pct(share, 0)} of the high-influence pairs" in cap
    cap, share = caption(None, "unknown")
    assert share is None and "was not estimated" in cap and "no conclusion is drawn" not in cap


def test_most_memorized_lead_says_the_held_out_answer_may_be_the_own_label(heavy):
    _, _, page = heavy
    lead = _lead(page, "memorized")
    assert "predict instead" not in lead
    assert "the label the models that did not train on it predict most often" in lead
    assert "its own label when they mostly get it right" in lead


def test_largest_se_above_the_bound_is_explained(heavy, tmp_path):
    study, scores, _ = heavy
    se = np.where(np.isfinite(scores.mem_se), np.minimum(scores.mem_se, 0.5 * scores.se_bound), scores.mem_se)
    below = dataclasses.replace(scores, mem_se=se)
    row = html.unescape(_row(write_report(study, out_dir=tmp_path / "b", scores=below).read_text(), "max_mem_se"))
    assert "Above the theoretical bound" not in row
    i = int(np.flatnonzero(np.isfinite(se))[0])
    se = se.copy()
    se[i] = 1.3 * scores.se_bound
    above = dataclasses.replace(scores, mem_se=se)
    row = html.unescape(_row(write_report(study, out_dir=tmp_path / "a", scores=above).read_text(), "max_mem_se"))
    assert row.startswith(f"{1.3 * scores.se_bound:.4f} (")
    assert f"Above the theoretical bound {scores.se_bound:.4f}" in row
    assert "with few trials an example's plug-in SE" in row and "precision section" in row


def test_examples_the_models_do_not_fit_are_shown_with_what_held_out_models_predict(tmp_path):
    n, n_test = 90, 30
    rng = np.random.default_rng(0)
    y, yt = np.arange(n) % 3, np.arange(n_test) % 3
    data = ts.Dataset(rng.normal(size=(n, 4)).astype(np.float32), y, np.zeros((n_test, 4), np.float32), yt,
                      classes=["a", "b", "c"], name="fit")
    p_in = np.full(n, 0.95)
    p_in[[5, 17, 40]] = [0.05, 0.2, 0.4]  # trained on, still mostly wrong
    learner = ts.SyntheticLearner(p_in, np.minimum(p_in, 0.9), np.full(n_test, 0.3), np.zeros((n, n_test)))
    study = ts.Study(data, learner, trials=40, path=tmp_path / "s")
    study.run(progress=False)
    scores = study.estimate(save=False)
    page = write_report(study, scores=scores).read_text()
    section = _section(page, "not-fitted")
    lead = _lead(page, "not-fitted")
    shown = [int(v) for v in re.findall(r'<td class="num" data-v="(\d+)">\1</td><td data-v', section)]
    low = set(np.flatnonzero(scores.acc_in < 0.5).tolist())
    assert low and set(shown) == low and shown[0] == int(np.argmin(scores.acc_in))
    assert f"{len(low)} training examples are misclassified by most of the models" in lead
    assert "Memorization flags them poorly" in lead and 'href="#not-fitted"' in page
    clean = write_report(_study(tmp_path / "c", mem=np.zeros(120)), out_dir=tmp_path / "r").read_text()
    assert "Every training example is classified correctly by most of the models" in _section(clean, "not-fitted")


def test_not_fitted_section_blames_a_learner_that_predicts_one_class(tmp_path):
    from sklearn.dummy import DummyClassifier

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60, int), np.ones(20, int), np.full(10, 2)]
    data = ts.from_arrays(rng.normal(size=(90, 3)), y)
    study = ts.Study(data, ts.SklearnLearner(DummyClassifier(strategy="most_frequent")), trials=8,
                     path=tmp_path / "s")
    study.run(progress=False)
    lead = _lead(write_report(study).read_text(), "not-fitted")
    assert "predict 0 for 100% of them" in lead and "points to the learner rather than to the labels" in lead
