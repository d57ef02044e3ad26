import numpy as np
import pytest

from unetkit import DataError, read_image, synth_nuclei, synthesize_dataset, write_image
from unetkit.data.checks import check_dataset
from unetkit.data.dataset import PatchDataset, SampleStore, split_views
from unetkit.data.io import to_channels_first
from unetkit.data.layouts import paired_folders
from unetkit.data.masks import IGNORE, MaskEncoding
from unetkit.data.normalize import Normalizer, normalize
from unetkit.data.synthetic import count_touching_pairs


def test_synthetic_is_deterministic_and_has_touching_nuclei():
    a_img, a_lab = synth_nuclei((96, 130), seed=4)
    b_img, b_lab = synth_nuclei((96, 130), seed=4)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert a_img.dtype == np.uint8 and a_lab.dtype == np.uint16 and a_img.shape == (96, 130)
    assert not np.array_equal(synth_nuclei((96, 130), seed=5)[0], a_img)
    touching = sum(count_touching_pairs(synth_nuclei(256, seed=s)[1]) for s in range(5))
    assert touching >= 10  # clusters of touching nuclei are the hard case a U-Net must learn


def test_synthetic_labels_and_intensities_are_plausible():
    image, labels = synth_nuclei(256, seed=0)
    ids = np.unique(labels)
    assert ids[0] == 0 and 10 <= len(ids) - 1 <= 80
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes[sizes > 0].min() >= 12 and np.median(sizes[sizes > 0]) > 100
    fg, bg = image[labels > 0].mean(), image[labels == 0].mean()
    assert fg > 2 * bg  # nuclei are brighter than background ...
    assert image[labels == 0].std() > 0.5  # ... which is noisy, not flat


def test_synthesize_dataset_layout_and_16bit_masks(tmp_path):
    out = synthesize_dataset(tmp_path / "d", n=3, size=(40, 50), seed=2, mask_format="tif")
    samples = paired_folders(out)
    assert [s.name for s in samples] == ["synth_000", "synth_001", "synth_002"]
    mask = read_image(samples[0].mask)
    np.testing.assert_array_equal(mask, synth_nuclei((40, 50), np.random.SeedSequence([2, 0]))[1])
    with pytest.raises(DataError, match="--overwrite"):
        synthesize_dataset(tmp_path / "d", n=1, size=32)


