"""Progress reporting: the engines call a :class:`Reporter`; the terminal shows Rich bars.

The engines never print: they report bytes moved, files finished and one-line notes, and the command
decides how that looks (Rich bars on a terminal, nothing under ``--json`` or when output is piped).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from levere.domain.units import count, format_size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID


class Reporter(Protocol):
    def start(self, total_bytes: int, total_files: int, done_bytes: int = 0, done_files: int = 0) -> None: ...

    def advance(self, nbytes: int) -> None:
        """Bytes moved (negative when bytes counted earlier must be sent again)."""

    def file_done(self, count: int = 1) -> None: ...

    def note(self, message: str) -> None:
        """A one-line notice for the person watching."""


class Quiet:
    """A reporter that shows nothing but keeps the counts (for tests and ``--json``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes = 0
        self.files = 0
        self.notes: list[str] = []

    def start(self, total_bytes: int, total_files: int, done_bytes: int = 0, done_files: int = 0) -> None:
        self.bytes, self.files = done_bytes, done_files

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.bytes += nbytes

    def file_done(self, count: int = 1) -> None:
        with self.lock:
            self.files += count

    def note(self, message: str) -> None:
        self.notes.append(message)


def _binary_rate_column(base: Any) -> Any:
    """Rich's transfer speed column, in the CLI's one base (KiB/s, MiB/s: as the totals beside it)
    instead of Rich's decimal MB/s."""
    from rich.text import Text

    class BinaryRate(base):  # type: ignore[misc, valid-type]
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            shown = "?" if speed is None else f"{format_size(int(speed))}/s"
            return Text(shown, style="progress.data.speed")

    return BinaryRate()


class Bars:
    """Rich progress: overall bytes, files done/total, throughput and time left, on stderr.

    Updates from worker threads are summed under a lock and handed to Rich at most ten times a
    second, so thousands of small files per second cost the display nothing.
    """

    def __init__(self, console: Console, verb: str) -> None:
        # here rather than at the top: output that is piped or JSON never shows bars
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = console
        self.verb = verb
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TextColumn("{task.fields[files]}"),
            _binary_rate_column(TransferSpeedColumn),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.lock = threading.Lock()
        self.pending_bytes = 0
        self.files = 0
        self.total_files = 0
        self.last_refresh = 0.0

    def __enter__(self) -> Bars:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._flush(force=True)
        self.progress.stop()

    def start(self, total_bytes: int, total_files: int, done_bytes: int = 0, done_files: int = 0) -> None:
        self.files, self.total_files = done_files, total_files
        self.task = self.progress.add_task(
            self.verb, total=total_bytes, completed=done_bytes, files=self._files_text()
        )

    def _files_text(self) -> str:
        return f"{self.files:,}/{count(self.total_files, 'file')}"

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.task is None or (not force and now - self.last_refresh < 0.1):
            return
        self.last_refresh = now
        nbytes, self.pending_bytes = self.pending_bytes, 0
        self.progress.update(self.task, advance=nbytes, files=self._files_text())

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.pending_bytes += nbytes
            self._flush()

    def file_done(self, count: int = 1) -> None:
        with self.lock:
            self.files += count
            self._flush()

    def note(self, message: str) -> None:
        self.progress.console.print(message, highlight=False)
