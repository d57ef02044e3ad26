"""The built-in pretrained models: a registry (``registry.yaml``) and their weight files, shipped in the package.

Nothing is downloaded: each model is a unetkit checkpoint (half-precision weights) lying beside this file,
checked against the sha256 its registry entry records before it is used. A model is selected by name wherever
a MODEL is taken (``unetkit predict nuclei ...``, ``--init nuclei``, ``Predictor.from_pretrained("nuclei")``);
``NAME@N`` names version N (``nuclei@1``: the first built-in nuclei model, kept loadable when ``nuclei`` moved
on), the bare name the newest.
Adding a model is a data-only change: its file and an entry in ``registry.yaml`` (see the ``nuclei`` entry for
the fields); ``make pretrained`` retrains the registered models from the recipes their entries hold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import CheckpointError

__all__ = [
    "PREFIX",
    "PRETRAINED_DIR",
    "REGISTRY",
    "PretrainedModel",
    "file_sha256",
    "get_pretrained",
    "list_pretrained",
    "pretrained_path",
    "read_registry",
]

PRETRAINED_DIR = Path(__file__).resolve().parent
REGISTRY = PRETRAINED_DIR / "registry.yaml"
#: how a built-in model may be named where a path could also be meant: ``pretrained:nuclei``
PREFIX = "pretrained:"


@dataclass(frozen=True)
class PretrainedModel:
    """One registry entry: the file, its checksum, and the model card's fields."""

    name: str
    file: str
    sha256: str
    summary: str
    modality: str
    channels: int
    trained_on: str
    licence: str
    limits: tuple[str, ...] = ()
    recipe: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    runtime: str = ""
    bytes: int = 0
    #: the data the plan proposes it for: spatial_dims, channels, encodings, diameter [lo, hi] px, target
    proposed_for: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    #: zero-shot scores on each domain of the style-shift suite (unetkit.data.domains), when measured
    suite: dict[str, dict[str, float]] = field(default_factory=dict)
    folder: Path = PRETRAINED_DIR  # where its registry lies; ``file`` is relative to it

    @property
    def path(self) -> Path:
        return self.folder / self.file


def read_registry(path: Path = REGISTRY) -> dict[str, Any]:
    """The registry as plain data (``{"models": {name: entry}}``); safe YAML only."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(
            f"{path}: the registry of built-in models cannot be read ({exc}); reinstall unetkit"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        raise CheckpointError(f"{path}: damaged registry of built-in models: reinstall unetkit")
    return data


def list_pretrained(registry: Path = REGISTRY) -> list[PretrainedModel]:
    """Every registered built-in model, in registry order (also those whose weights are not built yet)."""
    out = []
    for name, entry in (read_registry(registry).get("models") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"]:
            raise CheckpointError(
                f"{registry}: the entry {str(name)[:40]!r} names no file beside the registry"
            )
        fields = {
            k: v for k, v in entry.items() if k in PretrainedModel.__dataclass_fields__ and k != "folder"
        }
        fields["limits"] = tuple(fields.get("limits") or ())
        out.append(PretrainedModel(name=str(name), folder=Path(registry).parent, **fields))
    return out


def get_pretrained(name: str, registry: Path = REGISTRY) -> PretrainedModel | None:
    """The entry registered as ``name`` (or ``pretrained:name``), or ``NAME@N``: the entry ``NAME`` when it is
    version N; else None."""
    name = name.removeprefix(PREFIX)
    models = list_pretrained(registry)
    found = next((m for m in models if m.name == name), None)
    base, _, version = name.rpartition("@")
    if found is None and base and version.isdigit():
        found = next((m for m in models if m.name == base and m.version == int(version)), None)
    return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pretrained_path(name: str, registry: Path = REGISTRY) -> Path:
    """The weight file of the built-in model ``name``, after checking it against the registry's sha256."""
    model = get_pretrained(name, registry)
    if model is None:
        known = ", ".join(m.name for m in list_pretrained(registry)) or "none"
        raise CheckpointError(f"{name}: no built-in model of that name (built in: {known}; `unetkit models`)")
    if not model.path.is_file() or not model.sha256:
        raise CheckpointError(
            f"{name}: the built-in model's weights ({model.file}) are not in this installation: run "
            "`make pretrained` in a clone of unetkit, or reinstall it"
        )
    actual = file_sha256(model.path)
    if actual != model.sha256:
        raise CheckpointError(
            f"{model.path}: sha256 {actual[:12]}… differs from the registry's {model.sha256[:12]}…: the file was "
            "altered or damaged; reinstall unetkit"
        )
    return model.path
