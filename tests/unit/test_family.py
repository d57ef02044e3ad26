"""The U-Net family behind one registry: every architecture honours one contract, in 2-D and 3-D."""

import copy
from typing import ClassVar

import numpy as np
import pytest
import torch

from unetkit.checkpoint import build_model, load_checkpoint, save_checkpoint
from unetkit.models import create_model, list_models
from unetkit.models.dense import DenseLayer

SHAPES = {2: (2, 1, 37, 45), 3: (1, 1, 9, 21, 19)}  # odd sizes, not multiples of 2**depth


class ArchitectureContract:
    """What every registered architecture must do. Each architecture gets a subclass below."""

    name: str
    #: parameters of create_model(name, base_channels=4, depth=2, norm="batch") in 2-D and 3-D: a change here
    #: means the architecture changed (and old checkpoints no longer load).
    params: tuple[int, int]
    extra: ClassVar[dict] = {}

    def build(self, dims: int = 2, **kw) -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model(
            self.name, base_channels=4, depth=2, norm="batch", spatial_dims=dims, **{**self.extra, **kw}
        )

    @pytest.mark.parametrize("dims", [2, 3])
    def test_forward_backward_on_odd_sizes(self, dims):
        net = self.build(dims, in_channels=1, num_classes=3)
        x = torch.randn(*SHAPES[dims])
        y = net(x)
        assert y.shape == (x.shape[0], 3, *x.shape[2:])
        loss = y.square().mean() + sum(a.square().mean() for a in getattr(net, "aux_logits", []))
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) > 0 for g in grads) > 0.9 * len(grads)  # every part is trained

    @pytest.mark.parametrize("dims", [2, 3])
    def test_parameter_count_is_stable(self, dims):
        count = sum(p.numel() for p in self.build(dims).parameters())
        assert count == self.params[dims - 2]

    def test_checkpoint_round_trip(self, tmp_path):
        net = self.build(3).eval()
        x = torch.randn(*SHAPES[3])
        path = save_checkpoint(tmp_path / "m.pt", net, model_name=self.name, preprocessing={})
        again = build_model(load_checkpoint(path), path).eval()
        with torch.no_grad():
            torch.testing.assert_close(again(x), net(x))

    @pytest.mark.parametrize("dims", [2, 3])
    def test_exportable_and_deterministic_in_eval(self, dims):
        net = self.build(dims).eval()
        x = torch.randn(*SHAPES[dims])
        with torch.no_grad():
            first, second = net(x), net(x)
        exported = torch.export.export(net, (x,))  # the graph ONNX and AOT export start from
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(x), first)
        assert torch.equal(first, second)


class TestResidualUNet(ArchitectureContract):
    name, params = "residual-unet", (7881, 21841)


class TestAttentionUNet(ArchitectureContract):
    name, params = "attention-unet", (7589, 21549)

    def test_gates_weight_the_skips(self):
        net = self.build().eval()
        seen = []
        for up in net.ups:
            up.gate.psi.register_forward_hook(lambda _m, _i, out: seen.append(out))
        with torch.no_grad():
            net(torch.randn(*SHAPES[2]))
        assert len(seen) == 2 and all(((a > 0) & (a < 1)).all() for a in seen)


def test_every_registered_architecture_has_a_contract():
    covered = {cls.name for cls in ArchitectureContract.__subclasses__()}
    assert covered == set(list_models())


def test_anisotropic_3d_pooling_keeps_coarse_z():
    net = create_model("unet", base_channels=4, depth=3, spatial_dims=3, anisotropic_levels=2, norm="batch")
    assert net.size_multiples == (2, 8, 8)
    assert net(torch.randn(1, 1, 3, 20, 20)).shape == (1, 1, 3, 20, 20)  # 3 slices: pooled in z only once
    with pytest.raises(ValueError, match="spatial_dims=3"):
        create_model("unet", anisotropic_levels=1)


# -- volumes -------------------------------------------------------------------------------------------------

PREP = {"in_channels": 1, "normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}


@pytest.mark.parametrize("shape", [(5, 9, 13), (13, 30, 41)])
def test_valid_3d_network_tiled_output_equals_full_volume_pass(shape):
    from unetkit import Predictor
    from unetkit.inference.tiling import read_window

    torch.manual_seed(0)
    net = create_model("unet", depth=2, base_channels=4, padding="valid", norm="batch", spatial_dims=3).eval()
    volume = np.random.default_rng(1).random(shape).astype(np.float32) * 100
    predictor = Predictor(
        net, PREP, device="cpu", tile=net.valid_input_size(12), batch_size=2, precision="float32"
    )
    assert len(predictor.plan(shape)) > 1 or shape == (5, 9, 13)
    probs = predictor.predict_proba(volume)
    x = predictor.prepare(volume)
    m = net.margin
    window = read_window(x, [(-m, net.valid_input_size(n) - m) for n in shape])
    with torch.no_grad():
        full = torch.sigmoid(net(torch.from_numpy(window)[None]))[0]
    ref = full[(slice(None), *(slice(0, n) for n in shape))].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)


