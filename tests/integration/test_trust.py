"""Issue 16: each way a user's journey went wrong, made impossible (every test failed on the code before it)."""

import numpy as np
import pytest
import tifffile
import yaml

from tests.conftest import tiny_config
from unetkit import DataConfig, DataError, evaluate, read_image, synth_nuclei, train, write_image
from unetkit.checkpoint import resolve_model_path
from unetkit.cli.main import main
from unetkit.data.layouts import load_layout
from unetkit.errors import CheckpointError, ConfigError
from unetkit.extras import require_extra
from unetkit.workflows.predict import predict_files

# -- evaluate: no counting, IDs kept, colours and classes per class -------------------------------------


def test_class_masks_are_scored_per_class_with_names_and_unknown_values_refused(tmp_path):
    truth = np.zeros((20, 20), np.uint8)
    truth[:10] = 50
    truth[10:, :10] = 100
    swapped = np.where(truth == 50, 100, np.where(truth == 100, 50, 0)).astype(np.uint8)
    write_image(tmp_path / "gt" / "a.png", truth)
    write_image(tmp_path / "pred" / "a.png", swapped)
    cmap = tmp_path / "classes.yaml"
    cmap.write_text(yaml.safe_dump({0: "background", 50: "cell", 100: "debris"}))
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt")]) == 2  # 0/50/100: refused
    data = DataConfig(
        mask_encoding="classes", class_values=[0, 50, 100], class_names=["bg", "cell", "debris"]
    )
    ev = evaluate(tmp_path / "pred", tmp_path / "gt", data_config=data)
    assert ev.mean["dice"] == 0.0 and ev.mean["dice[cell]"] == 0.0 and ev.mean["dice[debris]"] == 0.0
    assert ev.images[0].details["per_class"]["cell"]["dice"] == 0.0
    write_image(tmp_path / "pred" / "a.png", np.where(truth == 50, 7, truth).astype(np.uint8), overwrite=True)
    with pytest.raises(DataError, match=r"prediction .*\[7\]"):
        evaluate(tmp_path / "pred", tmp_path / "gt", data_config=data)


def test_evaluate_cli_takes_the_dataset_flags(tmp_path, capsys):
    truth = np.zeros((20, 20, 3), np.uint8)
    truth[:10, :, 0] = 255
    write_image(tmp_path / "gt" / "a.png", truth)
    write_image(tmp_path / "pred" / "a.png", truth)
    cmap = tmp_path / "colours.yaml"
    cmap.write_text(
        yaml.safe_dump([{"name": "bg", "color": "#000000"}, {"name": "tumour", "color": "#ff0000"}])
    )
    rc = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--class-map", str(cmap)])
    out = capsys.readouterr().out
    assert rc == 0 and "truth read as 'rgb' masks (given)" in out and "1" in out


# -- layouts everywhere -------------------------------------------------------------------------------


# -- check-data ---------------------------------------------------------------------------------------


# -- MODEL given as users give it -------------------------------------------------------------------


def test_model_may_be_a_run_folder_and_other_files_are_refused_plainly(tmp_path, tiny_run):
    assert resolve_model_path(tiny_run.run_dir) == tiny_run.run_dir / "best.pt"
    text = tmp_path / "config.yaml"
    text.write_text("model: {depth: 2}\n")
    with pytest.raises(CheckpointError, match="not a model") as info:
        resolve_model_path(text)
    assert "arbitrary code" not in str(info.value)
    with pytest.raises(ConfigError, match=r"pip install 'unetkit\[onnx\]'"):
        require_extra(("unetkit_no_such_module",), "onnx", "export --format onnx")


# -- predict: inputs are sacred, every input checked first, resume --------------------------------------


def test_predict_refuses_to_write_among_or_over_its_inputs(tmp_path, tiny_run, tiny_data):
    folder = tmp_path / "imgs"
    img, _ = synth_nuclei((40, 40), 3)
    write_image(folder / "a.png", img)
    before = (folder / "a.png").read_bytes()
    for out in (folder, folder / "a.png"):
        with pytest.raises(DataError, match="input"):
            predict_files(tiny_run.run_dir, [folder], out, overwrite=True, progress=False)
    assert (folder / "a.png").read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["a.png"]
    masks = {p.name: p.read_bytes() for p in (tiny_data / "masks").iterdir()}
    args = [
        "evaluate",
        str(tiny_run.run_dir),
        str(tiny_data),
        "--out",
        str(tiny_data / "masks"),
        "--overwrite",
    ]
    assert main(args) == 2  # the ground truth is an input too
    assert {p.name: p.read_bytes() for p in (tiny_data / "masks").iterdir()} == masks


