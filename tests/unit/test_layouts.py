"""Every layout and mask encoding: built in tmp_path, checked, and trained one step through the CLI."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.conftest import TINY_CLI
from unetkit import load_checkpoint, read_image, synth_nuclei, write_image
from unetkit.checkpoint import preprocessing_of
from unetkit.cli.main import main
from unetkit.config import FINDING_KEYS
from unetkit.data.checks import check_dataset
from unetkit.data.layouts import detect_layout, load_layout, read_sample_mask


def nuclei(seed, shape=(40, 48)):
    return synth_nuclei(shape, seed)


def train_one_step(data, run, *extra):
    rc = main(["train", str(data), "--out", str(run), *TINY_CLI, *map(str, extra)])
    assert rc == 0
    return load_checkpoint(run / "best.pt")


# -- builders -----------------------------------------------------------------------------------------


def make_paired(root, n=3, mask_name="{stem}.png", binary255=True):
    for i in range(n):
        image, labels = nuclei(i)
        write_image(root / "images" / f"img{i}.png", image)
        mask = ((labels > 0) * 255).astype(np.uint8) if binary255 else labels
        write_image(root / "masks" / mask_name.format(stem=f"img{i}"), mask)
    return root


def make_dsb(root, n=2):
    for i in range(n):
        image, labels = nuclei(i)
        sid = f"a1b2c3{i}"
        rgba = np.dstack([image, image, image, np.full_like(image, 255)])
        write_image(root / sid / "images" / f"{sid}.png", rgba)
        for k in range(1, labels.max() + 1):
            obj = ((labels == k) * 255).astype(np.uint8)
            write_image(root / sid / "masks" / f"obj{k:03d}.png", obj)
    return root


def make_isbi(root, n=3):
    images, labels = zip(*(nuclei(i) for i in range(n)), strict=True)
    root.mkdir(parents=True)
    tifffile.imwrite(root / "train-volume.tif", np.stack(images), photometric="minisblack")
    tifffile.imwrite(
        root / "train-labels.tif", np.stack([np.where(lab > 0, 255, 0).astype(np.uint8) for lab in labels])
    )
    return root


def make_ctc(root, frames=5, annotated=(1, 3)):
    (root / "01").mkdir(parents=True)
    (root / "01_GT" / "SEG").mkdir(parents=True)
    for t in range(frames):
        image, labels = nuclei(t)
        tifffile.imwrite(root / "01" / f"t{t:03d}.tif", image.astype(np.uint16) * 100)
        if t in annotated:
            tifffile.imwrite(root / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", labels.astype(np.uint16))
    return root


# -- layouts ------------------------------------------------------------------------------------------


def test_paired_binary_0_255(tmp_path):
    data = make_paired(tmp_path / "d")
    assert detect_layout(data) == "paired"
    ckpt = train_one_step(data, tmp_path / "run")
    assert ckpt["preprocessing"]["encoding"]["name"] == "binary"  # 0/255 masks are unambiguous


def test_paired_with_mask_pattern(tmp_path):
    data = make_paired(tmp_path / "d", mask_name="gt-{stem}.tif", binary255=False)
    assert not check_dataset(data).ok  # without the pattern, gt-img0 pairs with nothing
    ckpt = train_one_step(
        data, tmp_path / "run", "--mask-pattern", "gt-{stem}", "--mask-encoding", "instances"
    )
    assert ckpt["training"]["config"]["data"]["mask_pattern"] == "gt-{stem}"


def test_dsb_object_masks_merge_into_instances(tmp_path):
    data = make_dsb(tmp_path / "d")
    layout = load_layout(data)
    assert layout.name == "dsb" and len(layout.samples) == 2
    merged = read_sample_mask(layout.samples[0])
    np.testing.assert_array_equal(merged, nuclei(0)[1])  # each object file becomes one label, in name order
    assert any("alpha channel, which is dropped" in n for n in check_dataset(data).notes)
    ckpt = train_one_step(data, tmp_path / "run")
    assert ckpt["preprocessing"]["encoding"]["name"] == "instances"
    assert ckpt["preprocessing"]["in_channels"] == 1  # grayscale stored as RGBA


def test_dsb_overlapping_objects_are_resolved_by_file_order(tmp_path):
    sid = tmp_path / "x"
    write_image(sid / "images" / "x.png", np.zeros((6, 6), np.uint8))
    a = np.zeros((6, 6), np.uint8)
    a[:4, :4] = 255
    b = np.zeros((6, 6), np.uint8)
    b[2:, 2:] = 255
    write_image(sid / "masks" / "b.png", b)
    write_image(sid / "masks" / "a.png", a)
    merged = read_sample_mask(load_layout(tmp_path).samples[0])
    assert merged[3, 3] == 1 and merged[5, 5] == 2  # a.png comes first and keeps the overlap


@pytest.mark.filterwarnings("ignore:.*stored as RGB with separate component planes:DeprecationWarning")
def test_isbi_stacks_one_sample_per_page(tmp_path):
    data = make_isbi(tmp_path / "d")
    layout = load_layout(data)
    assert layout.name == "isbi" and [s.image_page for s in layout.samples] == [0, 1, 2]
    ckpt = train_one_step(data, tmp_path / "run")
    assert ckpt["preprocessing"]["encoding"]["name"] == "binary"


def test_ctc_uses_only_annotated_frames(tmp_path):
    data = make_ctc(tmp_path / "d")
    layout = load_layout(data)
    assert layout.name == "ctc" and [s.name for s in layout.samples] == ["01_t001", "01_t003"]
    ckpt = train_one_step(data, tmp_path / "run")
    assert ckpt["preprocessing"]["encoding"]["name"] == "instances"


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_list_of_paths(tmp_path, kind):
    make_paired(tmp_path / "d")
    pairs = [(f"d/images/img{i}.png", f"d/masks/img{i}.png") for i in range(3)]
    if kind == "csv":
        listing = tmp_path / "pairs.csv"
        listing.write_text("image,mask\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    else:
        listing = tmp_path / "pairs.json"
        listing.write_text(json.dumps([{"image": a, "mask": b} for a, b in pairs]))
    assert load_layout(listing).name == "list"
    train_one_step(listing, tmp_path / "run")


# -- encodings ----------------------------------------------------------------------------------------


def class_masks(root, values=(0, 1, 2), palette=False, n=3):
    for i in range(n):
        image, labels = nuclei(i)
        classes = np.where(labels > 0, np.asarray(values)[1 + labels % (len(values) - 1)], values[0]).astype(
            np.uint8
        )
        for k, v in enumerate(values[1:]):  # every class present in every mask
            classes[2 * k : 2 * k + 2, :6] = v
        write_image(root / "images" / f"img{i}.png", image)
        if palette:
            pil = Image.fromarray(classes, mode="P")
            pil.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
            (root / "masks").mkdir(parents=True, exist_ok=True)
            pil.save(root / "masks" / f"img{i}.png")
        else:
            write_image(root / "masks" / f"img{i}.png", classes)
    return root


def test_classes_need_a_count_and_train_softmax(tmp_path):
    data = class_masks(tmp_path / "d")
    report = check_dataset(data)
    assert not report.ok and "cannot tell what the mask values [0, 1, 2] mean" in report.problems[0]
    ckpt = train_one_step(data, tmp_path / "run", "--mask-encoding", "classes", "--num-classes", "3")
    assert ckpt["model"]["hparams"]["num_classes"] == 3


def test_a_class_map_in_dataset_yaml_says_the_values_are_classes_and_255_is_named(tmp_path):
    """DATA/dataset.yaml's `classes:` alone left the encoding undecided ("cannot tell what the values mean"),
    while --class-map on the command line implied classes; both now read the values as the map says. Values
    outside the map, or an undecided 0/1/255 mask, name 255's usual meaning (unlabelled: --ignore-index 255)."""
    data = class_masks(tmp_path / "d", values=(0, 1, 255))
    undecided = check_dataset(data)
    assert not undecided.ok and "--ignore-index 255" in undecided.problems[0]
    (data / "dataset.yaml").write_text("classes: {0: background, 1: nucleus}\n")
    mapped = check_dataset(data)
    assert mapped.encoding is not None and mapped.encoding.name == "classes"
    assert any(
        "[255] are outside the class map [0, 1]" in p and "--ignore-index 255" in p for p in mapped.problems
    )
    (data / "dataset.yaml").write_text("classes: {0: background, 1: nucleus}\nignore_index: 255\n")
    assert check_dataset(data).ok