class TestUNet(ArchitectureContract):
    name, params = "unet", (7477, 21437)

    def test_the_papers_network(self):
        net = create_model("unet", num_classes=2, base_channels=64, padding="valid")
        assert sum(p.numel() for p in net.parameters()) == 31_030_658


class TestUNetPlusPlus(ArchitectureContract):
    name, params = "unet++", (8206, 23446)
    extra: ClassVar[dict] = {"deep_supervision": True}

    def test_deep_supervision_heads(self):
        net = self.build().train()
        out = net(torch.randn(*SHAPES[2]))
        assert len(net.aux_logits) == 1 and net.aux_logits[0].shape == out.shape
        net.eval()
        with torch.no_grad():
            assert net(torch.randn(*SHAPES[2])).shape == out.shape and net.aux_logits == []
        with pytest.raises(ValueError, match="same"):
            create_model("unet++", padding="valid")


class TestDenseUNet(ArchitectureContract):
    name, params = "dense-unet", (7044, 13388)
    extra: ClassVar[dict] = {"deep_supervision": True}

    def test_every_layer_reads_all_earlier_maps_of_its_block(self):
        net = self.build(growth_rate=3, dense_layers=[2, 3, 4], compression=0.5, deep_supervision=False)
        seen: dict[str, int] = {}
        for name, layer in net.named_modules():
            if isinstance(layer, DenseLayer):
                layer.register_forward_pre_hook(
                    lambda m, args, name=name: seen.__setitem__(name, sum(f.shape[1] for f in args[0]))
                )
        net.eval()
        with torch.no_grad():
            net(torch.randn(*SHAPES[2]))
        # the first encoder block starts from the stem's 4 maps; each layer adds 3
        assert [seen[f"encoder.0.layers.{i}"] for i in range(2)] == [4, 7]
        # transition down keeps half of 4 + 2 * 3 = 10; the second block starts from 5
        assert [seen[f"encoder.1.layers.{i}"] for i in range(3)] == [5, 8, 11]
        # the bottleneck: half of 5 + 3 * 3 = 14 → 7, then 4 layers
        assert [seen[f"bottom.layers.{i}"] for i in range(4)] == [7, 10, 13, 16]
        # up: only the bottleneck's 4 * 3 = 12 new maps rise, beside the 14-map skip of level 1
        assert [seen[f"decoder.0.layers.{i}"] for i in range(3)] == [26, 29, 32]
        # the top: the 10-map skip and the 9 new maps of level 1; its whole output (10 + 9 + 2 * 3) feeds the head
        assert [seen[f"decoder.1.layers.{i}"] for i in range(2)] == [19, 22]
        assert net.head.in_channels == 25

    def test_gradient_checkpointing_gives_the_same_step_with_less_kept(self):
        torch.manual_seed(0)
        plain = self.build(num_classes=2, dense_layers=[6, 6, 6]).train()
        lean = copy.deepcopy(plain)
        for m in lean.modules():
            if isinstance(m, DenseLayer):
                m.memory_efficient = True
        x = torch.randn(2, 1, 48, 40)
        kept = {}
        for name, net in (("plain", plain), ("lean", lean)):
            sizes: dict[int, int] = {}  # storages autograd keeps for the backward pass (each counted once)

            def pack(t, sizes=sizes):
                storage = t.untyped_storage()
                sizes[storage.data_ptr()] = storage.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = net(x).square().mean() + sum(a.square().mean() for a in net.aux_logits)
            loss.backward()
            kept[name] = sum(sizes.values())
        for (name, p), q in zip(plain.named_parameters(), lean.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=name)
        for (name, b), c in zip(plain.named_buffers(), lean.buffers(), strict=True):
            assert torch.equal(b, c), name  # the recomputation does not count the batch twice
        assert all(int(n) == 1 for k, n in plain.named_buffers() if k.endswith("num_batches_tracked"))
        assert kept["lean"] < 0.6 * kept["plain"], kept

    def test_options_are_checked_and_valid_padding_refused_with_the_reason(self):
        with pytest.raises(ValueError, match="same.*dense block.*shrinks"):
            create_model("dense-unet", padding="valid")
        with pytest.raises(ValueError, match="depth \\+ 1 = 3"):
            self.build(dense_layers=[4, 4])
        with pytest.raises(ValueError, match="compression"):
            self.build(compression=0)
        with pytest.raises(ValueError, match="growth_rate"):
            self.build(growth_rate=0)
        net = self.build(dense_layers=[2], growth_rate=5, bottleneck=False)
        assert net.hparams["dense_layers"] == [2, 2, 2] and net.hparams["growth_rate"] == 5
        assert not any(
            isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in net.encoder.modules()
        )

    def test_side_outputs_train_and_inference_uses_the_top_head(self):
        net = self.build(num_classes=2).train()
        out = net(torch.randn(*SHAPES[2]))
        assert len(net.aux_logits) == 1 and net.aux_logits[0].shape == out.shape
        net.eval()
        with torch.no_grad():
            assert net(torch.randn(*SHAPES[2])).shape == out.shape and net.aux_logits == []
