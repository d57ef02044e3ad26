"""Nothing lost: a real training process killed (SIGKILL) or interrupted (SIGINT) and resumed ends with
weights bitwise identical to an uninterrupted run of the same length."""

import csv
import os
import signal
import subprocess
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from unetkit import load_checkpoint

EPOCHS = 3


def args(exe, data, run):
    return [
        exe,
        "train",
        str(data),
        "--no-plan",
        "--out",
        str(run),
        "--epochs",
        str(EPOCHS),
        "--steps-per-epoch",
        "60",
        "--batch",
        "4",
        "--patch",
        "48",
        "--base-channels",
        "4",
        "--depth",
        "2",
        "--dropout",
        "0.3",
        "--patience",
        "10",
        "--seed",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]


@pytest.fixture(scope="module")
def reference(unetkit_exe, tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(args(unetkit_exe, tiny_data, run), check=True, capture_output=True, timeout=600)
    return run


def wait_for(path, proc, timeout=300):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def resume(exe, data, run):
    return subprocess.run(
        [exe, "train", str(data), "--resume", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )


def same_weights(a, b):
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def rows(run):
    with open(run / "metrics.csv") as fh:
        return [
            {k: v for k, v in r.items() if k not in ("seconds", "val_seconds", "data_wait", "elapsed")}
            for r in csv.DictReader(fh)
        ]


def test_sigkill_mid_training_then_resume_is_bitwise_identical(unetkit_exe, tiny_data, tmp_path, reference):
    run = tmp_path / "run"
    proc = subprocess.Popen(args(unetkit_exe, tiny_data, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(run / "curves.png", proc)  # epoch 1 is done (the curves are drawn last)
    time.sleep(0.15)  # into epoch 2 (an epoch takes about 0.35 s on a fast CPU)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(run / "last.pt")["training"]["epoch"]  # never truncated: it loads
    assert killed_at < EPOCHS, "the kill came too late to test anything"

    done = resume(unetkit_exe, tiny_data, run)
    assert done.returncode == 0, done.stderr
    assert f"resuming {run} after epoch {killed_at}" in done.stderr
    assert same_weights(run / "last.pt", reference / "last.pt")
    assert same_weights(run / "best.pt", reference / "best.pt")
    assert rows(run) == rows(reference)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("dice/val")] == list(range(1, EPOCHS + 1))  # no duplicated epochs


def test_ctrl_c_saves_the_exact_position_and_says_how_to_resume(unetkit_exe, tiny_data, tmp_path, reference):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        args(unetkit_exe, tiny_data, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(run / "curves.png", proc)
    time.sleep(0.15)  # into epoch 2: an epoch of this tiny run takes about 0.35 s on a fast CPU
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"--resume {run}" in err and "Traceback" not in err
    state = load_checkpoint(run / "last.pt")["state"]
    assert state["epoch"] < EPOCHS
    assert state["step_in_epoch"] > 0  # saved mid-epoch, not only at the last epoch end

    done = resume(unetkit_exe, tiny_data, run)
    assert done.returncode == 0, done.stderr
    assert same_weights(run / "last.pt", reference / "last.pt")
    assert rows(run) == rows(reference)


def test_a_stop_asked_from_another_thread_keeps_the_exact_position(tiny_data, tmp_path):
    """What the napari Train widget's Cancel does: ``TrainHooks.stop`` set from another thread mid-epoch stops
    after the current step exactly as Ctrl-C does; the resumed run equals an uninterrupted one bitwise, and the
    hooks saw every step and every epoch."""
    import threading

    from tests.conftest import tiny_config
    from unetkit import train
    from unetkit.training.loop import TrainHooks, TrainingInterrupted

    cfg = tiny_config(epochs=3, steps_per_epoch=6, seed=3)
    whole = train(tiny_data, tmp_path / "whole", cfg, progress=False)
    stop, steps, epochs = threading.Event(), [], []

    def on_step(epoch, step, total, loss):
        steps.append((epoch, step, total))
        if (epoch, step) == (2, 4):  # as a GUI would: another thread sets the event a moment later
            threading.Thread(target=stop.set).start()
            time.sleep(0.05)

    hooks = TrainHooks(stop=stop, on_step=on_step, on_epoch=epochs.append)
    with pytest.raises(TrainingInterrupted, match="interrupted during epoch 2 at step"):
        train(tiny_data, tmp_path / "stopped", cfg, progress=False, hooks=hooks)
    assert steps[:6] == [(1, k, 6) for k in range(1, 7)] and steps[-1][0] == 2 and steps[-1][1] >= 4
    assert [int(r["epoch"]) for r in epochs] == [1] and epochs[0]["best_epoch"] == 1
    assert (tmp_path / "stopped" / "best.pt").is_file()  # the best model so far is kept
    train(tiny_data, tmp_path / "stopped", resume=True, progress=False)
    assert same_weights(whole.last_checkpoint, tmp_path / "stopped" / "last.pt")
    assert rows(tmp_path / "whole") == rows(tmp_path / "stopped")
