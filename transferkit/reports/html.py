"""Self-contained HTML: inline CSS, every image a base64 PNG ``data:`` URI, no script, no
external resource (the file can be mailed or archived alone and renders offline)."""

from __future__ import annotations

import base64
import re
from html import escape

from .document import Code, Image, KeyValues, Report, Table, Text, slug

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: #1d232b; background: #f6f7f9; margin: 0; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; min-height: 100vh; }
h1 { font-size: 26px; margin: 0 0 4px; }
.subtitle { color: #5b6572; margin: 0 0 18px; }
nav { font-size: 13px; margin: 0 0 18px; padding: 8px 12px; background: #f0f3f7; border-radius: 6px;
      display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: #2c5d95; text-decoration: none; white-space: nowrap; }
.subtitle { overflow-wrap: anywhere; }
h2 { font-size: 20px; border-bottom: 2px solid #e3e7ec; padding-bottom: 4px; margin-top: 34px; }
h3 { font-size: 16px; margin: 22px 0 8px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13.5px; }
th, td { border: 1px solid #dfe3e8; padding: 4px 10px; text-align: right; }
th { background: #f0f3f7; }
td:first-child, th:first-child, td.t { text-align: left; }
caption { caption-side: bottom; color: #5b6572; font-size: 12px; text-align: left; padding-top: 4px; }
figure { margin: 10px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eceff3; }
figcaption { color: #5b6572; font-size: 12.5px; }
pre { background: #f5f7fa; border: 1px solid #e3e7ec; padding: 10px; overflow-x: auto; font-size: 12.5px; }
.verdict { background: #fff8e1; border-left: 4px solid #e0a100; padding: 8px 12px; margin: 10px 0; }
.warning { background: #fdecea; border-left: 4px solid #c62828; padding: 8px 12px; margin: 10px 0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; font-size: 13.5px; }
dl.kv dt { color: #5b6572; } dl.kv dd { margin: 0; word-break: break-word; }
footer { margin-top: 40px; color: #8a939e; font-size: 12px; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_NUMBER = re.compile(r"^[-+<>=]*\s*[-+]?[\d.,]+(e[-+]?\d+)?%?(\s*±\s*[\d.]+)?$|^-$")


def _td(c) -> str:
    """Numbers align right, text left."""
    text = str(c)
    cls = "" if _NUMBER.match(text.strip()) else ' class="t"'
    return f"<td{cls}>{escape(text)}</td>"


def _block(b) -> str:
    if isinstance(b, Text):
        if b.warning:
            label = "" if b.emphasis else "<strong>warning:</strong> "
            return f'<p class="warning">{label}{escape(b.text)}</p>'
        cls = ' class="verdict"' if b.emphasis else ""
        return f"<p{cls}>{escape(b.text)}</p>"
    if isinstance(b, Table):
        head = "".join(f"<th>{escape(h)}</th>" for h in b.head)
        rows = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in b.rows)
        cap = f"<caption>{escape(b.caption)}</caption>" if b.caption else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(b, Image):
        cap = f"<figcaption>{escape(b.caption)}</figcaption>" if b.caption else ""
        alt = escape(b.caption or b.name, quote=True)
        return f'<figure><img src="{_data_uri(b.png)}" alt="{alt}">{cap}</figure>'
    if isinstance(b, Code):
        pre = f"<pre>{escape(b.text)}</pre>"
        return f"<details><summary>{escape(b.summary)}</summary>{pre}</details>" if b.summary else pre
    if isinstance(b, KeyValues):
        items = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in b.items)
        return f'<dl class="kv">{items}</dl>'
    raise TypeError(f"unknown report block {type(b).__name__}")


def render_html(report: Report) -> str:
    """The report as one HTML document (UTF-8 text)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body><main>",
             f"<h1>{escape(report.title)}</h1>"]
    if report.subtitle:
        parts.append(f'<p class="subtitle">{escape(report.subtitle)}</p>')
    ids, seen = {}, {}
    for s in report.sections:
        base = slug(s.title)
        seen[base] = seen.get(base, 0) + 1
        ids[id(s)] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    top = [s for s in report.sections if s.level <= 2]
    if len(top) > 1:
        parts.append("<nav>" + "".join(f'<a href="#{ids[id(s)]}">{escape(s.title)}</a>' for s in top) + "</nav>")
    for s in report.sections:
        h = f"h{min(max(s.level, 2), 4)}"
        parts.append(f'<section><{h} id="{ids[id(s)]}">{escape(s.title)}</{h}>')
        parts.extend(_block(b) for b in s.blocks)
        parts.append("</section>")
    parts.append("<footer>written by transferkit; regenerate with <code>transferkit report RUN_DIR</code></footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
