"""A small document model shared by the HTML and Markdown writers.

Sections hold blocks: :class:`Text` (a paragraph), :class:`Table`, :class:`Image` (PNG bytes),
:class:`Code` (preformatted text) and :class:`KeyValues` (a definition list). The writers only translate blocks;
what goes into a report is decided in :mod:`transferkit.reports.build`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Text:
    text: str
    emphasis: bool = False  # a verdict or a headline: drawn as a highlighted box
    warning: bool = False  # a caveat of the results (results.json "warnings"): drawn as a warning


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    name: str  # file stem in Markdown's report_files/ (made unique by the writer)
    png: bytes
    caption: str = ""


@dataclass
class Code:
    text: str
    summary: str = ""  # HTML: collapsed under this summary when given


@dataclass
class KeyValues:
    items: list[tuple[str, str]]


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2

    def add(self, *blocks) -> Section:
        self.blocks.extend(b for b in blocks if b is not None)
        return self


@dataclass
class Report:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def images(self) -> list[Image]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Image)]


def slug(text: str) -> str:
    s = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return s or "figure"


def unique_names(images: list[Image]) -> dict[int, str]:
    """``id(image) -> file stem``, unique within one report."""
    seen: dict[str, int] = {}
    out = {}
    for im in images:
        base = slug(im.name)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out[id(im)] = base if n == 0 else f"{base}-{n + 1}"
    return out
