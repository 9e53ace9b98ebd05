"""An import of files: lines read and made into events (lines.py), batched, sent by several threads
at once (sender.py), and committed in file order — a batch's refusals written to the errors file,
then the file's progress saved (state.py) — once it and every batch before it are answered.
Progress is durable only up to the last committed batch: a kill loses nothing the edge has not
acknowledged, and what is re-sent after a resume collapses on its messageId."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from headwater.core.projects.project import PROJECT_ID_PATTERN

from .errorlog import ErrorLog
from .formats import Format
from .lines import read_line
from .refusal import LineRefused
from .sender import EdgeRefusedImport, EdgeSender, EdgeUnavailable, Outcome
from .source import UNREADABLE_FILE, Line, read_lines
from .state import FileProgress, StateFile, fingerprint, state_path

SAVE_EVERY_SECONDS = 0.5
MAX_BATCH_EVENTS = 2500  # the edge's default limit; more is refused whole


@dataclass(frozen=True, slots=True)
class ImportSettings:
    project: str
    source_format: Format = "auto"
    batch_events: int = 500
    batch_bytes: int = 400_000  # under the edge's default 500 KB body limit
    concurrency: int = 4
    state_dir: Path | None = None
    restart: bool = False  # ignore saved progress and send every line again

    def __post_init__(self) -> None:
        if not PROJECT_ID_PATTERN.fullmatch(self.project):
            raise ValueError(f"{self.project!r} is not a project id (1-48 of a-z, 0-9 and _)")
        if not 1 <= self.batch_events <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_events must be between 1 and {MAX_BATCH_EVENTS}")
        if self.batch_bytes < 1024:
            raise ValueError("batch_bytes must be at least 1024")
        if not 1 <= self.concurrency <= 64:
            raise ValueError("concurrency must be between 1 and 64")


@dataclass(slots=True)
class Summary:
    files: int = 0
    files_already_done: int = 0
    lines: int = 0
    events: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    sent_this_run: int = 0
    retries: int = 0

    def add(self, progress: FileProgress) -> None:
        self.files += 1
        self.lines += progress.lines
        self.events += progress.events
        self.accepted += progress.accepted
        self.refused.update(progress.refused)


@dataclass(slots=True)
class _Batch:
    numbers: list[int] = field(default_factory=list)  # of the lines that are events
    events: list[bytes] = field(default_factory=list)
    texts: list[bytes] = field(default_factory=list)
    refused: list[tuple[int, LineRefused, bytes]] = field(default_factory=list)  # before sending
    size: int = 0
    end: int = 0  # the offset past its last line
    last_line: int = 0
    position: int = 0

    def add_event(self, line: Line, event: bytes) -> None:
        self.numbers.append(line.number)
        self.events.append(event)
        self.texts.append(line.text)
        self.size += len(event) + 1
        self._read(line)

    def add_refused(self, line: Line, refusal: LineRefused) -> None:
        self.refused.append((line.number, refusal, line.text))
        self._read(line)

    def _read(self, line: Line) -> None:
        self.end, self.last_line, self.position = line.end, line.number, line.position


# Told the bytes of input files durably done (compressed bytes for gzip), as they are.
Progress = Callable[[int], None]


class EventsImport:
    def __init__(self, settings: ImportSettings, sender: EdgeSender, errors: ErrorLog) -> None:
        self._settings = settings
        self._sender = sender
        self._errors = errors
        self.summary = Summary()

    def plan(self, paths: list[Path]) -> tuple[int, int]:
        """(bytes of the files, bytes of them done by earlier runs): a progress bar's length and start."""
        total = done = 0
        for path in paths:
            size = path.stat().st_size
            total += size
            state = self._state(path)
            if state.progress.done:
                done += size
        return total, done

    def run(self, paths: list[Path], progress: Progress = lambda _: None) -> Summary:
        resumed = [self._state(path).progress for path in paths]
        if not all(p.done for p in resumed):
            self._errors.start_at(_errors_size_to_resume(resumed))
        with ThreadPoolExecutor(self._settings.concurrency, thread_name_prefix="import") as pool:
            try:
                for path in paths:
                    self._import_file(path, pool, progress)
            except BaseException:
                self._sender.cancel()  # threads in a retry loop stop waiting
                pool.shutdown(wait=True, cancel_futures=True)  # batches not yet sent never are
                raise
        return self.summary

    def _state(self, path: Path) -> StateFile:
        settings = self._settings
        state = StateFile.load(
            state_path(path, settings.project, settings.state_dir), settings.project, fingerprint(path)
        )
        if settings.restart:
            state.progress = FileProgress(project=settings.project, fingerprint=state.progress.fingerprint)
        return state

    def _import_file(self, path: Path, pool: ThreadPoolExecutor, progress: Progress) -> None:
        state = self._state(path)
        done = state.progress
        if done.done:
            self.summary.files_already_done += 1
            self.summary.add(done)
            return
        pending: deque[tuple[_Batch, Future[Outcome]]] = deque()
        last_save = time.monotonic()
        position = 0

        def commit_first() -> None:
            nonlocal last_save, position
            batch, future = pending.popleft()
            self._commit(path, state.progress, batch, future.result())
            progress(batch.position - position)
            position = batch.position
            if time.monotonic() - last_save >= SAVE_EVERY_SECONDS:
                self._save(state)
                last_save = time.monotonic()

        try:
            for batch in _Batches(path, done, self._settings):
                pending.append((batch, self._submit(pool, batch)))
                while len(pending) > 2 * self._settings.concurrency or (pending and pending[0][1].done()):
                    commit_first()
            while pending:
                commit_first()
        except (EdgeRefusedImport, EdgeUnavailable):
            self._save(state)  # what was committed before the batch that failed
            raise
        except UNREADABLE_FILE:  # the lines before the damage are sent and kept
            while pending:
                commit_first()
            self._save(state)
            raise
        state.progress.done = True
        self._save(state)
        progress(path.stat().st_size - position)
        self.summary.add(state.progress)

    def _submit(self, pool: ThreadPoolExecutor, batch: _Batch) -> Future[Outcome]:
        if not batch.events:
            answered: Future[Outcome] = Future()
            answered.set_result(Outcome())
            return answered
        self.summary.sent_this_run += len(batch.events)
        return pool.submit(self._sender.send, batch.events)

    def _commit(self, path: Path, progress: FileProgress, batch: _Batch, outcome: Outcome) -> None:
        refusals: list[tuple[int, str, str | None, str, bytes]] = [
            (number, r.code, r.field, r.message, text) for number, r, text in batch.refused
        ]
        for refusal in outcome.refused:
            if 0 <= refusal.index < len(batch.numbers):
                refusals.append(
                    (
                        batch.numbers[refusal.index],
                        refusal.code,
                        refusal.field,
                        refusal.message,
                        batch.texts[refusal.index],
                    )
                )
        refusals.sort(key=lambda r: r[0])
        for number, code, field_name, message, text in refusals:
            self._errors.write(str(path), number, code, field_name, message, text)
            progress.refused[code] = progress.refused.get(code, 0) + 1
        progress.events += len(batch.events)
        progress.accepted += outcome.accepted
        progress.offset, progress.lines = batch.end, batch.last_line
        self.summary.retries += outcome.retries

    def _save(self, state: StateFile) -> None:
        state.progress.errors_bytes = self._errors.size()  # on disk before the state names it
        state.save()


