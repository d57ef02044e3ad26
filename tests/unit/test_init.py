"""Fine-tuning's start: weights copied where shapes agree, the input layer adapted to other channel counts, the
output layer anew for other classes, the architecture and normalisation taken from the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit import check_dataset, save_checkpoint, synthesize_dataset
from unetkit.config import FINE_TUNE_LR, DataConfig, ModelConfig, RunConfig, TrainConfig
from unetkit.data.dataset import SampleStore
from unetkit.errors import CheckpointError
from unetkit.models import create_model
from unetkit.training.init import init_config, load_initial_weights

PREP = {"in_channels": 1, "num_classes": 1, "normalization": {"method": "fixed", "scale": 4095.0}}


def _payload(arch="unet", in_channels=1, num_classes=1, **kw):
    torch.manual_seed(0)
    net = create_model(arch, in_channels=in_channels, num_classes=num_classes, depth=2, base_channels=4, **kw)
    payload = {"model": {"name": arch, "hparams": dict(net.hparams)}, "state_dict": net.state_dict()}
    return net, {**payload, "preprocessing": {**PREP, "in_channels": in_channels, "num_classes": num_classes}}


@pytest.mark.parametrize("arch", ["unet", "residual-unet", "attention-unet", "unet++"])
def test_matching_shapes_start_exactly_from_the_model(arch):
    old, payload = _payload(arch)
    torch.manual_seed(1)
    new = create_model(arch, in_channels=1, num_classes=1, depth=2, base_channels=4)
    assert load_initial_weights(new, payload, "m.pt") == []
    for key, value in old.state_dict().items():
        assert torch.equal(new.state_dict()[key], value), key


def test_a_grey_model_reads_colour_images_as_it_read_grey_ones():
    old, payload = _payload()
    new = create_model("unet", in_channels=3, num_classes=1, depth=2, base_channels=4)
    notes = load_initial_weights(new, payload, "m.pt")
    assert any("adapted from 1 to 3 channel(s)" in n for n in notes)
    grey = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            new.eval()(grey.repeat(1, 3, 1, 1)), old.eval()(grey), atol=1e-5, rtol=1e-4
        )


def test_other_classes_get_a_new_output_layer_and_keep_the_rest():
    old, payload = _payload()
    new = create_model("unet", in_channels=1, num_classes=3, depth=2, base_channels=4)
    notes = load_initial_weights(new, payload, "m.pt")
    assert any("head start(s) anew" in n for n in notes)
    assert torch.equal(new.state_dict()["inc.0.0.weight"], old.state_dict()["inc.0.0.weight"])
    assert new.state_dict()["head.weight"].shape[0] == 3


def test_a_model_that_fits_nowhere_is_refused():
    _, payload = _payload()
    payload["state_dict"] = {"something.else": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="no layer"):
        load_initial_weights(create_model("unet", depth=2, base_channels=4), payload, "m.pt")


def test_the_run_takes_the_models_architecture_normalisation_and_a_fine_tuning_rate(tmp_path):
    torch.manual_seed(0)
    net = create_model("attention-unet", in_channels=1, num_classes=1, depth=3, base_channels=8)
    ckpt = save_checkpoint(tmp_path / "m.pt", net, model_name="attention-unet", preprocessing=PREP)
    cfg = RunConfig(model=ModelConfig(depth=4, base_channels=16), train=TrainConfig(init=str(ckpt)))
    cfg, payload, notes = init_config(cfg)
    assert (cfg.model.arch, cfg.model.depth, cfg.model.base_channels) == ("attention-unet", 3, 8)
    assert (cfg.data.normalization, cfg.data.norm_scale) == ("fixed", 4095.0)
    assert cfg.train.lr == FINE_TUNE_LR and payload["model"]["name"] == "attention-unet"
    assert any("architecture is used" in n for n in notes) and any("normalisation" in n for n in notes)
    ckpt.rename(tmp_path / "best.pt")  # a run folder is a model too
    kept, _, _ = init_config(RunConfig(train=TrainConfig(init=str(tmp_path), lr=5e-4)))
    assert kept.train.lr == 5e-4 and kept.model.arch == "attention-unet"


def test_a_rate_given_as_the_scratch_default_is_kept_and_a_second_application_changes_nothing(tmp_path):
    torch.manual_seed(0)
    net = create_model("unet", in_channels=1, num_classes=1, depth=2, base_channels=4)
    ckpt = save_checkpoint(tmp_path / "m.pt", net, model_name="unet", preprocessing=PREP)
    once, _, _ = init_config(RunConfig(train=TrainConfig(init=str(ckpt), lr=1e-3)))
    twice, _, notes = init_config(once)
    assert once.train.lr == twice.train.lr == 1e-3 and notes == []


def test_input_scale_brings_objects_into_the_initial_models_sizes():
    from unetkit.training.init import SIZE_TOLERANCE, input_scale_for

    ranged = {
        "preprocessing": {"in_channels": 1, "object_diameter": 8.0, "object_diameter_range": [6.0, 26.0]}
    }
    assert input_scale_for(ranged, 15.0, "m") == (1.0, None)  # inside: untouched
    factor, note = input_scale_for(ranged, 52.0, "m")
    assert factor == 0.5 and "resampled by 0.5" in note
    assert input_scale_for(ranged, 3.0, "m")[0] == 2.0  # small objects are enlarged to the range's start
    plain = {
        "preprocessing": {"in_channels": 1, "object_diameter": 16.0}
    }  # a run's model: its median within a tolerance
    assert input_scale_for(plain, 16.0 * SIZE_TOLERANCE, "m") == (1.0, None)
    assert input_scale_for(plain, 48.0, "m")[0] == pytest.approx(16.0 * SIZE_TOLERANCE / 48.0, abs=1e-3)
    assert input_scale_for({"preprocessing": {"in_channels": 1}}, 48.0, "m") == (
        1.0,
        None,
    )  # nothing known: nothing done
    assert input_scale_for(ranged, None, "m") == (1.0, None)


def test_the_sample_store_resamples_image_and_target_alike(tmp_path):
    from unetkit.data.resample import scaled_shape

    data = synthesize_dataset(tmp_path / "d", n=1, size=(101, 77), seed=0)
    report = check_dataset(data)
    stores = [
        SampleStore(report.samples, report.encoding, report.normalizer(DataConfig()), 1, input_scale=s)
        for s in (1.0, 0.5)
    ]
    (image, target), (small, small_target) = stores[0][0], stores[1][0]
    assert small.shape[1:] == small_target.shape == scaled_shape(image.shape[1:], 0.5) == (50, 38)
    assert set(np.unique(small_target)) <= set(np.unique(target))  # nearest: no new labels


def _norm_statistics(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_a_fine_tune_on_a_few_images_keeps_the_starting_batch_norm_statistics(tiny_run, tmp_path, caplog):
    """Issue 30: fine-tuning on one image, batches of its patches replaced the built-in model's batch-norm
    statistics (validation Dice 0.848 → 0.810 at a learning rate of 1e-7); on a few images they stay, while every
    weight, the norms' scale and shift included, still learns. ``--freeze-norm off`` lets batches replace them."""
    import logging

    from tests.conftest import tiny_config
    from unetkit import load_checkpoint, train

    few = synthesize_dataset(tmp_path / "few", n=2, size=64, seed=3)
    start = load_checkpoint(tiny_run.best_checkpoint)["state_dict"]
    statistics = _norm_statistics(start)
    assert statistics
    cfg = tiny_config(epochs=1, init=str(tiny_run.best_checkpoint), lr=1e-2)
    with caplog.at_level(logging.INFO, logger="unetkit"):
        kept = train(few, tmp_path / "kept", cfg, progress=False)
    last = load_checkpoint(kept.last_checkpoint)["state_dict"]
    assert all(torch.equal(last[k], v) for k, v in statistics.items())
    norm_scales = [k.replace("running_mean", "weight") for k in statistics if k.endswith("running_mean")]
    assert all(not torch.equal(last[k], start[k]) for k in norm_scales)  # scale and shift train
    assert "statistics are kept while fine-tuning on 2 image(s)" in caplog.text
    # best.pt of a fine-tune on instance masks follows the held-out objects; from scratch, the pixels
    assert kept.score == "val_pq" and all(0 <= row["val_pq"] <= 1 for row in kept.history)
    assert "best.pt follows the objects" in caplog.text
    assert tiny_run.score == "val_dice" and "val_pq" in tiny_run.history[-1]

    cfg.train.freeze_norm = "off"
    moved = load_checkpoint(train(few, tmp_path / "moved", cfg, progress=False).last_checkpoint)["state_dict"]
    assert all(not torch.equal(moved[k], v) for k, v in statistics.items())


def test_the_statistics_are_frozen_when_fine_tuning_on_few_images_or_when_asked():
    from unetkit.training.setup import FREEZE_NORM_MAX_IMAGES, frozen_norm

    batch = create_model("unet", depth=2, base_channels=4, norm="batch")
    none = create_model("unet", depth=2, base_channels=4, norm=None)
    fine = RunConfig(train=TrainConfig(init="nuclei"))
    scratch = RunConfig()
    assert frozen_norm(fine, FREEZE_NORM_MAX_IMAGES, batch)[0]
    assert not frozen_norm(fine, FREEZE_NORM_MAX_IMAGES + 1, batch)[0]  # enough images: their statistics
    assert not frozen_norm(scratch, 1, batch)[0]  # from scratch there are no statistics to keep
    assert frozen_norm(RunConfig(train=TrainConfig(freeze_norm="on")), 100, batch) == (
        True,
        "batch norm: the starting statistics are kept (--freeze-norm on)",
    )
    assert not frozen_norm(RunConfig(train=TrainConfig(init="nuclei", freeze_norm="off")), 1, batch)[0]
    assert frozen_norm(fine, 1, none) == (False, None)  # no batch norm: nothing to keep
