"""`tap | target-headwater`, as Meltano runs it, with the test in the middle of the pipe.

The test relays the tap's Singer messages to the target line by line, so it knows what the target
was handed (records per stream, their keys) and can kill the pipeline at an exact point: after the
n-th record. The target's standard output is read as it comes: every line is a state it released
(the Singer SDK writes the state value alone; a wrapped `{"type": "STATE", "value": ...}` is read
too). Everything runs as asyncio subprocesses, so a stack serving in the test's own event loop
keeps serving while they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

TARGET = str(Path(sys.executable).parent / "target-headwater")
PIPELINE_SECONDS = 900.0


@dataclass
class PipelineRun:
    records: Counter[str] = field(default_factory=Counter)  # stream -> records handed to the target
    keys: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # stream -> ids handed
    states: list[dict[str, Any]] = field(default_factory=list)  # what the target released, in order
    killed: bool = False

    @property
    def last_state(self) -> dict[str, Any] | None:
        return self.states[-1] if self.states else None


def write_target_config(directory: Path, name: str, **settings: Any) -> Path:
    """target-headwater's config file (the keys Meltano's loader settings hold)."""
    path = directory / f"{name}.json"
    path.write_text(json.dumps(settings))
    return path


def write_state(directory: Path, name: str, state: dict[str, Any] | None) -> Path | None:
    """The tap's `--state` file for a state the target released (None: no state yet)."""
    if state is None:
        return None
    path = directory / f"{name}.json"
    path.write_text(json.dumps(state))
    return path


async def _read_states(stdout: asyncio.StreamReader, run: PipelineRun) -> None:
    async for line in stdout:
        if not line.endswith(b"\n") or not line.strip():
            continue  # a line cut short by a kill was never released
        message = json.loads(line)
        run.states.append(message["value"] if message.get("type") == "STATE" else message)


async def _relay(
    tap: asyncio.subprocess.Process,
    target: asyncio.subprocess.Process,
    run: PipelineRun,
    kill_after_records: int | None,
) -> None:
    assert tap.stdout is not None and target.stdin is not None
    handed = 0
    async for line in tap.stdout:
        message = json.loads(line)
        if message.get("type") == "RECORD":
            if kill_after_records is not None and handed == kill_after_records:
                run.killed = True
                target.kill()  # SIGKILL: no chance to flush or to write a last state
                tap.kill()
                return
            handed += 1
            run.records[message["stream"]] += 1
            run.keys[message["stream"]].add(int(message["record"]["id"]))
        target.stdin.write(line)
        await target.stdin.drain()
    target.stdin.close()


def _open_logs(logs: Path) -> tuple[BinaryIO, BinaryIO]:
    """The tap's and the target's standard error, appended to files in `logs`."""
    logs.mkdir(parents=True, exist_ok=True)
    return (logs / "tap.log").open("ab"), (logs / "target.log").open("ab")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def run_pipeline(
    tap_command: list[str],
    target_config: Path,
    logs: Path,
    kill_after_records: int | None = None,
) -> PipelineRun:
    """Runs the tap piped into target-headwater until both exit (0, unless killed); with
    `kill_after_records`, kills both once the target has been handed that many records."""
    run = PipelineRun()
    tap_log, target_log = _open_logs(logs)
    with tap_log, target_log:
        tap = await asyncio.create_subprocess_exec(
            *tap_command, stdout=asyncio.subprocess.PIPE, stderr=tap_log
        )
        target = await asyncio.create_subprocess_exec(
            TARGET,
            "--config",
            str(target_config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=target_log,
        )
        assert target.stdout is not None
        try:
            async with asyncio.timeout(PIPELINE_SECONDS):
                reading = asyncio.create_task(_read_states(target.stdout, run))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await _relay(tap, target, run, kill_after_records)
                await reading
                tap_code, target_code = await tap.wait(), await target.wait()
        finally:
            for process in (tap, target):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    if not run.killed:
        assert tap_code == 0, f"tap-postgres exited {tap_code}: {_tail(logs / 'tap.log')}"
        assert target_code == 0, f"target-headwater exited {target_code}: {_tail(logs / 'target.log')}"
    return run