def _errors_size_to_resume(progress: list[FileProgress]) -> int:
    """What the errors file held at the progress being resumed: at the last save of the file left
    midway, else after the files already done (0 for a fresh import)."""
    midway = [p.errors_bytes for p in progress if not p.done and p.offset]
    if midway:
        return midway[0]
    return max((p.errors_bytes for p in progress if p.done), default=0)


class _Batches:
    """The batches of a file from where its progress stands: at most `batch_events` events, and no
    more than `batch_bytes` of them unless one event alone is larger."""

    def __init__(self, path: Path, done: FileProgress, settings: ImportSettings) -> None:
        self._lines = read_lines(path, done.offset, done.lines)
        self._settings = settings
        self._carried: tuple[Line, bytes] | None = None  # read, but over the last batch's size

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> _Batch:
        settings = self._settings
        batch = _Batch()
        if self._carried is not None:
            batch.add_event(*self._carried)
            self._carried = None
        for line in self._lines:
            try:
                event = read_line(line.text, settings.source_format)
            except LineRefused as refusal:
                batch.add_refused(line, refusal)
                if len(batch.refused) >= settings.batch_events:
                    return batch
                continue
            if batch.events and batch.size + len(event) + 1 > settings.batch_bytes:
                self._carried = (line, event)
                return batch
            batch.add_event(line, event)
            if len(batch.events) >= settings.batch_events:
                return batch
        if batch.end == 0:
            raise StopIteration
        return batch
