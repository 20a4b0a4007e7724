"""Load a script of ``benchmarks/`` as a module, for the tests that check the code a benchmark runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module named ``streamssm_bench_<name>`` (not put in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(f"streamssm_bench_{name}", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
