"""The current entries of a JetStream KV bucket, read through a watcher: the snapshot part of a
watch, ending where the bucket's contents end.

nats-py marks the end of a watcher's initial values with a `None` entry, sent when the consumer
reports nothing pending and the watcher's callback has handled nothing yet. That is also the case
while the entries are still on their way, so under load the marker can come first and a reader
that trusts it sees an empty bucket (seen in CI, for the project listing and for the edges'
registry). The snapshot ends instead at the entry with nothing pending after it (`delta == 0`);
an empty bucket is told by its stream, before the watcher starts.
"""

from __future__ import annotations

from nats.js.kv import KeyValue


async def bucket_is_empty(kv: KeyValue) -> bool:
    return (await kv.status()).values == 0


async def read_snapshot(
    watcher: KeyValue.KeyWatcher, expect_entries: bool, idle_timeout: float
) -> list[KeyValue.Entry]:
    """The entries `watcher` delivers up to the last one in the bucket when it started (with
    `expect_entries` False: up to nats-py's end marker). TimeoutError when nothing arrives for
    `idle_timeout` seconds (a large bucket takes as long as it takes). Entries written meanwhile
    may or may not be in it: the watcher delivers them next."""
    entries: list[KeyValue.Entry] = []
    while True:
        entry = await watcher.updates(timeout=idle_timeout)  # type: ignore[no-untyped-call]
        if entry is None:  # the end marker, possibly early: see the module docstring
            if not expect_entries:
                return entries
            continue
        entries.append(entry)
        if entry.delta == 0:
            return entries
