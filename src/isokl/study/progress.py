"""Progress: where a long run is -> one status line on stderr (no torch).

On a terminal the line is rewritten in place and refreshed every second (the running
phase's elapsed time ticks even inside a 30-s rollout); in a log file each phase is one
plain line. Finished cells print a permanent line with the grid's ETA, estimated from
the cells this run has finished.
"""

from __future__ import annotations

import sys
import threading
import time


def fmt_duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, total: int, done: int, stream=None, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total, self.done, self.new = total, done, 0
        self.t_run, self.t_phase = time.time(), time.time()
        self.cell, self.label = "", ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True) if self.tty else None
        if self._ticker:
            self._ticker.start()

    def eta(self) -> str:
        if not self.new:
            return "ETA after the first cell"
        left = (time.time() - self.t_run) / self.new * (self.total - self.done)
        return f"~{fmt_duration(left)} left"

    def _line(self) -> str:
        return f"[{self.done}/{self.total}] {self.cell}: {self.label} ({time.time() - self.t_phase:.0f} s) | {self.eta()}"

    def _draw(self) -> None:
        width = 160
        self.stream.write("\r\033[K" + self._line()[:width])
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self.label:
                    self._draw()

    def phase(self, cell: str, label: str) -> None:
        with self._lock:
            self.cell, self.label, self.t_phase = cell, label, time.time()
            if self.tty:
                self._draw()
            else:
                print(f"[isokl] [{self.done}/{self.total}] {cell}: {label}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A permanent line (a finished step), above the status line."""
        with self._lock:
            if self.tty:
                self.stream.write("\r\033[K")
            print(f"[isokl] {text}", file=self.stream, flush=True)
            if self.tty and self.label:
                self._draw()

    def cell_finished(self, text: str) -> None:
        self.done += 1
        self.new += 1
        self.label = ""
        self.note(f"[{self.done}/{self.total}] {text} | {self.eta()}")

    def close(self) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join()
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()
