"""The ingest edge: Segment-compatible HTTP API → one envelope per request on JetStream."""