def test_palette_png_with_named_class_map(tmp_path):
    data = class_masks(tmp_path / "d", palette=True)
    assert read_image(data / "masks" / "img0.png").max() == 2  # indices, not colours
    cmap = tmp_path / "classes.yaml"
    cmap.write_text("0: background\n1: nucleus\n2: mitotic\n")
    ckpt = train_one_step(data, tmp_path / "run", "--class-map", cmap)
    pre = ckpt["preprocessing"]
    assert pre["encoding"]["class_names"] == ["background", "nucleus", "mitotic"]
    # issue 33: the description is stored once: the class map in the encoding (not beside it, nor again in a
    # copy of the whole description), and how the files were found
    assert "class_names" not in pre and set(pre["dataset"]) == set(FINDING_KEYS)
    assert preprocessing_of(ckpt).class_names == ("background", "nucleus", "mitotic")
    assert pre["encoding"]["values"] == [0, 1, 2] and pre["dataset"]["layout"] == "paired"


def test_class_values_are_mapped_and_predictions_written_back_in_them(tmp_path):
    data = class_masks(tmp_path / "d", values=(0, 128, 200))
    cmap = tmp_path / "classes.json"
    cmap.write_text(
        json.dumps([{"name": "bg", "value": 0}, {"name": "a", "value": 128}, {"name": "b", "value": 200}])
    )
    train_one_step(data, tmp_path / "run", "--class-map", cmap)
    assert (
        main(
            [
                "predict",
                str(tmp_path / "run" / "best.pt"),
                str(data / "images"),
                "--out",
                str(tmp_path / "p"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert set(np.unique(read_image(tmp_path / "p" / "img0.png")).tolist()) <= {0, 128, 200}


def test_rgb_masks_with_colour_table(tmp_path):
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    for i in range(3):
        image, labels = nuclei(i)
        write_image(tmp_path / "d" / "images" / f"img{i}.png", image)
        write_image(
            tmp_path / "d" / "masks" / f"img{i}.png", colours[np.where(labels > 0, 1 + labels % 2, 0)]
        )
    cmap = tmp_path / "colours.yaml"
    cmap.write_text(
        "- {name: background, color: '#000000'}\n- {name: red, color: [255, 0, 0]}\n"
        "- {name: blue, color: '#0000ff'}\n"
    )
    report = check_dataset(tmp_path / "d")
    assert "colour mask" in report.problems[0] and "--mask-encoding rgb" in report.problems[0]
    train_one_step(tmp_path / "d", tmp_path / "run", "--class-map", cmap)
    main(
        [
            "predict",
            str(tmp_path / "run" / "best.pt"),
            str(tmp_path / "d" / "images" / "img1.png"),
            "--out",
            str(tmp_path / "p"),
            "--no-progress",
        ]
    )
    pred = read_image(tmp_path / "p" / "img1.png")
    assert pred.shape == (40, 48, 3)
    assert {tuple(c) for c in pred.reshape(-1, 3).tolist()} <= {tuple(c) for c in colours.tolist()}


def test_instances_border_target(tmp_path):
    data = make_paired(tmp_path / "d", binary255=False)
    ckpt = train_one_step(data, tmp_path / "run", "--mask-encoding", "instances", "--target", "border")
    assert ckpt["model"]["hparams"]["num_classes"] == 3
    assert preprocessing_of(ckpt).class_names == ("background", "interior", "border")


def test_ignore_index_for_unlabelled_pixels(tmp_path):
    data = make_paired(tmp_path / "d")
    for i in range(3):
        m = read_image(data / "masks" / f"img{i}.png")
        m = np.where(m > 0, 1, 0).astype(np.uint8)
        m[:10] = 255  # unlabelled rows
        write_image(data / "masks" / f"img{i}.png", m, overwrite=True)
    report = check_dataset(data, num_classes=2)
    assert not report.ok  # 0/1/255 is ambiguous
    ckpt = train_one_step(
        data, tmp_path / "run", "--mask-encoding", "classes", "--num-classes", "2", "--ignore-index", "255"
    )
    assert ckpt["preprocessing"]["encoding"]["ignore_value"] == 255


@pytest.mark.parametrize("method", ["fixed", "dataset"])
def test_recorded_normalisation(tmp_path, method):
    data = make_paired(tmp_path / "d")
    ckpt = train_one_step(data, tmp_path / "run", "--normalization", method)
    norm = ckpt["preprocessing"]["normalization"]
    assert norm["method"] == method
    if method == "dataset":
        pixels = np.concatenate([nuclei(i)[0].ravel() for i in range(3)]).astype(np.float64)
        assert norm["mean"][0] == pytest.approx(pixels.mean()) and norm["std"][0] == pytest.approx(
            pixels.std()
        )


def test_image_files_unetkit_cannot_read_are_named_not_passed_over(tmp_path, caplog):
    """A folder of a microscope's own files (.czi, .nd2) beside exported TIFFs: the TIFFs are used and the others
    named once, with the fix; with nothing readable, the refusal names them; a notes file says nothing."""
    import logging

    from unetkit.data.layouts import find_images
    from unetkit.errors import DataError
    from unetkit.workflows.predict import collect_inputs

    folder = tmp_path / "mixed"
    write_image(folder / "a.tif", synth_nuclei(64, seed=1)[0])
    for name in ("b.czi", "c.ND2", "notes.txt", ".hidden.czi"):
        (folder / name).write_bytes(b"ZISRAWFILE")
    with caplog.at_level(logging.WARNING, logger="unetkit"):
        assert find_images(folder) == [folder / "a.tif"]
        assert find_images(folder) == [folder / "a.tif"]
    said = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert len(said) == 1 and "(b.czi, c.ND2)" in said[0] and "export them as TIFF" in said[0], said
    assert "notes.txt" not in said[0] and ".hidden" not in said[0]
    only = tmp_path / "only"
    only.mkdir()
    (only / "x.czi").write_bytes(b"ZISRAWFILE")
    with pytest.raises(DataError, match=r"no image files .* \(x\.czi\): export them as TIFF"):
        collect_inputs([only])
    with pytest.raises(DataError, match="export it as TIFF"):
        collect_inputs([only / "x.czi"])


def test_masks_saved_as_jpeg_are_refused_with_the_fix(tmp_path):
    """A binary mask saved as JPEG gains dozens of values along its edges: check-data suggested reading them as
    object labels (each artefact value an object); it is refused, in training and in evaluation alike."""
    from unetkit.errors import DataError
    from unetkit.workflows.pairing import read_array

    data = tmp_path / "data"
    for k in range(2):
        image, labels = synth_nuclei((96, 96), seed=k)
        write_image(data / "images" / f"s{k}.png", image)
        (data / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(((labels > 0) * 255).astype(np.uint8)).save(data / "masks" / f"s{k}.jpg", quality=90)
    assert len(np.unique(np.asarray(Image.open(data / "masks" / "s0.jpg")))) > 10  # what JPEG did to it
    report = check_dataset(data)
    assert len(report.problems) == 2 and all(
        "saved as JPEG" in p and "PNG or TIFF" in p for p in report.problems
    )
    assert not any("--mask-encoding" in p for p in report.problems)
    with pytest.raises(DataError, match="saved as JPEG"):
        read_array(data / "masks" / "s0.jpg")
