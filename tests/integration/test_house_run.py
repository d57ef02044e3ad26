"""House contracts that need a real training run."""

from __future__ import annotations

import gc
import logging
import threading
import warnings

from tests.conftest import tiny_config
from unetkit.workflows.plan import _calibrate


def test_calibration_closes_its_files_and_quiets_only_its_own_thread(tiny_data, caplog):
    """The trial run's messages are dropped, not those of other threads (the logger's level was changed for
    everyone), and metrics.csv is read with the file closed again."""
    other = logging.getLogger("unetkit.other")
    stop, running = threading.Event(), threading.Event()
    sent = []

    def chatter() -> None:  # logs only while the calibration runs
        while not stop.is_set():
            if running.is_set():
                other.info("from another thread")
                sent.append(1)
            stop.wait(0.02)

    caplog.set_level(logging.INFO)
    level = logging.getLogger("unetkit").level
    thread = threading.Thread(target=chatter)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        thread.start()
        try:
            running.set()
            timing = _calibrate(tiny_data, tiny_config(), progress=False)
            running.clear()
        finally:
            stop.set()
            thread.join()
        gc.collect()  # an unclosed file would warn here
    assert timing["step_seconds"] > 0
    messages = [r.getMessage() for r in caplog.records]
    assert len(sent) > 3 and messages.count("from another thread") == len(sent)  # every one delivered
    assert not any(m.startswith("training unet") for m in messages)  # the trial run's own info: dropped
    assert logging.getLogger("unetkit").level == level  # never changed, not even for a while
