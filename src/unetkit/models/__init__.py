"""U-Net models, built by name through one registry."""

from .dense import DenseUNet
from .registry import create_model, list_models, register_model
from .unet import InvalidSizeError, UNet, ValidGeometry
from .variants import UNetPlusPlus

__all__ = [
    "DenseUNet",
    "InvalidSizeError",
    "UNet",
    "UNetPlusPlus",
    "ValidGeometry",
    "create_model",
    "list_models",
    "register_model",
]
