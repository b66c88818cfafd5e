"""The layers run one way and the diagram in docs/architecture.md is the code's (tools/module_graph.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_upward_import_no_cycle_and_a_current_diagram():
    process = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "module_graph.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr


def test_the_tests_do_not_import_the_benchmarks():
    offenders = [
        path.name
        for path in (ROOT / "tests").glob("*.py")
        if any(line.lstrip().startswith(("import bench", "from bench")) for line in path.read_text().splitlines())
    ]
    assert offenders == []
