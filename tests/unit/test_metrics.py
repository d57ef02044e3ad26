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


def test_compare_objects_gives_the_scores_and_the_objects_behind_each_error():
    """napari's Evaluate widget shows these layers; the scores are evaluate's per image (one workflow)."""
    from unetkit.metrics.scoring import score_instances
    from unetkit.workflows.evaluate import compare_objects

    truth = np.zeros((20, 40), np.int32)
    truth[2:8, 2:8], truth[2:8, 12:18], truth[12:18, 2:8], truth[12:18, 24:30], truth[12:18, 30:36] = (
        1,
        2,
        3,
        4,
        5,
    )
    pred = np.zeros_like(truth)
    pred[2:8, 2:8] = 7  # object 1, found
    pred[2:8, 12:15], pred[2:8, 15:18] = 8, 9  # object 2, split in two halves
    pred[12:18, 24:36] = 6  # objects 4 and 5, merged
    pred[0:2, 36:40] = 5  # nothing there: a false positive
    found = compare_objects(pred, truth)  # object 3: missed
    assert found.scores == {k: float(v) for k, v in score_instances(pred, truth)[0].items()}
    ids = {name: sorted(set(np.unique(errors)) - {0}) for name, errors in found.errors.items()}
    assert ids["misses"] == [2, 3, 4, 5] and ids["splits"] == [2] and ids["merges"] == [6]
    assert 5 in ids["false positives"] and 7 not in ids["false positives"]
    assert np.array_equal(found.errors["misses"] == 3, truth == 3)  # the object's own pixels and ID


def test_every_score_of_every_mode_is_defined_and_reaches_every_output(tmp_path):
    """A new metric (CONTRIBUTING: metrics/ computes it, DEFINITIONS says what it is) appears with its
    definition in the JSON, as a CSV column, in the report's tables (their header tooltips and the legend read
    DEFINITIONS) and the napari table; this walks every mode on real files. Before, isbi mode wrote ten scores
    (mergers, holes, rand_error, best_threshold_* ...) without a definition."""
    import json

    from unetkit import read_image, synthesize_dataset, write_image
    from unetkit.metrics.results import COLUMNS, DEFINITIONS
    from unetkit.workflows.evaluate import evaluate

    data = synthesize_dataset(tmp_path / "d", n=2, size=64, seed=3)
    pred = tmp_path / "pred"
    for mask in (data / "masks").iterdir():
        labels = read_image(mask)
        write_image(pred / mask.name, ((labels > 0) * 255).astype("uint8"))
        write_image(pred / f"{mask.stem}_instances.tif", labels.astype("uint16"))
    for mode in ("semantic", "instance", "isbi"):
        ev = evaluate(pred, data, mode=mode)
        scores = set(ev.mean)
        assert scores - set(DEFINITIONS) == set(), mode
        assert set(COLUMNS[mode]) <= scores, mode  # the table's columns are scores the mode computes
        written = json.loads(ev.write_json(tmp_path / f"{mode}.json").read_text())
        assert set(written["metric_definitions"]) == scores
        header = ev.write_csv(tmp_path / f"{mode}.csv").read_text().splitlines()[0].split(",")
        assert scores <= set(header)


def test_probability_maps_given_as_predictions_are_refused_except_by_isbi_mode(tmp_path):
    """Before: semantic mode read a float probability map as "non-zero is foreground" and scored every pixel as
    an object (recall 1, exit code 0)."""
    import numpy as np

    from unetkit import DataError, synthesize_dataset, write_image
    from unetkit.workflows.evaluate import evaluate

    data = synthesize_dataset(tmp_path / "d", n=2, size=64, seed=3)
    pred = tmp_path / "pred"
    rng = np.random.default_rng(0)
    for mask in (data / "masks").iterdir():
        write_image(pred / f"{mask.stem}.tif", rng.random((64, 64)).astype(np.float32))
    for mode in ("semantic", "instance"):
        with pytest.raises(DataError, match=r"non-integer values.*probability maps with --mode isbi"):
            evaluate(pred, data, mode=mode)
    assert (
        0 <= evaluate(pred, data, mode="isbi").mean["pixel_error"] <= 1
    )  # thresholds them, as the challenge
