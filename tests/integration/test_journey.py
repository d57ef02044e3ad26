"""A newcomer's journey through the real entry point, in every layout x encoding x target:
check-data → plan → train (1 epoch) → predict → evaluate. In each cell the outputs are in the user's encoding,
the truth given as a prediction in every form predict writes scores exactly 1, and perturbed predictions score
below 1 and equal an independent reference computation written here (bincount contingency, IoU > t)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import yaml
import zarr

from unetkit import DataConfig, evaluate, read_image, synth_nuclei, write_image
from unetkit.cli.main import main
from unetkit.data.layouts import load_layout, read_sample_mask
from unetkit.data.synthetic import SynthParams, touching_pairs

CLASS_VALUES = (0, 50, 100)
COLOURS = ((0, 0, 0), (255, 0, 0), (0, 200, 0))
TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--batch", "2", "--patch", "32", "--base-channels", "2",
        "--depth", "1", "--device", "cpu", "--no-progress"]  # fmt: skip

CELLS = [
    *[(layout, enc) for layout in ("paired", "flat", "list") for enc in ("binary", "classes", "rgb", "instances", "border")],
    ("dsb", "instances"),
    ("dsb", "border"),
    ("ctc", "instances"),
    ("ctc", "border"),
    ("isbi", "binary"),
]  # fmt: skip


DENSE = SynthParams(radius=(4.0, 7.0), nuclei_per_mpx=2500, clusters_per_mpx=1200)  # touching nuclei


def samples(n=3, shape=(48, 56)):
    out = []
    for i in range(n):
        image, labels = synth_nuclei(shape, i + 11, DENSE)
        out.append((image, labels.astype(np.uint16)))
    return out


def encode(labels: np.ndarray, enc: str) -> np.ndarray:
    """Instance labels → a mask in the user's encoding (classes: odd objects 50, even 100)."""
    if enc == "binary":
        return ((labels > 0) * 255).astype(np.uint8)
    if enc in ("instances", "border"):
        return labels
    cls = np.where(labels == 0, 0, np.where(labels % 2 == 1, 1, 2))
    if enc == "classes":
        return np.asarray(CLASS_VALUES, np.uint8)[cls]
    return np.asarray(COLOURS, np.uint8)[cls]


def reading_flags(enc: str, root) -> list[str]:
    if enc == "classes":
        path = root / "classes.yaml"
        path.write_text(yaml.safe_dump({0: "background", 50: "odd", 100: "even"}))
        return ["--class-map", str(path)]
    if enc == "rgb":
        path = root / "colours.yaml"
        names = ("background", "odd", "even")
        path.write_text(
            yaml.safe_dump([{"name": n, "color": list(c)} for n, c in zip(names, COLOURS, strict=True)])
        )
        return ["--class-map", str(path)]
    if enc in ("instances", "border"):
        return ["--mask-encoding", "instances"]
    return []


