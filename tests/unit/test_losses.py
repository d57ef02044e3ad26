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
    with pytest.raises(ConfigError, match="is a softmax loss"):
        get_loss("ce_dice", 1)
    with pytest.raises(ConfigError, match="needs num_classes == 1"):
        get_loss("bce", 2)


def test_focal_and_class_weights_match_hand_computed_values():
    import math

    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 1.0]]]])
    target = torch.tensor([[[0, 1]]])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(math.exp(1) / (math.exp(-1) + math.exp(1)))
    focal = [(1 - math.exp(-c)) ** 2 * c for c in (ce0, ce1)]
    assert LOSSES["focal"](logits, target).item() == pytest.approx(sum(focal) / 2, rel=1e-5)
    weighted = get_loss("ce", 2, class_weights=[0.5, 4.0])
    assert weighted(logits, target).item() == pytest.approx((0.5 * ce0 + 4 * ce1) / 2, rel=1e-6)
    binary = get_loss("bce", 1, class_weights=[1.0, 3.0])
    z, t = torch.tensor([[[[0.5, -2.0]]]]), torch.tensor([[[[1, 0]]]])
    b0, b1 = math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(-2.0))
    assert binary(z, t).item() == pytest.approx((3 * b0 + 1 * b1) / 2, rel=1e-6)
    with pytest.raises(ConfigError, match="needs 3 non-negative values"):
        get_loss("ce", 3, class_weights=[1.0, 2.0])


def test_multilabel_mode_is_independent_sigmoids():
    import math

    logits = torch.tensor([[[[1.0]], [[-2.0]]]])  # (N=1, C=2, 1, 1): two overlapping labels
    target = torch.tensor([[[[1]], [[1]]]])
    b = [math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(2.0))]
    assert LOSSES["bce"](logits, target).item() == pytest.approx(sum(b) / 2, rel=1e-6)
    weighted = get_loss("bce", 2, class_weights=[1.0, 3.0], multilabel=True)
    assert weighted(logits, target).item() == pytest.approx((b[0] + 3 * b[1]) / 2, rel=1e-6)
    ignore = torch.tensor([[[[1]], [[255]]]])
    assert LOSSES["bce"](logits, ignore).item() == pytest.approx(b[0], rel=1e-6)
    perfect = (torch.tensor([[[[1, 0]], [[1, 1]]]]) * 2 - 1) * 30.0
    assert LOSSES["bce_dice"](perfect, torch.tensor([[[[1, 0]], [[1, 1]]]])).item() < 1e-3
