"""Write the JSON Schema files of the wire models: `python -m schemas.generate [--check]`.

The files under schemas/json are generated and committed; `--check` exits 1 naming the
files that differ from what the models say (a unit test does the same).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.alert_v1 import AlertV1
from schemas.call_v1 import CallBatchV1
from schemas.cdr_batch_v1 import CdrBatchV1
from schemas.cdr_v1 import CdrV1, NormalizedCdrV1
from schemas.detector_v1 import (
    CalleeBatchV1,
    CampaignSettingsV1,
    DeadLetterV1,
    LockoutViolationV1,
)
from schemas.record_batch_v1 import RecordBatchV1
from schemas.stats_v1 import StatsV1

JSON_DIR = Path(__file__).resolve().parent / "json"
MODELS: dict[str, type[BaseModel]] = {
    "cdr_v1": CdrV1,
    "normalized_cdr_v1": NormalizedCdrV1,
    "cdr_batch_v1": CdrBatchV1,
    "alert_v1": AlertV1,
    "stats_v1": StatsV1,
    "call_batch_v1": CallBatchV1,
    "record_batch_v1": RecordBatchV1,
    "campaign_settings_v1": CampaignSettingsV1,
    "callee_batch_v1": CalleeBatchV1,
    "lockout_violation_v1": LockoutViolationV1,
    "dead_letter_v1": DeadLetterV1,
}


def render(model: type[BaseModel]) -> str:
    """The schema text of one model: what it accepts (validation mode), keys sorted."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files(json_dir: Path = JSON_DIR) -> dict[Path, str]:
    return {json_dir / f"{name}.schema.json": render(model) for name, model in MODELS.items()}


def drifted(json_dir: Path = JSON_DIR) -> list[Path]:
    """Files missing or different from the models."""
    return [
        path
        for path, text in expected_files(json_dir).items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.generate", description="Write or check schemas/json/*.json."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted()
        for path in stale:
            sys.stderr.write(f"drifted: {path}\n")
        if stale:
            sys.stderr.write("run: python -m schemas.generate\n")
        return 1 if stale else 0
    JSON_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in expected_files().items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
