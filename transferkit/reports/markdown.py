"""Markdown: the same report, its images written as PNG files in ``report_files/`` next to it
and linked by relative path (so the folder renders on GitHub or in any Markdown viewer)."""

from __future__ import annotations

from .document import Code, Image, KeyValues, Report, Table, Text, unique_names

FILES_DIR = "report_files"


def _safe(x) -> str:
    """Text from a run (class names, file names, messages) as inert Markdown: raw HTML is
    escaped (a viewer would render it) and control characters (terminal escapes) are dropped."""
    text = "".join(c for c in str(x) if c == "\n" or (ord(c) >= 32 and ord(c) != 127))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(x) -> str:
    return _safe(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, files_dir: str = FILES_DIR) -> tuple[str, dict[str, bytes]]:
    """``(markdown_text, {relative_path: png_bytes})``; the caller writes both."""
    names = unique_names(report.images())
    files: dict[str, bytes] = {}
    out = [f"# {_safe(report.title)}", ""]
    if report.subtitle:
        out += [f"_{_safe(report.subtitle)}_", ""]
    for s in report.sections:
        out += ["#" * min(max(s.level, 2), 4) + " " + _safe(s.title), ""]
        for b in s.blocks:
            if isinstance(b, Text):
                t = _safe(b.text)
                if b.warning:
                    out += [f"> **{t}**" if b.emphasis else f"> **warning:** {t}", ""]
                else:
                    out += [f"> **{t}**" if b.emphasis else t, ""]
            elif isinstance(b, Table):
                out.append("| " + " | ".join(_cell(h) for h in b.head) + " |")
                out.append("|" + "|".join("---" for _ in b.head) + "|")
                out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in b.rows]
                out.append("")
                if b.caption:
                    out += [f"_{_safe(b.caption)}_", ""]
            elif isinstance(b, Image):
                rel = f"{files_dir}/{names[id(b)]}.png"
                files[rel] = b.png
                alt = _safe(b.caption or b.name).replace("]", ")").replace("[", "(")
                out += [f"![{alt}]({rel})", ""]
                if b.caption:
                    out += [f"_{_safe(b.caption)}_", ""]
            elif isinstance(b, Code):
                if b.summary:
                    out += [f"{_safe(b.summary)}:", ""]
                code = "".join(c for c in b.text if c in "\n\t" or ord(c) >= 32).replace("```", "` ` `")
                out += ["```", code.rstrip("\n"), "```", ""]
            elif isinstance(b, KeyValues):
                out += [f"- **{_safe(k)}**: {_safe(v)}" for k, v in b.items]
                out.append("")
            else:
                raise TypeError(f"unknown report block {type(b).__name__}")
    out.append("_Written by transferkit; regenerate with `transferkit report RUN_DIR`._")
    return "\n".join(out) + "\n", files
