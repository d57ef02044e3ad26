import numpy as np
import pytest
import torch

from unetkit import DataError, Predictor, UNet
from unetkit.inference.tiling import read_window

PREP = {"in_channels": 1, "normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}


@pytest.mark.parametrize("shape", [(7, 5), (33, 90), (130, 70)])
def test_valid_network_tiled_output_equals_full_image_pass(shape):
    """Overlap-tile with mirroring (paper Fig. 2): tiles reproduce one pass over the mirrored image."""
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, padding="valid", norm="batch").eval()
    image = np.random.default_rng(1).random(shape).astype(np.float32) * 100
    predictor = Predictor(
        net, PREP, device="cpu", tile=net.valid_input_size(12), batch_size=3, precision="float32"
    )
    probs = predictor.predict_proba(image)

    x = predictor.prepare(image)
    m, h, w = net.margin, *shape
    full_in = [net.valid_input_size(n) for n in (h, w)]
    window = read_window(x, [(-m, full_in[0] - m), (-m, full_in[1] - m)])
    with torch.no_grad():
        ref = torch.sigmoid(net(torch.from_numpy(window)[None]))[0, :, :h, :w].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_same_network_small_and_large_images():
    net = UNet(depth=3, base_channels=4, norm="batch").eval()
    predictor = Predictor(net, PREP, device="cpu", tile=64, overlap=0.25)
    for shape in [(1, 1), (5, 300), (200, 130)]:
        image = np.random.default_rng(0).random(shape)
        assert predictor.predict(image).shape == shape


def test_channel_mismatch_is_a_clear_error_and_gray_rgb_is_accepted():
    predictor = Predictor(UNet(depth=1, base_channels=2), PREP, device="cpu", tile=32)
    gray = np.random.default_rng(0).integers(0, 255, (20, 30), dtype=np.uint8)
    rgb_gray = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_array_equal(predictor.predict_proba(rgb_gray), predictor.predict_proba(gray))
    colour = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="has 3 channel\\(s\\) but the model reads one.*--channel N") as info:
        predictor.predict(colour, name="photo.png")
    assert "in_channels=" not in str(info.value)  # issue 32 item 4: no CLI flag of that name; say what to do


def test_tta_averages_the_eight_flips_and_rotations_on_non_square_images():
    """TTA runs per tile; the evenly spaced, flush tile plan is symmetric under flips and transposition,
    so it equals averaging the predictions of the 8 transformed images."""
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, norm="batch").eval()
    predictor = Predictor(net, PREP, device="cpu", tile=64, overlap=0.25)
    image = np.random.default_rng(2).random((36, 100)).astype(np.float32)
    assert len(predictor.plan(image.shape)) == 2  # two overlapping tiles along the long axis
    x = predictor.prepare(image)
    manual = np.zeros((1, 36, 100))
    for k in range(4):
        for flip in (False, True):
            view = np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1))
            p = np.rot90(
                predictor.predict_proba(np.ascontiguousarray(view), prepared=True), -k, axes=(-2, -1)
            )
            manual += (p[..., ::-1] if flip else p) / 8
    tta = predictor.predict_proba(image, tta=True)
    assert tta.shape == (1, 36, 100)
    np.testing.assert_allclose(tta, manual, atol=1e-6)
    assert not np.allclose(
        tta, predictor.predict_proba(image), atol=1e-4
    )  # an untrained net is not symmetric
    # averaging over the whole dihedral group makes the output equivariant: a flipped input gives the flipped output
    np.testing.assert_allclose(
        predictor.predict_proba(image[:, ::-1].copy(), tta=True), tta[..., ::-1], atol=1e-5
    )