def test_predict_checks_every_input_before_writing_and_skip_bad_resume(tmp_path, tiny_run, capsys):
    folder = tmp_path / "imgs"
    for i in range(4):
        write_image(folder / f"a{i}.png", synth_nuclei((40, 40), i)[0])
    (folder / "a9.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    out = tmp_path / "pred"
    rc = main(["predict", str(tiny_run.run_dir), str(folder), "--out", str(out), "--no-progress"])
    assert rc == 2 and not out.exists()  # nothing written: the damaged file was found first
    assert "a9.png" in capsys.readouterr().err
    rc = main(
        ["predict", str(tiny_run.run_dir), str(folder), "--out", str(out), "--no-progress", "--skip-bad"]
    )
    assert rc == 1 and sorted(p.name for p in out.iterdir()) == [f"a{i}.png" for i in range(4)]
    assert "skipped 1 input" in capsys.readouterr().err
    (out / "a3.png").unlink()
    stamp = (out / "a0.png").stat().st_mtime_ns
    rc = main(
        [
            "predict",
            str(tiny_run.run_dir),
            str(folder / "a0.png"),
            str(folder / "a3.png"),
            "--out",
            str(out),
            "--no-progress",
            "--resume",
        ]
    )
    assert rc == 0 and (out / "a3.png").is_file() and (out / "a0.png").stat().st_mtime_ns == stamp


def test_border_model_masks_are_in_the_users_encoding(tmp_path, tiny_data):
    cfg = tiny_config()
    cfg.data = DataConfig(patch_size=48, mask_encoding="instances", target="border")
    run = train(tiny_data, tmp_path / "run", cfg, progress=False)
    out = tmp_path / "pred"
    predict_files(run.run_dir, [tiny_data / "images"], out, progress=False, instances=True)
    for mask in out.glob("synth_*[0-9].png"):
        assert set(np.unique(read_image(mask)).tolist()) <= {0, 255}  # never 0/1/2
    ev = evaluate(out, tiny_data, mode="semantic")
    assert ev.images[0].details["per_class"].keys() == {"background", "foreground"}  # no border class


# -- layouts predict takes ---------------------------------------------------------------------------------


def test_predict_takes_a_dsb_test_folder_and_an_isbi_test_stack(tmp_path, tiny_run):
    dsb = tmp_path / "stage1_test"
    for i in range(2):
        img = synth_nuclei((40, 40), i)[0]
        write_image(dsb / f"id{i}" / "images" / f"id{i}.png", np.dstack([img, img, img]))
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_run.run_dir), str(dsb), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["id0.png", "id1.png"]
    isbi = tmp_path / "isbi"
    isbi.mkdir()
    stack = np.stack([synth_nuclei((40, 40), i)[0] for i in range(3)])
    tifffile.imwrite(isbi / "test-volume.tif", stack, photometric="minisblack")
    out = tmp_path / "pred-isbi"
    assert (
        main(["predict", str(tiny_run.run_dir), str(isbi), "--out", str(out), "--no-progress", "--instances"])
        == 0
    )
    masks = tifffile.imread(out / "test-volume.tif")
    assert masks.shape == (3, 40, 40) and set(np.unique(masks).tolist()) <= {0, 255}
    assert tifffile.imread(out / "test-volume_instances.tif").shape == (3, 40, 40)


# -- time is explicit ----------------------------------------------------------------------------------------


def test_bare_train_has_a_short_cpu_budget_and_epochs_skip_the_measured_run(tmp_path, tiny_data, caplog):
    import logging
    import shutil

    from unetkit.workflows.plan import default_time_budget

    assert default_time_budget("cpu") == "10m"
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for plan in data.glob("plan.yaml"):
        plan.unlink()
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--steps-per-epoch", "1",
            "--batch", "2", "--patch", "32", "--base-channels", "2", "--depth", "1", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="unetkit"):
        assert main(args) == 0
    log = caplog.text
    assert "no measured run" in log and "training: 1 epoch(s) x 1 steps" in log  # said before it starts
    measured = yaml.safe_load((data / "plan.yaml").read_text())["measured"]
    assert "step_seconds" not in measured  # planning did not spend a measured training run


def test_evaluate_model_finds_the_truth_as_training_did(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        image, labels = synth_nuclei((64, 64), i)
        write_image(data / "pics" / f"cell_{i}.png", image)
        write_image(data / "truth" / f"cell_{i}-seg.png", labels)
    reading = ["--images-dir", "pics", "--masks-dir", "truth", "--mask-pattern", "{stem}-seg"]
    reading += ["--mask-encoding", "instances"]
    with pytest.raises(DataError, match="no known dataset layout"):
        load_layout(data)  # nothing here is guessable
    tiny = ["--no-plan", "--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--patch", "32",
            "--base-channels", "2", "--depth", "1", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *reading, *tiny]) == 0
    # the checkpoint holds the dataset description: no flag repeated, truth read as instances
    assert main(["evaluate", str(tmp_path / "run"), str(data), "--out", str(tmp_path / "pred")]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").glob("cell_?.png")) == [
        f"cell_{i}.png" for i in range(4)
    ]


