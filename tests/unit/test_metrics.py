import json

import numpy as np
import pytest

from unetkit import DataError, evaluate, write_image
from unetkit.config import DataConfig
from unetkit.metrics import confusion_counts, dice, dice_iou, iou


def test_hand_computed_overlap():
    truth = np.zeros((4, 4), int)
    truth[:2, :2] = 1  # 4 px
    pred = np.zeros((4, 4), int)
    pred[:2, :3] = 7  # 6 px, 4 of them true
    assert confusion_counts(pred, truth) == (4, 2, 0)
    assert dice(pred, truth) == pytest.approx(8 / 10)
    assert iou(pred, truth) == pytest.approx(4 / 6)
    assert dice_iou(pred, truth) == (pytest.approx(0.8), pytest.approx(2 / 3))


def test_empty_cases_are_explicit():
    empty, full = np.zeros((3, 3)), np.ones((3, 3))
    assert dice_iou(empty, empty) == (1.0, 1.0)
    assert dice_iou(empty, full) == (0.0, 0.0)
    assert dice_iou(full, empty) == (0.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_evaluate_pairs_files_and_writes_json(tmp_path):
    truth = np.zeros((10, 10), np.uint16)
    truth[2:6, 2:6] = 3
    pred = np.zeros((10, 10), np.uint8)
    pred[2:6, 2:4] = 255
    write_image(tmp_path / "gt" / "masks" / "a_mask.png", truth)
    write_image(tmp_path / "gt" / "masks" / "b.png", truth)
    write_image(tmp_path / "pred" / "a.png", pred)
    write_image(tmp_path / "pred" / "b.png", (truth > 0).astype(np.uint8))
    result = evaluate(tmp_path / "pred", tmp_path / "gt")
    assert [(s.name, s.dice, s.iou) for s in result.images] == [("a", 16 / 24, 0.5), ("b", 1.0, 1.0)]
    data = json.loads(result.write_json(tmp_path / "s.json").read_text())
    assert data["mean"]["dice"] == pytest.approx((16 / 24 + 1) / 2)
    assert "both are empty" in data["metric_definitions"]["dice"]
    write_image(tmp_path / "pred" / "c.png", pred)
    with pytest.raises(DataError, match=r"no ground truth for 1 prediction\(s\), e.g. \['c'\]"):
        evaluate(tmp_path / "pred", tmp_path / "gt")


def test_evaluate_colour_masks_need_their_colour_table_and_score_per_class(tmp_path):
    truth = np.zeros((6, 6, 3), np.uint8)
    truth[:3, :, 2] = 255  # blue class
    truth[3:, :3, 0] = 255  # red class
    swapped = truth[..., ::-1].copy()  # red <-> blue: every object pixel in the wrong class
    write_image(tmp_path / "gt" / "a.png", truth)
    write_image(tmp_path / "pred" / "a.png", swapped)
    with pytest.raises(DataError, match="--mask-encoding rgb"):  # never "non-black = foreground"
        evaluate(tmp_path / "pred", tmp_path / "gt")
    data = DataConfig(
        mask_encoding="rgb",
        class_colors=[[0, 0, 0], [255, 0, 0], [0, 0, 255]],
        class_names=["background", "tumour", "stroma"],
    )
    result = evaluate(tmp_path / "pred", tmp_path / "gt", data_config=data).images[0]
    assert (
        result.dice == 0.0 and result.scores["dice[tumour]"] == 0.0 and result.scores["dice[stroma]"] == 0.0
    )
    write_image(tmp_path / "pred" / "a.png", truth, overwrite=True)
    result = evaluate(tmp_path / "pred", tmp_path / "gt", data_config=data).images[0]
    assert result.dice == 1.0 and result.scores["dice[tumour]"] == 1.0
