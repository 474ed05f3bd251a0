"""A call's one outcome name and whether it is traced one by one (IT-SC-1, Garante 2014:
every silent call is traced); the wire model's outcome names are the core's."""

from __future__ import annotations

from typing import get_args

import pytest

from schemas.call_v1 import CallOutcomeName
from services.detector.core.model import CALL_OUTCOMES, CallOutcome


def outcome(**flags: object) -> CallOutcome:
    base: dict[str, object] = {
        "answered": False,
        "answered_by_person": False,
        "amd_machine": False,
        "silent": False,
        "abandoned": False,
        "out_of_hours": False,
        "short_ring": False,
    }
    return CallOutcome(**{**base, **flags})  # type: ignore[arg-type]


PERSON = {"answered": True, "answered_by_person": True}


@pytest.mark.parametrize(
    ("flags", "name", "traced"),
    [
        pytest.param({**PERSON, "silent": True, "abandoned": True}, "silent", True, id="silent"),
        pytest.param({**PERSON, "abandoned": True}, "abandoned", True, id="agent-too-late"),
        pytest.param(PERSON, "answered", False, id="agent-in-time"),
        pytest.param(
            {**PERSON, "violations": ("it-long-silent-wait",)},
            "answered",
            True,
            id="agent-in-time-but-long-silent-wait",
        ),
        pytest.param({"answered": True, "amd_machine": True}, "amd_machine", False, id="machine"),
        pytest.param({}, "unanswered", False, id="unanswered"),
        pytest.param(
            {"short_ring": True, "violations": ("uk-short-ring",)},
            "unanswered",
            True,
            id="short-ring-rule",
        ),
        pytest.param(
            {"out_of_hours": True}, "unanswered", False, id="out-of-hours-without-the-rule"
        ),
        pytest.param(
            {**PERSON, "silent": True, "abandoned": True, "unverifiable": ("it-comfort-noise",)},
            "silent",
            True,
            id="silent-comfort-noise-unreported",
        ),
    ],
)
def test_outcome_name_and_tracing(flags: dict[str, object], name: str, traced: bool) -> None:
    call = outcome(**flags)
    assert (call.name, call.traced) == (name, traced)
    assert call.name in CALL_OUTCOMES


def test_the_wire_outcomes_are_the_cores() -> None:
    assert get_args(CallOutcomeName) == CALL_OUTCOMES
