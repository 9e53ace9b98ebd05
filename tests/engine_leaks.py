"""Close the embedded ClickHouse connections a test module leaves open.

chdb runs one engine per process, on one data directory, for as long as any connection to it is
open. A failed test's traceback keeps its frames, and the clients in them, alive; the next module
on that process then cannot open its own directory ("EmbeddedServer already initialized with path
…") and every one of its tests errors. Each module's `clickhouse_url` fixture closes, on teardown,
what is still open on its directory, and says so in a warning.
"""

from __future__ import annotations

import gc
import warnings
import weakref

from clickhouse_connect.driver._backend import chdb_backend

_opened: weakref.WeakSet[chdb_backend.ChdbBackend] = weakref.WeakSet()
_open_backend = chdb_backend.ChdbBackend.__init__


def _recorded_init(self: chdb_backend.ChdbBackend, *, connection_string: str) -> None:
    _open_backend(self, connection_string=connection_string)
    _opened.add(self)


chdb_backend.ChdbBackend.__init__ = _recorded_init  # type: ignore[method-assign]


def close_left_open(path: str) -> int:
    """Close every connection still open on the engine at `path`; how many there were."""
    gc.collect()  # those only a reference cycle kept
    left = [backend for backend in _opened if not backend._closed and path in backend.connection_string]
    for backend in left:
        backend.close()
    if left:
        warnings.warn(
            f"{len(left)} embedded ClickHouse connection(s) left open on {path}: closed", stacklevel=2
        )
    return len(left)
