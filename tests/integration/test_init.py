"""`unetkit train DATA --init RUN`: fine-tuning starts from the model, through the real CLI."""

from __future__ import annotations

import numpy as np
import torch
import yaml

from tests.conftest import TINY_CLI
from unetkit import load_checkpoint, synth_nuclei, write_image
from unetkit.cli.main import main


def test_fine_tuning_starts_from_the_models_weights_and_architecture(tiny_data, tiny_run, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "tuned"
    args = ["train", str(tiny_data), "--out", str(out), *TINY_CLI, "--init", str(tiny_run.run_dir)]
    assert main([*args, "--lr", "1e-12", "--steps-per-epoch", "1"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    start = load_checkpoint(tiny_run.best_checkpoint)
    assert cfg["train"]["init"] == str(tiny_run.run_dir)
    assert cfg["model"]["depth"] == start["model"]["hparams"]["depth"] == 2  # the model's, not TINY_CLI's 1
    assert cfg["model"]["base_channels"] == 4
    tuned = load_checkpoint(out / "best.pt")["state_dict"]
    for key, value in start["state_dict"].items():  # one step at lr 1e-12: still the model's weights
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(tuned[key], value, atol=1e-6, rtol=0)
    assert "architecture is used" in caplog.text


def test_fine_tuning_a_grey_model_on_colour_images_with_other_classes(tiny_run, tmp_path, caplog):
    caplog.set_level("INFO")
    data = tmp_path / "rgb"
    for i in range(4):
        image, labels = synth_nuclei(64, seed=40 + i)
        write_image(data / "images" / f"im{i}.png", np.stack([image, image // 2, image], axis=-1))
        classes = np.where(labels > 0, 1 + (labels % 2), 0).astype(np.uint8)  # two object classes
        write_image(data / "masks" / f"im{i}.png", classes)
    (data / "dataset.yaml").write_text(
        "layout: paired\nmask_encoding: classes\nclasses: {0: bg, 1: odd, 2: even}\n"
    )
    out = tmp_path / "tuned"
    rc = main(["train", str(data), "--out", str(out), *TINY_CLI, "--init", str(tiny_run.best_checkpoint)])
    assert rc == 0
    hp = load_checkpoint(out / "best.pt")["model"]["hparams"]
    assert (hp["in_channels"], hp["num_classes"]) == (3, 3)
    assert "adapted from 1 to 3 channel(s)" in caplog.text and "head start(s) anew" in caplog.text
    assert "fine-tuning: learning rate 0.0002" in caplog.text  # the gentler learning rate, said
    assert "U-Net depth 2, base 4" in caplog.text  # announced with the model's architecture


def test_resume_does_not_take_init(tiny_data, tiny_run, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny_data), "--out", str(out), *TINY_CLI]) == 0
    assert main(["train", str(tiny_data), "--resume", str(out), "--init", str(tiny_run.run_dir)]) == 2
    assert "drop --init" in capsys.readouterr().err
