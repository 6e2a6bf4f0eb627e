"""Dynamic batching: every request's image goes into one queue, and one engine thread runs the engine loop
(``engine.window.Window.run``) over it, so the masked passes of several requests fill one engine batch.

A window explains one convention (method and options) and, for SS-CAM, one seed, so there is one window per such
key. The engine thread runs one window at a time: it takes the key of the oldest queued request and runs that
window over a :class:`_Feed`, an iterator that hands it the queued requests of its key as it asks for work. When
the window asks and nothing of its key is queued, the feed waits up to ``max_delay`` (counted from the first time
it found nothing since the last engine batch) for more, so a partial batch can fill; then it ends, the window runs
its last (partial) batch and the thread moves on. A busy window admits no newer request of its own key once a
request of another key has waited ``max_delay``: its feed ends, it finishes the images it holds, and the keys take
turns in the order of their oldest requests (switching costs at most one partial batch).

Requests are cancelled (a client gone, a timeout) by :meth:`Batcher.abandon`: a queued one is never admitted; one
already in the window is dropped from it after the engine batch running now (``Window.cancel``), so its remaining
passes are never run.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from camrt.errors import one_line
from camrt.runtime.backends.base import Runner
from camrt.runtime.bundle import Manifest
from camrt.runtime.engine.window import Explained, Image, Window
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import SeededNoise

Key = tuple[Convention, "int | None"]


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already."""


class Closed(Exception):
    """The server is shutting down (or its engine failed to start) and takes no more work."""


@dataclass
class Done:
    """A request's result: the engine's ``Explained`` and where its time went."""

    explained: Explained
    queued_seconds: float  # from submit to admission into the window
    compute_seconds: float  # from admission to the result (the image's clean pass, its passes and its map)


@dataclass
class Job:
    """One image waiting for, or in, the engine loop."""

    key: Key
    x: np.ndarray
    target: int | None
    future: Future[Done] = field(default_factory=Future)
    index: int = -1
    submitted: float = 0.0
    admitted: float = 0.0
    abandoned: bool = False  # its client is gone (or timed out): drop it wherever it is


class _SingleImageNoise:
    """SS-CAM's draws of each request as if it were explained alone (image 0), so its map equals
    ``Explainer.explain`` on that one image with the same seed, whatever else shares its batches."""

    def __init__(self, seed: int) -> None:
        self.source, self.seed = SeededNoise(seed), seed

    def normal(self, image: int, sample: int, channel: int, shape: tuple[int, ...]) -> np.ndarray:
        return self.source.normal(0, sample, channel, shape)


