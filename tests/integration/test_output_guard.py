"""Issue 31: one guard for every path unetkit writes. Each case is an attack from the issue (all exited 0 and
replaced or joined an input): every command and output flag, through the CLI, with the hashes of every input
file (dataset, run folder, user's files) checked after each refusal."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from unetkit.cli.main import main


def _hashes(*folders):
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def world(tiny_data, tiny_run, tmp_path):
    """A writable copy of the dataset and of a run, predictions to evaluate, and a user's own CSV."""
    data = shutil.copytree(tiny_data, tmp_path / "data")
    run = shutil.copytree(tiny_run.run_dir, tmp_path / "run")
    pred = shutil.copytree(data / "masks", tmp_path / "pred")
    (tmp_path / "mine.csv").write_text("image,my own notes\nsynth_000,keep\n")
    return {"data": data, "run": run, "pred": pred, "mine": tmp_path / "mine.csv", "tmp": tmp_path}


ATTACKS = {
    # evaluate PRED GT: a file output among the truth masks, or replacing one
    "csv-into-truth": ["evaluate", "{pred}", "{data}", "--csv", "{data}/masks/x.png"],
    "csv-over-a-mask": ["evaluate", "{pred}", "{data}", "--csv", "{data}/masks/synth_000.png", "--overwrite"],
    "json-over-a-prediction": [
        "evaluate",
        "{pred}",
        "{data}",
        "--json",
        "{pred}/synth_000.png",
        "--overwrite",
    ],
    "report-into-truth": ["evaluate", "{pred}", "{data}", "--report", "{data}/masks/report"],
    # evaluate MODEL DATA: the checkpoint in use
    "csv-over-the-model": ["evaluate", "{run}", "{data}", "--csv", "{run}/best.pt", "--overwrite"],
    # a file unetkit did not write, with and without --overwrite
    "csv-over-a-users-file": ["evaluate", "{pred}", "{data}", "--csv", "{mine}"],
    "csv-over-a-users-file-overwrite": ["evaluate", "{pred}", "{data}", "--csv", "{mine}", "--overwrite"],
    # plan: a mask, the dataset description
    "plan-over-a-mask": [
        "plan",
        "{data}",
        "--out",
        "{data}/masks/synth_000.png",
        "--overwrite",
        "--no-measure",
    ],
    "plan-into-masks": ["plan", "{data}", "--out", "{data}/masks/x.png", "--no-measure"],
    "plan-over-dataset-yaml": [
        "plan",
        "{data}",
        "--out",
        "{data}/dataset.yaml",
        "--overwrite",
        "--no-measure",
    ],
    # train: into the dataset, over the starting model
    "train-into-the-dataset": ["train", "{data}", "--out", "{data}", "--overwrite", "--epochs", "1"],
    "train-into-images": ["train", "{data}", "--out", "{data}/images/run", "--epochs", "1"],
    "train-over-its-init": [
        "train",
        "{data}",
        "--init",
        "{run}",
        "--out",
        "{run}",
        "--overwrite",
        "--epochs",
        "1",
    ],
    # predict: results where the next command reads data
    "predict-into-its-inputs": ["predict", "{run}", "{data}/images", "--out", "{data}/images/pred"],
    # export: over the checkpoint it reads
    "export-over-the-model": ["export", "{run}/best.pt", "--out", "{run}/best.pt", "--overwrite"],
    # a value that silently gives all-background masks
    "threshold-nan": ["predict", "{run}", "{data}/images", "--out", "{tmp}/out", "--threshold", "nan"],
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_no_output_flag_can_replace_or_join_an_input(world, attack, capsys):
    argv = [a.format(**world) for a in ATTACKS[attack]]
    before = _hashes(world["data"], world["run"], world["pred"], world["tmp"])
    code = main([*argv, "--no-progress"] if argv[0] in ("train", "predict", "plan") else argv)
    err = capsys.readouterr().err
    assert code == 2, (attack, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    assert _hashes(world["data"], world["run"], world["pred"], world["tmp"]) == before  # nothing touched
    assert not (world["tmp"] / "out").exists()


def test_results_unetkit_wrote_are_replaced_with_overwrite_only(world, capsys):
    pred, data, tmp = str(world["pred"]), str(world["data"]), world["tmp"]
    assert (
        main(["evaluate", pred, data, "--csv", str(tmp / "scores.csv"), "--json", str(tmp / "s.json")]) == 0
    )
    assert main(["evaluate", pred, data, "--csv", str(tmp / "scores.csv")]) == 2  # exists
    assert "pass --overwrite" in capsys.readouterr().err
    # its own results are replaced; a table in the truth folder is fine (not read as data)
    assert main(["evaluate", pred, data, "--csv", str(tmp / "scores.csv"), "--json", str(tmp / "s.json"),
                 "--overwrite"]) == 0  # fmt: skip
    assert main(["evaluate", pred, data, "--csv", str(world["data"] / "masks" / "scores.csv")]) == 0
    # a predict output beside (not inside) the images, and a run folder's own table
    assert main(["evaluate", str(world["run"]), data, "--csv", str(world["run"] / "scores.csv")]) == 0
