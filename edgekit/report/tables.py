"""The benchmark table: one row per (backend, precision, threads), Ultralytics-style."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, atomic_write_text

__all__ = ["ROW_KEYS", "Row", "STATUSES", "render_markdown", "render_rich", "write_results"]

#: results.json rows have exactly these keys, in this order.
ROW_KEYS = ("backend", "precision", "status", "size_mb", "top1", "agreement",
            "latency_ms_p50", "latency_ms_p90", "throughput_ips", "threads")

#: ok | export failed | verification failed | unsupported | unavailable
STATUSES = ("ok", "export failed", "verification failed", "unsupported", "unavailable")


@dataclass
class Row:
    backend: str
    precision: str
    status: str
    size_mb: float | None = None
    top1: float | None = None
    agreement: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    throughput_ips: float | None = None
    threads: int | None = None
    #: Everything else worth knowing (reason, executed precision, max diff, artifact path...).
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ROW_KEYS}


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


_HEADERS = ("backend", "precision", "status", "size MB", "top-1 %", "agreement %",
            "p50 ms", "p90 ms", "img/s", "threads", "executed / notes")


def _predicted_profile(rows: list[Row]) -> str | None:
    """The profile of the "predicted" column, if `--profile` asked for one."""
    return next((r.details["predicted_profile"] for r in rows if r.details.get("predicted_profile")), None)


def _cells(r: Row, predicted: bool = False) -> list[str]:
    agree = None if r.agreement is None else r.agreement * 100
    note = r.details.get("reason") or r.details.get("executed") or ""
    cells = [r.backend, r.precision, r.status, _fmt(r.size_mb), _fmt(r.top1), _fmt(agree),
             _fmt(r.latency_ms_p50, 3), _fmt(r.latency_ms_p90, 3), _fmt(r.throughput_ips, 0),
             _fmt(r.threads), note]
    if predicted:
        cells.insert(8, _fmt(r.details.get("predicted_ms"), 3))
    return cells


def _headers(rows: list[Row], short: bool = False) -> list[str]:
    h = list(("backend", "prec", "status", "MB", "top-1 %", "agree %", "p50 ms", "p90 ms", "img/s", "thr", "note")
             if short else _HEADERS)
    prof = _predicted_profile(rows)
    if prof:
        h.insert(8, f"predicted ms ({prof})")
    return h


def render_markdown(rows: list[Row], *, title: str | None = None, footer: str = "") -> str:
    out = io.StringIO()
    if title:
        out.write(f"## {title}\n\n")
    headers, predicted = _headers(rows), _predicted_profile(rows) is not None
    out.write("| " + " | ".join(headers) + " |\n")
    out.write("|" + "|".join("---" for _ in headers) + "|\n")
    for r in rows:
        out.write("| " + " | ".join(c.replace("|", "/") for c in _cells(r, predicted)) + " |\n")
    if footer:
        out.write("\n" + footer.rstrip() + "\n")
    return out.getvalue()


def render_rich(rows: list[Row], *, title: str | None = None):
    """A compact terminal table; the long notes go in numbered footnotes below it."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from rich import box

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    predicted = _predicted_profile(rows) is not None
    for h in _headers(rows, short=True):
        table.add_column(h, no_wrap=not h.startswith("predicted"),
                         justify="right" if h.endswith(("%", "ms", "MB", "/s", "thr", ")")) else "left")
    colors = {"ok": "green", "verification failed": "red", "export failed": "red"}
    notes: dict[str, int] = {}
    for r in rows:
        cells = _cells(r, predicted)
        c = colors.get(r.status, "yellow")
        cells[2] = f"[{c}]{cells[2]}[/{c}]"
        note = cells[-1]
        cells[-1] = f"[{notes.setdefault(note, len(notes) + 1)}]" if note else ""
        table.add_row(*cells)
    foot = Text("\n".join(f"[{i}] {n}" for n, i in notes.items()), overflow="fold")
    return Group(table, foot)


def write_results(out: Path, rows: list[Row], env: dict[str, Any], *, title: str,
                  footer: str = "") -> None:
    """results.json (exact keys), results.md, results.csv, details.json, environment.json."""
    out = Path(out)
    atomic_write_json(out / "results.json", [r.to_dict() for r in rows])
    atomic_write_json(out / "details.json", [{**r.to_dict(), **r.details} for r in rows])
    atomic_write_json(out / "environment.json", env)
    atomic_write_text(out / "results.md", render_markdown(rows, title=title, footer=footer))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ROW_KEYS))
    w.writeheader()
    for r in rows:
        w.writerow(r.to_dict())
    atomic_write_text(out / "results.csv", buf.getvalue())
