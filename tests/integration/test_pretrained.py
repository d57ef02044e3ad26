"""The built-in nuclei model through the real CLI and the Python API: it segments nuclei before anything is
annotated, offline; it still earns the scores its registry records; fine-tuning starts from it; the plan proposes
it; and its recipe is reproducible bit for bit."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_CLI
from unetkit import load_checkpoint, read_image, synth_nuclei, synthesize_dataset, write_image
from unetkit.cli.main import main
from unetkit.errors import ConfigError
from unetkit.inference import Predictor
from unetkit.inference.scale import estimate_diameter
from unetkit.metrics.scoring import score_instances
from unetkit.pretrained import REGISTRY, file_sha256, get_pretrained, pretrained_path
from unetkit.workflows.pretrain import build_pretrained, score_pretrained


def f1(pred, truth) -> float:
    return score_instances(pred, truth)[0]["f1"]


#: a Python process in which any network connection fails: nothing may be downloaded
OFFLINE = (
    "import socket, sys\n"
    "def refuse(*a, **k): raise OSError('network access attempted')\n"
    "socket.socket.connect = refuse; socket.create_connection = refuse\n"
    "from unetkit.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_predict_nuclei_segments_unseen_nuclei_offline_through_the_cli(tmp_path):
    data = synthesize_dataset(tmp_path / "data", n=3, size=(200, 260), seed=321)
    out = tmp_path / "pred"
    done = subprocess.run(
        [
            *(sys.executable, "-c", OFFLINE, "predict", "nuclei", str(data / "images")),
            *("--out", str(out), "--instances", "--no-progress"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for mask in sorted((data / "masks").iterdir()):
        labels = read_image(out / f"{mask.stem}_instances.tif")
        truth = read_image(mask)
        assert labels.shape == truth.shape == (200, 260)
        assert f1(labels, truth) > 0.8  # nuclei it never saw, no training


def test_the_python_api_and_diameter_round_trip_shapes(tmp_path):
    from unetkit.data.synthetic import SynthParams

    plain = Predictor.from_pretrained("nuclei")
    auto = Predictor.from_pretrained("nuclei", diameter="auto")
    high = plain.trained_range[1]
    big = SynthParams(
        radius=(45.0, 55.0), nuclei_per_mpx=25, clusters_per_mpx=0
    )  # ~90 px, camera noise per pixel
    counts = {
        "plain 1x": np.zeros(3),
        "auto 1x": np.zeros(3),
        "plain big": np.zeros(3),
        "auto big": np.zeros(3),
    }
    for seed in (9, 10, 11):
        image, truth = synth_nuclei((150, 170), seed=seed)
        large, large_truth = synth_nuclei((400, 420), seed=seed, params=big)
        true = estimate_diameter(large_truth)
        assert true > high  # outside what it learnt
        assert plain.estimate_diameter(large) == pytest.approx(
            true, rel=0.1
        )  # the one estimate, near the truth
        for name, predictor in (("plain", plain), ("auto", auto)):
            for size, img, tru in (("1x", image, truth), ("big", large, large_truth)):
                labels = predictor.predict_instances(img)
                assert labels.shape == img.shape  # mapped back onto the image's own grid
                s = score_instances(labels, tru)[0]
                counts[f"{name} {size}"] += [s["tp"], s["fp"], s["fn"]]
    f1 = {k: 2 * tp / (2 * tp + fp + fn) for k, (tp, fp, fn) in counts.items()}
    assert f1["plain 1x"] > 0.85  # nuclei it never saw, nothing trained
    assert f1["auto 1x"] >= f1["plain 1x"] - 0.02
    # larger ones are brought into its range (version 2 learnt up to 80 px, so plain copes too; auto must not lose)
    assert f1["auto big"] > 0.85 and f1["auto big"] >= f1["plain big"] - 0.02
    inside = Predictor.from_pretrained("nuclei", diameter=(plain.trained_range[0] + high) / 2)
    np.testing.assert_array_equal(
        inside.predict_instances(image), plain.predict_instances(image)
    )  # left alone


@pytest.mark.parametrize("name", ["nuclei", "nuclei@2", "nuclei@1"])
def test_each_shipped_version_still_earns_its_recorded_validation_scores(name, tmp_path):
    model = get_pretrained(name)
    scores = score_pretrained(pretrained_path(name), model.recipe["evaluation"]["validation"], tmp_path)
    for key, recorded in model.scores["validation"].items():
        assert scores[key] == pytest.approx(recorded, abs=0.003), key


def test_the_shipped_model_still_earns_its_recorded_suite_scores_on_two_domains(tmp_path):
    from unetkit.workflows.pretrain import score_suite

    model = get_pretrained("nuclei")
    scores = score_suite(pretrained_path("nuclei"), tmp_path, domains=("few-photons", "dim16"))
    for domain in ("few-photons", "dim16"):
        assert scores[domain]["f1"] == pytest.approx(model.suite[domain]["f1"], abs=0.003), domain


@pytest.mark.parametrize(("domain", "gain"), [("nucleoli", 0.04), ("small-dense", 0.03), ("large", 0.005)])
def test_objects_are_split_by_their_measured_size(domain, gain, tmp_path):
    """Textured large nuclei were cut into pieces and touching tiny ones fused by the fixed split (seeds 3 px
    apart): the split measured per image does better on the domains made of them, through every path."""
    from unetkit.data.domains import synthesize_domain
    from unetkit.inference.postprocess import FIXED_SPLIT, instances_from_classes

    data = synthesize_domain(domain, tmp_path / domain, "test")
    predictor = Predictor.from_pretrained("nuclei")
    fixed, measured = [], []
    for image in sorted((data / "images").glob("*.png")):
        truth = read_image(data / "masks" / image.name)
        classes = predictor.predict(read_image(image))
        split = predictor.split(classes.__getitem__, classes.shape)
        assert split != FIXED_SPLIT
        fixed.append(score_instances(instances_from_classes(classes, "interior"), truth)[0]["f1"])
        measured.append(score_instances(predictor.instances(classes), truth)[0]["f1"])
    assert np.mean(measured) >= np.mean(fixed) + gain, (np.mean(fixed), np.mean(measured))


def test_models_lists_the_built_in_model_with_its_size_and_scores(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    entry = get_pretrained("nuclei")
    assert (
        "nuclei" in text
        and "nuclei@2" in text
        and "nuclei@1" in text
        and f"{entry.bytes / 1e6:.1f} MB" in text
    )
    assert f"f1 {entry.scores['suite']['f1']:.3f}" in text and "per suite domain" in text


def test_fine_tuning_from_the_built_in_model_matching_and_mismatching_channels_and_classes(tmp_path, caplog):
    caplog.set_level("INFO")
    grey = synthesize_dataset(tmp_path / "grey", n=3, size=64, seed=5)
    out = tmp_path / "tuned"
    args = ["train", str(grey), "--out", str(out), *TINY_CLI, "--init", "nuclei", "--target", "border"]
    assert main(args) == 0
    tuned, start = load_checkpoint(out / "best.pt"), load_checkpoint(pretrained_path("nuclei"))
    assert (
        tuned["model"]["hparams"] == start["model"]["hparams"]
    )  # its architecture, every layer carried over
    assert "adapted" not in caplog.text and "anew" not in caplog.text
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["init"] == "nuclei"
    caplog.clear()
    rgb = tmp_path / "rgb"  # colour images, foreground only: the input layer adapted, the head anew
    for i in range(3):
        image, labels = synth_nuclei(64, seed=50 + i)
        write_image(rgb / "images" / f"im{i}.png", np.stack([image, image, image // 2], axis=-1))
        write_image(rgb / "masks" / f"im{i}.png", labels)
    (rgb / "dataset.yaml").write_text("layout: paired\nmask_encoding: instances\n")
    out = tmp_path / "tuned-rgb"
    assert main(["train", str(rgb), "--out", str(out), *TINY_CLI, "--init", "nuclei"]) == 0
    hp = load_checkpoint(out / "best.pt")["model"]["hparams"]
    assert (hp["in_channels"], hp["num_classes"]) == (3, 1)
    assert "adapted from 1 to 3 channel(s)" in caplog.text and "anew" in caplog.text


def test_the_plan_proposes_the_built_in_model_for_nuclei(tmp_path, capsys):
    data = synthesize_dataset(tmp_path / "data", n=4, size=96, seed=2)
    assert main(["plan", str(data), "--no-measure", "--device", "cpu"]) == 0
    assert "proposal  --init nuclei" in capsys.readouterr().out
    assert "# proposal: --init nuclei" in (data / "plan.yaml").read_text()


#: a recipe that trains in seconds (steps enough that a kill can land between epochs)
TINY_RECIPE = {
    "data": {"n": 4, "size": 64},
    "config": {"data": {"patch_size": 32}, "train": {"epochs": 5, "steps_per_epoch": 12, "batch_size": 2}},
    "evaluation": {"validation": {"n": 1, "size": 64}, "suite": False},
}


def test_the_recipe_is_reproducible_bit_for_bit_and_a_killed_kept_build_resumes_to_the_same_file(tmp_path):
    entries = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        registry = shutil.copy(REGISTRY, tmp_path / str(i) / "registry.yaml")
        entries.append(build_pretrained("nuclei", registry=registry, overrides=TINY_RECIPE, progress=False))
        shipped = tmp_path / str(i) / "nuclei.pt"
        assert (
            entries[-1]["sha256"] == file_sha256(shipped) and entries[-1]["bytes"] == shipped.stat().st_size
        )
        assert get_pretrained("nuclei", registry).scores == entries[-1]["scores"]  # written back, readable
    assert entries[0]["sha256"] == entries[1]["sha256"]
    # `make pretrained` with --keep, killed mid-training and run again, resumes and ships the same bytes
    registry = tmp_path / "kept" / "registry.yaml"
    registry.parent.mkdir()
    book = yaml.safe_load(REGISTRY.read_text())
    book["models"]["nuclei"] = entries[0]  # the tiny recipe, as build_pretrained recorded it
    registry.write_text(yaml.safe_dump(book, sort_keys=False))
    keep = tmp_path / "keep"
    cmd = [sys.executable, "-m", "unetkit.workflows.pretrain", "nuclei", "--registry", str(registry)]
    whole = subprocess.run(
        [*cmd, "--keep", str(tmp_path / "whole")], capture_output=True, text=True, timeout=300
    )
    assert whole.returncode == 0, whole.stderr
    uninterrupted = file_sha256(
        registry.parent / "nuclei.pt"
    )  # the same process kind as the resumed one: its
    # thread count may differ from this test process's (a Dask or DDP test can change it), and with it the sums
    cmd += ["--keep", str(keep), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = keep / "nuclei" / "run" / "last.pt"
    while not last.is_file() and proc.poll() is None:
        time.sleep(0.02)
    # a recipe fine-tuned from an earlier version (`init`) writes last.pt at epoch 0 too (the start, validated):
    # wait for the next write, so that a trained epoch is lost to the kill
    first = last.stat().st_mtime_ns if last.is_file() else 0
    while last.is_file() and last.stat().st_mtime_ns == first and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    killed_at = load_checkpoint(last)["training"]["epoch"]
    assert 1 <= killed_at < 5, "the kill came too late to test anything"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming the build" in done.stderr and f"after epoch {killed_at}" in done.stderr
    assert file_sha256(registry.parent / "nuclei.pt") == uninterrupted
    # the kept folder belongs to that recipe: another one is refused before anything is generated
    other = {**TINY_RECIPE, "data": {"n": 5, "size": 64}}
    with pytest.raises(ConfigError, match="another recipe of nuclei"):
        build_pretrained("nuclei", registry=registry, keep=keep, overrides=other, progress=False)
    # and a folder unetkit did not keep is never built into (its files could be a user's)
    (tmp_path / "mine" / "nuclei" / "data").mkdir(parents=True)
    with pytest.raises(ConfigError, match="is not a build unetkit kept"):
        build_pretrained("nuclei", registry=registry, keep=tmp_path / "mine", progress=False)


def test_evaluate_takes_the_built_in_model_by_name(tmp_path, capsys):
    data = synthesize_dataset(tmp_path / "data", n=2, size=128, seed=11)
    assert main(["evaluate", "nuclei", str(data), "--mode", "instance"]) == 0
    out = capsys.readouterr().out
    assert "mode: instance" in out and "dsb_score" in out


def test_fine_tuning_on_objects_larger_than_the_model_learnt_resamples_them_for_training_and_prediction(
    tmp_path, caplog
):
    from unetkit.data.synthetic import SynthParams

    caplog.set_level("INFO")
    big = SynthParams(radius=(42.0, 50.0), nuclei_per_mpx=40, clusters_per_mpx=0)  # ~95 px across
    data = synthesize_dataset(tmp_path / "big", n=3, size=(280, 250), seed=3, params=big)
    out = tmp_path / "tuned"
    assert (
        main(["train", str(data), "--out", str(out), *TINY_CLI, "--init", "nuclei", "--target", "border"])
        == 0
    )
    scale = yaml.safe_load((out / "config.yaml").read_text())["data"]["input_scale"]
    high = Predictor.from_pretrained("nuclei").trained_range[1]
    assert 0.35 < scale < 0.8 and "images are resampled by" in caplog.text  # about 58.6 / 81 px
    pre = load_checkpoint(out / "best.pt")["preprocessing"]
    assert pre["input_scale"] == scale and pre["object_diameter"] == pytest.approx(high, rel=0.1)
    pred = tmp_path / "pred"
    assert main(["predict", str(out), str(data / "images"), "--out", str(pred), "--no-progress"]) == 0
    for mask in (data / "masks").iterdir():  # predicted at the training scale, written at the image's own
        assert read_image(pred / f"{mask.stem}.png").shape == read_image(mask).shape == (280, 250)
    # the flag itself: --input-scale 1 keeps the images as they are, even from the built-in model
    again = tmp_path / "kept"
    args = ["train", str(data), "--out", str(again), *TINY_CLI, "--init", "nuclei", "--input-scale", "1"]
    assert main(args) == 0
    assert load_checkpoint(again / "best.pt")["preprocessing"]["input_scale"] == 1.0


def test_the_stain_of_a_multi_channel_image_is_chosen_with_channel(tmp_path, capsys):
    """Real microscopy arrives with several stains in one file (an ImageJ hyperstack: DAPI beside a marker):
    ``--channel N`` picks the stain the one-channel built-in model reads, in predict and in evaluate with a
    model; without it the image is refused before anything is computed, naming the option; on a folder of
    predictions it means nothing and is refused."""
    import tifffile

    image, truth = synth_nuclei((160, 192), seed=11)
    dapi = (image / image.max() * 40000).astype(np.uint16)
    marker = np.random.default_rng(2).integers(0, 4000, dapi.shape).astype(np.uint16)
    for folder in ("in", "data/images"):
        (tmp_path / folder).mkdir(parents=True)
        tifffile.imwrite(
            tmp_path / folder / "a.tif", np.stack([marker, dapi]), imagej=True, metadata={"axes": "CYX"}
        )
    write_image(tmp_path / "data" / "masks" / "a.tif", truth.astype(np.uint16))
    write_image(tmp_path / "gray" / "a.tif", dapi)

    assert (
        main(["predict", "nuclei", str(tmp_path / "in"), "--out", str(tmp_path / "none"), "--no-progress"])
        == 2
    )
    assert "--channel N" in capsys.readouterr().err and not (tmp_path / "none" / "a.png").exists()
    assert main(["predict", "nuclei", str(tmp_path / "in"), "--out", str(tmp_path / "p"), "--channel", "1",
                 "--instances", "--no-progress"]) == 0  # fmt: skip
    assert main(["predict", "nuclei", str(tmp_path / "gray"), "--out", str(tmp_path / "g"), "--instances",
                 "--no-progress"]) == 0  # fmt: skip
    np.testing.assert_array_equal(read_image(tmp_path / "p" / "a_instances.tif"), read_image(tmp_path / "g" / "a_instances.tif"))  # fmt: skip
    assert main(["evaluate", "nuclei", str(tmp_path / "data"), "--channel", "1", "--json", str(tmp_path / "e.json")]) == 0  # fmt: skip
    assert f1(read_image(tmp_path / "p" / "a_instances.tif"), truth) > 0.8
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "data"), "--channel", "1"]) == 2
    assert "holds predictions: drop it" in capsys.readouterr().err


def test_a_model_trained_on_one_stain_reads_that_stain_when_it_predicts(tmp_path, capsys):
    """``unetkit train DATA --channel N`` trains a one-channel model on one stain of multi-channel images (here the
    DAPI of DAPI + marker TIFFs), records it in the checkpoint, and predict reads the same stain without being
    told (``--channel`` overrides it); a channel the images do not have is refused before training."""
    import tifffile

    data = tmp_path / "data"
    for i in range(3):
        image, truth = synth_nuclei((96, 112), seed=20 + i)
        dapi = (image / image.max() * 30000).astype(np.uint16)
        marker = np.random.default_rng(i).integers(0, 3000, dapi.shape).astype(np.uint16)
        (data / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(data / "images" / f"a{i}.tif", np.stack([marker, dapi]), imagej=True, metadata={"axes": "CYX"})  # fmt: skip
        write_image(data / "masks" / f"a{i}.png", ((truth > 0) * 255).astype(np.uint8))
        write_image(tmp_path / "dapi" / f"a{i}.tif", dapi)
    assert main(["train", str(data), "--out", str(tmp_path / "bad"), "--channel", "2", *TINY_CLI]) == 2
    assert "--channel 2, but the image has 2 channel(s)" in capsys.readouterr().err
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--channel", "1", *TINY_CLI]) == 0
    pre = load_checkpoint(tmp_path / "run" / "best.pt")["preprocessing"]
    assert pre["channel"] == 1 and pre["in_channels"] == 1
    run = str(tmp_path / "run")
    assert main(["predict", run, str(data / "images"), "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    assert main(["predict", run, str(tmp_path / "dapi"), "--out", str(tmp_path / "g"), "--no-progress"]) == 0
    for i in range(3):
        np.testing.assert_array_equal(read_image(tmp_path / "p" / f"a{i}.png"), read_image(tmp_path / "g" / f"a{i}.png"))  # fmt: skip
    assert main(["predict", run, str(data / "images"), "--out", str(tmp_path / "m"), "--channel", "0", "--no-progress"]) == 0  # fmt: skip
    assert not np.array_equal(
        read_image(tmp_path / "m" / "a0.png"), read_image(tmp_path / "p" / "a0.png")
    )  # the marker
    # fine-tuned on the same images without --channel: the stain it learnt (it became a two-channel model)
    assert main(["train", str(data), "--out", str(tmp_path / "tuned"), "--init", run, *TINY_CLI]) == 0
    assert "reads channel 1 of images with several" in capsys.readouterr().err
    pre = load_checkpoint(tmp_path / "tuned" / "best.pt")["preprocessing"]
    assert pre["channel"] == 1 and pre["in_channels"] == 1
    for i in range(3):  # on images of that stain alone: nothing to pick
        write_image(tmp_path / "dapi-data" / "masks" / f"a{i}.png", read_image(data / "masks" / f"a{i}.png"))
        write_image(
            tmp_path / "dapi-data" / "images" / f"a{i}.tif", read_image(tmp_path / "dapi" / f"a{i}.tif")
        )
    assert main(["train", str(tmp_path / "dapi-data"), "--out", str(tmp_path / "alone"), "--init", run, *TINY_CLI]) == 0  # fmt: skip
    assert "reads channel" not in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "alone" / "best.pt")["preprocessing"]["in_channels"] == 1
