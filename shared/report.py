"""Result tables laid out like the paper's, written as markdown + json (atomically) and printed."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.io import atomic_write_text


@dataclass
class Table:
    """A titled table: ``rows`` are dicts keyed by ``columns`` (missing cells print as '–')."""

    title: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    precision: int = 4

    def _cell(self, v) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return "inf" if math.isinf(v) else f"{v:.{self.precision}f}"
        return str(v)

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(self._cell(r.get(c)) for c in self.columns) + " |" for r in self.rows]
        lines += [""] + [f"- {n}" for n in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"


def _json_safe(x):
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def write_report(tables: list[Table], out_dir: str | Path, name: str = "results") -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.json`` under ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    md, js = out_dir / f"{name}.md", out_dir / f"{name}.json"
    atomic_write_text(md, "\n".join(t.to_markdown() for t in tables))
    atomic_write_text(js, json.dumps(_json_safe([asdict(t) for t in tables]), indent=2) + "\n")
    return md, js
