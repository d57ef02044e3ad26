"""Issue 16: each way a user's journey went wrong, made impossible (every test failed on the code before it)."""

import numpy as np
import pytest
import tifffile

from unetkit import DataConfig, DataError, evaluate, synth_nuclei, write_image
from unetkit.data.checks import check_dataset
from unetkit.data.layouts import Naming, detect_layout, load_layout


def blocks(shape=(40, 40), touching=True):
    """Three rectangles, two of them sharing an edge (no background between them)."""
    lab = np.zeros(shape, np.uint16)
    lab[5:15, 5:15] = 1
    lab[5:15, 15:25] = 2 if touching else 0
    lab[25:35, 20:32] = 3
    return lab


def instance_folder(root, labels):
    for name, lab in labels.items():
        write_image(root / f"{name}.png", lab)
    return root


# -- evaluate: no counting, IDs kept, colours and classes per class -------------------------------------


def test_instance_truth_with_few_objects_is_never_read_as_classes(tmp_path):
    truth = {"a": blocks(), "b": blocks()[::-1].copy()}
    gt = instance_folder(tmp_path / "gt", truth)
    pred = instance_folder(tmp_path / "pred", truth)
    with pytest.raises(DataError, match="--mask-encoding instances"):  # 3 labels: refused, not guessed
        evaluate(pred, gt)
    ev = evaluate(pred, gt, data_config=DataConfig(mask_encoding="instances"))
    assert ev.mode == "instance"
    assert ev.mean["dice"] == 1.0 and ev.mean["f1"] == 1.0 and ev.mean["dsb_score"] == 1.0
    assert any("given" in n for n in ev.notes)
    (gt / "dataset.yaml").write_text("mask_encoding: instances\n")
    assert evaluate(pred, gt).mean["pq"] == 1.0  # the dataset's own description decides too


def test_touching_predicted_objects_are_scored_by_their_ids(tmp_path):
    lab = blocks()
    gt = instance_folder(tmp_path / "gt", {"a": lab})
    (gt / "dataset.yaml").write_text("mask_encoding: instances\n")
    pred = instance_folder(tmp_path / "pred", {"a": lab})
    ev = evaluate(pred, gt)
    assert ev.images[0].scores["tp"] == 3 and ev.mean["dsb_score"] == 1.0  # components would merge 1 and 2
    assert any("by their IDs" in n for n in ev.notes)
    binary = instance_folder(tmp_path / "bin", {"a": ((lab > 0) * 255).astype(np.uint8)})
    ev = evaluate(binary, gt)
    assert ev.images[0].scores["tp"] == 1 and ev.images[0].scores["merges"] == 1
    assert any("connected components" in n for n in ev.notes)  # said, not silent


# -- layouts everywhere -------------------------------------------------------------------------------


def test_flat_and_named_layouts(tmp_path):
    img, lab = synth_nuclei((32, 32), 1)
    flat = tmp_path / "flat"
    flat.mkdir()
    tifffile.imwrite(flat / "img_01.tif", img)
    tifffile.imwrite(flat / "img_01_label.tif", lab)
    tifffile.imwrite(flat / "img_02.tif", img)
    tifffile.imwrite(flat / "img_02_label.tif", lab)
    assert detect_layout(flat) == "flat"  # not an ISBI stack
    assert [(s.image.name, s.mask.name) for s in load_layout(flat).samples] == [
        ("img_01.tif", "img_01_label.tif"),
        ("img_02.tif", "img_02_label.tif"),
    ]
    ann = tmp_path / "ann"
    write_image(ann / "images" / "x.png", img)
    write_image(ann / "annotations" / "x_cp_masks.png", lab)
    assert load_layout(ann).samples[0].mask.name == "x_cp_masks.png"
    raw = tmp_path / "raw"
    write_image(raw / "raw" / "img_01.png", img)
    write_image(raw / "gt" / "mask_01.png", lab)
    problems = load_layout(raw).problems
    assert any("mask without image" in p and "--mask-pattern" in p for p in problems)
    layout = load_layout(raw, naming=Naming(image_pattern="img_{stem}", mask_pattern="mask_{stem}"))
    assert [(s.name, s.mask.name) for s in layout.samples] == [("01", "mask_01.png")]
    two = tmp_path / "two"
    write_image(two / "images" / "x.png", img)
    write_image(two / "masks" / "x.png", lab)
    write_image(two / "labels" / "x.png", lab)
    with pytest.raises(DataError, match=r"several mask folders .*--masks-dir"):
        load_layout(two)
    assert load_layout(two, naming=Naming(masks_dir="labels")).samples[0].mask.parent.name == "labels"


