"""Self-configuration (``unetkit plan DATA``): a dataset and a machine in, a training setup with its reasons out.

As nnU-Net showed, most of a result comes from the configuration:

- :mod:`.fingerprint` measures the dataset: sizes and spacings, channels and bit depth, intensities per channel,
  class frequencies, object diameters (median and 95th percentile, from the masks) and touching objects;
- :mod:`.rules` turns the fingerprint into choices: pure functions with named thresholds, each choice with its
  reason;
- :mod:`.measure` measures on the target device: a trial forward/backward pass sets the batch that fits;
- :mod:`.planfile` writes ``DATA/plan.yaml`` (every value with its reason as a comment) and reads it back.

The ``plan`` workflow (:func:`unetkit.workflows.plan_training`) runs them, plus a short real training run that
measures the step and validation times from which the epochs that fill the time budget follow.
"""

from .fingerprint import Fingerprint, fingerprint
from .planfile import PLAN_FILE, Plan, read_plan, rebudget
from .rules import format_duration, parse_duration

#: the time budget of a new plan (``unetkit plan``; ``unetkit train`` on a GPU)
DEFAULT_BUDGET = "1h"
#: a bare `unetkit train DATA` plans for this much training on a CPU (a GPU: DEFAULT_BUDGET)
CPU_TRAIN_BUDGET = "10m"

__all__ = [
    "CPU_TRAIN_BUDGET",
    "DEFAULT_BUDGET",
    "PLAN_FILE",
    "Fingerprint",
    "Plan",
    "fingerprint",
    "format_duration",
    "parse_duration",
    "read_plan",
    "rebudget",
]
