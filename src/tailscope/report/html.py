"""HTML pieces of the report: escaping, number formatting, styles, the sorting script."""

from __future__ import annotations

import html
import json
import math
import re
from urllib.parse import quote

import numpy as np


def esc(value) -> str:
    """Any value as escaped HTML text."""
    return html.escape(str(value), quote=True)


def url(path: str) -> str:
    """A relative file path as an escaped URL attribute value."""
    return esc(quote(path))


def is_num(x) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def fmt(x, digits: int = 3) -> str:
    """A number for the page; None, NaN and infinities read "n/a"."""
    if x is None or (is_num(x) and not math.isfinite(float(x))):
        return "n/a"
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    if is_num(x):
        return f"{float(x):.{digits}f}"
    return str(x)


def plural(n: int, word: str, many: str | None = None) -> str:
    """ "1 group", "2 groups" (``many`` for irregular plurals: plural(n, "copy", "copies"))."""
    return f"{fmt(int(n))} {word if int(n) == 1 else (many or word + 's')}"


def anchor(name: str) -> str:
    """A name as a safe id/fragment: letters, digits, "-" and "_" kept, runs of anything else "-"."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(name)).strip("-") or "x"


def pct(x, digits: int = 1) -> str:
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    return f"{100 * float(x):.{digits}f}%"


def sort_value(x) -> str:
    """The data-v attribute a sortable cell sorts by."""
    if x is None or (is_num(x) and not math.isfinite(float(x))):
        return ""
    return esc(repr(float(x)) if is_num(x) else x)


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])"), r"<em>\1</em>"),
]


_BULLET = re.compile(r"^(?:[-*+]|\d+[.)])\s+")


def _inline(text: str) -> str:
    """Escaped text with `code`, **bold** and *italic* rendered."""
    body = esc(text)
    for pattern, repl in _INLINE:
        body = pattern.sub(repl, body)
    return body


def _render(kind: str | None, items: list[str]) -> list[str]:
    """A run of lines of one kind ("p", "ul" or "ol") as HTML."""
    if not items:
        return []
    if kind == "p":
        return [f"<p>{_inline(' '.join(items))}</p>"]
    return [f"<{kind}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{kind}>"]


def _blocks(lines: list[str]) -> list[str]:
    """One Markdown paragraph as <p> text and lists; an indented line continues a list item."""
    out: list[str] = []
    kind, items = None, []
    for line in lines:
        text = line.strip()
        bullet = _BULLET.match(text)
        if bullet:
            tag = "ol" if text[0].isdigit() else "ul"
            if kind != tag:
                out += _render(kind, items)
                kind, items = tag, []
            items.append(text[bullet.end():])
        elif kind in ("ul", "ol") and line[:1].isspace():
            items[-1] += " " + text
        else:
            if kind != "p":
                out += _render(kind, items)
                kind, items = "p", []
            items.append(text)
    return out + _render(kind, items)


def markdown_paragraphs(text: str) -> str:
    """A reading (plain Markdown) as escaped HTML: paragraphs and bullet or numbered lists.

    Only `code`, **bold** and *italic* are rendered inside; a heading line (#) becomes text.
    """
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.rstrip() for ln in para.splitlines() if ln.strip()]
        if lines and lines[0].lstrip().startswith("#"):
            lines[0] = lines[0].lstrip().lstrip("#").strip()
        out.extend(_blocks(lines))
    return "\n".join(out)


def summary_value(v) -> str:
    """A value from an analysis' summary dict, escaped: null as a dash, 13.0 as 13."""
    if v is None:
        return "&mdash;"
    if is_num(v):
        if isinstance(v, float | np.floating) and not float(v).is_integer():
            return esc(fmt(v, 4))
        # JSON turns some counts into floats; 13.0000 would suggest a measured fraction
        return esc(fmt(int(v)))
    if isinstance(v, str | bool):
        return esc(v)
    text = json.dumps(v, default=str)
    return esc(text if len(text) <= 200 else text[:197] + "...")


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --panel:#f6f8fa; --accent:#0969da; --warn:#9a6700; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color:var(--fg); background:var(--bg); }
header.top { background:#24292f; color:#fff; padding:18px 28px; }
header.top h1 { margin:0; font-size:22px; }
header.top p { margin:4px 0 0; color:#c9d1d9; font-size:14px; }
header.top code { background:#3d444d; color:#f0f6fc; }
nav { position:sticky; top:0; z-index:5; background:var(--panel); border-bottom:1px solid var(--line); padding:6px 28px; font-size:14px; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; }
main { max-width:1160px; margin:0 auto; padding:8px 28px 60px; }
section { padding-top:12px; border-bottom:1px solid var(--line); padding-bottom:18px; }
h2 { font-size:20px; margin:18px 0 8px; }
h3 { font-size:16px; margin:14px 0 6px; }
p.lead, p.note { color:var(--muted); margin:4px 0 10px; max-width:900px; }
p.warn { color:var(--warn); }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin:10px 0 14px; }
.stat { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:150px; }
.stat .v { font-size:22px; font-weight:600; }
.stat .k { font-size:12.5px; color:var(--muted); }
table { border-collapse:collapse; font-size:13.5px; margin:6px 0 10px; }
th, td { border:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:middle; }
th { background:var(--panel); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
table.kv td:first-child { color:var(--muted); }
table.sortable th[data-sort] { cursor:pointer; user-select:none; }
table.sortable th[data-sort]::after { content:" \\2195"; color:#8c959f; }
table.sortable th[data-dir=asc]::after { content:" \\25B2"; color:var(--fg); }
table.sortable th[data-dir=desc]::after { content:" \\25BC"; color:var(--fg); }
figure.plot { margin:10px 0 16px; }
figure.plot img { max-width:100%; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:13.5px; max-width:860px; margin-top:4px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(132px, 1fr)); gap:10px; }
.card { margin:0; border:1px solid var(--line); border-radius:8px; padding:8px; background:#fff; text-align:center; min-width:0; }
.card img { image-rendering:pixelated; background:#000; max-width:100%; height:auto; }
.card .cap { font-size:12.5px; line-height:1.35; margin-top:4px; overflow-wrap:anywhere; }
.nw, .ci { white-space:nowrap; }  /* a value stays on the line of its SE or interval */
.card .lab { font-weight:600; }
.card .muted, .muted { color:var(--muted); }
.thumb { image-rendering:pixelated; background:#000; vertical-align:middle; max-width:128px; height:auto; }
.pairimg { display:flex; gap:6px; align-items:center; }
.analysis { margin:10px 0 20px; }
code { background:var(--panel); padding:0 3px; border-radius:3px; }
footer { color:var(--muted); font-size:12.5px; padding:20px 28px; max-width:1160px; margin:0 auto; }
"""

# Sort tables by clicking a header; count images that loaded (read back by the tests
# through data-images-loaded / data-images-broken on <html>).
SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v === null || v === '') return null;
    var f = parseFloat(v);
    return isNaN(f) ? v : f;
  }
  function sortBy(th) {
    var table = th.closest('table');
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute('data-dir') === 'desc' ? 'asc' : 'desc';
    Array.prototype.forEach.call(table.querySelectorAll('th'), function (h) { h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', dir);
    var sign = dir === 'asc' ? 1 : -1;
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null && y === null) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      return x < y ? -sign : (x > y ? sign : 0);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable th[data-sort]'), function (th) {
    th.addEventListener('click', function () { sortBy(th); });
  });
  window.addEventListener('load', function () {
    var ok = 0, bad = 0;
    Array.prototype.forEach.call(document.images, function (im) {
      if (im.complete && im.naturalWidth > 0) ok++; else bad++;
    });
    document.documentElement.setAttribute('data-images-loaded', String(ok));
    document.documentElement.setAttribute('data-images-broken', String(bad));
  });
})();
"""


def page(title: str, subtitle: str, nav: list[tuple[str, str]], sections: list[str], footer: str) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header class=\"top\" id=\"top\"><h1>{esc(title)}</h1><p>{subtitle}</p></header>\n"
        f"<nav>{links}</nav>\n<main>\n" + "\n".join(sections) + "\n</main>\n"
        f"<footer>{footer}</footer>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def figure(src: str, alt: str, caption: str, width: int | None = None) -> str:
    w = f' width="{int(width)}"' if width else ""
    return (f'<figure class="plot"><img src="{url(src)}" alt="{esc(alt)}"{w}>'
            f"<figcaption>{caption}</figcaption></figure>")
