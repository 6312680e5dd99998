"""Run a loader's heavy step one item ahead on a background thread: prefetched(items, build) yields
build(item) for each item, in order, like map(build, items), but build(item k+1) runs while the consumer is
still working on item k.

Why a thread pays off although Python holds one lock: the heavy step (train/assemble.py's row copies,
int32 -> int64 as numpy copies them) releases the GIL, and so does the consumer in a training run (torch's
forward and backward). Order is the producer's order (one FIFO queue, one producer), so what is yielded is
exactly map(build, items): deterministic, and the loader position (carried by the consumer's items, not by
the thread) stays exact. At most two built items wait (one in the queue, one being built), so memory is
bounded. The thread stops when the consumer closes or drops the generator; an exception in build is raised
in the consumer, at the item where it happened.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()  # the items ran out
POLL_S = 0.1  # how often a producer blocked on a full queue checks whether the consumer left


def prefetched(items: Iterator[T], build: Callable[[T], R], name: str = "tessera-loader") -> Iterator[R]:
    ahead: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(value: object, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                ahead.put((value, error), timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(build(item)):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, which raises it where the item was due
            put(_END, e)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            value, error = ahead.get()
            if error is not None:
                raise error
            if value is _END:
                return
            yield value  # type: ignore[misc]
    finally:
        stop.set()