class Batcher:
    """The queue and the engine thread. ``submit`` from any thread; results arrive on each job's future."""

    def __init__(self, runner: Runner, manifest: Manifest, max_batch: int, max_delay: float, max_queue: int,
                 save_passes: bool = True, on_batch: Callable[[int], None] | None = None,
                 on_done: Callable[[Job, Done], None] | None = None,
                 on_cancel: Callable[[int], None] | None = None) -> None:
        self.runner, self.manifest = runner, manifest
        self.max_batch, self.max_delay, self.max_queue = max_batch, max_delay, max_queue
        self.save_passes, self.on_batch_hook, self.on_done, self.on_cancel = save_passes, on_batch, on_done, on_cancel
        self.cond = threading.Condition()
        self.queues: dict[Key, deque[Job]] = {}
        self.queued = 0  # jobs waiting (not yet admitted)
        self.in_flight: dict[int, Job] = {}  # admitted, by the index the window knows them by
        self.windows: dict[Key, Window] = {}
        self.feed: _Feed | None = None
        self.closed = False  # no more submissions
        self.stopped = False  # the engine thread ends after its current window
        self.ready = threading.Event()
        self.error: str | None = None  # why the engine could not start
        self._numbers = itertools.count()
        self.thread = threading.Thread(target=self._loop, name="camrt-engine", daemon=True)

    # ------------------------------------------------------------------ the request side
    def start(self) -> None:
        """Start the engine thread; it warms the engine up, then sets :attr:`ready`."""
        self.thread.start()

    def submit(self, job: Job) -> Future[Done]:
        """Queue ``job``; QueueFull when ``max_queue`` jobs wait, Closed while shutting down."""
        with self.cond:
            if self.error is not None:
                raise Closed(self.error)
            if self.closed:
                raise Closed("the server is shutting down")
            if self.queued >= self.max_queue:
                raise QueueFull(f"the queue holds {self.queued} requests (--max-queue {self.max_queue})")
            job.index, job.submitted = next(self._numbers), time.perf_counter()
            self.queues.setdefault(job.key, deque()).append(job)
            self.queued += 1
            self.cond.notify_all()
        return job.future

    def abandon(self, job: Job) -> None:
        """The client of ``job`` is gone: a queued job is never admitted, one in the engine is dropped after the
        current batch (a running future cannot be cancelled, hence the flag)."""
        job.abandoned = True
        job.future.cancel()

    def depth(self) -> int:
        """Requests waiting in the queue."""
        return self.queued

    def close(self, grace: float) -> None:
        """Take no more work; let the engine finish what is queued and in flight for up to ``grace`` seconds, then
        fail what is left and stop the thread."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.queued or self.in_flight) and self.thread.is_alive():
            time.sleep(0.02)
        with self.cond:
            self.stopped = True
            for queue in self.queues.values():
                for job in queue:
                    _fail(job, Closed("the server shut down before this request was explained"))
                queue.clear()
            self.queued = 0
            self.cond.notify_all()
        self.thread.join(timeout=max(grace, 1.0))

    # ------------------------------------------------------------------ the engine thread
    def _loop(self) -> None:
        try:
            self._warm_up()
        except Exception as exc:  # a broken engine: /readyz says why, requests get 503
            self.error = f"the engine failed to start: {one_line(exc)}"
            return
        self.ready.set()
        while True:
            with self.cond:
                while not self.queued and not self.stopped:
                    self.cond.wait()
                if self.stopped:
                    return
                key = self._oldest_key()
            try:
                window = self._window(key)
            except Exception as exc:  # this method cannot run on this engine: its queued requests fail, not loop
                self._fail_key(key, exc, queued=True)
                continue
            self.feed = _Feed(self, key, window)
            try:
                for explained in window.run(self.feed):
                    self._deliver(explained)
            except Exception as exc:  # the engine failed mid-batch: fail the images in that window, keep serving
                self.windows.pop(key, None)
                self._fail_key(key, exc, queued=False)
            finally:
                self.feed = None

    def _fail_key(self, key: Key, exc: Exception, queued: bool) -> None:
        """Fail the images of ``key`` in flight (and, with ``queued``, those waiting) with the engine's error."""
        error = RuntimeError(f"the engine failed: {one_line(exc)}")
        with self.cond:
            for job in [job for job in self.in_flight.values() if job.key == key]:
                self.in_flight.pop(job.index, None)
                _fail(job, error)
            waiting = self.queues.get(key)
            if queued and waiting:
                self.queued -= len(waiting)
                for job in waiting:
                    _fail(job, error)
                waiting.clear()

    def _warm_up(self) -> None:
        """One clean pass and one full engine batch, so the first request does not pay for the engine's setup."""
        shape = tuple(self.manifest.input_shape)
        self.runner.head(self.runner.features(np.zeros((1, *shape), np.float32)))
        self.runner.logits(np.zeros((self.max_batch, *shape), np.float32))

    def _oldest_key(self) -> Key:
        """The key of the oldest queued job (called with the lock held and something queued)."""
        return min(((q[0].index, key) for key, q in self.queues.items() if q), key=lambda ik: ik[0])[1]

    def _window(self, key: Key) -> Window:
        window = self.windows.get(key)
        if window is None:
            conv, seed = key
            m = self.manifest
            window = Window(self.runner, conv, self.max_batch, tuple(m.input_shape),  # type: ignore[arg-type]
                            tuple(m.activation_shape), m.num_classes,  # type: ignore[arg-type]
                            _SingleImageNoise(seed) if seed is not None else None, self.save_passes,
                            on_batch=self._on_batch)
            self.windows[key] = window
        return window

    def _on_batch(self, n: int) -> None:
        if self.feed is not None:
            self.feed.batched()
            self._drop_cancelled(self.feed.window)
        if self.on_batch_hook is not None:
            self.on_batch_hook(n)

    def _drop_cancelled(self, window: Window) -> None:
        """Drop from ``window`` the images whose requests were cancelled (client gone, timeout) since the last batch;
        called on the engine thread between batches."""
        with self.cond:
            gone = [job for job in self.in_flight.values() if job.abandoned or job.future.cancelled()]
            for job in gone:
                self.in_flight.pop(job.index, None)
        for job in gone:
            window.cancel(job.index)
        if gone and self.on_cancel is not None:
            self.on_cancel(len(gone))

    def _deliver(self, explained: Explained) -> None:
        with self.cond:
            job = self.in_flight.pop(explained.index, None)
        if job is None:
            return
        done = Done(explained, job.admitted - job.submitted, time.perf_counter() - job.admitted)
        if self.on_done is not None:
            self.on_done(job, done)
        try:
            job.future.set_result(done)
        except InvalidStateError:  # cancelled meanwhile (client gone, timeout): the result is dropped
            pass


class _Feed:
    """The iterator a window pulls requests from: its key's queued jobs, waiting up to ``max_delay`` for more while
    a batch is partial; it ends (for this run of the window) when it should let the window finish and move on."""

    def __init__(self, batcher: Batcher, key: Key, window: Window) -> None:
        self.batcher, self.key, self.window = batcher, key, window
        self.deadline: float | None = None  # when waiting for company ends, since the last engine batch
        self.taken = False  # handed out an image since the last engine batch

    def batched(self) -> None:
        """An engine batch ran: a new wait may start."""
        self.deadline, self.taken = None, False

    def __iter__(self) -> Iterator[Image]:
        return self

    def __next__(self) -> Image:
        b = self.batcher
        with b.cond:
            while True:
                if b.stopped:
                    raise StopIteration
                queue = b.queues.get(self.key)
                while queue and queue[0].future.cancelled():  # gone before admission: never explained
                    queue.popleft()
                    b.queued -= 1
                now = time.perf_counter()
                other = min((q[0].submitted for key, q in b.queues.items() if q and key != self.key), default=None)
                if queue:
                    if other is not None and other < queue[0].submitted and now - other >= b.max_delay:
                        raise StopIteration  # an older request of another key waited long enough: switch
                    job = queue.popleft()
                    b.queued -= 1
                    if not job.future.set_running_or_notify_cancel():
                        continue
                    job.admitted = now
                    b.in_flight[job.index] = job
                    self.taken = True
                    return Image(job.index, job.x, job.target)
                if other is not None:
                    raise StopIteration
                if self.window.pending == 0 and not self.window.state and not self.taken:
                    raise StopIteration  # nothing in flight: the engine thread waits for work instead
                if self.deadline is None:
                    self.deadline = now + b.max_delay
                if now >= self.deadline:
                    raise StopIteration
                b.cond.wait(self.deadline - now)


def _fail(job: Job, exc: BaseException) -> None:
    try:
        job.future.set_exception(exc)
    except InvalidStateError:
        pass


__all__ = ["Batcher", "Closed", "Done", "Job", "QueueFull"]
