"""The background batch thread: same order, errors surface, an early stop ends it."""

from __future__ import annotations

import threading
import time

import pytest

from rnnfc_cli.prefetch import prefetch


def test_items_arrive_in_order_and_ahead_of_time():
    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    stream = prefetch(items(), depth=3)
    assert next(stream) == 0
    time.sleep(0.2)
    assert len(produced) >= 3  # made ahead while the consumer was busy
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

    def producers():
        return [t for t in threading.enumerate() if t.name == "rnnfc-prefetch"]

    stream = prefetch(items(), depth=2)
    assert next(stream) == 1 and producers()
    stream.close()
    deadline = time.monotonic() + 5
    while producers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not producers()
