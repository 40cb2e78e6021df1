"""The benchmark harness still runs: `python -m bench --smoke` at tiny sizes writes a results file.

This checks that the benchmarks work, never how fast anything is (no assertions on timings).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .helpers import ROOT

pytestmark = pytest.mark.slow   # runs every benchmark against engines it starts


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench-out"
    res = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    report = out / "RESULTS.md"
    detail = f"exit {res.returncode}\n--- stdout ---\n{res.stdout[-4000:]}\n--- stderr ---\n{res.stderr[-6000:]}"
    assert res.returncode == 0, detail
    assert report.exists(), detail
    text = report.read_text()
    for bench_id in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "BL"):
        assert f"## {bench_id}." in text, f"{bench_id} missing from RESULTS.md\n{text}"
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["smoke"] is True
    assert not [r["id"] for r in data["results"] if r["error"]], detail
