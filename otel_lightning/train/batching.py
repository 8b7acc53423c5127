"""BatchScheduler: concurrent generation requests are gathered and run as one batch."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from otel_lightning.train.policy import Generation, GenerationRequest, TorchPolicy

logger = logging.getLogger(__name__)

_STOP = object()


class BatchScheduler:
    """One thread runs `policy.generate_batch` on whatever requests are waiting (up to `max_batch`),
    after waiting at most `max_wait_s` for more to join. A lone request pays at most that wait."""

    def __init__(self, policy: TorchPolicy, *, max_batch: int = 64, max_wait_s: float = 0.002) -> None:
        self.policy = policy
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="policy-batches", daemon=True)
        self._thread.start()
        self.batches = 0
        self.requests = 0

    def generate(self, request: GenerationRequest) -> tuple[Generation, int]:
        """Blocking: the request's completion and the policy version that produced it."""
        future: Future[tuple[Generation, int]] = Future()
        self._queue.put((request, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=self.max_wait_s)
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._serve(batch)  # type: ignore[arg-type]
            if stop:
                return

    def _serve(self, batch: list[tuple[GenerationRequest, Future]]) -> None:
        try:
            generations, version = self.policy.generate_batch([request for request, _ in batch])
        except Exception as error:  # every waiting request gets the error, none hangs
            logger.exception("batched generation failed")
            for _, future in batch:
                future.set_exception(error)
            return
        self.batches += 1
        self.requests += len(batch)
        for (_, future), generation in zip(batch, generations, strict=True):
            future.set_result((generation, version))