def test_a_killed_predict_leaves_no_complete_looking_file_and_resume_finishes(
    tmp_path, tiny_run, unetkit_exe
):
    import signal
    import subprocess
    import time

    folder = tmp_path / "imgs"
    for i in range(300):
        write_image(folder / f"im{i:03d}.png", synth_nuclei((96, 96), i % 7)[0])
    out = tmp_path / "pred"
    cmd = [unetkit_exe, "predict", str(tiny_run.run_dir), str(folder), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("im*.png"))) < 5:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("im*.png"))
    assert 5 <= len(done) < 300  # killed mid-batch
    for f in done:  # every file under a final name is complete
        assert read_image(f).shape == (96, 96)
    rc = subprocess.run([*cmd, "--resume"], capture_output=True, text=True).returncode
    assert rc == 0 and len(list(out.glob("im*.png"))) == 300
    fresh = tmp_path / "fresh"
    predict_files(
        tiny_run.run_dir,
        [folder / "im299.png", folder / "im000.png"],
        fresh,
        progress=False,
        precision="auto",
    )
    for name in ("im000.png", "im299.png"):
        assert np.array_equal(read_image(out / name), read_image(fresh / name))


def test_plan_keeps_the_reading_flags_so_a_bare_train_reads_as_planned(tmp_path):
    from unetkit.data.synthetic import SynthParams

    dense = SynthParams(radius=(4.0, 7.0), nuclei_per_mpx=2500, clusters_per_mpx=1200)
    data = tmp_path / "data"
    for i in range(3):
        image, labels = synth_nuclei((48, 56), i, dense)
        write_image(data / "images" / f"a{i}.png", image)
        write_image(data / "masks" / f"a{i}.png", np.where(labels == 0, 0, 1 + labels % 2).astype(np.uint8))
    plan = [
        "plan",
        str(data),
        "--mask-encoding",
        "classes",
        "--num-classes",
        "3",
        "--no-measure",
        "--device",
        "cpu",
    ]
    assert main([*plan, "--no-progress"]) == 0
    planned = yaml.safe_load((data / "plan.yaml").read_text())["data"]
    assert planned["mask_encoding"] == "classes" and planned["class_values"] == [0, 1, 2]
    tiny = ["--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--patch", "32", "--base-channels", "2",
            "--depth", "1", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *tiny]) == 0  # no "pass --mask-encoding"


def test_a_truncated_tiff_is_refused_and_never_grown(tmp_path, tiny_run):
    folder = tmp_path / "imgs"
    folder.mkdir()
    tifffile.imwrite(folder / "whole.tif", synth_nuclei((64, 64), 1)[0])
    data = (folder / "whole.tif").read_bytes()
    (folder / "cut.tif").write_bytes(data[: len(data) // 2])
    rc = main(
        ["predict", str(tiny_run.run_dir), str(folder), "--out", str(tmp_path / "pred"), "--no-progress"]
    )
    assert rc == 2 and not (tmp_path / "pred").exists()
    assert (folder / "cut.tif").stat().st_size == len(
        data
    ) // 2  # the input was not extended to its header's size


def test_isbi_2012_as_downloaded_trains_and_predicts(tmp_path, tiny_run):
    root = tmp_path / "isbi"
    root.mkdir()
    stacks = {
        n: np.stack([synth_nuclei((40, 40), i)[k] for i in range(3)])
        for n, k in (("train-volume", 0), ("test-volume", 0))
    }
    for name, stack in stacks.items():
        tifffile.imwrite(root / f"{name}.tif", stack, photometric="minisblack")
    labels = np.stack([(synth_nuclei((40, 40), i)[1] > 0).astype(np.uint8) * 255 for i in range(3)])
    tifffile.imwrite(root / "train-labels.tif", labels, photometric="minisblack")
    layout = load_layout(root)  # three stacks: train-labels pairs with train-volume, not test-volume
    assert layout.name == "isbi" and not layout.problems
    assert {s.image.name for s in layout.samples} == {"train-volume.tif"} and len(layout.samples) == 3
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_run.run_dir), str(root), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "test-volume.tif",
        "train-volume.tif",
    ]  # stacks, not labels
    assert tifffile.imread(out / "test-volume.tif").shape == (3, 40, 40)
