"""End to end: the detector benchmark, run small, finishes every engine and its ledger
holds. Figures are not asserted (timings belong to bench/, not to tests); what is checked is
that the benchmark still measures the detector at all: a topic the detector adds, which
the drain wait then waits for, once made every detector run time out and report a rate
from part of the work."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from tests.helpers import bench_module
from tests.stack import ROOT

pytestmark = pytest.mark.e2e


def test_the_detector_benchmark_drains_and_its_ledger_holds() -> None:
    records = 3000
    done = subprocess.run(  # noqa: S603 - the project's own benchmark
        [
            sys.executable,
            str(ROOT / "bench" / "detector_throughput.py"),
            "--records",
            str(records),
            "--no-quix",
            "--split",
            "--timeout",
            "120",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert doc["failures"] == [], doc["failures"]
    engines = {r["engine"]: r for r in doc["results"]}
    assert set(engines) == {"bare faust agent", "cdrwatch detector", "cdrwatch detector, 2 stages"}
    for result in engines.values():
        assert not result["timed_out"], result["note"]
    assert bench_module("_summary")._detector_ledger(doc) is None
    detector = engines["cdrwatch detector"]["counted"]
    assert detector["processed"] == records
