"""Names and limits of imported tables: a Singer/Airbyte stream `public-users` lands in
`hw_<project>.import_public_users`; its properties become columns named the same way."""

from __future__ import annotations

import re

TABLE_PREFIX = "import_"
MAX_STREAM_NAME = 64  # characters of a stream's name, before and after the prefix is added
MAX_COLUMN_NAME = 128
MAX_COLUMNS = 1000  # per table, counting every column a schema ever declared
MAX_KEY_PROPERTIES = 16
MAX_RECORDS_PER_BATCH = 10_000
MAX_BATCH_ID = 128
MAX_STATE_BYTES = 256 * 1024  # a Singer STATE / Airbyte state kept in KV

# Columns headwater adds to every imported table; a property may not take these names.
RESERVED_PREFIX = "_hw_"
SEQUENCE_COLUMN = "_hw_sequence"  # the HW_IMPORTS stream sequence: the ReplacingMergeTree version
TABLE_VERSION_COLUMN = "_hw_table_version"  # Singer's `version` / an Airbyte overwrite's; 0: none

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
BATCH_ID_PATTERN = f"^[A-Za-z0-9_\\-.:]{{1,{MAX_BATCH_ID}}}$"
_BATCH_ID = re.compile(BATCH_ID_PATTERN)


class InvalidName(ValueError):
    """A name headwater cannot turn into a table or column name."""


def normalised(name: str) -> str:
    """Every non-alphanumeric character becomes `_` (ASCII letters and digits only)."""
    return _NOT_ALNUM.sub("_", name)


def table_name(stream: str) -> str:
    """`public-users` → `import_public_users`; InvalidName for an empty or too long name."""
    if not stream or len(stream) > MAX_STREAM_NAME:
        raise InvalidName(f"a stream name has 1 to {MAX_STREAM_NAME} characters")
    return TABLE_PREFIX + normalised(stream)


def column_name(prop: str) -> str:
    if not prop or len(prop) > MAX_COLUMN_NAME:
        raise InvalidName(f"a property name has 1 to {MAX_COLUMN_NAME} characters")
    column = normalised(prop)
    if column.startswith(RESERVED_PREFIX):
        raise InvalidName(f"names starting with {RESERVED_PREFIX} are headwater's own columns")
    return column


def valid_batch_id(batch_id: str) -> bool:
    return _BATCH_ID.fullmatch(batch_id) is not None


def quoted(identifier: str) -> str:
    """A table or column name made by this module (letters, digits, `_`) in backquotes."""
    assert _NOT_ALNUM.sub("", identifier.replace("_", "")) == identifier.replace("_", ""), identifier
    return f"`{identifier}`"
