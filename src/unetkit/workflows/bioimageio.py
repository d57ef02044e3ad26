"""``unetkit export MODEL --format bioimageio``: a BioImage Model Zoo package (model spec 0.5) that deepImageJ,
ilastik, QuPath, BiaPy and ``bioimageio.core`` run.

The package (a zip with ``rdf.yaml`` at its root) holds:

- the network's weights three ways: the PyTorch state dict with the architecture's source (one generated,
  self-contained file: unetkit's own ``models/blocks.py`` and ``models/unet.py``, nothing else imported), and
  TorchScript and ONNX converted from it (their ``parent``), each verified against PyTorch;
- the input as the spec describes it: axes ``batch, channel, y, x`` whose sizes are ``min + n * step`` (``step``
  = ``2**depth``, the pooling; padded networks), and the preprocessing as the spec's own operations (percentile
  normalisation → ``scale_range`` per image and channel, fixed → ``scale_linear``, mean/std →
  ``fixed_zero_mean_unit_variance``); the output (probabilities: ``sigmoid``/``softmax`` as postprocessing) the
  input's size, with a halo for tiling consumers;
- a test input (a synthetic image) and the output PyTorch gives for it, with the reproducibility tolerance;
- a generated model card (``README.md``: training data, recipe, validation scores, limits), citations (the U-Net
  paper, unetkit), tags and a cover picture (the test image with the predicted objects outlined).

Plain YAML is written here (no ``bioimageio.spec`` needed to export); the tests validate the package with
``bioimageio.core``'s own model test (the ``[bioimageio]`` extra).
"""

from __future__ import annotations

import datetime
import inspect
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from ..atomic import atomic_path
from ..checkpoint import StoredModel, build_model, load_checkpoint, preprocessing_of, resolve_model_path
from ..data.io import read_image
from ..data.synthetic import synth_nuclei
from ..errors import ConfigError, UnetkitError
from ..inference import Predictor
from ..inference.export import write_exported
from ..inference.postprocess import FIXED_SPLIT
from ..inference.writers import temp_root, work_folder
from ..models import blocks as blocks_module
from ..models import instances as instances_module
from ..models import unet as unet_module
from ..models.instances import UNetInstances, instance_labels
from ..safety import guard_file
from ..training.state import SCORES
from ..version import __version__
from ..viz import contour_overlay

__all__ = ["FORMAT_VERSION", "BioimageioPackage", "export_bioimageio"]

