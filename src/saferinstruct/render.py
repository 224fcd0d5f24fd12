"""What the reports render with: clipped text, the content warning, tables and plots as
HTML and Markdown. A shared lower layer: the data report, the comparison report and the
recovery examples all use it. Pure functions of strings and numbers.

    html_table("Funnel", ["stage", "in"], [["induce", "4"]])
    md_table("Funnel", ["stage", "in"], [["induce", "4"]])
    img(png_bytes(fig), "funnel")           # an <img> with the PNG embedded
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

CLIP = 160
"""Examples in reports are cut to this many characters."""
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
    "padding:3px 8px;font-size:14px}th{background:#f3f3f3}.warn{background:#fff3cd;"
    "border:1px solid #e0c36c;padding:.6em 1em}details{margin:1em 0}"
    ".ex{border-left:3px solid #ccc;padding-left:.6em;margin:.6em 0;font-size:14px}"
)
def warning(kinds: str) -> str:
    """The content warning for a report whose texts are of these `kinds` (the run's
    categories, or a description of the prompts)."""
    return (
        f"Content warning: this report quotes real text of these kinds: {kinds}. The "
        "examples section shows short, truncated excerpts; it is collapsed by default."
    )

Table = tuple[str, list[str], list[list[str]]]
"""(title, header, rows): one table, rendered the same way in HTML and Markdown."""


def clip(text: Any, limit: int = CLIP) -> str:
    """Whitespace collapsed and cut to at most `limit` characters (ending in '…')."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def fmt(v: Any) -> str:
    """A table cell: '-' for None, 3 decimals for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def img(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded (self-contained HTML)."""
    b64 = base64.b64encode(png).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{b64}" style="max-width:100%">'


def html_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = (
        "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        or f"<tr><td colspan={len(header)}>none</td></tr>"
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def md_cell(text: str) -> str:
    """Text for a Markdown table cell: `|` escaped, and `<`, `>`, `&` as entities so no
    quoted text becomes HTML (quotes and apostrophes stay as they are)."""
    return html.escape(text, quote=False).replace("|", "\\|")


def md_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines if rows else lines[:1] + ["", "none"])


def html_page(title: str, body: list[str]) -> str:
    """A self-contained HTML page with the shared style."""
    head = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
    )
    return "\n".join([head, f"<h1>{html.escape(title)}</h1>", *body, "</body></html>"])
