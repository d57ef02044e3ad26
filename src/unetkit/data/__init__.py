"""Data: reading, layouts, checks, mask encodings, normalisation, synthetic nuclei, patch datasets."""

from .checks import DataReport, check_dataset
from .io import read_image, write_image
from .layouts import LAYOUTS, Sample, load_layout, paired_folders
from .masks import ENCODINGS, MaskEncoding
from .normalize import Normalizer
from .synthetic import synth_nuclei, synth_nuclei_3d, synthesize_dataset

__all__ = [
    "ENCODINGS",
    "LAYOUTS",
    "DataReport",
    "MaskEncoding",
    "Normalizer",
    "Sample",
    "check_dataset",
    "load_layout",
    "paired_folders",
    "read_image",
    "synth_nuclei",
    "synth_nuclei_3d",
    "synthesize_dataset",
    "write_image",
]
