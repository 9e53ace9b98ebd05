"""Logging set-up for every command (one format across roles)."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # Per-request access lines cost throughput and can carry PII; uvicorn's errors still show.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
