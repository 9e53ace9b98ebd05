"""Local disk spool that holds envelopes while JetStream is unreachable (not built yet: issue 5).

Until it exists, an edge that cannot reach JetStream answers 503 with Retry-After: nothing is
acknowledged that is not durable.
"""