#: the bioimage.io model description format written
FORMAT_VERSION = "0.5.4"
#: the size of the test input (a multiple of every step up to depth 6)
TEST_SIZE = 256
#: the cover's largest side (a crop of a validation image)
COVER = 512
#: what consumers may differ by on the test output (float32 on other hardware and runtimes)
TOLERANCE = {"relative_tolerance": 1e-3, "absolute_tolerance": 1e-3, "mismatched_elements_per_million": 100}
#: the instance labels: identical but for pixels whose class flips at a probability tie (none on the test image)
LABELS_TOLERANCE = {
    "relative_tolerance": 0.0,
    "absolute_tolerance": 0.0,
    "mismatched_elements_per_million": 1000,
}
CITATIONS = [
    {
        "text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
        "MICCAI 2015.",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
    {
        "text": f"unetkit {__version__}: U-Net segmentation toolkit",
        "url": "https://github.com/unetkit/unetkit",
    },
]


class BioimageioPackage:
    """What :func:`export_bioimageio` wrote: the zip, its description, and how far each exported weight format
    differs from PyTorch."""

    def __init__(self, path: Path, rdf: dict[str, Any], diffs: dict[str, float]) -> None:
        self.path, self.rdf, self.diffs = path, rdf, diffs

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size


def export_bioimageio(
    model: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | None = None,
    license: str = "MIT",
    instances: bool = True,
    overwrite: bool = False,
) -> BioimageioPackage:
    """Write ``model`` (a checkpoint, a run folder or a built-in name) as a bioimage.io model package ``out``
    (a ``.zip``), atomically. ``authors``: names (default: "unetkit user"); ``license``: an SPDX identifier.
    ``instances``: for a border-target or binary model, a second output with finished instance labels,
    computed inside the exported graph (:mod:`unetkit.models.instances`), so every consumer gets objects.

    Example:
        >>> export_bioimageio("run/best.pt", "model.zip", name="My nuclei", authors=["A. Author"]).bytes
    """
    out = Path(out)
    path = resolve_model_path(model)
    if path.suffix.lower() == ".onnx":
        raise ConfigError(
            f"{path}: export a bioimage.io package from the checkpoint (RUN/best.pt), not from ONNX"
        )
    if out.suffix.lower() != ".zip":
        raise ConfigError(f"--out {out}: a bioimage.io package is a .zip file; name it e.g. model.zip")
    guard_file(out, "--out", protect=[path], overwrite=overwrite)
    if not re.fullmatch(r"[A-Za-z0-9.+-]+", license):
        raise ConfigError(f"--license {license!r}: give an SPDX identifier, e.g. MIT, CC-BY-4.0, Apache-2.0")
    if name is not None and not 5 <= len(name.strip()) <= 128:
        raise ConfigError(f"--name {name!r}: bioimage.io asks for 5 to 128 characters")
    payload = load_checkpoint(path)
    network = build_model(payload, path).eval()
    stored = StoredModel.of(payload, path)
    pre = stored.preprocessing
    if stored.arch != "unet" or stored.spatial_dims != 2:
        raise ConfigError(
            f"{path}: bioimage.io export supports 2-D U-Nets (arch unet); this is {stored.arch}, "
            f"{stored.spatial_dims}-D"
        )
    if pre.input_scale != 1.0:
        raise ConfigError(
            f"{path}: the model resamples its inputs (--input-scale {pre.input_scale:g}), which the bioimage.io "
            "format cannot express; train without --input-scale to export it"
        )
    title = name or stored.pretrained.get("name") or f"unetkit U-Net ({path.parent.name})"
    predictor = Predictor.from_checkpoint(path, precision="float32", tile=TEST_SIZE, device="cpu")
    step = (
        _instance_step(predictor)
        if instances and predictor.instance_method in ("interior", "watershed")
        else None
    )
    if step is not None:
        with_instances = UNetInstances(**stored.hparams, instances=step).eval()
        with_instances.load_state_dict(network.state_dict())
        network = with_instances
    with work_folder(temp_root(), "bioimageio") as tmp:  # TMP/unetkit-UID: swept after a kill
        folder = Path(tmp)
        files, diffs = _weights(network, payload, folder)
        test_in, _, labels = _test_tensors(predictor, payload, folder, step)
        shown = _validation_cover(predictor, payload) or (test_in[0], labels, "a synthetic test image")
        _cover(shown[0], shown[1], folder / "cover.png")
        card = _model_card(title, payload, path, step) + f"\nThe cover shows the model on {shown[2]}.\n"
        (folder / "README.md").write_text(card, encoding="utf-8")
        rdf = _rdf(title, description, authors, license, payload, network, files, step)
        (folder / "rdf.yaml").write_text(
            yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        with atomic_path(out, ".zip") as tmp_zip:
            with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(folder.iterdir()):
                    archive.write(file, file.name)
    return BioimageioPackage(out, rdf, diffs)


def _instance_step(predictor: Predictor) -> dict[str, Any]:
    """The keyword arguments of the in-graph instance step matching ``predictor``'s own."""
    return {
        "method": predictor.instance_method,
        "threshold": float(predictor.threshold),
        # the graph splits every tile alike: the fixed split, not one measured per image
        "min_size": FIXED_SPLIT.min_size if predictor.min_size is None else int(predictor.min_size),
    }


def _weights(network: Any, payload: dict[str, Any], folder: Path) -> tuple[dict[str, str], dict[str, float]]:
    """The state dict (float32) and its architecture file, TorchScript and ONNX (each verified: the largest
    probability difference from PyTorch, and with instances the share of pixels labelled differently)."""
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in network.state_dict().items()},
               folder / "weights.pt")  # fmt: skip
    (folder / "unetkit_unet.py").write_text(architecture_source(), encoding="utf-8")
    diffs: dict[str, float] = {}
    for fmt, file in (("torchscript", "weights.torchscript.pt"), ("onnx", "weights.onnx")):
        result = write_exported(network, payload, folder / file, fmt, valid_ok=True)
        diffs[fmt] = result.max_abs_diff
        if hasattr(network, "forward_multiples"):
            diffs[f"{fmt} labels"] = result.labels_mismatch
    return {
        "state_dict": "weights.pt",
        "torchscript": "weights.torchscript.pt",
        "onnx": "weights.onnx",
    }, diffs


