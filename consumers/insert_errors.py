"""What a failed INSERT says: about ClickHouse (retry) or about the rows (isolate, dead-letter).

The kind of failure is only in ClickHouse's error code (core/clickhouse_errors.py). A dead letter
is for an event ClickHouse will never take; an error that says nothing about the rows must be
waited out, like an unreachable ClickHouse.

- transient (retry the batch with backoff): space, memory, parts, time-outs, cancelled or aborted
  queries, read-only tables, a server shutting down, a missing database or table (a migration or
  a purge in progress), access, network, replicas and Keeper, file I/O — TRANSIENT below;
- rows (isolate the message, dead-letter it alone): parse and conversion errors, type mismatches,
  values out of range, sizes that do not match, a violated constraint, throwIf — ROWS below;
- unknown (retried, as transient): any other code, or an error without one.

Codes and names as in ClickHouse's `src/Common/ErrorCodes.cpp`.

Retrying an unknown error is the safe side: the worst case is a stall that `/readyz` reports
(the consumer turns not ready while inserts keep failing), never an acknowledged event lost.
"""

from __future__ import annotations

import enum
import re

from clickhouse_connect.driver.exceptions import DataError, OperationalError

from headwater.core.clickhouse_errors import error_code

TRANSIENT: dict[int, str] = {
    76: "CANNOT_OPEN_FILE",
    74: "CANNOT_READ_FROM_FILE_DESCRIPTOR",
    75: "CANNOT_WRITE_TO_FILE_DESCRIPTOR",
    60: "UNKNOWN_TABLE",
    81: "UNKNOWN_DATABASE",
    159: "TIMEOUT_EXCEEDED",
    160: "TOO_SLOW",
    164: "READONLY",
    173: "CANNOT_ALLOCATE_MEMORY",
    192: "UNKNOWN_USER",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    225: "NO_ZOOKEEPER",
    236: "ABORTED",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",
    279: "ALL_CONNECTION_TRIES_FAILED",
    285: "TOO_FEW_LIVE_REPLICAS",
    290: "LIMIT_EXCEEDED",
    319: "UNKNOWN_STATUS_OF_INSERT",
    394: "QUERY_WAS_CANCELLED",
    425: "SYSTEM_ERROR",
    439: "CANNOT_SCHEDULE_TASK",
    497: "ACCESS_DENIED",
    516: "AUTHENTICATION_FAILED",
    999: "KEEPER_EXCEPTION",
    1000: "POCO_EXCEPTION",
    1001: "STD_EXCEPTION",
}

ROWS: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    128: "TOO_LARGE_ARRAY_SIZE",
    131: "TOO_LARGE_STRING_SIZE",
    190: "SIZES_OF_ARRAYS_DONT_MATCH",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    395: "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO",
    469: "VIOLATED_CONSTRAINT",
}

# Said by a server that is stopping, whatever code it sends with it.
_SHUTTING_DOWN = re.compile(r"shutting down|shutdown", re.IGNORECASE)


class InsertFailure(enum.Enum):
    TRANSIENT = "transient"  # about ClickHouse: retry with backoff
    ROWS = "rows"  # about what was inserted: isolate the message, dead-letter it alone
    UNKNOWN = "unknown"  # retried, as a transient one


def classify(error: BaseException) -> InsertFailure:
    if isinstance(error, OperationalError | OSError | TimeoutError):  # not reached / connection lost
        return InsertFailure.TRANSIENT
    code = error_code(error)
    if code in TRANSIENT or _SHUTTING_DOWN.search(str(error)):
        return InsertFailure.TRANSIENT
    if code in ROWS or (code is None and isinstance(error, DataError)):  # DataError: client-side
        return InsertFailure.ROWS
    return InsertFailure.UNKNOWN


def retryable(error: BaseException) -> bool:
    """Whether a failed insert is to be retried as it is (anything but rows ClickHouse refuses)."""
    return classify(error) is not InsertFailure.ROWS
