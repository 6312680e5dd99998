"""Run a loader's heavy step ahead of the consumer on background threads: prefetched(items, build, workers)
yields build(item) for each item, in order, exactly like map(build, items), but build(item k+1), ...,
build(item k+workers) run while the consumer is still working on item k.

Why threads pay off although Python holds one lock: the heavy step (train/assemble.py's row copies,
int32 -> int64 as numpy copies them) releases the GIL, and so does the consumer in a training run (torch's
forward and backward). Results are yielded in item order whatever thread built them, so what is yielded is
exactly map(build, items): deterministic, and the loader position (carried by the consumer's items, not by
the threads) stays exact. At most workers + 1 items are taken and not yet consumed, so memory is bounded.
The threads stop when the consumer closes or drops the generator; an exception in build (or in items) is
raised in the consumer, at the item where it happened, after every item before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

POLL_S = 0.1  # how often a waiting thread checks whether the consumer left


def prefetched(items: Iterator[T], build: Callable[[T], R], workers: int = 1,
               name: str = "tessera-loader") -> Iterator[R]:
    cond = threading.Condition()
    done: dict[int, tuple[Any, BaseException | None]] = {}  # built and not yet consumed, by item number
    s = {"taken": 0, "consumed": 0, "end": -1, "stop": False}  # end: the number of items, once known

    def work() -> None:
        while True:
            with cond:
                while not s["stop"] and s["end"] < 0 and s["taken"] - s["consumed"] > workers:
                    cond.wait(POLL_S)
                if s["stop"] or s["end"] >= 0:
                    return
                k = s["taken"]
                try:  # under the lock: items is a plain iterator, one thread at a time
                    item = next(items)
                except StopIteration:
                    s["end"] = k
                    cond.notify_all()
                    return
                except BaseException as e:
                    s["end"], done[k] = k + 1, (None, e)
                    cond.notify_all()
                    return
                s["taken"] = k + 1
            try:
                result: tuple[Any, BaseException | None] = (build(item), None)
            except BaseException as e:  # handed to the consumer, which raises it where the item was due
                result = (None, e)
            with cond:
                done[k] = result
                cond.notify_all()

    threads = [threading.Thread(target=work, name=name, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    try:
        k = 0
        while True:
            with cond:
                while k not in done and not 0 <= s["end"] <= k:
                    cond.wait()
                if k not in done:
                    return
                value, error = done.pop(k)
                s["consumed"] = k = k + 1
                cond.notify_all()
            if error is not None:
                raise error
            yield value
    finally:
        with cond:
            s["stop"] = True
            cond.notify_all()
