"""``python -m unetkit``, and ``torchrun --nproc-per-node N -m unetkit train ...``."""

import sys

from .cli.main import main

sys.exit(main())