def test_tiff_pages_without_axes_are_channels_when_the_model_says_so_and_refused_otherwise(tmp_path):
    """Issue 32 item 4: a 2-channel TIFF saved without axes metadata was segmented as two separate images with
    exit 0. Its pages are the channels of one image when the model takes that many; a 1-channel model refuses
    the file (2 channels or 2 images?) and names --layout isbi; the ISBI layout still reads pages as images."""
    import tifffile

    from unetkit import predict_files, read_image

    rng = np.random.default_rng(0)
    image = (rng.random((48, 40, 2)) * 200).astype(np.uint8)
    torch.manual_seed(0)
    two = Predictor(UNet(in_channels=2, depth=2, base_channels=4).eval(), {**PREP, "in_channels": 2}, tile=32)
    tifffile.imwrite(tmp_path / "cyx.tif", np.moveaxis(image, -1, 0), photometric="minisblack")  # 2 pages
    tifffile.imwrite(tmp_path / "yxc.tif", image)  # tifffile stores (H, W, 2) as 48 pages of 40 x 2
    np.save(tmp_path / "ref.npy", image)
    results = predict_files(two, [tmp_path / n for n in ("cyx.tif", "yxc.tif", "ref.npy")], tmp_path / "out",
                            progress=False)  # fmt: skip
    masks = {r.source.stem: read_image(r.mask) for r in results}
    assert all(m.shape == (48, 40) for m in masks.values())  # one image each, not a stack of pages
    np.testing.assert_array_equal(masks["cyx"], masks["ref"])
    np.testing.assert_array_equal(masks["yxc"], masks["ref"])

    one = Predictor(UNet(depth=2, base_channels=4).eval(), PREP, tile=32)
    with pytest.raises(DataError, match=r"cyx.tif: 2 pages .* without axes metadata.*--layout isbi"):
        predict_files(one, [tmp_path / "cyx.tif"], tmp_path / "one", progress=False)
    assert not (tmp_path / "one").exists()  # refused before anything was written
    (stack,) = predict_files(one, [tmp_path / "cyx.tif"], tmp_path / "isbi", layout="isbi", progress=False)
    assert tifffile.imread(stack.mask).shape == (2, 48, 40)  # the user said: pages are images
    labelled = tmp_path / "zyx.tif"
    tifffile.imwrite(labelled, np.moveaxis(image, -1, 0), imagej=True, metadata={"axes": "ZYX"})
    (planes,) = predict_files(one, [labelled], tmp_path / "z", progress=False)  # the file's axes say so
    assert tifffile.imread(planes.mask).shape == (2, 48, 40)


def test_a_tile_or_batch_too_large_for_memory_is_refused_before_anything_is_allocated(tmp_path):
    """Before: --tile 100000 on a 64x64 image mirrored it out to a 25000-px tile and the kernel killed the
    process (22 GB resident, exit 137, nothing said); the memory check counted only the row of results."""
    from unetkit import ConfigError, predict_files, synthesize_dataset

    with pytest.raises(
        ConfigError, match=r"\(--tile\) must be in \[1, 16384\], got 100000; a tile is mirrored"
    ):
        Predictor.from_pretrained("nuclei", tile=100_000)
    huge = Predictor.from_pretrained("nuclei", tile=16384, batch_size=4)
    huge.check_size((64, 64), "small")  # one tile, mirrored out: it fits
    with pytest.raises(
        DataError,
        match=r"tile\(s\) of 8320x8320 pixels needs at least .* --tile or --batch",  # the image and 64 px around
    ):
        huge.check_size((8192, 8192), "big", max_memory_gib=8)
    Predictor.from_pretrained("nuclei").check_size((8192, 8192), "big", max_memory_gib=8)  # the defaults fit
    data = synthesize_dataset(tmp_path / "d", n=1, size=32, seed=0)
    for bad, said in (
        (
            {"max_memory_gib": -1.0},
            r"\(--max-memory-gib\) must be > 0, got -1.0; give the memory to allow in GiB",
        ),
        ({"max_memory_gib": float("nan")}, r"\(--max-memory-gib\) must be a finite number, got nan"),
        ({"object_context": -3}, r"\(--object-context\) must be >= 0, got -3; give a size in pixels"),
        (
            {"tile": 100_000},
            r"predict.tile \(--tile\) must be in \[1, 16384\], got 100000; a tile is mirrored",
        ),
        ({"threshold": 1.0}, r"predict.threshold \(--threshold\) must be in \(0, 1\), got 1.0"),
    ):
        with pytest.raises(ConfigError, match=said):
            predict_files("nuclei", [data / "images"], tmp_path / "out", progress=False, **bad)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("image", "said"),
    [
        (
            np.zeros((2, 1, 64, 64)),
            r"a 2-D model segments an image \(H, W\) or \(H, W, C\); got shape \(2, 1, 64, 64\)",
        ),
        (np.float32(3), r"got shape \(\)"),
        (np.zeros((0, 64)), "0x64 pixels: an image without pixels"),
        (np.full((64, 64), np.nan, np.float32), "4096 NaN or infinite pixel value"),
        (np.zeros((8, 8), np.complex64), "complex-valued pixels"),
    ],
)
def test_the_python_api_refuses_what_files_are_refused_for(image, said):
    """Before: unetkit.predict on a batch (N, C, H, W) or a 0-d array was a RuntimeError/AxisError from deep
    inside, an empty array an IndexError, and a NaN image was segmented (the CLI refused all of them)."""
    from unetkit import predict

    with pytest.raises(DataError, match=said):
        predict(Predictor.from_pretrained("nuclei"), image)