def architecture_source() -> str:
    """One self-contained Python file defining ``UNet`` exactly as unetkit does (its blocks and U-Net modules,
    their relative imports removed and the model registry replaced by a no-op), so a consumer can rebuild the
    network from the state dict without unetkit."""
    parts = []
    for module in (blocks_module, unet_module, instances_module):
        text = inspect.getsource(module)
        text = re.sub(r"^from __future__ import annotations\n", "", text, flags=re.M)
        text = re.sub(r"^from \.[\w.]* import [^\n(]*(\([^)]*\))?\n", "", text, flags=re.M)
        parts.append(f"# ---- from unetkit {__version__}: {module.__name__} ----\n{text}")
    head = (
        '"""The U-Net of unetkit (https://github.com/unetkit/unetkit), generated for a bioimage.io package: '
        'build it with\n``UNet(**kwargs)`` or ``UNetInstances(**kwargs)`` (the kwargs in rdf.yaml) and load ``weights.pt``."""\n\n'
        "from __future__ import annotations\n\n\n"
        "def register_model(name, *args, **kwargs):\n    return lambda cls: cls\n\n\n"
    )
    return head + "\n\n".join(parts)


def _test_tensors(
    predictor: Predictor, payload: dict[str, Any], folder: Path, step: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic nuclei image as the test input (its grey values in every channel) and the outputs PyTorch
    gives for it after the package's preprocessing and postprocessing (probabilities; with ``step``, the
    in-graph instance labels); also unetkit's own objects, for the cover."""
    channels = preprocessing_of(payload).in_channels
    image = synth_nuclei(TEST_SIZE, seed=2024)[0].astype(np.float32)
    net: Any = predictor.model
    if net.padding == "valid":  # a valid size; the output is the network's on it: smaller by the margins
        size = net.geometry.fit(TEST_SIZE)
        image = image[:size, :size]
    raw = np.repeat(image[None], channels, axis=0)  # (C, H, W)
    pixels = np.moveaxis(raw, 0, -1) if channels > 1 else raw[0]
    with torch.no_grad():  # one pass of the network on the whole input, as the zoo's test runs the weights
        # (not unetkit's tiling: it mirrors context around the image, which a consumer of the weights does not)
        x = torch.from_numpy(predictor.prepare(pixels))[None]
        probs = predictor.executor.activate(net._forward(x))[0].numpy()
    np.save(folder / "test_input.npy", raw[None])
    np.save(folder / "test_output.npy", probs[None].astype(np.float32))
    if step is not None:
        p = torch.from_numpy(probs[None]).double().clamp(1e-12, 1 - 1e-12)
        logits = torch.logit(p) if p.shape[1] == 1 else torch.log(p)
        np.save(folder / "test_instances.npy", instance_labels(logits, **step).numpy())
    labels = predictor.instances(predictor.to_labels(probs))
    return raw, probs, labels


