"""The ``export`` workflow: a trained checkpoint → an ONNX or TorchScript file, verified against PyTorch."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import build_model, load_checkpoint, resolve_model_path
from ..errors import ConfigError
from ..inference.export import EXPORT_FORMATS, ExportResult, write_exported
from ..pretrained import PREFIX
from ..safety import guard_file

__all__ = ["EXPORT_FORMATS", "ExportResult", "default_export_path", "export_model"]


#: the file suffixes of each export format (the first is the one unetkit gives)
_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth")}
#: the suffix of each format's file when no ``--out`` is given
DEFAULT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts.pt", "bioimageio": ".bioimageio.zip"}


def default_export_path(model: str | Path, format: str) -> Path:
    """Where ``unetkit export MODEL`` writes without ``--out``: beside a checkpoint (``RUN/best.pt`` →
    ``RUN/best.onnx``) or a run folder (``RUN`` → ``RUN.onnx``), and here for a built-in model (``nuclei``,
    ``pretrained:nuclei`` → ``nuclei.onnx``)."""
    if format not in DEFAULT_SUFFIXES:
        raise ConfigError(f"--format {format!r} is unknown; choose one of {', '.join(DEFAULT_SUFFIXES)}")
    path = Path(model)
    stem = path.with_suffix("") if path.suffix in (".pt", ".pth") else path
    return Path(f"{stem.with_name(stem.name.removeprefix(PREFIX))}{DEFAULT_SUFFIXES[format]}")


def export_model(
    checkpoint: str | Path, out: str | Path, format: str = "onnx", *, overwrite: bool = False
) -> ExportResult:
    """Export ``checkpoint`` (or a run folder's best.pt) to ``out`` and verify it: the largest absolute
    difference from PyTorch over two input sizes must stay below 1e-4 (float32), else nothing is written.

    Example:
        >>> export_model("run/best.pt", "run/model.onnx").max_abs_diff
    """
    out = Path(out)
    checkpoint = resolve_model_path(checkpoint)
    guard_file(out, "--out", protect=[checkpoint], overwrite=overwrite)  # the checkpoint in use is an input
    wanted = _SUFFIXES.get(format)
    if wanted and out.suffix.lower() not in wanted:
        raise ConfigError(
            f"--out {out}: {format} exports are named NAME{wanted[0]} (unetkit, ONNX Runtime and the other tools "
            f"that load it go by the suffix); use {out.with_suffix(wanted[0])}"
        )
    payload = load_checkpoint(checkpoint)
    return write_exported(build_model(payload, checkpoint).eval(), payload, out, format)
