"""One report, two renderings: Markdown (relative image links) and self-contained HTML.

The report is a list of blocks; both renderers walk the same list, so they show the same content.
A figure is a PNG (Markdown, and HTML's fallback) and optionally an interactive HTML fragment; the
HTML page then embeds the plotly.js bundle once, so it still opens from disk with no network.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Facts:
    """Labelled facts, e.g. the study's meta data."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True, eq=False)
class Table:
    """A table of display strings; ``code_columns`` are shown as code (e.g. a command to copy),
    ``link_columns`` as links (paths relative to the report)."""

    frame: pd.DataFrame
    empty_text: str = "None."
    code_columns: tuple[str, ...] = ()
    link_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Image:
    """A PNG written next to the report; ``html`` is its interactive version for report.html (a plotly div)."""

    title: str
    path: Path
    html: str | None = None


Block = Heading | Text | Facts | Table | Image


def to_markdown(title: str, blocks: Sequence[Block]) -> str:
    """The report as Markdown; images are links relative to the report's directory."""
    parts = [f"# {_one_line(title)}"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {_one_line(block.text)}")
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Facts):
            parts.append("\n".join(f"- **{_one_line(k)}**: {_one_line(v)}" for k, v in block.items))
        elif isinstance(block, Table):
            frame = _as_links(_as_code(block.frame, block.code_columns), block.link_columns)
            parts.append(markdown_table(frame) if len(block.frame) else block.empty_text)
        elif isinstance(block, Image):
            parts.append(f"![{_one_line(block.title)}]({block.path.name})")
    return "\n\n".join(parts) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (``DataFrame.to_markdown`` would need ``tabulate``)."""
    header = [_cell(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _as_code(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    if not columns:
        return frame
    frame = frame.copy()
    for c in columns:
        frame[c] = [f"`{v}`" if str(v) else "" for v in frame[c]]
    return frame


def _as_links(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    columns = [c for c in columns if c in frame.columns]
    if not columns:
        return frame
    frame = frame.copy()
    for c in columns:
        frame[c] = [f"[{v}]({v})" if _is_link(v) else v for v in frame[c]]
    return frame


def _is_link(value: Any) -> bool:
    """Whether a cell of a link column holds a path (a missing value is shown as it is)."""
    return bool(str(value)) and str(value) != "–"


def to_html(title: str, blocks: Sequence[Block], *, plotly_js: str | None = None) -> str:
    """The report as one HTML file that opens from disk: inline CSS, figures as plotly divs (``plotly_js``
    inlined once in the head) or, without an interactive version, PNGs as data URIs."""
    import jinja2

    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    rendered = [_html_block(b) for b in blocks]
    interactive = any(b["kind"] == "plot" for b in rendered)
    return env.from_string(_TEMPLATE).render(
        title=title, blocks=rendered, plotly_js=_inline_js(plotly_js) if interactive and plotly_js else None)


def _inline_js(source: str):
    """plotly.js as template-safe markup; a ``</script`` inside it would end the tag early, so refuse."""
    import markupsafe

    if "</script" in source.lower():
        raise ValueError("the plotly.js bundle contains '</script' and cannot be inlined")
    return markupsafe.Markup(source)


def _html_block(block: Block) -> dict[str, Any]:
    if isinstance(block, Heading):
        return {"kind": "heading", "text": block.text, "level": min(max(block.level, 2), 6)}
    if isinstance(block, Text):
        return {"kind": "text", "text": block.text}
    if isinstance(block, Facts):
        return {"kind": "facts", "items": list(block.items)}
    if isinstance(block, Table):
        kinds = ["code" if str(c) in block.code_columns else "link" if str(c) in block.link_columns else ""
                 for c in block.frame.columns]
        rows = [[(str(v), kind if _is_link(v) else "") for v, kind in zip(row, kinds)]
                for row in block.frame.itertuples(index=False)]
        return {"kind": "table", "header": [str(c) for c in block.frame.columns], "rows": rows,
                "empty_text": block.empty_text}
    if block.html is not None:
        import markupsafe

        return {"kind": "plot", "title": block.title, "html": markupsafe.Markup(block.html)}
    encoded = base64.b64encode(block.path.read_bytes()).decode("ascii")
    return {"kind": "image", "title": block.title, "src": f"data:image/png;base64,{encoded}"}


def _cell(value: Any) -> str:
    return _one_line(str(value)).replace("|", "\\|")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; position: sticky; left: 0; background: #fff; }
th:first-child { background: #f3f3f3; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.15rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; font-family: ui-monospace, monospace; white-space: pre-wrap; }
figure { margin: 1rem 0; }
img { max-width: 100%; border: 1px solid #ddd; }
div.scroll { overflow-x: auto; }
div.plot { border: 1px solid #ddd; }
figcaption { font-size: 0.9rem; color: #555; }
code { font-family: ui-monospace, monospace; font-size: 0.85rem; white-space: nowrap; }
</style>
{% if plotly_js %}
<script type="text/javascript">{{ plotly_js }}</script>
{% endif %}
</head>
<body>
<h1>{{ title }}</h1>
{% for block in blocks %}
{% if block.kind == "heading" %}
<h{{ block.level }}>{{ block.text }}</h{{ block.level }}>
{% elif block.kind == "text" %}
<p>{{ block.text }}</p>
{% elif block.kind == "facts" %}
<dl class="facts">
{% for key, value in block["items"] %}
<dt>{{ key }}</dt><dd>{{ value }}</dd>
{% endfor %}
</dl>
{% elif block.kind == "table" %}
{% if block.rows %}
<div class="scroll"><table>
<thead><tr>{% for h in block.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in block.rows %}
<tr>{% for v, kind in row %}<td>{% if kind == "code" %}<code>{{ v }}</code>{% elif kind == "link" %}<a href="{{ v }}">{{ v }}</a>{% else %}{{ v }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table></div>
{% else %}
<p>{{ block.empty_text }}</p>
{% endif %}
{% elif block.kind == "plot" %}
<figure><div class="plot">{{ block.html }}</div><figcaption>{{ block.title }}</figcaption></figure>
{% elif block.kind == "image" %}
<figure><img src="{{ block.src }}" alt="{{ block.title }}"><figcaption>{{ block.title }}</figcaption></figure>
{% endif %}
{% endfor %}
</body>
</html>
"""
