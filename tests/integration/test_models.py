import torch

from unetkit.models import UNet


def test_paper_network_572_to_388_and_parameter_count():
    net = UNet(
        in_channels=1, num_classes=2, depth=4, base_channels=64, padding="valid", up="transpose", norm=None
    )
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    assert net.margin == 92
    assert net.output_size(572) == 388 and net.valid_input_size(388) == 572
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_dropout_sits_at_end_of_contracting_path_and_only_in_training():
    net = UNet(base_channels=4, depth=2, dropout=0.5)
    assert isinstance(net.drop, torch.nn.Dropout2d) and net.drop.p == 0.5
    x = torch.randn(1, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
