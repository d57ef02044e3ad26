import pytest
import torch

from unetkit import ConfigError
from unetkit.losses import LOSSES, get_loss, soft_dice_loss


def test_perfect_and_wrong_predictions():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    good = (target * 2 - 1) * 20
    assert soft_dice_loss(good, target) < 1e-3
    assert soft_dice_loss(-good, target) > 0.9
    for name in ("bce", "dice", "bce_dice"):
        assert LOSSES[name](good, target) < LOSSES[name](-good, target)


def test_multiclass_losses_take_index_targets():
    target = torch.randint(0, 3, (2, 5, 7))
    logits = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 20
    assert get_loss("auto", 3)(logits, target) < 1e-3
    assert get_loss("auto", 3)(-logits, target) > 1


def test_loss_names_are_checked_against_the_output():
    with pytest.raises(ConfigError, match="unknown"):
        get_loss("hinge", 1)
    with pytest.raises(ConfigError, match="needs num_classes >= 2"):
        get_loss("ce_dice", 1)
    with pytest.raises(ConfigError, match="needs num_classes == 1"):
        get_loss("bce", 2)
