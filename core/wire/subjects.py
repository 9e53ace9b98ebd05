"""Subject and stream names: the contract between edges, consumers and operators."""

from __future__ import annotations

EVENTS_STREAM = "HW_EVENTS"
DLQ_STREAM = "HW_DLQ"
EVENTS_SUBJECTS = "hw.events.>"
DLQ_SUBJECTS = "hw.dlq.>"
MSG_ID_HEADER = "Nats-Msg-Id"
# Headers of a dead-lettered message (hw.dlq.<project>): why, where it came from, with which id.
DLQ_ERROR_HEADER = "Hw-Error"
DLQ_ORIGINAL_SUBJECT_HEADER = "Hw-Original-Subject"
DLQ_ORIGINAL_MSG_ID_HEADER = "Hw-Original-Msg-Id"
DLQ_DELIVERIES_HEADER = "Hw-Deliveries"
# Set by `headwater dlq replay` on what it republishes: the HW_DLQ sequence it came from.
DLQ_REPLAYED_FROM_HEADER = "Hw-Replayed-From"


def events_subject(project_id: str) -> str:
    return f"hw.events.{project_id}"


def dlq_subject(project_id: str) -> str:
    return f"hw.dlq.{project_id}"


def project_of_subject(subject: str) -> str:
    """`hw.events.demo` → `demo`."""
    return subject.rsplit(".", 1)[-1]


# Imported production data (docs/import.md): one subject per project and imported table, so a
# table's batches stay in order and a project's can be purged alone.
IMPORTS_STREAM = "HW_IMPORTS"
IMPORTS_SUBJECTS = "hw.imports.>"


def imports_subject(project_id: str, table: str) -> str:
    """`table`: an import table's name (imports/names.py), a valid subject token."""
    return f"hw.imports.{project_id}.{table}"


def imports_project_subjects(project_id: str) -> str:
    return f"hw.imports.{project_id}.>"
