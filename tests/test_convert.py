"""``from_torch``: random supported torch Sequentials (nested, with no-ops and BatchNorm to
fold) give the module's own outputs through the twin built from the description; every
unsupported layer is refused with its name."""
import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

from ss_engine.nn import ConversionError, from_torch
from ss_engine.nn.convert import infer_input_shape
from ss_engine.twin import torch_model


def _randomise_bn(m: nn.Module, gen: torch.Generator) -> None:
    for bn in m.modules():
        if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen))
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if bn.affine:
                bn.weight.data.copy_(torch.randn(n, generator=gen))
                bn.bias.data.copy_(torch.randn(n, generator=gen))


@st.composite
def torch_nets(draw):
    torch.manual_seed(draw(st.integers(0, 2 ** 16)))
    c, hw = draw(st.integers(1, 3)), draw(st.sampled_from([6, 8]))
    blocks, ch, size = [], c, hw
    for _ in range(draw(st.integers(0, 2))):
        out, k = draw(st.integers(1, 4)), draw(st.sampled_from([1, 3]))
        pad = (k - 1) // 2 if draw(st.booleans()) else 0
        block = [nn.Conv2d(ch, out, k, padding=pad, bias=draw(st.booleans()))]
        size = size + 2 * pad - k + 1
        if draw(st.booleans()):
            block.append(nn.BatchNorm2d(out, affine=draw(st.booleans())))
        block.append(nn.ReLU())
        if size % 2 == 0 and draw(st.booleans()):
            block.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2, stride=2)])))
            size //= 2
        if draw(st.booleans()):
            block.append(draw(st.sampled_from([nn.Identity(), nn.Dropout(p=0.0)])))
        blocks.append(nn.Sequential(*block) if draw(st.booleans()) else block)
        ch = out
    layers = []
    for b in blocks:
        layers += [b] if isinstance(b, nn.Sequential) else b
    layers.append(nn.Flatten())
    width = ch * size * size
    for i in range(draw(st.integers(1, 2))):
        out = draw(st.integers(2, 9))
        layers.append(nn.Linear(width, out))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm1d(out))
        layers.append(nn.ReLU())
        width = out
    layers.append(nn.Linear(width, draw(st.integers(2, 5))))
    net = nn.Sequential(*layers)
    _randomise_bn(net, torch.Generator().manual_seed(1))
    return net.eval(), (c, hw, hw)


@given(torch_nets())
def test_converted_nets_compute_what_the_module_computes(case):
    net, shape = case
    desc, params = from_torch(net, shape)
    twin = torch_model(desc, params).eval()
    x = torch.randn((5,) + shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = net(x), twin(x)
    assert got.shape == want.shape
    # BatchNorm folding reassociates float32 arithmetic: agreement to float32 rounding
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
    assert not any(type(m).__name__.startswith(("BatchNorm", "Dropout", "Identity")) for m in twin)


@pytest.mark.parametrize("layer, needle", [
    (nn.Sigmoid(), "'1' (Sigmoid) is not supported"),
    (nn.Tanh(), "'1' (Tanh) is not supported"),
    (nn.LeakyReLU(), "'1' (LeakyReLU) is not supported"),
    (nn.Softmax(dim=1), "'1' (Softmax) is not supported"),
    (nn.Dropout(p=0.5), "'1' (Dropout): dropout with p=0.5 is not supported"),
    (nn.BatchNorm1d(4), "'1' (BatchNorm1d): a BatchNorm1d folds only into a Linear"),
    (nn.LayerNorm(4), "'1' (LayerNorm) is not supported"),
    (nn.GELU(), "'1' (GELU) is not supported"),
])
def test_unsupported_layers_are_refused_with_their_name_and_the_supported_set(layer, needle):
    net = nn.Sequential(nn.ReLU(), layer, nn.Linear(4, 2))
    with pytest.raises(ConversionError) as e:
        from_torch(net, (4,))
    assert needle in str(e.value) and "supported: Linear, Conv2d, ReLU" in str(e.value)


@pytest.mark.parametrize("layer, needle", [
    (nn.Conv2d(1, 2, 3, groups=1, dilation=2), "only groups=1, dilation=1"),
    (nn.Conv2d(1, 2, 3, stride=(1, 2)), "padding and stride must be equal"),
    (nn.MaxPool2d(3, stride=2), "only square windows with stride = kernel_size"),
    (nn.AvgPool2d(2, padding=1), "only square windows with stride = kernel_size"),
    (nn.Conv1d(1, 2, 3), "(Conv1d) is not supported"),
    (nn.AdaptiveAvgPool2d(1), "(AdaptiveAvgPool2d) is not supported"),
])
def test_unsupported_settings_are_refused_naming_the_nested_layer(layer, needle):
    net = nn.Sequential(nn.Sequential(nn.Identity(), layer), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ConversionError) as e:
        from_torch(net, (1, 8, 8))
    assert "'0.1'" in str(e.value) and needle in str(e.value)


def test_only_sequentials_convert_and_input_shapes_are_inferred():
    class Custom(nn.Module):
        def forward(self, x):
            return x
    with pytest.raises(ConversionError, match="converts an nn.Sequential.*got Custom"):
        from_torch(Custom(), (4,))
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2))
    assert infer_input_shape(cnn, (8, 8)) == (1, 8, 8)
    assert infer_input_shape(cnn, (1, 8, 8)) == (1, 8, 8)
    with pytest.raises(ConversionError, match="needs image samples"):
        infer_input_shape(cnn, (64,))
    assert infer_input_shape(nn.Sequential(nn.Linear(30, 2)), (30,)) == (30,)
