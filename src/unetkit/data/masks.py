"""Mask encodings → training targets. Explicit, stored in the checkpoint, applied identically everywhere.

A target is a ``(H, W)`` uint8 array of class indices with :data:`IGNORE` (255) for unlabelled pixels.

Encodings:
- ``binary``: 0 is background, every other value foreground (0/1, 0/255, instance labels).
- ``classes``: integer class values (palette PNGs give their indices). Class ``i`` is the mask value
  ``values[i]`` (default ``i``); any other value is an error, never a guess (``255`` in a 2-class set too).
- ``rgb``: colour masks; class ``i`` is the colour ``colors[i]``; an unknown colour is an error.
- ``instances``: integer instance labels (0 = background). The target is the foreground (``target=
  "foreground"``), or background / interior / border (``target="border"``), the 3-class target used to
  separate touching objects.
``ignore_value``: mask pixels with this raw value are left out of the loss and the metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..config import ENCODINGS, TARGETS, read_yaml
from ..errors import ConfigError, DataError
from .weights import IGNORE, separate_touching, weight_map

__all__ = [
    "ENCODINGS",
    "IGNORE",
    "TARGETS",
    "MaskEncoding",
    "border_target",
    "compact_labels",
    "encode_mask",
    "load_class_map",
    "mask_weights",
    "parse_class_map",
    "suggest_encoding",
]


@dataclass(frozen=True)
class MaskEncoding:
    """How a stored mask becomes a class-index target (see the module docstring)."""

    name: str = "binary"
    values: tuple[int, ...] | None = None  # classes: mask value of each class
    colors: tuple[tuple[int, int, int], ...] | None = None  # rgb: colour of each class
    class_names: tuple[str, ...] | None = None
    target: str = "foreground"  # instances: foreground | border
    ignore_value: int | None = None
    border_gap: int = 0  # instances: background gap cut between touching objects (paper's separation borders)

    def __post_init__(self) -> None:
        if self.name not in ENCODINGS:
            raise ConfigError(f"mask encoding {self.name!r} is unknown; choose one of {', '.join(ENCODINGS)}")
        if self.target not in TARGETS:
            raise ConfigError(f"data.target {self.target!r} is unknown; choose one of {', '.join(TARGETS)}")
        if self.border_gap not in (0, 1, 2):
            raise ConfigError(f"data.border_gap must be 0, 1 or 2, got {self.border_gap}")
        if self.border_gap and self.name != "instances":
            raise ConfigError(
                "data.border_gap separates touching objects: it needs --mask-encoding instances"
            )
        if self.target == "border" and self.name != "instances":
            raise ConfigError("data.target 'border' needs instance masks (--mask-encoding instances)")
        if self.name == "classes" and not self.values:
            raise ConfigError(
                "mask encoding 'classes' needs the number of classes (--num-classes N) or a class map "
                "(--class-map FILE listing each class's mask value)"
            )
        if self.name == "rgb" and not self.colors:
            raise ConfigError(
                "mask encoding 'rgb' needs a colour table: --class-map FILE with a colour per class"
            )
        if self.num_classes > IGNORE - 1:
            raise ConfigError(f"at most {IGNORE - 1} classes are supported, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ConfigError(f"{len(self.class_names)} class names given for {self.num_classes} classes")

    @property
    def num_classes(self) -> int:
        """Classes of the target, background included."""
        if self.name == "classes":
            return len(self.values or ())
        if self.name == "rgb":
            return len(self.colors or ())
        return 3 if self.target == "border" else 2

    @property
    def names(self) -> list[str]:
        if self.class_names:
            return list(self.class_names)
        if self.target == "border":
            return ["background", "interior", "border"]
        if self.name in ("binary", "instances"):
            return ["background", "foreground"]
        return [f"class_{i}" for i in range(self.num_classes)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "values": list(self.values) if self.values else None,
            "colors": [list(c) for c in self.colors] if self.colors else None,
            "class_names": self.names,
            "target": self.target,
            "ignore_value": self.ignore_value,
            "border_gap": self.border_gap,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskEncoding:
        return cls(
            name=d["name"],
            values=tuple(d["values"]) if d.get("values") else None,
            colors=tuple(tuple(c) for c in d["colors"]) if d.get("colors") else None,
            class_names=tuple(d["class_names"]) if d.get("class_names") else None,
            target=d.get("target", "foreground"),
            ignore_value=d.get("ignore_value"),
            border_gap=d.get("border_gap", 0),
        )

    # -- decoding ---------------------------------------------------------------------------------------

    def encode(self, mask: np.ndarray, name: str | Path = "mask") -> np.ndarray:
        """Stored mask → target ``(H, W)`` uint8 (``IGNORE`` where unlabelled). Raises on unexpected content."""
        mask = self.check_mask(np.asarray(mask), name)
        if self.name == "rgb":
            return self._encode_rgb(mask, name)
        ignore = (mask == self.ignore_value) if self.ignore_value is not None else None
        if self.name == "binary":
            target = (mask != 0).astype(np.uint8)
        elif self.name == "instances":
            mask = self.instance_labels(mask, ignore)
            target = border_target(mask) if self.target == "border" else (mask != 0).astype(np.uint8)
        else:
            target = self._encode_classes(mask, ignore, name)
        if ignore is not None:
            target[ignore] = IGNORE
        return target

    def instance_labels(self, mask: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
        """Instance labels as training sees them: ignored pixels cleared, touching objects separated."""
        if ignore is not None:
            mask = np.where(ignore, 0, mask)
        mask = compact_labels(mask)
        return separate_touching(mask, self.border_gap) if self.border_gap else mask

    def weights(
        self, mask: np.ndarray, target: np.ndarray, w0: float, sigma: float, balance: bool = True
    ) -> np.ndarray:
        """The paper's weight map for this mask: class balance, plus the separation term for instances."""
        mask = self.check_mask(np.asarray(mask), "mask")
        if self.name == "instances":
            ignore = (mask == self.ignore_value) if self.ignore_value is not None else None
            labels = self.instance_labels(mask, ignore)
        else:
            labels = np.zeros(target.shape, np.int32)  # no objects: the class-balance term only
        return weight_map(
            labels,
            target,
            self.num_classes,
            w0=w0,
            sigma=sigma,
            balance=balance,
            contacts=self.target == "border",  # no background between touching objects: weigh the contacts
        )

    @property
    def mask_dtype(self) -> np.dtype:
        """The dtype of masks written in this encoding, fixed by the encoding (never by the values one block
        happens to hold): uint16 or uint32 for class values past 255 or 65,535."""
        top = max(self.values) if self.name == "classes" and self.values else 255
        return np.dtype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32)

    def decode(self, labels: np.ndarray) -> np.ndarray:
        """Predicted class indices → a mask in this encoding (the inverse of :meth:`encode`, for writing)."""
        if self.name == "classes" and self.values:
            return np.asarray(self.values, dtype=self.mask_dtype)[labels]
        if self.name == "rgb" and self.colors:
            return np.asarray(self.colors, np.uint8)[labels]
        return labels.astype(np.uint8)

    def check_mask(self, mask: np.ndarray, name: str | Path) -> np.ndarray:
        """A stored mask as this encoding reads it: grey stored as RGB → one channel, float labels → integers;
        colour masks (unless ``rgb``), fractional or negative labels are refused naming ``name``."""
        if self.name == "rgb":
            if mask.ndim != 3 or mask.shape[-1] not in (3, 4):
                raise DataError(
                    f"{name}: expected an RGB colour mask for encoding 'rgb', found shape {mask.shape}"
                )
            return mask[..., :3]
        if mask.ndim == 3:
            if mask.shape[-1] in (3, 4) and all(np.array_equal(mask[..., 0], mask[..., c]) for c in (1, 2)):
                return mask[..., 0]
            raise DataError(
                f"{name}: a colour mask (shape {mask.shape}) cannot be read as '{self.name}'; use "
                "--mask-encoding rgb with a colour table (--class-map), or save single-channel label images"
            )
        if np.issubdtype(mask.dtype, np.floating):
            if not np.isfinite(mask).all() or not np.array_equal(mask, np.round(mask)):
                raise DataError(f"{name}: mask holds non-integer values; masks must hold integer labels")
            mask = mask.astype(np.int64)
        if self.name != "binary" and mask.min(initial=0) < 0:
            raise DataError(f"{name}: mask holds negative values (min {mask.min()}); labels must be >= 0")
        return mask

    def _encode_classes(self, mask: np.ndarray, ignore: np.ndarray | None, name: str | Path) -> np.ndarray:
        values = self.values or ()
        found = np.unique(mask if ignore is None else mask[~ignore])
        unknown = sorted(set(found.tolist()) - set(values))
        if unknown:
            hint = ""
            if set(found.tolist()) <= {0, 255} and 255 in unknown:
                hint = " (0/255 looks like a binary mask: use --mask-encoding binary)"
            elif len(values) == 2 and 255 in unknown:
                hint = " (255 often marks unlabelled pixels: --ignore-index 255)"
            raise DataError(
                f"{name}: mask value(s) {unknown[:8]} are outside the class map {list(values)}{hint}; fix the mask, "
                "or list every value in --class-map / raise --num-classes"
            )
        lut = np.full(int(max(found.max(initial=0), max(values))) + 1, IGNORE, np.uint8)
        lut[list(values)] = np.arange(len(values), dtype=np.uint8)
        return lut[np.where(ignore, 0, mask) if ignore is not None else mask]

    def _encode_rgb(self, mask: np.ndarray, name: str | Path) -> np.ndarray:
        packed = (mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) | mask[..., 2]
        keys = np.array([(r << 16) | (g << 8) | b for r, g, b in self.colors or ()], np.int64)
        colours, inverse = np.unique(packed, return_inverse=True)
        index = {int(k): i for i, k in enumerate(keys)}
        unknown = [int(c) for c in colours if int(c) not in index]
        if unknown:
            shown = [f"#{c:06x}" for c in unknown[:6]]
            raise DataError(
                f"{name}: colour(s) {shown} are not in the colour table "
                f"{[f'#{int(k):06x}' for k in keys]}; add them to --class-map or fix the mask"
            )
        return np.array([index[int(c)] for c in colours], np.uint8)[inverse.reshape(packed.shape)]


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Instance labels renumbered 1..N (in the order of their values) when the values are large (e.g. near 2^32),
    so that every array sized by the largest label (bincount, find_objects) is sized by the number of objects.
    Labels below 65536 are returned as they are."""
    labels = np.asarray(labels)
    if labels.size == 0 or int(labels.max()) < 65536:
        return labels
    values, inverse = np.unique(labels, return_inverse=True)
    if values[0] != 0:  # no background pixel: object numbers start at 1
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int64)


def border_target(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Instance labels → 0 background, 1 interior, 2 border (the object's outermost ``width`` pixels,
    including every pixel that touches another object). Touching objects are thereby separated by border."""
    footprint = ndi.generate_binary_structure(2, 1)
    hi = ndi.grey_dilation(labels, footprint=footprint, mode="nearest")
    lo = ndi.grey_erosion(labels, footprint=footprint, mode="nearest")
    edge = (hi != lo) & (labels > 0)
    if width > 1:
        edge = ndi.binary_dilation(edge, footprint, iterations=width - 1) & (labels > 0)
    target = (labels > 0).astype(np.uint8)
    target[edge] = 2
    return target


