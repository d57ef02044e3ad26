"""Instance labels inside the network's graph (``unetkit.models.instances``), what a bioimage.io package's
second output computes: components exactly as SciPy's, objects as good as unetkit's own SciPy step, and a
graph that TorchScript keeps (the ONNX side is tested with the packages, tests/integration/test_bioimageio.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from unetkit import synth_nuclei
from unetkit.inference.postprocess import first_pixel_order, instances_from_classes
from unetkit.metrics.instance import match_instances
from unetkit.models.instances import UNetInstances, _components, _renumber, instance_labels


def _one_hot_logits(classes: np.ndarray, n: int) -> torch.Tensor:
    """Logits whose argmax is ``classes`` (H, W)."""
    return torch.nn.functional.one_hot(torch.from_numpy(classes).long(), n).permute(2, 0, 1)[None].float() * 4


def _border_classes(labels: np.ndarray) -> np.ndarray:
    """The 3-class target of instance labels: the interior, and a 2-pixel border where objects meet or end."""
    inner = ndi.grey_erosion(labels, size=3) == ndi.grey_dilation(labels, size=3)
    return np.where(labels == 0, 0, np.where(inner & (labels > 0), 1, 2)).astype(np.uint8)


@pytest.mark.parametrize("seed", range(4))
def test_components_equal_scipys_in_its_numbering(seed):
    rng = np.random.default_rng(seed)
    masks = [
        ndi.gaussian_filter(rng.random((96, 130)), 2) > 0.5,  # maze-like pieces, many touching the edge
        synth_nuclei((80, 110), seed=seed)[1] > 0,  # blobs
        rng.random((40, 50)) > 0.6,  # salt: single pixels and 4- versus 8-connected diagonals
    ]
    for mask in masks:
        got = _renumber(_components(torch.from_numpy(mask)[None, None], 10))[0, 0].numpy()
        np.testing.assert_array_equal(got, first_pixel_order(ndi.label(mask)[0]))


def test_a_batch_is_labelled_image_by_image():
    a, b = (synth_nuclei((64, 64), seed=s)[1] > 0 for s in (1, 2))
    got = _renumber(_components(torch.from_numpy(np.stack([a, b]))[:, None], 10))[:, 0].numpy()
    for mask, labels in zip((a, b), got, strict=True):
        np.testing.assert_array_equal(labels, first_pixel_order(ndi.label(mask)[0]))


def test_border_model_labels_are_as_good_as_unetkits_own_step():
    scores = {"graph": [], "scipy": []}
    for seed in range(6):
        truth = synth_nuclei((192, 192), seed=seed)[1]
        classes = _border_classes(truth)
        graph = instance_labels(_one_hot_logits(classes, 3), method="interior")[0, 0].numpy()
        scipy = instances_from_classes(classes, "interior")
        assert graph.dtype == np.int32 and graph.max() == len(np.unique(graph)) - 1  # 1..N, no gaps
        assert set(np.unique(graph[classes == 0])) == {0}  # never into the background
        scores["graph"].append(match_instances(truth, graph).f1(0.5))
        scores["scipy"].append(match_instances(truth, scipy).f1(0.5))
    graph, scipy = np.mean(scores["graph"]), np.mean(scores["scipy"])
    assert graph > 0.9 and graph >= scipy - 0.03, scores


def test_binary_model_labels_split_touching_objects():
    yy, xx = np.mgrid[:80, :120]
    discs = ((yy - 40) ** 2 + (xx - 40) ** 2 < 18**2) | ((yy - 40) ** 2 + (xx - 72) ** 2 < 18**2)
    speck = (yy - 8) ** 2 + (xx - 110) ** 2 < 2  # 5 pixels: under min_size
    mask = discs | speck
    logits = torch.from_numpy(np.where(mask, 3.0, -3.0).astype(np.float32))[None, None]
    labels = instance_labels(logits, method="watershed", min_size=8)[0, 0].numpy()
    assert labels.max() == 2  # two discs, the speck dropped
    assert (labels[40, 30] != labels[40, 82]) and labels[8, 110] == 0
    assert ((labels > 0) == discs).all()  # every foreground pixel of the discs belongs to one of them
    # the threshold is the model's: a higher one shrinks the foreground
    soft = torch.from_numpy(np.where(mask, 0.2, -3.0).astype(np.float32))[None, None]  # p = 0.55
    assert instance_labels(soft, method="watershed", threshold=0.6).max() == 0
    with pytest.raises(ValueError, match="interior and watershed"):
        instance_labels(logits, method="components")


def test_the_two_output_network_traces_to_torchscript_and_keeps_its_parameters():
    hp = {"in_channels": 1, "num_classes": 3, "depth": 2, "base_channels": 4}
    net = UNetInstances(**hp, instances={"method": "interior"}).eval()
    assert set(net.state_dict()) == set(type(net).__mro__[1](**hp).state_dict())  # the U-Net's own keys
    x = torch.from_numpy(synth_nuclei((64, 96), seed=0)[0].astype(np.float32) / 255)[None, None]
    traced = torch.jit.trace(net, x, check_trace=False)
    y = torch.from_numpy(synth_nuclei((48, 80), seed=1)[0].astype(np.float32) / 255)[None, None]
    with torch.no_grad():
        (a, la), (b, lb) = net(y), traced(y)
    torch.testing.assert_close(a, b)
    assert torch.equal(la, lb) and la.shape == (1, 1, 48, 80) and la.dtype == torch.int32
