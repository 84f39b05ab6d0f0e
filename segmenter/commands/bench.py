"""``python -m segmenter bench <name>``: the benchmarks of ../shared/BENCHMARK.md."""
from __future__ import annotations

from segmenter.cli import _discover


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark and write a JSON report",
                       description="Benchmarks; each writes a JSON report with --out.")
    bsub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bsub.required = True
    for mod in _discover("segmenter.benchmarks"):
        mod.register(bsub)
