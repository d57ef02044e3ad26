import csv

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import tiny_config
from unetkit import ConfigError, DataError, RunConfig, load_checkpoint, synthesize_dataset, train
from unetkit.checkpoint import build_model


def test_run_directory_holds_everything(tiny_run):
    run = tiny_run.run_dir
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_dice"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    assert all(0 < float(r["data_wait"]) < 1 for r in rows)  # the loader's share of the step time, measured
    # config.yaml is every setting used, including what was derived from the data
    saved = RunConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert saved.model.in_channels == 1 and saved.model.base_channels == 4 and saved.train.epochs == 2
    # TensorBoard event files, read back
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = {"loss/train", "dice/val", "iou/val", "loss/val_ce", "lr", "time/data_wait_fraction"}
    assert tags <= set(acc.Tags()["scalars"])
    dice_events = acc.Scalars("dice/val")
    assert [e.step for e in dice_events] == [1, 2]
    assert [e.value for e in dice_events] == pytest.approx([float(r["val_dice"]) for r in rows], abs=1e-5)


def test_best_checkpoint_is_the_best_epoch_and_last_has_resume_state(tiny_run):
    best = load_checkpoint(tiny_run.best_checkpoint)
    last = load_checkpoint(tiny_run.last_checkpoint)
    assert best["training"]["val_dice"] == pytest.approx(max(h["val_dice"] for h in tiny_run.history))
    assert best["training"]["epoch"] == tiny_run.best_epoch
    assert last["training"]["epoch"] == 2 and "optimizer" in last["state"]
    assert best["preprocessing"]["normalization"]["method"] == "percentile"
    assert best["preprocessing"]["in_channels"] == 1
    # the synthetic dataset describes its masks as instance labels (DATA/dataset.yaml)
    assert best["preprocessing"]["encoding"]["name"] == "instances"
    assert best["training"]["config"]["model"]["base_channels"] == 4


def test_training_learns_on_synthetic_nuclei(tmp_path):
    """A few hundred patches take a tiny U-Net well beyond chance: the loop really optimises."""
    data = synthesize_dataset(tmp_path / "d", n=6, size=96, seed=3)
    cfg = tiny_config(epochs=4, steps_per_epoch=15, batch_size=4, lr=3e-3)
    cfg.model.base_channels = 8
    cfg.data.patch_size = 64
    result = train(data, tmp_path / "run", cfg, progress=False)
    assert result.history[-1]["train_loss"] < 0.7 * result.history[0]["train_loss"]
    assert result.best_score > 0.75


def test_one_image_trains_with_a_region_split(tmp_path, caplog):
    data = synthesize_dataset(tmp_path / "d", n=1, size=(70, 50), seed=0)
    with caplog.at_level("INFO", logger="unetkit"):
        result = train(data, tmp_path / "run", tiny_config(epochs=1), progress=False)
    assert "only 1 image(s): validating on the bottom 20%" in caplog.text
    assert result.best_checkpoint.is_file()


def test_paper_valid_network_trains(tmp_path):
    data = synthesize_dataset(tmp_path / "d", n=2, size=64, seed=0)
    cfg = tiny_config(epochs=1, loss="ce_dice")
    cfg.model.padding, cfg.model.num_classes, cfg.model.norm, cfg.model.dropout = "valid", 2, None, 0.5
    cfg.data.patch_size = 60
    result = train(data, tmp_path / "run", cfg, progress=False)
    payload = load_checkpoint(result.best_checkpoint)
    net = build_model(payload)
    assert (
        net.padding == "valid"
        and payload["training"]["patch_in"] == 60
        and payload["training"]["patch_out"] == 20
    )
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 60, 60)).shape == (1, 2, 20, 20)


def test_existing_run_is_never_overwritten_silently(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "run", tiny_config(epochs=1), progress=False)
    before = (tmp_path / "run" / "best.pt").read_bytes()
    with pytest.raises(DataError, match="already holds a run .* pass --overwrite"):
        train(tiny_data, tmp_path / "run", tiny_config(epochs=1), progress=False)
    assert (tmp_path / "run" / "best.pt").read_bytes() == before
    train(tiny_data, tmp_path / "run", tiny_config(epochs=1, seed=5), overwrite=True, progress=False)
    assert len(list((tmp_path / "run" / "tb").glob("events.out.tfevents*"))) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: setattr(c.train, "epochs", 0), r"train.epochs \(--epochs\) must be >= 1"),
        (lambda c: setattr(c.train, "loss", "hinge"), "train.loss 'hinge' is unknown"),
        (lambda c: setattr(c.model, "norm", "layer"), "model: unknown norm 'layer'"),
        (lambda c: setattr(c.data, "normalization", "divide255"), "data.normalization 'divide255'"),
        (lambda c: setattr(c.train, "device", "tpu"), "--device 'tpu'"),
        (lambda c: setattr(c.model, "num_classes", 5), "model.num_classes 5"),
    ],
)
def test_bad_settings_fail_before_compute(tiny_data, tmp_path, change, message):
    cfg = tiny_config()
    change(cfg)
    with pytest.raises(ConfigError, match=message):
        train(tiny_data, tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(DataError, match="nope: no such dataset folder"):
        train(tmp_path / "nope", tmp_path / "run", tiny_config(), progress=False)


def test_training_is_reproducible(tiny_data, tmp_path):
    a = train(tiny_data, tmp_path / "a", tiny_config(epochs=1), progress=False)
    b = train(tiny_data, tmp_path / "b", tiny_config(epochs=1), progress=False)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    sa = load_checkpoint(a.last_checkpoint)["state_dict"]
    sb = load_checkpoint(b.last_checkpoint)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.isfinite(a.best_score)


def test_early_stopping_when_validation_stops_improving(tiny_data, tmp_path):
    # With no normalisation layers and a vanishing learning rate the predictions cannot change, so the
    # validation Dice never improves after epoch 1 and patience 2 stops the run after epoch 3.
    cfg = tiny_config(epochs=10, lr=1e-12, patience=2)
    cfg.model.norm = None
    result = train(tiny_data, tmp_path / "run", cfg, progress=False)
    assert result.stopped_early and result.best_epoch == 1
    assert [h["epoch"] for h in result.history] == [1, 2, 3]


def test_training_with_worker_processes_leaves_the_signal_handlers_as_they_were(tiny_data, tmp_path):
    """PyTorch's DataLoader takes over SIGCHLD for its workers and leaves its handler behind; in a process where
    ONNX Runtime / OpenVINO had run (this tier's engine tests come first), a child exiting under it crashed the
    process (SIGSEGV). Training keeps the DataLoader from installing it; workers still work, twice."""
    import signal

    from tests.conftest import tiny_config
    from unetkit import train

    before = signal.getsignal(signal.SIGCHLD), signal.getsignal(signal.SIGINT)
    for name in ("a", "b"):
        train(tiny_data, tmp_path / name, tiny_config(num_workers=2), progress=False)
        assert (signal.getsignal(signal.SIGCHLD), signal.getsignal(signal.SIGINT)) == before
    assert (tmp_path / "b" / "best.pt").is_file()