def instance_evidence(
    mask_names: list[str], target: str = "foreground", given: str | None = None
) -> str | None:
    """Evidence that masks whose values could be classes or object labels hold object labels, or None: the user's
    own words elsewhere (``given``: ``--mode instance``, a starting model trained on instance masks),
    ``--target border`` (separating touching objects needs object labels), or a naming convention that means
    labels (every mask named ``NAME_cp_masks``, as Cellpose writes them). Used only where the masks alone are
    ambiguous; never to overrule a flag, ``dataset.yaml`` or masks that can only be binary."""
    if given:
        return given
    if target == "border":
        return "--target border (separating touching objects needs object labels)"
    if mask_names and all(Path(n).stem.endswith("_cp_masks") for n in mask_names):
        return "the masks are named NAME_cp_masks (Cellpose writes object labels)"
    return None


def suggest_encoding(values: set[int], rgb: bool, max_value: int) -> str:
    """A suggestion (never applied silently) of the encoding that fits a set of mask values."""
    if rgb:
        return "rgb (with a colour table in --class-map)"
    nonzero = values - {0}
    if len(nonzero) <= 1:
        return "binary"
    if max_value > 255 or len(nonzero) > 20:
        return "instances"
    return f"classes (--num-classes {max(values) + 1}) if the values are classes, or instances if they label objects"


