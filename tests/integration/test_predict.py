import numpy as np
import pytest
import tifffile

from unetkit import DataError, Predictor, predict, predict_files, read_image, synth_nuclei, write_image


def test_predict_any_size_returns_same_height_and_width(tiny_run):
    image, _ = synth_nuclei((300, 517), seed=5)
    mask, probs = predict(tiny_run.best_checkpoint, image, return_probs=True, tile=64)
    assert mask.shape == (300, 517) and probs.shape == (1, 300, 517)
    assert set(np.unique(mask)) <= {0, 1}
    assert probs.min() >= 0 and probs.max() <= 1


def test_predict_files_writes_masks_and_probs_and_refuses_to_overwrite(tiny_run, tmp_path):
    image, _ = synth_nuclei((61, 97), seed=2)
    src = write_image(tmp_path / "in" / "odd.png", image)
    out = tmp_path / "pred"
    (res,) = predict_files(tiny_run.best_checkpoint, [src], out, save_probs="float32", progress=False)
    mask = read_image(res.mask)
    assert mask.shape == (61, 97) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    probs = tifffile.imread(res.probs)
    assert probs.dtype == np.float32 and probs.shape == (61, 97)
    np.testing.assert_array_equal(mask == 255, probs >= 0.5)
    with pytest.raises(DataError, match="already exists"):
        predict_files(tiny_run.best_checkpoint, [src], out, progress=False)
    predict_files(tiny_run.best_checkpoint, [src.parent], out, overwrite=True, progress=False)


def test_predict_files_rejects_missing_and_non_image_inputs(tiny_run, tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        predict_files(tiny_run.best_checkpoint, [tmp_path / "nope.png"], tmp_path / "o", progress=False)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not an image file"):
        predict_files(tiny_run.best_checkpoint, [tmp_path / "notes.txt"], tmp_path / "o", progress=False)


def test_predict_files_with_tta(tiny_run, tmp_path):
    image, _ = synth_nuclei((40, 56), seed=3)
    src = write_image(tmp_path / "in" / "x.png", image)
    (res,) = predict_files(
        tiny_run.best_checkpoint, [src], tmp_path / "p", save_probs="float32", tta=True, progress=False
    )
    probs = tifffile.imread(res.probs)
    direct = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu").predict_proba(image, tta=True)[
        0
    ]
    np.testing.assert_allclose(probs, direct, atol=1e-6)


def test_loading_a_model_does_not_pay_for_pytorchs_meta_decompositions():
    """The declared-size guard builds the stored network on PyTorch's meta device before the real one; its He
    initialisation drew normal_ on meta tensors, whose first call imports PyTorch's decompositions (sympy among
    them): 0.7 s of every `unetkit predict`, evaluate and napari Segment, for values a meta tensor cannot hold.
    In a fresh process, loading the built-in model now leaves sympy unimported and the guard still counts."""
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from unetkit import Predictor\n"
        "t = time.perf_counter(); Predictor.from_checkpoint('nuclei')\n"
        "print('sympy' in sys.modules, round(time.perf_counter() - t, 2))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported, _seconds = done.stdout.split()
    assert imported == "False", done.stdout
