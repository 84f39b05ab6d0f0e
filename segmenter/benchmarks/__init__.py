"""One module per ``python -m segmenter bench`` benchmark; each exposes ``register(subparsers)``.

Reports are JSON with the key names of ../shared/BENCHMARK.md; see :func:`write_report`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


def _clean(o):
    if isinstance(o, float):
        return None if math.isnan(o) or math.isinf(o) else round(o, 6)
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item"):
        return _clean(o.item())
    return o


def write_report(report: dict, out: str | None) -> None:
    """Write ``report`` as JSON to ``out`` (if given); NaN becomes null."""
    if out:
        p = Path(out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(_clean(report), indent=2) + "\n")
