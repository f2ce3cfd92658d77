"""Assemble the next batches in a background thread while the device runs this one.

Reading rows from a memory-mapped file, padding and scaling them is host work; done in
line, the device would wait for it at every step. A bounded queue keeps ``depth`` batches
ready, and the order of the batches is exactly that of the wrapped iterator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, computing up to ``depth`` ahead in a daemon thread.

    An exception in the producer is raised in the consumer at that point; a consumer
    that stops early (an interruption) stops the producer too.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failure(error))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="rnnfc-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=1.0)  # it notices ``stop`` within 0.1 s, unless mid-item
