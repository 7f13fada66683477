"""The overlapped input pipeline (the paper's four stages).

    read n+3  ->  prepare n+2  ->  copy n+1  ->  train on n
    (thread)      (thread)         (thread)      (the caller)

Each stage is a function of one item running in its own thread; stages are
joined by bounded queues (`depth` items each), so at most a few batches are
in flight and a slow consumer never makes memory grow. Items come out in the
order the source produced them.

Shutdown: close() (also called by the context manager, by breaking out of a
for loop over the pipeline, and at the end of iteration) stops every thread
and joins it; no thread outlives the pipeline. An exception raised in a
stage is re-raised in the consumer's thread, with the original traceback
chained, when the consumer reaches the item that failed.
"""
import queue
import threading

_END = object()


class _Failure:
    def __init__(self, exc, stage):
        self.exc = exc
        self.stage = stage


class PipelineError(RuntimeError):
    """Raised when a pipeline is used after close()."""


class Pipeline:
    """Iterate `stages[-1](...stages[0](item))` for item in `source`, stages in threads.

    source: an iterable (consumed in the first thread); stages: callables.
    depth: the size of each queue between stages.
    """

    def __init__(self, source, stages, depth=1, name="pipeline"):
        if not stages:
            raise ValueError("Pipeline needs at least one stage")
        if depth < 1:
            raise ValueError(f"Pipeline depth {depth}: must be at least 1")
        self.name = name
        self._stop = threading.Event()
        self._queues = [queue.Queue(maxsize=depth) for _ in stages]
        self._threads = []
        self._closed = False
        self._started = False
        self._source = source
        self._stages = list(stages)

    # -- worker side -------------------------------------------------------
    def _put(self, q, item):
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _get(self, q):
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                pass
        return _END

    def _run_first(self, fn, out):
        try:
            for item in self._source:
                if self._stop.is_set():
                    return
                if not self._put(out, fn(item)):
                    return
        except BaseException as e:       # noqa: BLE001 -- handed to the consumer
            self._put(out, _Failure(e, getattr(fn, "__name__", "stage 0")))
            return
        self._put(out, _END)

    def _run_stage(self, fn, inq, out):
        while True:
            item = self._get(inq)
            if item is _END or isinstance(item, _Failure):
                self._put(out, item)
                return
            try:
                result = fn(item)
            except BaseException as e:   # noqa: BLE001
                self._put(out, _Failure(e, getattr(fn, "__name__", "stage")))
                return
            if not self._put(out, result):
                return

    def _start(self):
        self._started = True
        for i, fn in enumerate(self._stages):
            if i == 0:
                t = threading.Thread(target=self._run_first, args=(fn, self._queues[0]),
                                     name=f"{self.name}-0", daemon=True)
            else:
                t = threading.Thread(target=self._run_stage, args=(fn, self._queues[i - 1], self._queues[i]),
                                     name=f"{self.name}-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    # -- consumer side -----------------------------------------------------
    def __iter__(self):
        if self._closed:
            raise PipelineError(f"{self.name}: iterated after close()")
        if self._started:
            raise PipelineError(f"{self.name}: a pipeline can be iterated once")
        self._start()
        try:
            last = self._queues[-1]
            while True:
                item = last.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self):
        """Stop and join every thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for q in self._queues:           # free the memory of batches in flight
            try:
                while True:
                    q.get_nowait()
            except queue.Empty:
                pass
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=10)
        close = getattr(self._source, "close", None)
        if close is not None and not any(t.is_alive() for t in self._threads):
            try:
                close()
            except Exception:            # noqa: BLE001 -- best effort on a finished generator
                pass

    @property
    def alive_threads(self):
        return [t for t in self._threads if t.is_alive()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:                # noqa: BLE001
            pass
