"""One self-describing checkpoint file: weights plus everything needed to rebuild model and preprocessing.

Written atomically (temporary file, fsync, rename), read with ``torch.load(weights_only=True)``: only
tensors and plain containers are ever unpickled, never arbitrary objects.
"""

from __future__ import annotations

import errno
import pickle
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .data.masks import MaskEncoding
from .errors import CheckpointError
from .models import create_model
from .pretrained import PREFIX, get_pretrained, list_pretrained, pretrained_path
from .version import __version__

__all__ = [
    "FORMAT",
    "Preprocessing",
    "StoredModel",
    "build_model",
    "load_checkpoint",
    "preprocessing_of",
    "read_model",
    "resolve_model_path",
    "save_checkpoint",
]

FORMAT = "unetkit.checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    preprocessing: dict[str, Any],
    training: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically.

    ``model`` must expose ``hparams`` (its constructor arguments). ``preprocessing`` holds in_channels,
    normalisation, mask encoding and class names; ``training`` the run's settings and scores; ``state``
    optional optimiser/scheduler state for resuming.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "unetkit_version": __version__,
        "model": {"name": model_name, "hparams": dict(model.hparams)},  # type: ignore[arg-type]
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        # the input channels are part of every record (read before the model is built): the network knows them
        "preprocessing": {"in_channels": model.hparams.get("in_channels", 1), **preprocessing},  # type: ignore[union-attr,operator]
        "training": training or {},
        "state": state or {},
    }
    with atomic_path(path, ".tmp") as tmp:
        try:
            torch.save(payload, tmp)
        # torch's zip writer reports a short write (disk full, file limit) as a RuntimeError
        except RuntimeError as exc:
            raise OSError(
                errno.ENOSPC, f"the checkpoint could not be written ({str(exc)[:120]})", str(path)
            ) from None
    return path


def resolve_model_path(model: str | Path) -> Path:
    """MODEL as users give it: a checkpoint or ``.onnx`` file, a run folder (its ``best.pt``, else
    ``last.pt``), or the name of a built-in model (``nuclei``, or ``pretrained:nuclei``), whose file is checked
    against its registered sha256. A bare name that is also a path here is refused as ambiguous (``pretrained:``
    or ``./`` says which). Anything else is refused plainly, before the file is opened."""
    path = Path(model)
    text = str(model)  # a Path("nuclei") names the built-in model as the string does
    name = text if "/" not in text and "\\" not in text else None
    if name is not None and (name.startswith(PREFIX) or not path.exists()):
        if name.startswith(PREFIX) or get_pretrained(name) is not None:
            return pretrained_path(name)
    elif name is not None and get_pretrained(name) is not None:
        kind = "folder" if path.is_dir() else "file"
        holds = "holds a model" if _holds_model(path) else "holds no model"
        raise CheckpointError(
            f"{model}: both a built-in model and a {kind} here (which {holds}): write {PREFIX}{name} for the "
            f"built-in model, or ./{name} for the {kind}"
        )
    if path.is_dir() and any((path / n).is_file() for n in ("rdf.yaml", "bioimageio.yaml")):
        return path  # a bioimage.io package, unpacked
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path}: a folder without best.pt or last.pt; MODEL is a run folder of `unetkit train`, a checkpoint "
            "(RUN/best.pt) or an exported .onnx file"
        )
    if not path.exists():
        base = text.partition("@")[0]
        if name is not None and "@" in name and get_pretrained(base) is not None:  # nuclei@7
            raise CheckpointError(
                f"{name}: no such version of the built-in model {base} (built in: "
                f"{', '.join(m.name for m in list_pretrained())}; `unetkit models`)"
            )
        raise CheckpointError(f"{path}: no such model file or run folder (a training run writes RUN/best.pt)")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if path.suffix.lower() != ".onnx" and head[:2] != b"PK" and head[:1] != b"\x80":
        raise CheckpointError(
            f"{path}: not a model: MODEL is a checkpoint written by `unetkit train` (RUN/best.pt), its run folder, "
            "or a .onnx file from `unetkit export`"
        )
    return path


