"""Live progress of ``reproduce``'s worker processes: one row per running job (training: step, loss, ETA).

``reproduce`` trains and evaluates models in spawned worker processes. In a terminal the main process shows a rich
live display with one row per job that is running now; the workers send ``(key, label, step, total, info)``
messages through a :class:`multiprocessing.Queue` handed to every worker at start-up (:func:`init_worker`). When the
output is not a terminal (a log file, CI) nothing is sent and ``reproduce`` writes one line per finished unit only.

Worker side::

    init_worker(queue)                   # ProcessPoolExecutor(initializer=init_worker, initargs=(queue,))
    run_reported(key, label, fn, args)   # announces the job, then runs fn(*args)
    step_reporter()                      # in fn: a callback (step, total, loss) -> None, or None when not reported

Main side: :class:`LiveJobs` (a context manager owning the queue, the display and the thread that reads the queue).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

#: the queue of this worker process (None in the main process and when progress is not shown)
_QUEUE: Any = None
#: (key, label) of the job this worker runs now
_CURRENT: Optional[Tuple[str, str]] = None
#: seconds between two step messages of one job (the last step is always sent)
MIN_INTERVAL_S = 0.2


def init_worker(queue: Any) -> None:
    """Worker initializer: remember the progress queue (``None``: report nothing)."""
    global _QUEUE
    _QUEUE = queue


def _post(message: Tuple[Any, ...]) -> None:
    if _QUEUE is None:
        return
    try:
        _QUEUE.put_nowait(message)
    except Exception:  # pragma: no cover - progress must never break a job (queue closed, full)
        pass


def run_reported(key: str, label: str, fn: Callable[..., Any], args: Tuple[Any, ...]) -> Tuple[Any, float]:
    """Run ``fn(*args)`` as the job ``key``: announce it (a row appears), let :func:`step_reporter` name it, and
    clear it afterwards. Returns ``(fn's result, CPU seconds of this process during the job)`` (all threads)."""
    global _CURRENT
    _CURRENT = (key, label)
    _post((key, label, 0, None, "starting"))
    c0 = time.process_time()
    try:
        return fn(*args), time.process_time() - c0
    finally:
        _CURRENT = None


def step_reporter(min_interval: float = MIN_INTERVAL_S) -> Optional[Callable[[int, int, float], None]]:
    """A training-step callback for the current job, throttled to one message per ``min_interval`` seconds (the
    final step is always sent), or ``None`` when this process reports nothing."""
    if _QUEUE is None or _CURRENT is None:
        return None
    key, label = _CURRENT
    last = [float("-inf")]

    def on_step(step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if step < total and now - last[0] < min_interval:
            return
        last[0] = now
        _post((key, label, int(step), int(total), f"loss {loss:.4f}"))

    return on_step


class LiveJobs:
    """The main process's live display: a rich ``Progress`` on ``console`` with one row per running job, updated
    from the workers' queue by a reader thread. Rows appear when a job starts and go when :meth:`done` is called.

    ``enabled=False`` (not a terminal, progress off) makes it inert: :attr:`queue` is ``None`` and workers send
    nothing.
    """

    def __init__(self, console: Any, mp_context: Any, enabled: bool = True):
        self.console = console
        self.enabled = bool(enabled)
        self.queue = mp_context.Queue() if self.enabled else None
        self.progress = None
        self._rows: Dict[str, Any] = {}
        #: the latest message of every job seen (kept after the job is done)
        self.last: Dict[str, Tuple[Any, ...]] = {}
        self._finished: set = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "LiveJobs":
        if not self.enabled:
            return self
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self._thread = threading.Thread(target=self._pump, name="loupe-worker-progress", daemon=True)
        self._thread.start()
        return self

    def handle(self, message: Tuple[Any, ...]) -> None:
        """Apply one worker message ``(key, label, step, total, info)`` to the display."""
        key, label, step, total, info = message
        with self._lock:
            self.last[key] = tuple(message)
            if key in self._finished or self.progress is None:
                return
            row = self._rows.get(key)
            if row is None:
                self._rows[key] = self.progress.add_task(label, total=total, completed=step, info=info)
            else:
                self.progress.update(row, total=total, completed=step, info=info)

    def done(self, key: str) -> None:
        """The job ``key`` finished: remove its row (and ignore its late messages)."""
        with self._lock:
            self._finished.add(key)
            row = self._rows.pop(key, None)
            if row is not None and self.progress is not None:
                self.progress.remove_task(row)

    def rows(self) -> Dict[str, Dict[str, Any]]:
        """The rows shown now: key -> {label, completed, total, info} (for tests and tools)."""
        with self._lock:
            if self.progress is None:
                return {}
            out = {}
            for key, tid in self._rows.items():
                t = self.progress.tasks[[x.id for x in self.progress.tasks].index(tid)]
                out[key] = {"label": t.description, "completed": t.completed, "total": t.total,
                            "info": t.fields.get("info", "")}
            return out

    def _pump(self) -> None:
        import queue as _q

        while not self._stop.is_set():
            try:
                message = self.queue.get(timeout=0.1)
            except (_q.Empty, EOFError, OSError):
                continue
            self.handle(message)

    def _drain(self) -> None:
        """Read what is left in the queue (the workers flush theirs when they exit, before this runs)."""
        import queue as _q

        while True:
            try:
                message = self.queue.get(timeout=0.05)
            except (_q.Empty, EOFError, OSError):
                return
            self.handle(message)

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._drain()
        if self.progress is not None:
            self.progress.stop()
        self.queue.close()
        self.queue.cancel_join_thread()
