"""The CPU allocator: freed tensor memory is reused instead of faulted in afresh (``device.tune_allocator``)."""

import os
import subprocess
import sys

import pytest

CHURN = """
import resource, sys, torch
from unetkit.device import tune_allocator
applied = tune_allocator()
x = torch.ones(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):  # what a training step or a tile batch does: activations made and freed
    a = torch.empty(3 * 2**20, dtype=torch.float32).fill_(1.0)  # 12 MiB
    b = a * 2
    del a, b
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(**env) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHURN], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )
    assert done.returncode == 0, done.stderr
    applied, count = done.stdout.split()
    return applied == "True", int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_tensor_memory_is_reused_not_faulted_in_again():
    tuned, tuned_faults = faults()
    system, system_faults = faults(UNETKIT_MALLOC="system")
    assert tuned and not system
    # 40 x 24 MiB made and freed: glibc's defaults fault every page in again (about 6,000 per round); tuned, the
    # heap keeps them after the first round
    assert system_faults > 40 * 3000
    assert tuned_faults < system_faults / 10