def _holds_model(path: Path) -> bool:
    if path.is_dir():
        return any((path / name).is_file() for name in ("best.pt", "last.pt"))
    return path.is_file() and path.suffix.lower() in (".pt", ".pth", ".onnx")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a unetkit checkpoint; raise :class:`CheckpointError` with the reason otherwise."""
    path = resolve_model_path(path)
    _check_records(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refusing to load: it holds Python objects other than tensors and plain data, so it is "
            f"not a unetkit checkpoint and loading it could run arbitrary code ({str(exc).splitlines()[0]})"
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint: the file is damaged or truncated, or not a PyTorch file "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); use another checkpoint, "
            "e.g. RUN/last.pt"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path}: not a unetkit checkpoint (found {keys}); train with `unetkit train` to make one"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by unetkit {payload.get('unetkit_version')} in checkpoint format "
            f"{payload['format_version']}; this unetkit ({__version__}) reads format {FORMAT_VERSION}: upgrade unetkit"
        )
    for key in ("model", "state_dict", "preprocessing"):
        if key not in payload:
            raise CheckpointError(f"{path}: damaged unetkit checkpoint: the '{key}' entry is missing")
    check_metadata(payload, path)
    return payload


#: the fields of a checkpoint's preprocessing record, typed: (types, what a reader is told they should be)
_PRE_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "in_channels": (int, "an integer"),
    "num_classes": (int, "an integer"),
    "normalization": (dict, "a table"),
    "encoding": (dict, "a table"),
    "input_scale": ((int, float), "a number"),
    "object_diameter": ((int, float), "a number"),
    "object_diameter_range": ((list, tuple), "a list"),
    "class_names": ((list, tuple), "a list"),
    "dataset": (dict, "a table"),
    "channel": (int, "an integer"),
    "background": ((int, float), "a number"),
}


@dataclass(frozen=True)
class Preprocessing:
    """What surrounds a model's network (a checkpoint's ``preprocessing`` record; an ONNX file's metadata; a
    bioimage.io package's description), read and checked in one place (:meth:`from_dict`): the input
    channels, how images are normalised (:class:`~unetkit.data.normalize.Normalizer`'s record), how the
    training masks were encoded (predicted classes are written back in it; the class names are stored there,
    once), the resampling trained at (``--input-scale``), the object sizes learnt (median, or the range a
    built-in model segments well), and how the dataset's files were found (``dataset``: the description's
    :data:`~unetkit.config.FINDING_KEYS`; files before stored the whole description). Keys a newer unetkit wrote are kept
    (``extra``) and written back."""

    in_channels: int
    num_classes: int | None = None
    normalization: dict[str, Any] | None = None
    encoding: dict[str, Any] | None = None
    class_names: tuple[str, ...] | None = None
    input_scale: float = 1.0
    object_diameter: float | None = None
    object_diameter_range: tuple[float, float] | None = None
    dataset: dict[str, Any] | None = None
    #: the stored channel of multi-channel images the model reads (trained with ``--channel``; None: all)
    channel: int | None = None
    #: where its training images' backgrounds lie, 0 (dark: fluorescence) to 1 (bright: bright-field): the median
    #: image's :func:`~unetkit.data.normalize.background_position`; None: not recorded
    background: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any, source: str | Path = "model") -> Preprocessing:
        """The record ``raw`` (a mapping) checked field by field: a damaged or tampered one is refused in one
        line naming the field (:class:`CheckpointError`), never met later as a KeyError."""
        if isinstance(raw, Preprocessing):
            return raw
        if not isinstance(raw, dict):
            raise _damaged(source, "preprocessing", raw, "a table")
        if "in_channels" not in raw:
            raise CheckpointError(
                f"{source}: damaged unetkit checkpoint: preprocessing.in_channels is missing"
            )
        for key, (types, wanted) in _PRE_TYPES.items():
            value = raw.get(key)
            if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise _damaged(source, f"preprocessing.{key}", value, wanted)
        norm = raw.get("normalization")
        if norm is not None and not isinstance(norm.get("method"), str):
            raise _damaged(source, "preprocessing.normalization.method", norm.get("method"), "a method name")
        if raw.get("background") is not None and not 0 <= raw["background"] <= 1:
            raise _damaged(source, "preprocessing.background", raw["background"], "a number from 0 to 1")
        sizes = raw.get("object_diameter_range")
        if sizes is not None and (len(sizes) != 2 or not all(isinstance(v, int | float) for v in sizes)):
            raise _damaged(source, "preprocessing.object_diameter_range", sizes, "two numbers")
        names = raw.get("class_names")
        encoding = raw.get("encoding") or None
        if names is None and encoding is not None:  # stored once, in the encoding (files before: both)
            names = encoding.get("class_names")
            if names is not None and not isinstance(names, (list, tuple)):
                raise _damaged(source, "preprocessing.encoding.class_names", names, "a list")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            in_channels=int(raw["in_channels"]),
            num_classes=raw.get("num_classes"),
            normalization=raw.get("normalization"),
            encoding=encoding,
            class_names=tuple(map(str, names)) if names is not None else None,
            input_scale=float(raw.get("input_scale") or 1.0),
            object_diameter=float(raw["object_diameter"]) if raw.get("object_diameter") is not None else None,
            object_diameter_range=(float(sizes[0]), float(sizes[1])) if sizes is not None else None,
            dataset=raw.get("dataset"),
            channel=raw.get("channel"),
            background=float(raw["background"]) if raw.get("background") is not None else None,
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as files store it (plain types: checkpoints, ONNX metadata, bioimage.io configs)."""
        out: dict[str, Any] = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "normalization": self.normalization,
            "encoding": self.encoding,
            "input_scale": self.input_scale,
            "object_diameter": self.object_diameter,
            "dataset": self.dataset,
        }
        if self.object_diameter_range is not None:
            out["object_diameter_range"] = list(self.object_diameter_range)
        if self.channel is not None:
            out["channel"] = self.channel
        if self.background is not None:
            out["background"] = self.background
        names = list(self.class_names) if self.class_names is not None else None
        if names != (self.encoding or {}).get("class_names"):  # not stored twice when the encoding holds them
            out["class_names"] = names
        return {**out, **self.extra}

    @property
    def mask_encoding(self) -> MaskEncoding:
        """The training masks' encoding (binary when the record has none)."""
        return MaskEncoding.from_dict(self.encoding or {"name": "binary"})