def build(layout: str, enc: str, root) -> object:
    """The dataset in ``layout``; returns the DATA argument (a folder, or the list file)."""
    data = root / "data"
    items = samples()
    if layout == "paired":
        for i, (im, lab) in enumerate(items):
            write_image(data / "images" / f"img{i}.png", im)
            write_image(data / "masks" / f"img{i}.png", encode(lab, enc))
    elif layout == "flat":
        for i, (im, lab) in enumerate(items):
            write_image(data / f"img{i}.png", im)
            write_image(data / f"img{i}_mask.png", encode(lab, enc))
    elif layout == "list":
        rows = []
        for i, (im, lab) in enumerate(items):
            write_image(data / "files" / f"im{i}.png", im)
            write_image(data / "files" / f"gt{i}.png", encode(lab, enc))
            rows.append({"image": f"files/im{i}.png", "mask": f"files/gt{i}.png"})
        with open(data / "list.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, ["image", "mask"])
            w.writeheader()
            w.writerows(rows)
        return data / "list.csv"
    elif layout == "dsb":
        for i, (im, lab) in enumerate(items):
            sid = f"s{i:03d}"
            write_image(data / sid / "images" / f"{sid}.png", np.dstack([im, im, im]))
            for k in range(1, int(lab.max()) + 1):
                write_image(data / sid / "masks" / f"o{k:03d}.png", ((lab == k) * 255).astype(np.uint8))
    elif layout == "ctc":
        (data / "01").mkdir(parents=True)
        (data / "01_GT" / "SEG").mkdir(parents=True)
        for i, (im, lab) in enumerate(items):
            tifffile.imwrite(data / "01" / f"t{i:03d}.tif", im.astype(np.uint16) * 10)
            tifffile.imwrite(data / "01_GT" / "SEG" / f"man_seg{i:03d}.tif", lab)
    else:  # isbi
        data.mkdir(parents=True)
        tifffile.imwrite(
            data / "train-volume.tif", np.stack([im for im, _ in items]), photometric="minisblack"
        )
        tifffile.imwrite(
            data / "train-labels.tif",
            np.stack([encode(lab, "binary") for _, lab in items]),
            photometric="minisblack",
        )
    return data


def checksums(data) -> dict[str, str]:
    import hashlib

    root = data.parent if data.is_file() else data
    return {
        str(p): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith("plan.yaml")
    }


def truth_of(data, enc: str) -> dict[str, np.ndarray]:
    """The stored truth of every sample, read back by the layout (DSB object masks merged)."""
    return {s.name: read_sample_mask(s) for s in load_layout(data).samples}


# -- the independent reference ------------------------------------------------------------------------


def ref_semantic_dice(pred_cls: np.ndarray, true_cls: np.ndarray, k: int) -> float:
    m = np.bincount(true_cls.ravel() * k + pred_cls.ravel(), minlength=k * k).reshape(k, k)
    dices = []
    for c in range(1, k):
        tp, fp, fn = m[c, c], m[:, c].sum() - m[c, c], m[c, :].sum() - m[c, c]
        dices.append(1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(dices))


def ref_instance(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    t, p = t.reshape(truth.shape), p.reshape(pred.shape)
    nt, npr = t.max() + 1, p.max() + 1
    inter = np.bincount((t * npr + p).ravel(), minlength=nt * npr).reshape(nt, npr)[1:, 1:]
    area_t, area_p = np.bincount(t.ravel())[1:], np.bincount(p.ravel())[1:]
    iou = inter / (area_t[:, None] + area_p[None, :] - inter)

    def counts(th):
        tp = int((iou > th).sum())  # one-to-one for th >= 0.5
        return tp, len(area_p) - tp, len(area_t) - tp

    tp, fp, fn = counts(0.5)
    dsb = np.mean([(lambda c: c[0] / sum(c))(counts(th)) for th in np.arange(0.5, 1.0, 0.05)])
    return {
        "f1": 2 * tp / (2 * tp + fp + fn),
        "pq": iou[iou > 0.5].sum() / (tp + fp / 2 + fn / 2),
        "dsb_score": dsb,
    }


def colour_classes(rgb: np.ndarray) -> np.ndarray:
    out = np.full(rgb.shape[:2], -1)
    for i, c in enumerate(COLOURS):
        out[(rgb == c).all(-1)] = i
    assert (out >= 0).all()
    return out


# -- forms of a prediction --------------------------------------------------------------------------------


def write_forms(folder, name, mask, labels, form):
    """``mask`` (user's encoding) and ``labels`` (object IDs or None) as predict writes them in ``form``."""
    if form == "png":
        write_image(folder / f"{name}.png", mask)
        if labels is not None:
            tifffile.imwrite(folder / f"{name}_instances.tif", labels)
    elif form == "tiff":
        tifffile.imwrite(folder / f"{name}.tif", labels if labels is not None else mask)
    else:
        group = zarr.open_group(str(folder / f"{name}.zarr"), mode="w")
        group.create_array("mask", data=mask)
        if labels is not None:
            group.create_array("instances", data=labels)


@pytest.mark.parametrize(("layout", "enc"), CELLS, ids=[f"{a}-{b}" for a, b in CELLS])
def test_journey(tmp_path, layout, enc, capsys):
    data = build(layout, enc, tmp_path)
    before = checksums(data)
    flags = reading_flags(enc, tmp_path)
    instances = enc in ("instances", "border")
    if layout in ("dsb", "ctc", "isbi"):
        flags = []  # the layout says how its masks are read
    assert main(["check-data", str(data), *flags]) == 0
    assert main(["plan", str(data), *flags, "--no-measure", "--device", "cpu", "--no-progress"]) == 0
    plan_file = data.with_name("list.plan.yaml") if layout == "list" else data / "plan.yaml"
    plan = yaml.safe_load(plan_file.read_text())
    want = {"binary": "binary", "classes": "classes", "rgb": "rgb"}.get(enc, "instances")
    assert plan["data"]["mask_encoding"] == want  # the plan stores how the data is read
    run = tmp_path / "run"
    target = ["--target", "border"] if enc == "border" else []
    assert (
        main(["train", str(data), "--out", str(run), *TINY, *target]) == 0
    )  # no reading flags: the plan has them
    capsys.readouterr()

    pred = tmp_path / "pred"
    assert main(["predict", str(run), str(data), "--out", str(pred), "--instances", "--no-progress"]) == 0
    truth = truth_of(data, enc)
    allowed = {
        "binary": {0, 255},
        "instances": {0, 255},
        "border": {0, 255},
        "classes": set(CLASS_VALUES),
    }
    for name in truth:
        stack = layout == "isbi"
        mask = (
            tifffile.imread(pred / "train-volume.tif") if stack else read_image(next(pred.glob(f"{name}.*")))
        )
        if enc == "rgb":
            colours = {tuple(c) for c in mask.reshape(-1, 3).tolist()}
            assert colours <= set(COLOURS), colours
        else:
            assert set(np.unique(mask).tolist()) <= allowed[enc]  # the user's encoding, never 0/1/2
    assert main(["evaluate", str(pred), str(data), *flags]) == 0
    out = capsys.readouterr().out
    assert f"truth read as '{want}'" in out
    report = tmp_path / f"report-{enc}"
    assert (
        main(
            ["evaluate", str(run), str(data), "--out", str(tmp_path / "pred-model"), "--report", str(report)]
        )
        == 0
    )  # as in training
    from unetkit.pretrained import file_sha256

    page = (report / "index.html").read_text()  # provenance: the model that made the predictions, by content
    assert file_sha256(run / "best.pt") in page and str((run / "best.pt").resolve()) in page

    assert checksums(data) == before  # every input byte-identical after the whole journey (plan.yaml aside)

    # the truth itself, in every form predict writes, scores exactly 1
    data_cfg = DataConfig()
    if enc in ("classes", "rgb"):
        from unetkit.data.masks import load_class_map

        values, colours, names = load_class_map(flags[1])
        data_cfg = DataConfig(mask_encoding=enc, class_values=values, class_colors=colours, class_names=names)
    elif instances and layout not in ("dsb", "ctc"):
        data_cfg = DataConfig(mask_encoding="instances")
    forms = ("png", "tiff", "zarr")
    for form in forms:
        folder = tmp_path / f"truth-{form}"
        folder.mkdir()
        if layout == "isbi":
            stack = np.stack(list(truth.values()))
            if form == "png":
                for name, m in truth.items():
                    write_image(folder / f"{name}.png", m)
            elif form == "tiff":
                tifffile.imwrite(folder / "train-volume.tif", stack, photometric="minisblack")
            else:
                zarr.open_group(str(folder / "train-volume.zarr"), mode="w").create_array("mask", data=stack)
        for name, m in truth.items() if layout != "isbi" else ():
            labels = m if instances else None
            mask = encode(m, "binary") if instances and form == "png" else m
            write_forms(folder, name, mask, labels, form)
        ev = evaluate(folder, data, data_config=data_cfg)
        keys = ("dice", "iou", "f1", "pq", "dsb_score") if ev.mode == "instance" else ("dice", "iou")
        assert ev.mode == ("instance" if instances else "semantic")
        for k in keys:
            assert ev.mean[k] == 1.0, (form, k, ev.mean[k])

    # perturbed predictions: below 1, and equal to the reference
    folder = tmp_path / "perturbed"
    folder.mkdir()
    shifted = {}
    for name, m in truth.items():
        s = np.roll(m, 2, axis=-2 if m.ndim == 2 else 0)
        if enc == "classes":  # swap the two classes as well
            s = np.where(s == 50, 100, np.where(s == 100, 50, s)).astype(m.dtype)
        if enc == "rgb":  # swap the two colours as well
            odd, even = (s == COLOURS[1]).all(-1), (s == COLOURS[2]).all(-1)
            s[odd], s[even] = COLOURS[2], COLOURS[1]
        shifted[name] = s
        write_image(folder / f"{name}.png", s)
    ev = evaluate(folder, data, data_config=data_cfg, pred_encoding="instances" if instances else "auto")
    for r in ev.images:
        t, p = truth[r.name], shifted[r.name]
        if instances:
            ref = ref_instance(p, t)
            for k in ("f1", "pq", "dsb_score"):
                assert r.scores[k] == pytest.approx(ref[k], abs=1e-12), (r.name, k)
            assert r.scores["dsb_score"] < 1
        else:
            if enc == "rgb":
                tc, pc, k = colour_classes(t), colour_classes(p), 3
            elif enc == "classes":
                tc, pc, k = np.searchsorted(CLASS_VALUES, t), np.searchsorted(CLASS_VALUES, p), 3
            else:
                tc, pc, k = (t > 0).astype(int), (p > 0).astype(int), 2
            assert r.scores["dice"] == pytest.approx(ref_semantic_dice(pc, tc, k), abs=1e-12)
            assert r.scores["dice"] < 1
    if instances:  # touching objects merged into one label: scored below 1, as the reference says
        merged_dir = tmp_path / "merged"
        merged_dir.mkdir()
        found = False
        for name, m in truth.items():
            pairs = sorted(touching_pairs(m))
            mm = m.copy()
            if pairs:
                mm[mm == pairs[0][1]] = pairs[0][0]
                found = True
            tifffile.imwrite(merged_dir / f"{name}.tif", mm)
        ev = evaluate(merged_dir, data, data_config=data_cfg)
        for r in ev.images:
            t = truth[r.name]
            mm = tifffile.imread(merged_dir / f"{r.name}.tif")
            assert r.scores["f1"] == pytest.approx(ref_instance(mm, t)["f1"], abs=1e-12)
        assert found and ev.mean["f1"] < 1
