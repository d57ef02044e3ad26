"""The dataset description: what ``DATA/dataset.yaml`` says about a dataset, read and checked in one place.

A dataset can describe itself (``unetkit synth``, the painted-labels writer and ``unetkit review`` write one), so
that nothing has to be passed on the command line: where its halves are and how mask names follow image names,
what the mask values mean (encoding, class map, the value of unlabelled pixels), whether samples are volumes,
and the pixel size. Every command reads it through :class:`DatasetSpec`, with one precedence: flags >
``dataset.yaml`` > the plan > detection. Each value is checked when the file is read, so a wrong value is
refused naming the file, the key and what is expected, before any image is read; a value is never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DATASET_KEYS, ENCODINGS, LAYOUTS, read_yaml
from ..errors import ConfigError, DataError
from .masks import parse_class_map

__all__ = ["DESCRIPTOR", "DESCRIPTOR_KEYS", "DatasetSpec"]

#: the dataset description's file name, in the dataset folder
DESCRIPTOR = "dataset.yaml"
#: the keys a description may hold: the configuration's dataset fields (config.DATASET_KEYS; one class map,
#: ``classes``, for the three class fields), whether samples are volumes, and the pixel size
DESCRIPTOR_KEYS = (
    *dict.fromkeys("classes" if k.startswith("class_") else k for k in DATASET_KEYS),
    "spatial_dims",
    "spacing",
)
#: the largest value a mask holds (32-bit instance labels)
MAX_LABEL = 2**32 - 1
#: keys that describe how to train, not the data: refused with the flag to use instead
_NOT_DESCRIPTION = {
    "target": "--target (a training choice: the plan or the run's configuration holds it)",
    "num_classes": "--num-classes, or classes: here (a class map)",
}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's ``dataset.yaml``, typed; every field ``None`` where the file says nothing (or is absent)."""

    layout: str | None = None
    images_dir: str | None = None
    masks_dir: str | None = None
    image_pattern: str | None = None
    mask_pattern: str | None = None
    mask_encoding: str | None = None
    class_values: tuple[int, ...] | None = None
    class_colors: tuple[tuple[int, int, int], ...] | None = None
    class_names: tuple[str, ...] | None = None
    ignore_index: int | None = None
    spatial_dims: int | None = None
    spacing: tuple[float, ...] | None = None
    #: the file it was read from (``None``: no description)
    path: Path | None = None

    @classmethod
    def read(cls, root: str | Path) -> DatasetSpec:
        """The description of the dataset folder ``root`` (empty when it has none, or is a list file)."""
        path = Path(root) / DESCRIPTOR
        if not Path(root).is_dir() or not path.is_file():
            return cls()
        return cls.from_dict(read_yaml(path, "dataset description"), path)

    @classmethod
    def from_dict(cls, raw: Any, path: Path) -> DatasetSpec:
        """Check a description's values one by one; a problem is refused naming ``path``, the key and the fix."""
        if raw is None:
            return cls(path=path)
        if not isinstance(raw, dict):
            raise DataError(
                f"{path}: expected a mapping of keys among {list(DESCRIPTOR_KEYS)}, got {type(raw).__name__}"
            )
        for key in raw:
            if key in _NOT_DESCRIPTION:
                raise DataError(
                    f"{path}: {key} describes how to train, not the data; remove it and pass {_NOT_DESCRIPTION[key]}"
                )
        unknown = sorted(map(str, set(raw) - set(DESCRIPTOR_KEYS)))
        if unknown:
            raise DataError(
                f"{path}: unknown key(s) {unknown}; a description holds {list(DESCRIPTOR_KEYS)}"[:600]
            )
        values: dict[str, Any] = {"path": path}
        for key in ("images_dir", "masks_dir", "image_pattern", "mask_pattern"):
            values[key] = _text(raw, key, path)
        values["layout"] = _choice(raw, "layout", LAYOUTS, path)
        values["mask_encoding"] = _choice(raw, "mask_encoding", ENCODINGS, path)
        if raw.get("classes") is not None:
            try:
                class_values, colors, names = parse_class_map(raw["classes"], f"{path}: classes")
            except ConfigError as exc:
                raise DataError(str(exc)) from None
            values["class_values"] = tuple(class_values) if class_values else None
            values["class_colors"] = tuple((c[0], c[1], c[2]) for c in colors) if colors else None
            values["class_names"] = tuple(names)
        ignore = raw.get("ignore_index")
        if ignore is not None and not (_is_int(ignore) and 0 <= ignore <= MAX_LABEL):
            raise DataError(
                f"{path}: ignore_index: expected the mask value of unlabelled pixels (an integer in "
                f"0..{MAX_LABEL}), got {ignore!r}"
            )
        values["ignore_index"] = ignore
        dims = raw.get("spatial_dims")
        if dims is not None and not (_is_int(dims) and dims in (2, 3)):
            raise DataError(f"{path}: spatial_dims: expected 2 (images) or 3 (volumes), got {dims!r}")
        values["spatial_dims"] = dims
        values["spacing"] = _spacing(raw.get("spacing"), dims, path)
        return cls(**values)

    @property
    def volumes(self) -> bool:
        """Whether the description says its samples are volumes (``spatial_dims: 3``)."""
        return self.spatial_dims == 3

    def gives(self, field_name: str) -> bool:
        """Whether the description sets the configuration's dataset field ``field_name`` (one of
        ``config.DATASET_KEYS``; the class fields come from ``classes``)."""
        if field_name not in DATASET_KEYS:
            raise ValueError(f"{field_name} is not a field of the dataset description")
        return getattr(self, field_name) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(raw: dict[str, Any], key: str, path: Path) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: {key}: expected a folder name or pattern in quotes, got {value!r}")
    return value


def _choice(raw: dict[str, Any], key: str, choices: tuple[str, ...], path: Path) -> str | None:
    value = raw.get(key)
    if value is None or value == "auto":
        return None
    if value not in choices:
        raise DataError(f"{path}: {key}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _spacing(raw: Any, dims: int | None, path: Path) -> tuple[float, ...] | None:
    if raw is None:
        return None
    lengths = (dims,) if dims else (2, 3)
    if (
        not isinstance(raw, list)
        or len(raw) not in lengths
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in raw)
    ):
        want = " or ".join(str(n) for n in lengths)
        raise DataError(
            f"{path}: spacing: expected a list of {want} positive numbers (the pixel size per axis, z first), "
            f"got {raw!r}"
        )
    return tuple(float(v) for v in raw)