def _damaged(source: str | Path, field: str, found: Any, wanted: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: damaged unetkit checkpoint: {field} is {type(found).__name__} {str(found)[:40]!r}, not "
        f"{wanted}; use the checkpoint as training wrote it"
    )


def preprocessing_of(payload: dict[str, Any], source: str | Path = "checkpoint") -> Preprocessing:
    """A loaded checkpoint's preprocessing record, typed (:class:`Preprocessing`)."""
    return Preprocessing.from_dict(payload.get("preprocessing"), source)


@dataclass(frozen=True)
class StoredModel:
    """A loaded checkpoint's records, typed (its weights stay in the payload): the architecture and its
    constructor arguments, the :class:`Preprocessing`, the training record (data, scores, epoch), the run's
    configuration (``{}`` for none), the built-in model's card (``{}`` for a run's model), the loop state a resume
    continues from, and the unetkit version that wrote it."""

    arch: str
    hparams: dict[str, Any]
    preprocessing: Preprocessing
    training: dict[str, Any]
    config: dict[str, Any]
    pretrained: dict[str, Any]
    state: dict[str, Any]
    version: str | None

    @classmethod
    def of(cls, payload: dict[str, Any], source: str | Path = "checkpoint") -> StoredModel:
        """The records of a payload :func:`load_checkpoint` returned (it checked their types)."""
        spec = payload["model"]
        training = payload.get("training") or {}
        config = training.get("config") or {}
        return cls(
            arch=str(spec["name"]),
            hparams=dict(spec["hparams"]),
            preprocessing=preprocessing_of(payload, source),
            training=training if isinstance(training, dict) else {},
            config=config if isinstance(config, dict) else {},
            pretrained=payload.get("pretrained") or {},
            state=payload.get("state") or {},
            version=payload.get("unetkit_version"),
        )

    @property
    def num_classes(self) -> int:
        """The network's output channels."""
        return int(self.hparams.get("num_classes") or 1)

    @property
    def spatial_dims(self) -> int:
        """2 or 3: the image dimensions the network segments."""
        return 3 if self.hparams.get("spatial_dims") == 3 else 2


def read_model(path: str | Path) -> StoredModel:
    """The checkpoint at ``path`` (a file, run folder or built-in name), loaded, checked and typed."""
    return StoredModel.of(load_checkpoint(path), path)