def _validation_cover(
    predictor: Predictor, payload: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The model on one of its run's validation images (a crop of at most COVER pixels a side, as it
    predicts it): ``(picture, labels, what)``; None when the checkpoint records none or they are gone."""
    for entry in StoredModel.of(payload).training.get("validation") or []:
        file = Path(str(entry.get("image", "")))
        if not file.is_file():
            continue
        try:
            image = read_image(file, entry.get("page"))
        except UnetkitError:
            continue
        rows = entry.get("rows") or [0, image.shape[0]]
        image = image[rows[0] : rows[1]]
        y0, x0 = max(0, (image.shape[0] - COVER) // 2), max(0, (image.shape[1] - COVER) // 2)
        crop = np.ascontiguousarray(image[y0 : y0 + COVER, x0 : x0 + COVER])
        classes = predictor.predict(crop, file)
        labels = classes if predictor.instance_method == "components" else predictor.instances(classes)
        return crop, labels, f"a validation image of its run ({file.name})"
    return None


def _cover(image: np.ndarray, labels: np.ndarray, dest: Path) -> None:
    """The image (``(H, W[, C])``; :func:`contour_overlay` stretches it to its 1-99.8 percentiles), objects
    outlined."""
    Image.fromarray(contour_overlay(image, labels)).save(dest)


def _preprocessing(payload: dict[str, Any]) -> list[dict[str, Any]]:
    norm = preprocessing_of(payload).normalization or {}
    method = norm.get("method")
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if method == "percentile":
        steps.append(
            {
                "id": "scale_range",
                "kwargs": {
                    "axes": ["y", "x"],
                    "min_percentile": float(norm["low"]),
                    "max_percentile": float(norm["high"]),
                },
            }
        )
    elif method == "fixed":
        steps.append({"id": "scale_linear", "kwargs": {"gain": 1.0 / float(norm["scale"]), "offset": 0.0}})
    elif method in ("dataset",) and norm.get("mean") is not None:
        mean, std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
        kwargs: dict[str, Any] = {"mean": mean[0], "std": std[0]} if len(mean) == 1 else {
            "mean": mean, "std": std, "axis": "channel"}  # fmt: skip
        steps.append({"id": "fixed_zero_mean_unit_variance", "kwargs": kwargs})
    elif method == "minmax":
        steps.append(
            {
                "id": "scale_range",
                "kwargs": {"axes": ["y", "x"], "min_percentile": 0.0, "max_percentile": 100.0},
            }
        )
    elif method == "zscore":
        steps.append({"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}})
    elif method != "none":
        raise ConfigError(f"normalisation {method!r} has no bioimage.io equivalent; export is not possible")
    return steps


def _rdf(
    title: str,
    description: str | None,
    authors: list[str] | None,
    license: str,
    payload: dict[str, Any],
    network: Any,
    files: dict[str, str],
    instances: dict[str, Any] | None = None,
) -> dict[str, Any]:
    stored = StoredModel.of(payload)
    hp, pre = stored.hparams, stored.preprocessing
    step = int(network.size_multiples[0])
    classes = list(pre.class_names or [])
    out_names = (
        ["foreground"]
        if int(hp["num_classes"]) == 1
        else (classes or [f"class{i}" for i in range(hp["num_classes"])])
    )
    channels = pre.in_channels
    who = [{"name": a} for a in (authors or ["unetkit user"])]
    if (
        network.padding == "valid"
    ):  # the paper's network: sizes 2**depth * k + offset, output smaller by margins
        low, shrink, halo = network.geometry.input_size(1), -2 * network.geometry.margin, 0
    else:
        low, shrink, halo = 4 * step, 0, min(step, 32)
    space = [{"id": axis, "type": "space", "size": {"min": low, "step": step}} for axis in ("y", "x")]
    post = (
        [{"id": "sigmoid"}]
        if int(hp["num_classes"]) == 1
        else [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    )
    training = stored.training
    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": title,
        "description": description
        or f"U-Net segmentation model trained with unetkit {payload.get('unetkit_version', __version__)}: "
        f"{', '.join(out_names)} probabilities from {channels}-channel images"
        + (f" (channel {pre.channel} of multi-channel images, 0-based)." if pre.channel is not None else "."),
        "authors": who,
        "cite": CITATIONS,
        "license": license,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": [
            "unet",
            "unetkit",
            "segmentation",
            "2d",
            "pytorch",
            "instance-segmentation"
            if (pre.encoding or {}).get("name") == "instances"
            else "semantic-segmentation",
        ],
        "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "inputs": [
            {
                "id": "raw",
                "description": "raw image, channels first"
                + (
                    f": channel {pre.channel} (0-based) of images with several, the one it was trained on"
                    if pre.channel is not None
                    else ""
                ),
                "axes": [
                    {"type": "batch"},
                    {
                        "type": "channel",
                        "channel_names": [f"channel{i}" for i in range(channels)]
                        if pre.channel is None
                        else [f"channel{pre.channel}"],  # the stored channel it reads
                    },
                    *space,
                ],
                "test_tensor": {"source": "test_input.npy"},
                "preprocessing": _preprocessing(payload),
            }
        ],
        "outputs": [
            {
                "id": "probabilities",
                "description": "per-pixel class probabilities",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": out_names},
                    *[
                        {
                            "id": axis,
                            "type": "space",
                            **({"halo": halo} if halo else {}),  # the spec's halo is at least 1 when given
                            "size": {"tensor_id": "raw", "axis_id": axis, "offset": shrink},
                        }
                        for axis in ("y", "x")
                    ],
                ],
                "test_tensor": {"source": "test_output.npy"},
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "postprocessing": post,
            },
            *_instances_output(halo, shrink, instances),
        ],
        "weights": {
            "pytorch_state_dict": {
                "source": files["state_dict"],
                "architecture": {
                    "source": "unetkit_unet.py",
                    "callable": "UNetInstances" if instances else "UNet",
                    "kwargs": {**hp, "instances": instances} if instances else hp,
                },
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "torchscript": {
                "source": files["torchscript"],
                "parent": "pytorch_state_dict",
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "onnx": {"source": files["onnx"], "parent": "pytorch_state_dict", "opset_version": 18},
        },
        "config": {
            "bioimageio": {
                "reproducibility_tolerance": [
                    {**TOLERANCE, "output_ids": ["probabilities"]},
                    *([{**LABELS_TOLERANCE, "output_ids": ["instances"]}] if instances else []),
                ]
            },
            "unetkit": {
                "version": __version__,
                "preprocessing": json.loads(json.dumps(payload["preprocessing"], default=str)),  # as stored
                "best_score": training.get("best_score"),
                "instances": instances,
            },
        },
    }


def _instances_output(halo: int, shrink: int, instances: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not instances:
        return []
    return [
        {
            "id": "instances",
            "description": "instance labels, 0 background, computed in the graph: exact per tile (see README)",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": ["instances"]},
                *[
                    {
                        "id": axis,
                        "type": "space",
                        **({"halo": halo} if halo else {}),
                        "size": {"tensor_id": "raw", "axis_id": axis, "offset": shrink},
                    }
                    for axis in ("y", "x")
                ],
            ],
            "test_tensor": {"source": "test_instances.npy"},
            "data": {"type": "int32"},
        }
    ]


def _model_card(
    title: str, payload: dict[str, Any], path: Path, instances: dict[str, Any] | None = None
) -> str:
    stored = StoredModel.of(payload, path)
    training, config, pre, pretrained = (
        stored.training,
        stored.config,
        stored.preprocessing,
        stored.pretrained,
    )
    lines = [
        f"# {title}",
        "",
        f"A U-Net trained with unetkit {stored.version or __version__} and exported from `{path.name}`.",
        "",
        "## Data and recipe",
        "",
    ]
    if pretrained:
        lines.append(f"unetkit's built-in model `{pretrained.get('name')}`, trained on synthetic images only by the "
                     f"recipe `{json.dumps(pretrained.get('recipe', {}).get('data', {}))}` (generator style version "
                     f"{pretrained.get('style_version')}).")  # fmt: skip
    else:
        data = training.get("data") or config.get("data", {}).get("layout") or "a user's dataset"
        lines.append(f"Trained on {data}.")
    if config:
        lines += ["", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```"]
    lines += [
        "",
        "## Input and output",
        "",
        f"- input: {pre.in_channels} channel(s), normalised as `{json.dumps(pre.normalization)}`"
        + (
            f"; of images with several channels it reads channel {pre.channel} (0-based; trained with "
            f"`--channel {pre.channel}`): give it that channel alone"
            if pre.channel is not None
            else ""
        ),
        f"- output `probabilities`: probabilities of {', '.join(pre.class_names or ['foreground'])}",
        *(
            [
                "- output `instances`: instance labels computed inside the graph (int32; a distance-transform "
                f"watershed in tensor operations with {json.dumps(instances)}); every consumer that runs the "
                "TorchScript or ONNX weights gets them. Exact per tile: consumers that tile a large image get "
                "objects cut at tile edges; run large images whole, or with `unetkit predict model.zip`",
            ]
            if instances
            else []
        ),
        f"- objects it learnt: about {pre.object_diameter or 'unknown'} px across (median diameter)",
        "",
        "## Scores",
        "",
        f"Best {SCORES.get(str(training.get('selected_by', 'val_dice')), 'validation score')}: "
        f"{training.get('selected_score', training.get('best_score', training.get('val_dice', 'not recorded')))}.",
        "",
        "## Limits",
        "",
        "Check the model on a few annotated images of your own before trusting it; images far from its training "
        "data (other stains, optics, object sizes) need fine-tuning (`unetkit train DATA --init MODEL`).",
        "",
    ]
    return "\n".join(lines)
