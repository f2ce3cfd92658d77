"""Devices and the bound on work in flight."""

from __future__ import annotations

import jax
import numpy as np

from rnnfc_cli.parallel import IN_FLIGHT, InFlight, batch_sharding, data_devices, device_batch_size


class _Pending:
    """Stands in for a dispatched result; records when it is waited for."""

    def __init__(self, number: int, waited: list[int]):
        self.number, self.waited = number, waited

    def block_until_ready(self):
        self.waited.append(self.number)
        return self


def test_dispatched_work_never_runs_more_than_in_flight_ahead_of_the_host():
    """More queued multi-device steps hung XLA:CPU's collectives (see IN_FLIGHT)."""
    waited: list[int] = []
    done: list[int] = []
    in_flight = InFlight()
    for issued in range(10):
        in_flight.add(_Pending(issued, waited), lambda n=issued: done.append(n))
        # Every call but the last IN_FLIGHT - 1 has been waited for, in order.
        assert waited == done == list(range(issued + 2 - IN_FLIGHT))
    in_flight.drain()
    assert waited == done == list(range(10))


def test_one_device_needs_no_sharding_and_batches_round_up_to_split_evenly():
    one = jax.local_devices()[:1]
    assert batch_sharding(one) is None
    assert data_devices(1) == one
    assert device_batch_size(10, 1000, [object()] * 4) == 12
    assert device_batch_size(64, 5, [object()] * 2) == 6  # capped at the examples
    assert np.all([d.platform == jax.default_backend() for d in data_devices(0)])