def check_metadata(payload: dict[str, Any], path: str | Path) -> None:
    """Every metadata field a checkpoint is read by has its type, and its stored mask encoding fits its head:
    a tampered or damaged record is refused in one line naming the field, not met later as a KeyError."""

    spec = payload["model"]
    if not isinstance(spec, dict):
        raise _damaged(path, "model", spec, "a table")
    if not isinstance(spec.get("name"), str):
        raise _damaged(path, "model.name", spec.get("name"), "a model name")
    if not isinstance(spec.get("hparams"), dict):
        raise _damaged(path, "model.hparams", spec.get("hparams"), "a table")
    if not isinstance(payload["state_dict"], dict):
        raise _damaged(path, "state_dict", payload["state_dict"], "a table of tensors")
    pre = preprocessing_of(payload, path)  # every field typed, or refused naming it
    if pre.encoding:
        try:
            encoding = pre.mask_encoding
            classes = encoding.num_classes
        except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise CheckpointError(
                f"{path}: damaged unetkit checkpoint: preprocessing.encoding ({str(exc)[:120]})"
            ) from None
        head = spec["hparams"].get("num_classes")
        if isinstance(head, int) and not (head == classes or (head == 1 and classes == 2)):
            raise CheckpointError(
                f"{path}: its stored mask encoding ({encoding.name}, {classes} classes) does not fit its network's "
                f"{head} output channel(s): the file was altered; use the checkpoint as training wrote it"
            )


#: bounds on a checkpoint's declared sizes, checked before anything is allocated
HPARAM_BOUNDS = {
    "depth": (1, 8),
    "base_channels": (1, 1024),
    "in_channels": (1, 512),
    "num_classes": (1, 254),
}


def _check_records(path: Path) -> None:
    """A PyTorch checkpoint is a zip of stored (uncompressed) records; a record that is compressed or declares
    more bytes than the file holds would inflate before it could be refused (a zip bomb)."""
    if not zipfile.is_zipfile(path):
        return
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise CheckpointError(
                        f"{path}: the record {info.filename[:80]!r} declares {info.file_size} bytes "
                        f"({'compressed' if info.compress_type != zipfile.ZIP_STORED else 'more than the file'}); "
                        "PyTorch stores records as they are: not a checkpoint unetkit wrote"
                    )
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path}: damaged checkpoint ({exc}); use another, e.g. RUN/last.pt") from None


def _check_declared_size(
    spec: dict[str, Any], hparams: dict[str, Any], state: Any, source: str | Path
) -> None:
    """The network the hyper-parameters describe is the one whose weights are stored, counted on PyTorch's
    ``meta`` device (no memory): hyper-parameters inside the bounds can still describe a network of hundreds of
    GiB (depth 8, base 1024), which building would allocate before the weights could disagree."""
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{source}: damaged unetkit checkpoint: the weights are not a table of tensors")
    try:
        with torch.device("meta"):
            meta = create_model(str(spec.get("name")), **hparams)
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{source}: the stored model cannot be rebuilt ({str(exc)[:300]})") from None
    declared = sum(t.numel() for t in meta.state_dict().values())
    stored = sum(t.numel() for t in state.values())
    if declared != stored:
        raise CheckpointError(
            f"{source}: its hyper-parameters describe a network of {declared:,} values (needs "
            f"{declared * 4 / 2**30:.1f} GiB), its weights hold {stored:,}: the file was altered; use the checkpoint "
            "as training wrote it"
        )


def build_model(payload: dict[str, Any], source: str | Path = "checkpoint") -> nn.Module:
    """Rebuild the model stored in a loaded checkpoint, weights included. Declared sizes are checked against
    :data:`HPARAM_BOUNDS` before the model is built, and the weights must be finite."""
    spec = payload["model"]
    hparams = spec.get("hparams") if isinstance(spec, dict) else None
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{source}: damaged unetkit checkpoint: no model hyper-parameters")
    for key, (lo, hi) in HPARAM_BOUNDS.items():
        value = hparams.get(key)
        if value is not None and (not isinstance(value, int) or not lo <= value <= hi):
            raise CheckpointError(
                f"{source}: declares {key}={str(value)[:40]}, outside {lo}..{hi}: damaged or not made by unetkit"
            )
    declared = (payload.get("preprocessing") or {}).get("num_classes")
    if declared is not None and hparams.get("num_classes") is not None and declared != hparams["num_classes"]:
        raise CheckpointError(
            f"{source}: its preprocessing says {declared} output class(es), the network {hparams['num_classes']}: "
            "the file was altered; use the checkpoint as training wrote it"
        )
    _check_declared_size(spec, hparams, payload["state_dict"], source)
    try:
        model = create_model(spec["name"], **hparams)
        model.load_state_dict(payload["state_dict"])
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{source}: the stored model cannot be rebuilt ({str(exc)[:300]})") from None
    bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or infinity (e.g. {bad[0]}): the training diverged; "
            "use an earlier checkpoint (RUN/best.pt) or train again with a lower --lr"
        )
    return model
