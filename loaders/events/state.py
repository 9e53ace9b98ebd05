"""How far an import of one file has come, kept in a small JSON file so that a killed import,
run again, continues where the edge's last 2xx left it.

Per input file and project: the uncompressed byte offset and line number up to which every line
was sent and acknowledged (or refused), the counts so far, the size the `--errors` file had then,
and a fingerprint of the file's first bytes so that another file at the same path starts over.
Written to a temporary file, fsynced and renamed over the old one: a kill leaves the old or the
new state, never half of one. By default beside the input (`.<name>.<project>.hwimport.json`),
or in the `--state` directory.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

STATE_VERSION = 1
_FINGERPRINT_BYTES = 64 << 10


class FileProgress(msgspec.Struct):
    """One file's progress (all counts cover the lines before `offset`)."""

    version: int = STATE_VERSION
    project: str = ""
    fingerprint: str = ""
    offset: int = 0  # uncompressed bytes
    lines: int = 0  # lines read up to `offset` (blank ones too)
    events: int = 0  # lines that were events sent to the edge
    accepted: int = 0  # events the edge accepted (2xx)
    refused: dict[str, int] = msgspec.field(default_factory=dict)  # reason code → lines
    errors_bytes: int = 0  # the --errors file's size when this was saved
    done: bool = False


def fingerprint(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.sha256(file.read(_FINGERPRINT_BYTES)).hexdigest()


def state_path(input_path: Path, project: str, state_dir: Path | None) -> Path:
    name = input_path.name
    if state_dir is None:
        return input_path.parent / f".{name}.{project}.hwimport.json"
    # Files of one name from different directories share a state directory: told apart by path.
    where = hashlib.sha256(str(input_path.resolve()).encode()).hexdigest()[:12]
    return state_dir / f"{name}.{where}.{project}.hwimport.json"


@dataclass(slots=True)
class StateFile:
    path: Path
    progress: FileProgress = field(default_factory=FileProgress)

    @classmethod
    def load(cls, path: Path, project: str, input_fingerprint: str) -> StateFile:
        """The saved progress, or a fresh one when there is none, it is unreadable, or it belongs to
        another file or project."""
        fresh = FileProgress(project=project, fingerprint=input_fingerprint)
        try:
            saved = msgspec.json.decode(path.read_bytes(), type=FileProgress)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return cls(path, fresh)
        if (
            saved.version != STATE_VERSION
            or saved.project != project
            or saved.fingerprint != input_fingerprint
        ):
            return cls(path, fresh)
        return cls(path, saved)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as file:
            file.write(msgspec.json.encode(self.progress))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
