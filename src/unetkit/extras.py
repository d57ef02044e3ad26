"""Optional extras ([onnx], [dask], ...): refuse plainly, naming the install that fixes it, when one is missing."""

from __future__ import annotations

import importlib.util

from .errors import ConfigError

__all__ = ["require_extra"]


def require_extra(modules: tuple[str, ...], extra: str, what: str) -> None:
    """Refuse, naming the install that fixes it, when an optional extra's modules are missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"{what} needs {', '.join(missing)}: pip install 'unetkit[{extra}]'")
