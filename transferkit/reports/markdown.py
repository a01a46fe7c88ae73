"""Markdown: the same report, its images written as PNG files in ``report_files/`` next to it
and linked by relative path (so the folder renders on GitHub or in any Markdown viewer)."""

from __future__ import annotations

from .document import Code, Image, KeyValues, Report, Table, Text, unique_names

FILES_DIR = "report_files"


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, files_dir: str = FILES_DIR) -> tuple[str, dict[str, bytes]]:
    """``(markdown_text, {relative_path: png_bytes})``; the caller writes both."""
    names = unique_names(report.images())
    files: dict[str, bytes] = {}
    out = [f"# {report.title}", ""]
    if report.subtitle:
        out += [f"_{report.subtitle}_", ""]
    for s in report.sections:
        out += ["#" * min(max(s.level, 2), 4) + " " + s.title, ""]
        for b in s.blocks:
            if isinstance(b, Text):
                if b.warning:
                    out += [f"> **{b.text}**" if b.emphasis else f"> **warning:** {b.text}", ""]
                else:
                    out += [f"> **{b.text}**" if b.emphasis else b.text, ""]
            elif isinstance(b, Table):
                out.append("| " + " | ".join(_cell(h) for h in b.head) + " |")
                out.append("|" + "|".join("---" for _ in b.head) + "|")
                out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in b.rows]
                out.append("")
                if b.caption:
                    out += [f"_{b.caption}_", ""]
            elif isinstance(b, Image):
                rel = f"{files_dir}/{names[id(b)]}.png"
                files[rel] = b.png
                alt = (b.caption or b.name).replace("]", ")").replace("[", "(")
                out += [f"![{alt}]({rel})", ""]
                if b.caption:
                    out += [f"_{b.caption}_", ""]
            elif isinstance(b, Code):
                if b.summary:
                    out += [f"{b.summary}:", ""]
                out += ["```", b.text.rstrip("\n"), "```", ""]
            elif isinstance(b, KeyValues):
                out += [f"- **{k}**: {v}" for k, v in b.items]
                out.append("")
            else:
                raise TypeError(f"unknown report block {type(b).__name__}")
    out.append("_Written by transferkit; regenerate with `transferkit report RUN_DIR`._")
    return "\n".join(out) + "\n", files
