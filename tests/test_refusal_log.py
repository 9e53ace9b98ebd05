"""The edge's refusal log (edge/refusals.py) and the node report's format
(core/service/nodereports.py): the sliding hour, the bounds on memory and on the report's size."""

from __future__ import annotations

import orjson

from headwater.core.service.nodereports import NodeReport, decode_report, encode_report, node_name, report_key
from headwater.edge.errors import IngestError
from headwater.edge.refusals import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # a multiple of 300: step boundaries fall on whole minutes

    def __call__(self) -> float:
        return self.now


def test_counts_slide_out_of_the_hour_and_samples_stay_bounded() -> None:
    clock = Clock()
    log = RefusalLog(clock, max_samples=3)
    for index in range(5):
        log.record("shop", "origin_not_allowed", None, f"refusal {index}")
        clock.now += 60
    log.record("shop", "rate_limited", None, "slow down")
    entry = log.snapshot(100_000)["projects"]["shop"]
    assert entry["counts"] == {"origin_not_allowed": 5, "rate_limited": 1}
    assert [sample["message"] for sample in entry["recent"]] == ["slow down", "refusal 4", "refusal 3"]
    clock.now += 3600 - 5 * 60  # the first five-minute step (refusals 0-4) is now an hour old
    assert log.snapshot(100_000)["projects"]["shop"]["counts"] == {"rate_limited": 1}
    clock.now += 300
    assert log.snapshot(100_000)["projects"] == {}  # nothing in the hour: forgotten


def test_an_error_is_recorded_with_its_project_or_apart() -> None:
    log = RefusalLog(Clock())
    unknown = IngestError(401, "unknown_key", "the write key is not known")
    log.refused(unknown)
    batch = IngestError(
        400,
        "no_valid_events",
        "no event of the batch is valid",
        "batch",
        errors=[
            {"index": 0, "code": "missing_field", "field": "event", "message": "a track event needs event"},
            {"index": 1, "code": "invalid_type", "field": "type", "message": "type must be one of …"},
        ],
    )
    batch.project = "shop"
    log.refused(batch)
    long = IngestError(403, "origin_not_allowed", "origin " + "x" * 1000)
    long.project = "shop"
    log.refused(long)
    snapshot = log.snapshot(100_000)
    assert snapshot["without_project"] == {"unknown_key": 1}
    shop = snapshot["projects"]["shop"]
    assert shop["counts"] == {"missing_field": 1, "invalid_type": 1, "origin_not_allowed": 1}
    assert [(s["reason"], s["field"]) for s in shop["recent"]] == [
        ("origin_not_allowed", None),
        ("invalid_type", "type"),
        ("missing_field", "event"),
    ]
    assert len(shop["recent"][0]["message"]) == 200


def test_projects_are_capped_and_the_report_fits_its_budget() -> None:
    log = RefusalLog(Clock(), max_projects=100)
    for number in range(250):
        log.record(f"p{number}", "origin_not_allowed", "Origin", "origin 'https://x.example' is not allowed")
    snapshot = log.snapshot(10_000_000)
    assert len(snapshot["projects"]) == 100  # the 150 refused least recently were forgotten
    assert "p249" in snapshot["projects"] and "p149" not in snapshot["projects"]
    small = log.snapshot(4_000)
    assert len(orjson.dumps(small["projects"])) <= 4_000
    assert next(iter(small["projects"])) == "p249"  # the most recently refused first
    assert len(small["projects"]) + small["projects_left_out"] == 100


def test_a_report_over_its_limit_keeps_its_readiness() -> None:
    report = NodeReport(
        "edge",
        node_name("web 1.example.com", 42),
        True,
        {"nats": True},
        {"big": "x" * 5000},
        "2026-12-06T00:00:00Z",
    )
    assert (
        report.node == "web-1-example-com-42"
        and report_key("edge", report.node) == "edge.web-1-example-com-42"
    )
    small = decode_report(encode_report(report, limit=1000))
    assert small is not None and small.ready and small.checks == {"nats": True}
    assert "big" not in small.details and small.details["report_trimmed"]
    assert decode_report(encode_report(report)) == report
    assert decode_report(b"not json") is None
