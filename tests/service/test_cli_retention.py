"""Garante 2014 (IT-SC-1, IT-SC-6): the per-campaign silent-call reports are kept at least
two years. The start commands refuse a shorter CDRWATCH_ALERT_RETENTION_DAYS before
anything starts, naming the profile (`create_app` refuses it as well, see
test_api_compliance.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import _retention_refusal
from services.common.settings import ApiSettings
from tests.stack import ROOT


def run_cli(
    args: list[str], data_dir: Path, retention_days: int
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRWATCH_")}
    env.update(
        CDRWATCH_ALERT_RETENTION_DAYS=str(retention_days),
        CDRWATCH_DATA_DIR=str(data_dir),
        # a broker address nothing listens on: `up` must not get as far as using it
        CDRWATCH_KAFKA_BOOTSTRAP="127.0.0.1:1",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(  # noqa: S603 - the project's own command
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args", [["up"], ["api", "--port", "0"]], ids=["cdrwatch-up", "cdrwatch-api"]
)
def test_a_retention_shorter_than_two_years_is_refused_at_start_naming_the_profile(
    tmp_path: Path, args: list[str]
) -> None:
    data_dir = tmp_path / "data"
    result = run_cli(args, data_dir, 729)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CDRWATCH_ALERT_RETENTION_DAYS" in result.stderr
    assert "730 days profile 'it' requires" in result.stderr
    assert "Garante" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    ("days", "refused"),
    [
        pytest.param(1, True, id="1-day"),
        pytest.param(729, True, id="729-days"),
        pytest.param(730, False, id="730-days"),
        pytest.param(3650, False, id="10-years"),
    ],
)
def test_the_start_check_follows_the_it_profile_minimum(days: int, refused: bool) -> None:
    refusal = _retention_refusal(ApiSettings(_env_file=None, alert_retention_days=days))  # type: ignore[call-arg]
    assert (refusal is not None) == refused
    if refused:
        assert "profile 'it'" in str(refusal)
