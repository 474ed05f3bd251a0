"""Dialer-format mappers over the real samples (tests/fixtures/cdr, copied from
../shared/samples/cdr): the expected CDR v1 fields of every record, and one test per trap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.cdr_v1 import parse_cdr
from services.ingest.formats import FORMATS, create_mapper, map_text
from services.ingest.formats.base import (
    Mapped,
    MappingError,
    Rejected,
    Skipped,
    callee_number,
    load_mapping,
)
from services.ingest.formats.freeswitch_json import parse_document

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cdr"


def run(fmt: str, path: str, **overrides: Any) -> list[Any]:
    return map_text(fmt, (FIXTURES / path).read_bytes(), load_mapping(fmt, overrides=overrides))


def mapped(outcomes: list[Any]) -> list[dict[str, Any]]:
    return [o.record for o in outcomes if isinstance(o, Mapped)]


def assert_valid_cdr(record: dict[str, Any]) -> None:
    cdr, errors = parse_cdr(record)
    assert errors == [], errors
    assert cdr is not None


# --- mapping files --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_ships_a_valid_mapping(fmt: str) -> None:
    mapping = load_mapping(fmt)
    assert mapping.format == fmt
    create_mapper(fmt, mapping.model_copy(update={"timezone": "Europe/Rome"}))


def test_unknown_mapping_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('campain = ["accountcode"]\n')
    with pytest.raises(MappingError, match="campain"):
        load_mapping("asterisk-cdr-csv", path)


def test_unknown_zone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('timezone = "Europe/Atlantis"\n')
    with pytest.raises(MappingError, match="Atlantis"):
        load_mapping("asterisk-cdr-csv", path)


def test_mapping_for_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('format = "kamailio-acc"\n')
    with pytest.raises(MappingError, match="kamailio-acc"):
        load_mapping("asterisk-cdr-csv", path)


# --- FreeSWITCH JSON ------------------------------------------------------------------------


def test_duplicate_callflow_keys_keep_the_answered_profile() -> None:
    doc = parse_document(
        (FIXTURES / "freeswitch/fs_json_cdr_2014_bridged_dup_callflow.json").read_bytes()
    )
    times = [flow["times"]["answered_time"] for flow in doc["callflow"]]
    assert times == ["1396984227717006", "0"]  # a plain json.loads keeps only the "0"


def test_fs_json_2014_transferred_call_stays_answered() -> None:
    [record] = mapped(
        run(
            "freeswitch-json",
            "freeswitch/fs_json_cdr_2014_bridged_dup_callflow.json",
            callee_min_digits=3,
        )
    )
    assert record == {
        "call_id": "86cfd6e2-dbda-45a3-b59d-f683ec368e8b",
        "campaign_id": "1001",  # variables.accountcode
        "callee_number": "1002",
        "originated_at": "2014-04-08T19:10:21.278217+00:00",
        "ringing_at": "2014-04-08T19:10:21.497331+00:00",
        "answered_at": "2014-04-08T19:10:27.717006+00:00",
        "agent_connected_at": "2014-04-08T19:10:27.737268+00:00",
        "ended_at": "2014-04-08T19:10:42.257026+00:00",
        "dial_mode": "predictive",
        "hangup_cause": "NORMAL_CLEARING",
        "disposition": "ANSWER",
        "sip_code": 200,
        "cli_number": "1001",
    }


def test_fs_json_internal_extension_is_skipped_not_an_error() -> None:
    for path in (
        "freeswitch/fs_json_cdr_2014_bridged_dup_callflow.json",
        "freeswitch/fs_json_cdr_2015_bridged_dup_callflow.json",
        "freeswitch/fs_json_cdr_2018_callflow_array.json",
    ):
        [outcome] = run("freeswitch-json", path)
        assert isinstance(outcome, Skipped)
        assert outcome.reason == "internal_extension"


def test_fs_json_2015_answered_after_zero_ring() -> None:
    [record] = mapped(
        run(
            "freeswitch-json",
            "freeswitch/fs_json_cdr_2015_bridged_dup_callflow.json",
            callee_min_digits=3,
        )
    )
    assert record["call_id"] == "e3133bf7-dcde-4daf-9663-9a79ffcef5ad"
    assert record["callee_number"] == "1003"
    assert record["originated_at"] == "2015-07-07T14:52:08.471153+00:00"
    assert record["answered_at"] == "2015-07-07T14:52:08.971147+00:00"
    assert record["ended_at"] == "2015-07-07T14:53:14.010851+00:00"


def test_fs_json_2018_callflow_array() -> None:
    [record] = mapped(
        run(
            "freeswitch-json",
            "freeswitch/fs_json_cdr_2018_callflow_array.json",
            callee_min_digits=3,
            campaign_default="spring",
        )
    )
    assert record["campaign_id"] == "spring"  # no accountcode in this one
    assert record["call_id"] == "3da8bf84-c133-4959-9e24-e72875cb33a1"
    assert record["originated_at"] == "2018-01-11T10:25:44.534355+00:00"
    assert record["answered_at"] == "2018-01-11T10:25:47.954373+00:00"
    assert record["ended_at"] == "2018-01-11T10:26:55.494269+00:00"
    assert_valid_cdr({**record, "callee_number": "+393471234567"})


def test_fs_b_leg_is_an_internal_leg() -> None:
    body = (
        b'{"variables": {"uuid": "b", "start_uepoch": "1515666344534355", '
        b'"end_uepoch": "1515666415494269"}, "callflow": [{"caller_profile": '
        b'{"destination_number": "+393471234567", '
        b'"originator": {"originator_caller_profiles": []}},'
        b' "times": {"answered_time": "0"}}]}'
    )
    [outcome] = map_text("freeswitch-json", body)
    assert isinstance(outcome, Skipped) and outcome.reason == "internal_leg"


def test_fs_json_url_encoded_values_and_amd() -> None:
    body = (
        b'{"variables": {"uuid": "x1", "start_uepoch": "1764669600000000", '
        b'"answer_uepoch": "1764669605000000", "end_uepoch": "1764669660000000", '
        b'"cdrwatch_campaign": "spring%20offers", "amd_status": "machine"}, '
        b'"callflow": {"caller_profile": {"destination_number": "%2B393471234567"}}}'
    )
    [outcome] = map_text("freeswitch-json", body)
    assert isinstance(outcome, Mapped)
    record = outcome.record
    assert record["campaign_id"] == "spring offers"
    assert record["callee_number"] == "+393471234567"
    assert record["amd_result"] == "machine"
    assert record["answered_at"] == "2025-12-02T10:00:05+00:00"


def test_fs_json_that_is_not_json_is_rejected() -> None:
    [outcome] = map_text("freeswitch-json", b"{not json")
    assert isinstance(outcome, Rejected) and outcome.reason == "unreadable"


# --- FreeSWITCH XML -------------------------------------------------------------------------


def test_fs_xml_2014_unanswered_despite_normal_clearing() -> None:
    [record] = mapped(
        run(
            "freeswitch-xml",
            "freeswitch/fs_xml_cdr_2014_unanswered_refused.xml",
            campaign_default="c",
        )
    )
    assert record["call_id"] == "80183ec8-d424-11e3-8fb2-65b6c3cdac7d"  # not callflow unique-id
    assert record["callee_number"] == "+3468888646444"  # URL-decoded, 00 prefix read
    assert record["originated_at"] == "2014-05-05T07:11:38.421766+00:00"
    assert record["ended_at"] == "2014-05-05T07:11:38.421766+00:00"
    assert "answered_at" not in record
    assert record["hangup_cause"] == "NORMAL_CLEARING"
    assert record["disposition"] == "DELAYED NEGOTIATION"


def test_fs_xml_2008_disagreeing_answer_fields_follow_the_callflow() -> None:
    [record] = mapped(
        run(
            "freeswitch-xml",
            "freeswitch/fs_xml_cdr_2008_bridged_answered.xml",
            country="US",
            callee_strip_prefixes=["9"],
        )
    )
    # answer_epoch says 11:35:38 (the start); answered_time, answer_stamp and billsec 36
    # say 11:35:41: the callflow's channel timestamp wins.
    assert record["answered_at"] == "2008-07-31T18:35:41.528422+00:00"
    assert record["originated_at"] == "2008-07-31T18:35:38.212616+00:00"
    assert record["ended_at"] == "2008-07-31T18:36:17.795951+00:00"
    assert record["callee_number"] == "+12137991400"
    assert record["campaign_id"] == "1160"
    assert_valid_cdr(record)


def test_fs_xml_entities_are_refused() -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><cdr>&a;</cdr>'
    [outcome] = map_text("freeswitch-xml", body)
    assert isinstance(outcome, Rejected) and outcome.reason == "unreadable"


# --- FreeSWITCH CSV -------------------------------------------------------------------------


def test_fs_csv_same_callee_written_four_ways_is_one_number() -> None:
    records = mapped(
        run(
            "freeswitch-cdr-csv",
            "freeswitch/fs_cdr_csv_example_template.csv",
            timezone="Europe/Madrid",
            country="ES",
            campaign_default="c",
        )
    )
    assert [r["callee_number"] for r in records] == ["+34688886392"] * 5
    assert records[0]["originated_at"] == "2014-05-29T16:59:50+02:00"
    assert all("answered_at" not in r for r in records)
    for record in records:
        assert_valid_cdr(record)


def test_zone_less_timestamps_without_a_zone_are_refused() -> None:
    outcomes = run(
        "freeswitch-cdr-csv", "freeswitch/fs_cdr_csv_example_template.csv", campaign_default="c"
    )
    assert {type(o) for o in outcomes} == {Rejected}
    assert {o.reason for o in outcomes} == {"no_timezone"}
    assert "no timezone" in outcomes[0].message


# --- Asterisk -------------------------------------------------------------------------------


def test_asterisk_csv_rows_of_one_call_are_joined_by_linkedid() -> None:
    outcomes = run(
        "asterisk-cdr-csv",
        "asterisk/ast_cdr_csv_master_newcdrcolumns_masked.csv",
        timezone="Europe/Moscow",
        country="RU",
        callee=["src"],
        campaign_default="stadium",
    )
    assert sum(o.rows for o in outcomes) == 50  # every row in exactly one outcome
    by_id = {o.record["call_id"]: o for o in outcomes if isinstance(o, Mapped)}
    parallel = by_id["1706372196.12"]  # Local/ channels, 7 rows
    assert parallel.rows == 7
    assert "answered_at" not in parallel.record
    assert parallel.record["originated_at"] == "2024-01-27T16:16:36+03:00"
    assert parallel.record["ended_at"] == "2024-01-27T16:17:16+03:00"
    # three rows: two unanswered Dial legs and the PBX's own zero-length ANSWERED at hangup
    assert "answered_at" not in by_id["1706369600.6"].record
    answered = by_id["mainserverdss-1706421930.5"].record  # system-name prefixed uniqueid
    assert answered["answered_at"] == "2024-01-28T06:05:40+03:00"
    assert answered["agent_connected_at"] == "2024-01-28T06:05:40+03:00"
    assert answered["callee_number"] == "+79000000010"
    assert by_id["mainserverdss-1706443058.100"].record["disposition"] == "BUSY"


def test_asterisk_csv_non_utf8_rows_are_read() -> None:
    data = (FIXTURES / "asterisk/ast_cdr_csv_master_newcdrcolumns_masked.csv").read_bytes()
    assert b"\xa5" in data
    outcomes = run(
        "asterisk-cdr-csv",
        "asterisk/ast_cdr_csv_master_newcdrcolumns_masked.csv",
        timezone="Europe/Moscow",
        campaign_default="c",
    )
    assert not [o for o in outcomes if isinstance(o, Rejected)]


def test_asterisk_csv_pbx_numbers_as_callee_are_extensions() -> None:
    outcomes = run(
        "asterisk-cdr-csv",
        "asterisk/ast_cdr_csv_master_newcdrcolumns_masked.csv",
        timezone="Europe/Moscow",
        campaign_default="c",
    )
    assert {o.reason for o in outcomes if isinstance(o, Skipped)} == {"internal_extension"}
    assert not mapped(outcomes)  # dst is the PBX's own 6-digit numbers


def test_asterisk_custom_template_column_order() -> None:
    outcomes = run(
        "asterisk-cdr-custom",
        "asterisk/ast_cdr_custom_master_default_template.csv",
        timezone="Indian/Antananarivo",
        campaign_default="lab",
        callee_min_digits=4,
    )
    records = mapped(outcomes)
    assert len(records) == 14
    first = records[0]
    assert first["call_id"] == "1690325492.2"
    assert first["callee_number"] == "6789"
    assert first["originated_at"] == "2023-07-26T01:51:32+03:00"
    assert first["answered_at"] == "2023-07-26T01:51:50+03:00"
    assert first["ended_at"] == "2023-07-26T01:52:04+03:00"
    assert "answered_at" not in records[1]  # "" answer on a NO ANSWER row


def test_asterisk_spec_scenarios_with_header_and_docs_slips() -> None:
    outcomes = run(
        "asterisk-cdr-csv",
        "asterisk/ast_cdr_spec_scenarios.csv",
        header=True,
        columns=None,
        group_by=["scenario"],
        timezone="UTC",
        campaign_default="c",
        callee_min_digits=3,
    )
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    assert {o.reason for o in rejected} == {"bad_timestamp"}
    assert any("2013-04-13:12:08" in o.message for o in rejected)
    skipped = [o for o in outcomes if isinstance(o, Skipped)]
    assert [o.line for o in skipped] == [3]  # the call-file originate: dst "s"
    records = mapped(outcomes)
    single = next(r for r in records if r["callee_number"] == "8500")
    assert single["answered_at"] == "2013-03-04T13:11:20+00:00"
    assert "agent_connected_at" not in single  # nobody bridged: a silent call


def test_cel_answered_outgoing_trunk_call() -> None:
    [record] = mapped(
        run(
            "asterisk-cel",
            "asterisk/wazo_cel_answered_outgoing_trunk_call.csv",
            timezone="Europe/Paris",
            campaign_default="c",
            callee_strip_prefixes=["**9"],
            callee_min_digits=6,
            country="FR",
        )
    )
    assert record["call_id"] == "1434651125.37"
    assert record["callee_number"] == "642301"
    assert record["originated_at"] == "2015-06-18T14:12:05.935283+02:00"
    assert record["answered_at"] == "2015-06-18T14:12:12.500153+02:00"
    assert record["agent_connected_at"] == "2015-06-18T14:12:12.517027+02:00"
    assert record["ended_at"] == "2015-06-18T14:12:16.867848+02:00"


def test_cel_unanswered_outgoing_and_early_hangup() -> None:
    [unanswered] = mapped(
        run(
            "asterisk-cel",
            "asterisk/wazo_cel_unanswered_outgoing_trunk_call.csv",
            timezone="Europe/Paris",
            campaign_default="c",
            callee_strip_prefixes=["**9"],
            callee_min_digits=6,
        )
    )
    assert "answered_at" not in unanswered
    assert unanswered["ended_at"] == "2020-05-04T12:21:50.500000+02:00"
    [early] = run(
        "asterisk-cel", "asterisk/wazo_cel_early_hangup_incoming_call.csv", campaign_default="c"
    )
    assert isinstance(early, Skipped)  # exten 42307: an extension (5 digits)
    assert early.rows == 4


def test_cel_originate_mode_and_queue_hangup_cause() -> None:
    [originate] = run(
        "asterisk-cel",
        "asterisk/wazo_cel_unanswered_originate.csv",
        timezone="Europe/Paris",
        campaign_default="c",
        cel_mode="originate",
        callee=["cid_num"],
        callee_min_digits=4,
    )
    assert isinstance(originate, Mapped)
    # the first leg (the callee, in originate mode) answered; the agent leg never did
    assert originate.record["answered_at"] == "2015-06-18T14:15:50.127815+02:00"
    assert "agent_connected_at" not in originate.record
    [queue] = mapped(
        run(
            "asterisk-cel",
            "asterisk/wazo_cel_inbound_queue_call_agent_answered.csv",
            campaign_default="c",
            callee_strip_prefixes=["*"],
        )
    )
    assert queue["originated_at"] == "2025-09-08T15:33:24.567796-04:00"
    assert queue["agent_connected_at"] == "2025-09-08T15:33:29.075085-04:00"
    assert queue["hangup_cause"] == "16"


# --- Kamailio, VICIdial, NDJSON -------------------------------------------------------------


def test_kamailio_invite_and_bye_pair_into_one_call() -> None:
    [outcome] = run("kamailio-acc", "kamailio/kamailio_acc_syslog_tutorial.log")
    assert isinstance(outcome, Skipped) and outcome.rows == 2  # callee "carol": a SIP user
    body = (FIXTURES / "kamailio/kamailio_acc_syslog_tutorial.log").read_bytes()
    body = body.replace(b"dst_user=carol", b"dst_user=393471234567;campaign=spring")
    [call] = map_text("kamailio-acc", body)
    assert isinstance(call, Mapped)
    assert call.record["originated_at"] == "2013-07-22T11:49:57+00:00"
    assert call.record["answered_at"] == "2013-07-22T11:49:57+00:00"
    assert call.record["ended_at"] == "2013-07-22T11:50:05+00:00"
    assert call.record["campaign_id"] == "spring"
    assert call.record["sip_code"] == 200
    assert_valid_cdr(call.record)


def test_kamailio_invite_without_bye_is_rejected_with_its_line() -> None:
    body = (FIXTURES / "kamailio/kamailio_acc_syslog_tutorial.log").read_bytes().splitlines()[0]
    [outcome] = map_text("kamailio-acc", body)
    assert isinstance(outcome, Rejected) and outcome.reason == "unpaired" and outcome.line == 1


VICIDIAL = (
    "uniqueid,campaign_id,call_date,start_epoch,end_epoch,length_in_sec,status,phone_code,"
    "phone_number,user,term_reason,dial_time,queue_seconds,amd_status,dial_method\n"
    "1764669600.1,SPRING,2025-12-02 10:00:00,1764669600,1764669660,60,SALE,39,3471234567,"
    "agent1,CALLER,12,1,,RATIO\n"
    "1764669700.2,SPRING,2025-12-02 10:01:40,1764669700,1764669705,5,DROP,39,3471234568,"
    "VDAD,ABANDON,8,,,RATIO\n"
    "1764669800.3,SPRING,2025-12-02 10:03:20,1764669800,1764669830,30,NA,39,3471234569,"
    "VDAD,NONE,30,,,RATIO\n"
    "1764669900.4,SPRING,2025-12-02 10:05:00,1764669900,1764669920,20,AA,39,3471234560,"
    "VDAD,NONE,10,,MACHINE,MANUAL\n"
)


def test_vicidial_statuses_and_epoch_seconds() -> None:
    records = mapped(map_text("vicidial-csv", VICIDIAL.encode()))
    sale, drop, no_answer, machine = records
    assert sale["originated_at"] == "2025-12-02T09:59:48+00:00"  # start_epoch s − dial_time
    assert sale["answered_at"] == "2025-12-02T10:00:00+00:00"
    assert sale["agent_connected_at"] == "2025-12-02T10:00:01+00:00"
    assert sale["callee_number"] == "+393471234567"
    assert sale["campaign_id"] == "SPRING"
    assert sale["dial_mode"] == "predictive"
    assert "agent_connected_at" not in drop and drop["answered_at"]
    assert "answered_at" not in no_answer
    assert machine["amd_result"] == "machine" and machine["dial_mode"] == "manual"
    for record in records:
        assert_valid_cdr(record)


def test_ndjson_passes_records_and_rejects_bad_lines() -> None:
    body = b'{"call_id": "a"}\n\n[1]\nnot json\n'
    outcomes = map_text("cdr-v1-ndjson", body)
    assert isinstance(outcomes[0], Mapped)
    assert [(o.reason, o.line) for o in outcomes[1:]] == [("bad_row", 3), ("bad_row", 4)]


# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+34688886392", "+34688886392"),
        ("0034688886392", "+34688886392"),
        ("00034688886392", "+34688886392"),
        ("34688886392", "+34688886392"),
        ("688886392", "+34688886392"),
        ("sip:+34688886392@host", "+34688886392"),
    ],
    ids=["e164", "00", "000", "cc-without-plus", "national", "sip-uri"],
)
def test_callee_number_forms(raw: str, expected: str) -> None:
    mapping = load_mapping("freeswitch-json", overrides={"country": "ES"})
    assert callee_number(raw, mapping) == (expected, None)


@pytest.mark.parametrize("raw", ["1002", "carol", "s", "*97"])
def test_extensions_and_names_are_not_callees(raw: str) -> None:
    assert callee_number(raw, load_mapping("freeswitch-json")) == (None, "internal_extension")


# --- instants: declared epoch units and local time ------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("1764669600", "s", "2025-12-02T10:00:00+00:00"),
        ("1764669600000", "ms", "2025-12-02T10:00:00+00:00"),
        ("1764669600000000", "us", "2025-12-02T10:00:00+00:00"),
        ("1764669600123456", "us", "2025-12-02T10:00:00.123456+00:00"),
        ("946684800", "s", "2000-01-01T00:00:00+00:00"),
        ("0", "us", None),  # FreeSWITCH writes 0 for "never" (answer_uepoch of a missed call)
    ],
    ids=["seconds", "millis", "micros", "micros-fraction", "y2k-seconds", "zero-is-never"],
)
def test_epoch_is_read_in_its_declared_unit(text: str, unit: str, expected: str | None) -> None:
    from services.ingest.formats.base import epoch_instant

    value = epoch_instant(text, unit, "f")
    assert (value.isoformat() if value else None) == expected


def test_epoch_seconds_sent_on_as_ms_are_refused_by_ingest_with_a_hint() -> None:
    record = {
        "call_id": "c",
        "campaign_id": "k",
        "callee_number": "+393471234567",
        "originated_at": 1764669600,
        "ended_at": 1764669660,
    }
    _, errors = parse_cdr(record)
    assert any("epoch seconds" in e.message for e in errors)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-29 01:59:59", "2026-03-29T01:59:59+01:00"),  # before the spring change
        ("2026-03-29 03:00:00", "2026-03-29T03:00:00+02:00"),  # after it
        ("2026-10-25 02:30:00", "2026-10-25T02:30:00+02:00"),  # repeated hour: first one
        ("2026-10-25 03:00:00", "2026-10-25T03:00:00+01:00"),
        ("2024-09-24 09:37:44.351668-04", "2024-09-24T09:37:44.351668-04:00"),  # own offset
    ],
    ids=["spring-before", "spring-after", "autumn-repeated", "autumn-after", "offset-wins"],
)
def test_zone_less_local_time_is_read_in_the_mapping_zone(text: str, expected: str) -> None:
    from zoneinfo import ZoneInfo

    from services.ingest.formats.base import local_instant

    assert local_instant(text, ZoneInfo("Europe/Rome"), "start").isoformat() == expected


def test_fs_documents_nested_absurdly_deep_are_refused_not_a_crash() -> None:
    [json_outcome] = map_text("freeswitch-json", b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(json_outcome, Rejected) and json_outcome.reason == "unreadable"
    deep = b"<cdr><callflow><caller_profile>" + b"<a>" * 50_000 + b"</a>" * 50_000
    deep += b"</caller_profile></callflow></cdr>"
    [xml_outcome] = map_text("freeswitch-xml", deep)
    assert isinstance(xml_outcome, Rejected)  # no start time: not a crash
