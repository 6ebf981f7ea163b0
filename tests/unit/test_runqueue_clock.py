"""RunQueueClock: the time a pool process waited for a CPU, taken out of its batch sizing."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from pgq.worker.slot import RunQueueClock


def _spin(seconds: float) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="Linux schedstat")
def test_it_counts_the_time_other_processes_held_the_cpu() -> None:
    clock = RunQueueClock()
    try:
        cpu = min(os.sched_getaffinity(0))
        before = clock.read()
        assert before is not None and before >= 0
        # Three busy processes and this one share one CPU: this one must wait its turns.
        rivals = [multiprocessing.Process(target=_spin, args=(0.3,)) for _ in range(3)]
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            for rival in rivals:
                rival.start()
            _spin(0.1)
        finally:
            os.sched_setaffinity(0, saved)
            for rival in rivals:
                rival.join()
        after = clock.read()
        assert after is not None and after > before
    finally:
        clock.close()


def test_a_closed_clock_reads_none() -> None:
    clock = RunQueueClock()
    clock.close()
    assert clock.read() is None
