"""The machine's memory, as the checks that refuse work before allocating it read it (no torch here: the
synthetic generator's check must not import it)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["available_memory"]


def available_memory() -> float:
    """Bytes of memory available now (MemAvailable), or 8 GiB when the system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8.0 * 2**30