def test_the_python_api_reads_an_image_file_given_by_its_path(tmp_path):
    from unetkit import predict, read_image, synthesize_dataset

    data = synthesize_dataset(tmp_path / "d", n=1, size=64, seed=0)
    path = data / "images" / "synth_000.png"
    model = Predictor.from_pretrained("nuclei")
    np.testing.assert_array_equal(predict(model, path), predict(model, read_image(path)))
    np.testing.assert_array_equal(predict(model, str(path)), predict(model, read_image(path)))


def test_predict_files_takes_one_path_as_one_input_never_its_characters(tmp_path):
    """Before: predict_files(model, "data/images", out) iterated over the string's characters: it refused "/"
    here, and `inputs="."` would have segmented the working folder."""
    from unetkit import predict_files, synthesize_dataset

    data = synthesize_dataset(tmp_path / "d", n=2, size=48, seed=0)
    done = predict_files("nuclei", str(data / "images"), tmp_path / "out", progress=False)
    assert sorted(p.source.name for p in done) == ["synth_000.png", "synth_001.png"]
    again = predict_files("nuclei", data / "images", tmp_path / "out2", progress=False)  # a Path too
    assert len(again) == 2


def test_dark_objects_on_a_bright_background_are_said_and_read_with_invert(tmp_path, caplog):
    """A bright-field image (dark nuclei, bright background) given to the built-in fluorescence model: it found
    the background as objects (F1 0) and said nothing. Now it says so, naming the image and --invert, and
    --invert reads it as the model expects; a fluorescence image says nothing."""
    import logging

    from unetkit import synth_nuclei
    from unetkit.cli.main import main
    from unetkit.data.normalize import Normalizer
    from unetkit.metrics.instance import match_instances

    image, truth = synth_nuclei((192, 192), seed=4)
    dark = (image.max() - image).astype(image.dtype)
    plain, inverted = Predictor.from_pretrained("nuclei"), Predictor.from_pretrained("nuclei", invert=True)
    with caplog.at_level(logging.WARNING, logger="unetkit"):
        missed = plain.predict_instances(dark, "bright-field.png")
        found = inverted.predict_instances(dark, "bright-field.png")
        plain.predict_instances(image, "fluorescence.png")
    said = [r.getMessage() for r in caplog.records if "background looks bright" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("bright-field.png:") and "--invert" in said[0], said
    assert match_instances(truth, missed).f1() < 0.3 < 0.9 < match_instances(truth, found).f1()
    np.testing.assert_array_equal(
        found, plain.predict_instances(image)
    )  # the image it mirrors, exactly as read
    # each normalisation reversed within its own statistics; never recorded in a checkpoint
    x = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32) * 200
    for method in ("percentile", "minmax", "zscore"):
        np.testing.assert_allclose(Normalizer(method, invert=True)(x), Normalizer(method)(-x), atol=1e-5)
    np.testing.assert_allclose(Normalizer("fixed", invert=True)(x), (255 - x) / 255, atol=1e-6)
    assert "invert" not in Normalizer(invert=True).to_dict()
    write_image_dir = tmp_path / "pred"
    write_image_dir.mkdir()
    assert (
        main(["evaluate", str(write_image_dir), str(tmp_path), "--invert"]) == 2
    )  # predictions: nothing to read
