"""`headwater import events`: past events from files (JSON lines, gzip or not) of Segment events,
Segment's archives and Jitsu's exports, sent through the edge's batch endpoint so they meet the
same validation, enrichment, anonymisation and de-duplication as live events (docs/import.md,
"Past events").

- formats.py, segment.py, jitsu.py: one line's JSON object → a Segment event (pure);
- lines.py: one line's bytes → the event's JSON or the reason it is refused, with its messageId;
- source.py: a file's lines from a byte offset, gzip told by its magic bytes;
- state.py: per file, how far the edge has durably accepted it (resuming an import);
- sender.py: batches to the edge over HTTP, obeying 429/503 and finding an event a batch is
  refused for;
- importer.py: the files, batches in flight, progress, refusals and the summary.
"""