# -- check-data ---------------------------------------------------------------------------------------


def test_check_data_fails_when_every_mask_is_empty_and_names_real_sizes(tmp_path):
    for i, shape in enumerate([(30, 50), (60, 20)]):
        write_image(tmp_path / "images" / f"i{i}.png", np.full(shape, 9, np.uint8))
        write_image(tmp_path / "masks" / f"i{i}.png", np.zeros(shape, np.uint8))
    report = check_dataset(tmp_path)
    assert not report.ok and any("every mask is empty" in p for p in report.problems)
    summary = report.summary()
    assert "30x50" in summary and "60x20" in summary and "30x20" not in summary  # no made-up size
    mask = np.zeros((30, 50), np.uint8)
    mask[3:9, 3:9] = 255
    write_image(tmp_path / "masks" / "i0.png", mask, overwrite=True)
    report = check_dataset(tmp_path)
    assert report.ok and report.empty_masks == [str(tmp_path / "masks" / "i1.png")]


# -- MODEL given as users give it -------------------------------------------------------------------


# -- predict: inputs are sacred, every input checked first, resume --------------------------------------


# -- layouts predict takes ---------------------------------------------------------------------------------


# -- time is explicit ----------------------------------------------------------------------------------------


# -- issue 32 item 3: evidence that cannot mislead decides, and says so; the masks alone still never do -------


def test_evidence_reads_ambiguous_masks_as_object_labels_and_says_which(tmp_path):
    from unetkit.data.checks import check_dataset
    from unetkit.training.init import init_evidence

    cellpose = tmp_path / "cp"
    for i in range(2):  # Cellpose's own naming: img_001.tif + img_001_cp_masks.png, 3 labels
        write_image(cellpose / f"img_00{i}.tif", np.full((40, 40), 100, np.uint8))
        write_image(cellpose / f"img_00{i}_cp_masks.png", blocks())
    report = check_dataset(cellpose)
    assert report.ok and report.encoding.name == "instances", report.problems
    assert "NAME_cp_masks" in report.encoding_source

    plain = tmp_path / "plain"
    for i in range(2):
        write_image(plain / "images" / f"a{i}.png", np.full((40, 40), 100, np.uint8))
        write_image(plain / "masks" / f"a{i}.png", blocks())
    refused = check_dataset(plain)  # no evidence: refused, with a readable hint
    assert not refused.ok and "mean (3 values besides 0); pass --mask-encoding classes" in refused.problems[0]
    border = check_dataset(plain, DataConfig(target="border"))
    assert border.ok and border.encoding.name == "instances" and "--target border" in border.encoding_source
    why = init_evidence("nuclei")  # the built-in model was trained on object labels
    assert why and "--init nuclei" in why
    assert check_dataset(plain, evidence=why).encoding.name == "instances"

    binary = tmp_path / "binary"
    for i in range(2):
        write_image(binary / "images" / f"a{i}.png", np.full((40, 40), 100, np.uint8))
        write_image(binary / "masks" / f"a{i}.png", (blocks() > 0).astype(np.uint8) * 255)
    assert check_dataset(binary, evidence=why).encoding.name == "binary"  # evidence never overrules the masks


def test_evaluate_mode_instance_is_evidence_for_the_truth(tmp_path):
    truth = {"a": blocks(), "b": blocks()[::-1].copy()}
    gt = instance_folder(tmp_path / "gt", truth)
    pred = instance_folder(tmp_path / "pred", truth)
    with pytest.raises(DataError, match="--mask-encoding instances"):
        evaluate(pred, gt)  # mode auto, plain names: still refused
    ev = evaluate(pred, gt, mode="instance")  # the user's own word: object labels
    assert ev.mean["f1"] == 1.0 and any("--mode instance" in n for n in ev.notes)