def test_16bit_png_round_trip(tmp_path):
    labels = (np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 97) % 65000
    write_image(tmp_path / "l.png", labels)
    back = read_image(tmp_path / "l.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(DataError, match="already exists"):
        write_image(tmp_path / "l.png", labels)


def test_paired_folders_matches_suffixes_and_reports_missing_masks(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    for name in ("a", "b", "c"):
        write_image(tmp_path / "images" / f"{name}.png", img)
    write_image(tmp_path / "labels" / "a_mask.png", img)
    write_image(tmp_path / "labels" / "b_label.tif", img)
    with pytest.raises(DataError, match=r"images/c.png: image without mask"):
        paired_folders(tmp_path)
    write_image(tmp_path / "labels" / "c.png", img)
    assert [s.mask.name for s in paired_folders(tmp_path)] == ["a_mask.png", "b_label.tif", "c.png"]
    with pytest.raises(DataError, match="no image folder"):
        paired_folders(tmp_path / "labels")


def test_normalisation_does_not_depend_on_bit_depth():
    img8 = synth_nuclei(64, seed=1)[0][None]
    img16 = img8.astype(np.uint16) * 257
    np.testing.assert_allclose(normalize(img8), normalize(img16), atol=1e-5)
    z = normalize(img16, "zscore")
    assert abs(z.mean()) < 1e-4 and z.std() == pytest.approx(1, abs=1e-3)
    assert (normalize(np.full((1, 4, 4), 7)) == 0).all()  # constant image: no division by zero


def test_channels_first_conversions():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_channels_first(gray, 1).shape == (1, 3, 4)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    assert to_channels_first(rgba, 3, alpha=True).shape == (
        3,
        3,
        4,
    )  # a napari RGBA layer: the viewer says so
    np.testing.assert_array_equal(to_channels_first(rgba, 1, alpha=True)[0], gray)
    with pytest.raises(DataError, match="reads one .channels 0 .red., 1 .green., 2 .blue. vary.*--channel N"):
        to_channels_first(np.dstack([gray, gray + 1, gray]), 1, "x.png")
    with pytest.raises(DataError, match="convert the image"):
        to_channels_first(np.dstack([gray, gray + 1, gray]), 2, "x.png")


def test_one_stain_exported_in_colour_feeds_a_one_channel_model(tmp_path):
    """Real fluorescence often arrives as an RGB export of one stain (DAPI in blue, red and green empty): a
    one-channel model reads the channel that varies, in memory and streamed from a file, and segments it as the
    gray image; a merge of stains is refused with the fix; a three-channel model keeps all three."""
    from unetkit import Predictor
    from unetkit.data.lazy import open_image

    image = synth_nuclei((96, 128), seed=2)[0]
    gray = (image / image.max() * 250).astype(np.uint8)
    blue = np.dstack(
        [np.zeros_like(gray), np.full_like(gray, 3), gray]
    )  # green: a constant offset, no signal
    np.testing.assert_array_equal(to_channels_first(blue, 1)[0], gray)
    assert to_channels_first(blue, 3).shape == (3, 96, 128)  # a colour model reads the colours
    write_image(tmp_path / "blue.tif", blue)
    with open_image(tmp_path / "blue.tif") as source:
        np.testing.assert_array_equal(source.select(1).read()[0], gray)
    predictor = Predictor.from_pretrained("nuclei", tile=128)
    np.testing.assert_array_equal(predictor.predict(blue), predictor.predict(gray))
    merge = blue.copy()
    merge[..., 1] = gray[::-1]  # a second stain in green
    with pytest.raises(
        DataError, match=r"channels 1 \(green\), 2 \(blue\) vary: a merge of stains\?\): pass --channel N"
    ):
        to_channels_first(merge, 1, "merge.png")
    np.testing.assert_array_equal(to_channels_first(merge, 1, pick=1)[0], gray[::-1])  # --channel 1: green
    picked = Predictor.from_pretrained("nuclei", tile=128, channel=2)  # --channel 2: blue
    np.testing.assert_array_equal(picked.predict(merge), predictor.predict(gray))
    with open_image(tmp_path / "blue.tif") as source:
        np.testing.assert_array_equal(picked.select(source).read()[0], gray)
    with pytest.raises(DataError, match="--channel 3, but the image has 3 channel"):
        to_channels_first(merge, 1, pick=3)


def test_binary_mask_encoding_covers_0_1_0_255_and_instances():
    for mask in (np.array([[0, 1]]), np.array([[0, 255]]), np.array([[0, 4711]], np.uint16)):
        np.testing.assert_array_equal(MaskEncoding("binary").encode(mask), [[0, 1]])
    with pytest.raises(DataError, match="colour mask"):
        MaskEncoding("binary").encode(
            np.dstack([np.eye(2), np.zeros((2, 2)), np.zeros((2, 2))]), name="m.png"
        )


def _store(tmp_path, n, h=40, w=30):
    rng = np.random.default_rng(0)
    for k in range(n):
        write_image(tmp_path / "images" / f"i{k}.npy", rng.random((h, w), dtype=np.float32))
        write_image(tmp_path / "masks" / f"i{k}.png", (rng.random((h, w)) > 0.5).astype(np.uint8))
    return SampleStore(paired_folders(tmp_path), MaskEncoding("binary"), Normalizer("none"), 1)


def test_split_by_images_or_by_region_for_few_images(tmp_path):
    store = _store(tmp_path / "a", 10)
    train, val, note = split_views(store, [40] * 10, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
    assert not {t.index for t in train} & {v.index for v in val}
    store = _store(tmp_path / "b", 2)
    train, val, note = split_views(store, [40, 40], 0.25, seed=0, how="rows")
    assert "only 2 image(s)" in note and "bottom 25%" in note
    (ti, tt), (vi, vt) = train[0].read(store), val[0].read(store)
    assert ti.shape == (1, 30, 30) and vi.shape == (1, 10, 30)
    np.testing.assert_array_equal(np.concatenate([tt, vt]), store[0][1])


def test_few_images_of_objects_hold_out_whole_objects_with_their_surroundings(tmp_path):
    from unetkit import synth_nuclei

    image, labels = synth_nuclei((160, 200), seed=4)
    write_image(tmp_path / "images" / "a.png", image)
    write_image(tmp_path / "masks" / "a.png", labels)
    store = SampleStore(paired_folders(tmp_path), MaskEncoding("instances"), Normalizer("percentile"), 1)
    (train,), (val,), note = split_views(store, [160], 0.2, seed=0)
    assert "whole objects" in note
    t, v = train.read(store)[1], val.read(store)[1]
    counted_t, counted_v = t != IGNORE, v != IGNORE
    assert not (counted_t & counted_v).any() and (counted_t | counted_v).all()  # a partition of the image
    assert 0.1 < counted_v.mean() < 0.5 and val.pixels((160, 200)) == counted_v.sum()
    for label in np.unique(labels[labels > 0]):  # every object whole on one side
        inside = counted_v[labels == label]
        assert inside.all() or not inside.any(), label
    assert (labels[counted_v] > 0).any() and (labels[counted_v] == 0).any()  # objects and their surroundings
    # rows when asked for, or when an image holds too few objects to hold some out
    (_,), (rows,), note = split_views(store, [160], 0.2, seed=0, how="rows")
    assert rows.rows == (128, 160) and "bottom 20%" in note


def test_store_reads_lazily_and_keeps_within_its_memory_budget(tmp_path):
    store = _store(tmp_path, 4)
    assert store.reads == 0  # nothing is read up front
    store[0], store[0]
    assert store.reads == 1  # cached
    tiny = SampleStore(store.samples, store.encoding, store.normalizer, 1, cache_mb=40 * 30 * 5 / 2**20 * 1.5)
    for i in (0, 1, 0, 1):
        tiny[i]
    assert tiny.reads == 4 and tiny._bytes <= tiny.budget  # room for one sample only: re-read from disk


@pytest.mark.parametrize(("patch_in", "patch_out"), [(16, 16), (64, 64), (44, 4)])
def test_patch_dataset_shapes_determinism_and_pairing(tmp_path, patch_in, patch_out):
    write_image(tmp_path / "images" / "a.npy", np.arange(40 * 30, dtype=np.float32).reshape(40, 30))
    write_image(tmp_path / "masks" / "a.png", (np.arange(40 * 30).reshape(40, 30) % 2).astype(np.uint8))
    store = SampleStore(
        paired_folders(tmp_path), MaskEncoding("classes", values=(0, 1)), Normalizer("none"), 1
    )
    views, _, _ = split_views(store, [40], 0.1, seed=0)
    ds = PatchDataset(store, views, [(40, 30)], patch_in, patch_out, length=5, augment=True, seed=3)
    x, y = ds[2]
    assert x.shape == (1, patch_in, patch_in) and y.shape == (patch_out, patch_out)
    x2, y2 = ds[2]
    assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(y.numpy(), y2.numpy())
    ds.set_epoch(1)
    assert not np.array_equal(ds[2][0].numpy(), x.numpy())
    # image and target stay aligned through cropping, mirroring and augmentation: the target is the
    # parity of the image value at the same place.
    m = (patch_in - patch_out) // 2
    centre = x.numpy()[0, m : m + patch_out, m : m + patch_out]
    np.testing.assert_array_equal(centre % 2, y.numpy())


def test_mask_and_image_of_different_size_is_reported(tmp_path):
    write_image(tmp_path / "images" / "a.png", np.zeros((8, 9), np.uint8))
    write_image(tmp_path / "masks" / "a.png", np.zeros((9, 8), np.uint8))
    report = check_dataset(tmp_path)
    assert not report.ok
    assert any("mask is 9x8 but its image" in p and "a.png" in p for p in report.problems)


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        (
            {"size": 100_000},
            r"--size 100000x100000: generating one image of 10,000,000,000 pixels needs about",
        ),
        (
            {"size": 256, "depth": 100_000},
            r"--size 256x256 --depth 100000: .* choose a smaller --size \(or --depth\)",
        ),
        ({"depth": 0}, "--depth 0: a volume needs at least 2 slices"),
        ({"seed": -1}, "--seed must be 0 or more, got -1"),
    ],
)
def test_synth_refuses_what_it_cannot_make_before_allocating_it(tmp_path, kwargs, said):
    """Before: --size 100000 ran out of memory (and was told to use smaller --tile), --depth 0 and --seed -1
    were internal errors, --depth 100000 a uint16 overflow."""
    from unetkit import DataError, synthesize_dataset

    with pytest.raises(DataError, match=said):
        synthesize_dataset(tmp_path / "s", n=1, **kwargs)
    assert not (tmp_path / "s").exists()


def test_write_image_refuses_a_shape_png_cannot_hold(tmp_path):
    import numpy as np

    from unetkit import DataError, write_image

    with pytest.raises(
        DataError, match=r"PNG holds a grey \(H, W\) or colour \(H, W, 3\|4\) image, got shape \(2, 2, 2, 2\)"
    ):
        write_image(tmp_path / "x.png", np.zeros((2, 2, 2, 2), np.uint8))
    assert not (tmp_path / "x.png").exists()


def test_a_new_image_format_is_one_entry_in_the_format_table_multi_page_included(tmp_path, monkeypatch):
    """CONTRIBUTING, "read a new image format": one entry in ``data/io.py`` ``FORMATS`` (its 2-D reader, its
    volume reader, its page counter) and every reader takes it: here NumPy's ``.npz`` archive, one page per
    array."""
    import zipfile

    from unetkit.data import io

    frames = [np.full((12, 16), 1000 * (i + 1), np.uint16) for i in range(3)]
    npz = tmp_path / "stack.npz"
    np.savez(npz, *frames)
    assert io.count_planes(npz) == 1 and ".npz" not in io.IMAGE_SUFFIXES  # not in the table
    with pytest.raises(DataError, match=r"stack.npz: volumes are read from .tif, .tiff, .npy, .zarr files"):
        io.read_volume(npz)

    def npz_page(path, page):
        with np.load(path, allow_pickle=False) as archive:
            return archive[archive.files[page or 0]]

    def npz_pages(path, stack):
        with np.load(path, allow_pickle=False) as archive:
            return len(archive.files)

    def npz_volume(path):
        return np.stack([npz_page(path, i) for i in range(npz_pages(path, True))])

    # its decoder's own complaint about damaged bytes (anything else is a fault or a bug, and propagates)
    entry = io.ImageFormat(npz_page, npz_volume, npz_pages, errors=(zipfile.BadZipFile,))
    monkeypatch.setitem(io.FORMATS, ".npz", entry)
    assert io.count_planes(npz) == 3
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(io.read_image(npz, page=i), frame)
        assert io.read_image(npz, page=i).dtype == np.uint16
    np.testing.assert_array_equal(io.read_volume(npz), np.stack(frames))
    npz.write_bytes(npz.read_bytes()[:40])  # a damaged file of the new kind refuses in one line
    for read in (io.count_planes, io.read_image, io.read_volume):
        with pytest.raises(DataError, match="stack.npz: cannot be read as"):
            read(npz)


def test_alpha_is_what_the_file_says_never_a_channel_count(tmp_path):
    """A TIFF of two or four stains once lost its last stain as "alpha" when read whole (training, check-data),
    only because 2 and 4 are the channel counts of LA and RGBA: a second stain was silently dropped and the model
    trained on the first. Alpha is now what the file declares (a PNG's LA/RGBA mode, a TIFF's alpha extra
    samples), dropped when read, whole or in windows."""
    import tifffile

    from unetkit.data.io import declares_alpha
    from unetkit.data.lazy import open_image

    rng = np.random.default_rng(0)
    stains = rng.integers(0, 4000, (4, 40, 50)).astype(np.uint16)
    for n in (2, 4):
        tifffile.imwrite(tmp_path / f"s{n}.tif", stains[:n], imagej=True, metadata={"axes": "CYX"})
        assert not declares_alpha(tmp_path / f"s{n}.tif")
        np.testing.assert_array_equal(to_channels_first(read_image(tmp_path / f"s{n}.tif"), None), stains[:n])
        with open_image(tmp_path / f"s{n}.tif") as source:
            np.testing.assert_array_equal(source.select(None).read(), stains[:n])
    rgb = rng.integers(0, 255, (40, 50, 3)).astype(np.uint8)
    rgba = np.dstack([rgb, np.full((40, 50), 255, np.uint8)])
    from PIL import Image

    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    for name in ("rgba.png", "rgba.tif"):
        assert declares_alpha(tmp_path / name)
        np.testing.assert_array_equal(read_image(tmp_path / name), rgb)
        with open_image(tmp_path / name) as source:
            np.testing.assert_array_equal(source.select(None).read(), np.moveaxis(rgb, -1, 0))
    (tmp_path / "d" / "images").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "d" / "images" / "a.tif", stains[:2], imagej=True, metadata={"axes": "CYX"})
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 10:20] = 255
    write_image(tmp_path / "d" / "masks" / "a.png", mask)
    report = check_dataset(tmp_path / "d")
    assert report.in_channels == 2 and not report.problems, report.problems  # both stains train
