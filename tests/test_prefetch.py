"""The background batch thread: same order, errors surface, an early stop ends it."""

from __future__ import annotations

import threading

import pytest

from rnnfc_cli.prefetch import prefetch


def test_items_arrive_in_order_and_ahead_of_time():
    depth = 3
    produced = []
    ahead = threading.Event()

    def items():
        for i in range(50):
            produced.append(i)
            if i == depth:
                ahead.set()
            yield i

    stream = prefetch(items(), depth=depth)
    assert next(stream) == 0
    # Made ahead while the consumer holds item 0: items 1..depth fill the queue.
    assert ahead.wait(timeout=30)
    # ...and no further: item depth + 1 at most is made and waits for room in the queue.
    assert len(produced) <= depth + 2
    assert list(stream) == list(range(1, 50))


def test_a_producer_error_is_raised_where_it_happened():
    def items():
        yield 1
        raise ValueError("bad row 7")

    stream = prefetch(items())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="bad row 7"):
        next(stream)


def test_stopping_early_stops_the_producer():
    def items():
        i = 0
        while True:
            i += 1
            yield i

    def producers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "rnnfc-prefetch"}

    before = producers()
    stream = prefetch(items(), depth=2)
    assert next(stream) == 1
    (thread,) = producers() - before
    stream.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
