"""Imported tables: what the control plane checks and the consumers write when production data
(Singer/Meltano, Airbyte) is imported next to the events (docs/import.md).

Pure code shared by the control plane (validating batches) and the consumers (the import writer):
the wire format of an import batch on JetStream, and how a stream's JSON schema becomes the
columns of `hw_<project>.import_<stream>`. Below the roles, above the core; nothing here does I/O.
"""
