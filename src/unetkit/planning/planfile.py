"""The plan file (``DATA/plan.yaml``): the chosen configuration with every value's reason as a comment, the
fingerprint and the measurements; read back by ``unetkit train``."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_text
from ..config import INFO_SECTIONS, RunConfig, load_config, read_yaml
from ..errors import ConfigError
from ..safety import head_text
from ..version import __version__
from .fingerprint import Fingerprint
from .rules import epochs_for, format_duration, patience_for

log = logging.getLogger(__name__)


PLAN_FILE = "plan.yaml"


@dataclass
class Plan:
    """A training configuration, the reason for each planned value, and what it was based on."""

    config: RunConfig
    reasons: dict[str, str]  # "section.key" → reason
    fingerprint: Fingerprint
    measured: dict[str, Any]
    data: str
    device: str
    time_budget: float | None
    proposals: list[str] = field(default_factory=list)  # flags worth trying that the plan does not set

    def write(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the plan as YAML with every reason as a comment (atomically)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} exists; pass --overwrite to plan again, or edit it")
        made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        budget = format_duration(self.time_budget) if self.time_budget else "none"
        lines = [
            f"# unetkit {__version__} plan for {self.data}, made {made} on {self.device}; time budget {budget}.",
            f"# `unetkit train {self.data}` trains with it; flags override any value (e.g. --patch 256),",
            "# `--config` reads it like any run configuration. Edit it, or plan again with `unetkit plan --overwrite`.",
            "# `fingerprint` and `measured` record what the choices were based on; they are not settings.",
            *(f"# proposal: {p}" for p in self.proposals),
            _dump_section("fingerprint", self.fingerprint.to_dict(), {}),
            _dump_section("measured", self.measured, {}),
        ]
        full = self.config.to_dict()
        for section in ("model", "data", "train"):
            planned = {k: v for k, v in full[section].items() if f"{section}.{k}" in self.reasons}
            lines.append(
                _dump_section(
                    section,
                    planned,
                    {k.split(".", 1)[1]: r for k, r in self.reasons.items() if k.startswith(section + ".")},
                )
            )
        text = "\n".join(lines) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        return path

    def targets(self) -> str:
        """What the network learns, in words: ``--target`` shapes instance masks (foreground, or border's 3
        classes); class and colour masks are learnt as their classes, whatever ``--target`` says."""
        m, d = self.config.model, self.config.data
        if d.target == "border":
            return "border (interior, border, background)"
        if m.num_classes and m.num_classes > 1:
            names = d.class_names or []
            named = any(n != f"class_{i}" for i, n in enumerate(names))  # not only the placeholders
            return f"the masks' {m.num_classes} classes" + (f" ({', '.join(names)})" if named else "")
        return "foreground"

    def summary(self) -> str:
        """The main choices in a few lines (the plan file holds them all, with reasons)."""
        m, d, t = self.config.model, self.config.data, self.config.train
        patch = (
            f"{d.patch_depth}x{d.patch_size}x{d.patch_size}" if m.spatial_dims == 3 else f"{d.patch_size}²"
        )
        fp = self.fingerprint
        rows = [
            (
                "dataset",
                f"{fp.samples} {'volumes' if fp.spatial_dims == 3 else 'images'}, median "
                f"{'x'.join(map(str, fp.median_shape))}, {fp.channels} channel(s) {fp.dtype}",
            ),
            (
                "objects",
                f"{fp.objects_per_image:g}/image, diameter median {fp.diameter_median} px, p95 "
                f"{fp.diameter_p95} px, {fp.touching_fraction:.0%} touching",
            ),
            (
                "network",
                f"{'U-Net' if m.arch == 'unet' else m.arch} depth {m.depth}, base {m.base_channels}, {m.norm} norm"
                + (f", {m.anisotropic_levels} in-plane-only pooling(s)" if m.anisotropic_levels else ""),
            ),
            ("patches", f"{patch}, batch {t.batch_size}, {d.normalization} normalisation"),
            ("targets", f"{self.targets()}{', weight maps' if d.weight_map else ''}, loss {t.loss}"),
            (
                "training",
                f"{t.epochs} epochs x {t.steps_per_epoch} steps, lr {t.lr:g}"
                + (
                    f", {self.measured['step_seconds']:.2f} s/step measured"
                    if "step_seconds" in self.measured
                    else ""
                ),
            ),
        ]
        rows += [("proposal", p) for p in self.proposals]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def with_budget(self, seconds: float) -> Plan:
        """The same plan for another time budget: epochs from the measured times, nothing re-measured."""
        cfg, reason = rebudget(self.config, self.measured, seconds)
        reasons = {**self.reasons, "train.epochs": reason}
        return dataclasses.replace(self, config=cfg, reasons=reasons, time_budget=seconds)


def rebudget(cfg: RunConfig, measured: dict[str, Any], seconds: float) -> tuple[RunConfig, str]:
    """``cfg`` with the epochs that fill another time budget, from a plan's measured times."""
    if not measured.get("epoch_seconds"):
        raise ConfigError(
            "--time-budget: this plan has no measured epoch time (made with --no-measure); plan again"
        )
    epochs, reason = epochs_for(
        seconds, measured["epoch_seconds"], measured["startup_seconds"], cfg.train.steps_per_epoch
    )
    cfg = dataclasses.replace(cfg)
    cfg.train = dataclasses.replace(
        cfg.train, epochs=epochs, time_budget=seconds, patience=patience_for(epochs)
    )
    return cfg, reason


def _dump_section(name: str, values: dict[str, Any], reasons: dict[str, str]) -> str:
    out = [f"{name}:"]
    for key, value in values.items():
        text = yaml.safe_dump(
            value, default_flow_style=True, width=10_000, allow_unicode=True, sort_keys=False
        ).strip()
        text = text.removesuffix("...").strip()
        reason = reasons.get(key)
        out.append(f"  {key}: {text}" + (f"  # {reason}" if reason else ""))
    return "\n".join(out)


def is_plan(path: Path) -> bool:
    """Whether ``path`` is a plan :meth:`Plan.write` wrote (its first line says so)."""
    first = head_text(path, 512).splitlines()[:1]
    return bool(first) and first[0].startswith("# unetkit ") and " plan for " in first[0]


def read_plan(path: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """A plan file's configuration and its ``fingerprint`` / ``measured`` sections."""
    path = Path(path)
    cfg = load_config(path)
    raw = read_yaml(path, "--plan") or {}
    return cfg, {k: raw.get(k) or {} for k in INFO_SECTIONS}
