"""Data: reading, layouts, mask encodings, normalisation, synthetic nuclei, patch datasets."""

from .io import read_image, write_image
from .layouts import Sample, paired_folders
from .synthetic import synth_nuclei, synthesize_dataset

__all__ = ["Sample", "paired_folders", "read_image", "synth_nuclei", "synthesize_dataset", "write_image"]
