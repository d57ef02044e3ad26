import numpy as np
import pytest

from tests.conftest import tiny_config
from unetkit import ConfigError, DataError, load_checkpoint, synthesize_dataset, train


def test_schedules_warm_up_and_decay():
    from unetkit.training.loop import make_schedule as _schedule

    cos, poly, const = (_schedule(n, 4, 104) for n in ("cosine", "poly", "constant"))
    assert [round(cos(s), 3) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # linear warm-up
    assert (
        cos(4) == pytest.approx(1.0) and cos(104) == pytest.approx(0.01) and cos(54) == pytest.approx(0.505)
    )
    assert poly(54) == pytest.approx(0.5**0.9) and poly(104) == pytest.approx(0.01)
    assert const(4) == const(100) == 1.0


def test_paper_recipe_through_the_cli(tmp_path):
    from unetkit.cli.main import main

    data = synthesize_dataset(tmp_path / "d", n=3, size=64, seed=0)
    rc = main(
        [
            "train",
            str(data),
            "--no-plan",
            "--out",
            str(tmp_path / "run"),
            "--optimizer",
            "sgd",
            "--lr",
            "0.01",
            "--schedule",
            "poly",
            "--warmup",
            "2",
            "--elastic",
            "--rotate",
            "30",
            "--scale",
            "0.1",
            "--intensity",
            "0.2",
            "--noise",
            "0.05",
            "--blur",
            "1",
            "--border-gap",
            "2",
            "--weight-map",
            "--num-classes",
            "2",
            "--loss",
            "ce",
            "--class-weights",
            "1",
            "2",
            "--dropout",
            "0.5",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "3",
            "--batch",
            "2",
            "--patch",
            "48",
            "--base-channels",
            "4",
            "--depth",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    cfg = payload["training"]["config"]
    assert cfg["train"]["optimizer"] == "sgd" and cfg["train"]["momentum"] == 0.99
    assert cfg["data"]["elastic"] and cfg["data"]["weight_map"] and cfg["data"]["border_gap"] == 2
    assert payload["state"]["optimizer"]["param_groups"][0]["momentum"] == 0.99


def test_cpu_mixed_precision_is_for_images_only():
    """bfloat16 autocast trains images on CPUs with native bfloat16; volumes stay float32 (torch 2.13's CPU bfloat16
    Conv3d backward gave non-finite weight gradients intermittently on small patches, caught by the Dask test)."""
    import torch

    from unetkit import ModelConfig, RunConfig, TrainConfig
    from unetkit.models import create_model
    from unetkit.training.distributed import DistContext
    from unetkit.training.setup import _step

    for dims, want in ((2, True), (3, False)):
        cfg = RunConfig(model=ModelConfig(base_channels=4, depth=2, spatial_dims=dims, num_classes=1))
        cfg.train = TrainConfig(epochs=1, steps_per_epoch=1, lr=1e-3)
        model = create_model("unet", base_channels=4, depth=2, spatial_dims=dims, num_classes=1)
        step = _step(model, cfg, torch.device("cpu"), DistContext())
        assert step.cpu_bf16 is want and step.amp
        assert step.memory_format == (torch.channels_last if dims == 2 else torch.contiguous_format)


def test_a_second_train_into_a_run_folder_in_use_is_refused(tiny_data, tmp_path):
    """Issue 31: two concurrent `train` runs into one --out both exited 0 and left a mixed run folder."""
    from unetkit.training.run_folder import LOCK_FILE, RunFolder

    first = RunFolder(tmp_path / "run")
    first.lock()  # a run in progress (another process holds the same kind of lock)
    with pytest.raises(DataError, match=r"another unetkit process \(pid \d+\) is writing a run there"):
        train(tiny_data, tmp_path / "run", tiny_config(epochs=1), progress=False)
    assert not (tmp_path / "run" / "best.pt").exists()
    first.close()
    result = train(tiny_data, tmp_path / "run", tiny_config(epochs=1), progress=False)
    assert result.best_checkpoint.exists() and not (tmp_path / "run" / LOCK_FILE).exists()


def test_resume_with_more_epochs_is_not_capped_by_the_spent_budget(tiny_data, tmp_path):
    """Issue 32 item 6: `--resume RUN --epochs N` after a budgeted run added exactly one epoch per call (the
    budget was spent); asking for epochs is asking for them."""
    cfg = tiny_config(epochs=2)
    cfg.train.time_budget = 0.01  # spent after the first epoch
    first = train(tiny_data, tmp_path / "run", cfg, progress=False)
    assert [int(r["epoch"]) for r in first.history] == [1]
    again = train(tiny_data, tmp_path / "run", resume=True, epochs=3, progress=False)
    assert [int(r["epoch"]) for r in again.history] == [1, 2, 3]


def test_resume_with_more_time_trains_that_much_longer(tiny_data, tmp_path):
    """Issue 32 item 6: `--resume RUN --time-budget D` was refused; it now means D more: the run's clock stops D
    after the time it had spent, and its epochs grow by as many as fit at its measured pace."""
    cfg = tiny_config(epochs=2)
    cfg.train.time_budget = 0.01  # spent after the first epoch
    first = train(tiny_data, tmp_path / "run", cfg, progress=False)
    assert [int(r["epoch"]) for r in first.history] == [1]
    spent = first.history[-1]["elapsed"]
    more = max(4.0, 4 * spent)  # room for several epochs at this machine's pace, even on a loaded one
    again = train(tiny_data, tmp_path / "run", resume=True, time_budget=more, progress=False)
    epochs = [int(r["epoch"]) for r in again.history]
    assert epochs[:2] == [1, 2] and len(epochs) > 2  # more than the run's own 2 epochs: the budget's
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["training"]["config"]["train"]
    assert (
        saved["time_budget"] >= spent + more and saved["epochs"] >= epochs[-1]
    )  # the schedule was lengthened
    assert (
        again.history[-1]["elapsed"] <= saved["time_budget"] + 1.0
    )  # and the clock kept (one epoch's slack)
    with pytest.raises(ConfigError, match="extends a resumed run"):
        train(tiny_data, tmp_path / "other", tiny_config(epochs=1), time_budget=10, progress=False)


def test_two_classes_asked_of_border_targets_name_the_target_that_gives_them():
    """The paper's recipe (`--num-classes 2`) on a dataset whose plan chose the border target (3 classes from
    instance masks) was told only "use --num-classes 3", the opposite of what the user wanted."""
    from unetkit.data.masks import MaskEncoding
    from unetkit.errors import ConfigError
    from unetkit.training.setup import num_classes_for

    with pytest.raises(ConfigError, match="--num-classes 3, or --target foreground for 2"):
        num_classes_for(2, MaskEncoding("instances", target="border"))
    assert num_classes_for(2, MaskEncoding("instances")) == 2
    with pytest.raises(ConfigError) as refused:  # other encodings: no target to name
        num_classes_for(4, MaskEncoding("binary"))
    assert "--target" not in str(refused.value)


@pytest.mark.parametrize(
    ("section", "values", "said"),
    [
        (
            "model",
            {"base_channels": 100_000},
            r"model: unet with base_channels 100000 .* choose fewer --base-channels",
        ),
        (
            "data",
            {"patch_size": 100_000},
            r"a batch of 2 patch\(es\) of 100000 px .* choose a smaller --patch-size",
        ),
    ],
)
def test_a_network_or_batch_larger_than_memory_is_refused_before_anything_is_allocated(
    tiny_data, tmp_path, section, values, said
):
    """Before: base_channels 100000 met PyTorch's allocator (a 'bug in unetkit' with a 360 GB request) and a
    100000-px patch ran out of memory mid-step, whose message named prediction's --tile."""
    import dataclasses

    cfg = tiny_config()
    setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
    with pytest.raises(ConfigError, match=said):
        train(tiny_data, tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder, or any weight, was made


def test_weight_map_settings_without_the_weight_map_are_said_to_do_nothing(tiny_data, tmp_path, caplog):
    import dataclasses

    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, w0=5.0, sigma=3.0)
    with caplog.at_level("WARNING", logger="unetkit"):
        train(tiny_data, tmp_path / "run", cfg, progress=False)
    assert "--w0, --sigma set without --weight-map: the loss is not weighted" in caplog.text


def test_a_configuration_given_as_its_sections_trains_as_its_file_would(tiny_data, tmp_path):
    """Before: train(data, out, {"train": {...}}) was a TypeError (a config.yaml's sections, as a dict)."""
    sections = {"model": {"base_channels": 4, "depth": 2}, "data": {"patch_size": 48}, "train": {"epochs": 1}}
    result = train(tiny_data, tmp_path / "run", sections, progress=False)
    stored = load_checkpoint(result.best_checkpoint)["training"]["config"]
    assert (stored["model"]["base_channels"], stored["train"]["epochs"]) == (4, 1)
    with pytest.raises(ConfigError, match="unknown section"):
        train(tiny_data, tmp_path / "bad", {"trian": {"epochs": 1}}, progress=False)


def test_the_run_folder_is_refused_before_planning_when_it_holds_a_run(tmp_path):
    """`unetkit train` checks --out from the paths alone before planning spends minutes: a run already there is
    refused unless --overwrite (which then removes only the run's files)."""
    from unetkit.errors import DataError
    from unetkit.workflows.train import guard_run_folder

    out = tmp_path / "run"
    out.mkdir()
    (out / "best.pt").write_bytes(b"x")
    with pytest.raises(DataError, match=r"--out .*run: already holds a run \(best.pt\); pass --overwrite"):
        guard_run_folder(tmp_path / "data", out)
    guard_run_folder(tmp_path / "data", out, overwrite=True)
    guard_run_folder(tmp_path / "data", tmp_path / "new")
    assert (out / "best.pt").read_bytes() == b"x"


def test_a_model_records_the_backgrounds_it_learnt_and_says_when_an_image_differs(
    tiny_data, tmp_path, caplog
):
    """A model trained on bright-field images (dark nuclei, bright background) records it; given a fluorescence
    image it says so with the fix (--invert), once; given its own kind, nothing. Fluorescence data record dark."""
    import logging

    from unetkit import Predictor, read_image, write_image
    from unetkit.checkpoint import read_model
    from unetkit.data.checks import check_dataset

    bright = tmp_path / "bright"
    for part in ("images", "masks"):
        for f in sorted((tiny_data / part).iterdir()):
            pixels = read_image(f)
            write_image(
                bright / part / f.name, (255 - pixels).astype(np.uint8) if part == "images" else pixels
            )
    (bright / "dataset.yaml").write_text((tiny_data / "dataset.yaml").read_text())  # how its masks are read
    dark, light = check_dataset(tiny_data).background, check_dataset(bright).background
    assert dark is not None and light is not None and dark < 0.5 < light
    run = train(bright, tmp_path / "run", tiny_config(epochs=1, steps_per_epoch=1), progress=False)
    assert read_model(run.best_checkpoint).preprocessing.background == light
    predictor = Predictor.from_checkpoint(run.best_checkpoint)
    fluorescence = read_image(next((tiny_data / "images").iterdir()))
    with caplog.at_level(logging.WARNING, logger="unetkit"):
        predictor.predict(fluorescence, "fluo.png")
        predictor.predict(fluorescence, "fluo.png")
        predictor.predict(255 - fluorescence, "bf.png")
        Predictor.from_checkpoint(run.best_checkpoint, invert=True).predict(fluorescence, "asked.png")
    said = [r.getMessage() for r in caplog.records if "background looks" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("fluo.png: its background looks dark"), said
    assert "bright on a dark background (fluorescence), pass --invert" in said[0]
    from unetkit.data.normalize import other_way_round

    assert other_way_round(0.9, 0.1) and other_way_round(0.1, 0.9)
    assert not other_way_round(
        0.55, 0.45
    )  # one kind near the middle (phase contrast): not the other way round