def parse_color(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value.strip()):
        h = value.strip().lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and 0 <= v < 256 for v in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise ConfigError(f"{where}: colour {value!r} is not '#rrggbb' or [r, g, b]")


MAX_MASK_VALUE = 65535  # 16-bit masks: the largest value a PNG or uint16 TIFF mask holds


def _check_values(values: list[int], where: str) -> None:
    bad = [v for v in values if not 0 <= v <= MAX_MASK_VALUE]
    if bad:
        raise ConfigError(
            f"{where}: mask value(s) {bad[:5]} are outside 0..{MAX_MASK_VALUE}; masks hold these values only"
        )


def parse_class_map(raw: Any, where: str) -> tuple[list[int] | None, list[list[int]] | None, list[str]]:
    """A class map → ``(values, colors, names)``; class ``i`` is the ``i``-th entry.

    Accepted forms (YAML or JSON):
    ``{0: background, 1: nucleus}`` (mask value → name);
    ``[{name: background, value: 0}, {name: nucleus, value: 128}]`` (classes);
    ``[{name: background, color: "#000000"}, {name: tumour, color: [255, 0, 0]}]`` (rgb).
    """
    if isinstance(raw, dict):
        try:
            items = sorted((int(k), str(v)) for k, v in raw.items())
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: a mapping class map needs integer mask values as keys, got {raw!r}"
            ) from None
        _check_values([k for k, _ in items], where)
        return [k for k, _ in items], None, [v for _, v in items]
    if not isinstance(raw, list) or not raw or not all(isinstance(e, dict) and "name" in e for e in raw):
        raise ConfigError(
            f"{where}: expected a mapping {{value: name}} or a list of {{name, value|color}} entries"
        )
    names = [str(e["name"]) for e in raw]
    if all("color" in e for e in raw):
        colors = [list(parse_color(e["color"], where)) for e in raw]
        if len({tuple(c) for c in colors}) != len(colors):
            raise ConfigError(f"{where}: two classes share a colour")
        return None, colors, names
    if all("value" in e and isinstance(e["value"], int) for e in raw):
        values = [int(e["value"]) for e in raw]
        _check_values(values, where)
        if len(set(values)) != len(values):
            raise ConfigError(f"{where}: two classes share a mask value")
        return values, None, names
    raise ConfigError(f"{where}: every entry needs an integer 'value' (classes) or a 'color' (rgb)")


def load_class_map(path: str | Path) -> tuple[list[int] | None, list[list[int]] | None, list[str]]:
    """Read a class map file (YAML or JSON, see :func:`parse_class_map`)."""
    raw = read_yaml(path, "--class-map")
    return parse_class_map(raw, f"--class-map {path}")


def encode_mask(
    encoding: MaskEncoding, mask: np.ndarray, name: str | Path = "mask", volume: bool = False
) -> np.ndarray:
    """``encoding.encode`` for an image, or slice by slice for a ``(D, H, W)`` volume (``volume``)."""
    if not volume:
        return encoding.encode(mask, name)
    return np.stack([encoding.encode(m, f"{name} (slice {z})") for z, m in enumerate(mask)])


def mask_weights(
    encoding: MaskEncoding,
    mask: np.ndarray,
    target: np.ndarray,
    w0: float,
    sigma: float,
    balance: bool = True,
    volume: bool = False,
) -> np.ndarray:
    """``encoding.weights`` for an image, or slice by slice for a volume (the paper's 2-D weight maps)."""
    if not volume:
        return encoding.weights(mask, target, w0, sigma, balance)
    return np.stack([encoding.weights(m, t, w0, sigma, balance) for m, t in zip(mask, target, strict=True)])
