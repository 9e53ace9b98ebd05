"""Tombstones reach the worker processes as a file per version, written once and deleted once no
group in flight names it; the workers follow each new version."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from headwater.consumers.processing import Decoded, Processor, WorkerPool
from headwater.consumers.tombstone_files import (
    TombstoneFile,
    TombstoneFileReader,
    TombstoneFileWriter,
    read_digests,
)
from headwater.core.projects.project import utc_now_iso
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import events_subject
from headwater.privacy.tombstones import tombstone_digest


def files_in(directory: Path) -> int | None:
    """How many files `directory` holds; None when it is gone."""
    return len(list(directory.iterdir())) if directory.exists() else None


def digests(count: int) -> frozenset[bytes]:
    return frozenset(os.urandom(32) for _ in range(count))


def test_a_set_is_written_once_per_version_and_read_back_whole() -> None:
    writer = TombstoneFileWriter()
    try:
        first = digests(1000)
        named = writer.files({"shop": first, "empty": frozenset()})
        assert list(named) == ["shop"]  # a project without tombstones names no file
        again = writer.files({"shop": first})
        assert again == named  # the same set: the same file, not written again
        assert read_digests(named["shop"].path) == first
        assert len(pickle.dumps(named)) < 300  # what travels with a group, whatever the set's size
    finally:
        writer.close()


def test_a_replaced_version_is_deleted_once_no_group_names_it() -> None:
    writer = TombstoneFileWriter()
    try:
        old = writer.files({"shop": digests(10)})
        newer_set = digests(11)
        new = writer.files({"shop": newer_set})
        assert new["shop"].version > old["shop"].version
        assert Path(old["shop"].path).exists()  # a group still names it
        writer.release(old)
        assert not Path(old["shop"].path).exists()
        writer.release(new)
        assert Path(new["shop"].path).exists()  # current: kept for the next groups
        writer.release(writer.files({"shop": digests(12)}))
        assert not Path(new["shop"].path).exists()  # replaced with no group on it: deleted at once
    finally:
        writer.close()
    assert not Path(new["shop"].path).parent.exists()


def test_a_reader_follows_new_versions_and_keeps_the_one_it_has() -> None:
    writer, reader = TombstoneFileWriter(), TombstoneFileReader()
    try:
        first, second = digests(5), digests(6)
        named = writer.files({"shop": first})
        assert reader.digests(named) == {"shop": first}
        Path(named["shop"].path).unlink()  # the version held is not read again
        assert reader.digests(named) == {"shop": first}
        assert reader.digests(writer.files({"shop": second})) == {"shop": second}
    finally:
        writer.close()


def test_a_file_gone_missing_is_written_again() -> None:
    writer = TombstoneFileWriter()
    try:
        deleted = digests(7)
        first = writer.files({"shop": deleted})["shop"]
        writer.release({"shop": first})
        assert isinstance(first, TombstoneFile)
        Path(first.path).unlink()  # as a cleaner of temporary files would
        again = writer.files({"shop": deleted})["shop"]
        assert isinstance(again, TombstoneFile) and again.version > first.version
        assert read_digests(again.path) == deleted
    finally:
        writer.close()


def test_a_set_that_cannot_be_written_travels_with_the_group() -> None:
    writer, reader = TombstoneFileWriter(), TombstoneFileReader()
    writer.close()  # its directory gone: every write fails
    deleted = digests(3)
    named = writer.files({"shop": deleted})
    assert named == {"shop": deleted}
    assert reader.digests(named) == {"shop": deleted}
    writer.release(named)


def test_a_file_that_is_not_whole_digests_is_refused(tmp_path: Path) -> None:
    damaged = tmp_path / "1.digests"
    damaged.write_bytes(b"x" * 33)
    with pytest.raises(ValueError, match="not a whole number of digests"):
        read_digests(str(damaged))


async def test_workers_leave_out_the_people_of_the_current_version(processor: Processor) -> None:
    events = [
        {"type": "track", "event": "A", "messageId": "m1", "userId": "u1"},
        {"type": "track", "event": "B", "messageId": "m2", "anonymousId": "a2"},
    ]
    item = (events_subject("shop"), Envelope("shop", "r1", utc_now_iso(), events).encode())
    u1 = tombstone_digest("shop", "user_id", "u1")
    a2 = tombstone_digest("shop", "anonymous_id", "a2")
    # Each version many times over: with two workers, each gets some of the groups of each.
    for version in (frozenset({u1}), frozenset({u1, a2}), frozenset({a2})):
        for _ in range(4):
            [outcome] = (await processor.process([item], {}, {"shop": version})).outcomes
            assert isinstance(outcome, Decoded)
            assert (outcome.rows, outcome.suppressed) == (2 - len(version), len(version))
    if isinstance(processor, WorkerPool):
        directory = processor._tombstone_files._directory
        assert files_in(directory) == 1  # only the current version is kept
        await processor.close()
        assert files_in(directory) is None
