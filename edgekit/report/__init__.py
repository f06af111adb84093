"""Rows and records -> JSON, Markdown, CSV and terminal tables."""

from .tables import ROW_KEYS, Row, render_markdown, render_rich, write_results

__all__ = ["ROW_KEYS", "Row", "render_markdown", "render_rich", "write_results"]
