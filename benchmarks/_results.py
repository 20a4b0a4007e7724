"""Write one benchmark's section into benchmarks/RESULTS.md, replacing that section's previous text."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script it names; rerun that script to refresh it.\n"


def machine(device: str = "cpu") -> str:
    """A short description of where a figure was measured."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def write_section(key: str, body: str, path: Path | None = None) -> Path:
    """Replace (or append) the section ``<!-- key -->`` ... ``<!-- /key -->`` in RESULTS.md."""
    path = Path(os.environ.get("STREAMSSM_RESULTS", path or RESULTS))
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- {key} -->\n{body.rstrip()}\n<!-- /{key} -->\n"
    pat = re.compile(rf"<!-- {re.escape(key)} -->\n.*?<!-- /{re.escape(key)} -->\n", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def merge_sections(src: Path, dst: Path | None = None) -> list[str]:
    """Copy every ``<!-- key -->`` section of ``src`` (e.g. a results file brought back from a GPU
    machine) into RESULTS.md, replacing sections of the same key. Returns the keys merged."""
    text = Path(src).read_text()
    keys = []
    for m in re.finditer(r"<!-- ([^/].*?) -->\n(.*?)<!-- /\1 -->\n", text, re.S):
        write_section(m.group(1), m.group(2), dst)
        keys.append(m.group(1))
    return keys


if __name__ == "__main__":  # python benchmarks/_results.py merge FILE
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "merge":
        print("merged:", merge_sections(Path(sys.argv[2])))
