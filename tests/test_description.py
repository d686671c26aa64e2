"""The model description: JSON round trip, one-line errors naming the layer, the one
interpreter's shapes against torch, caps, and the job carrying the description itself."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from ss_engine.description import (ZOO, Conv2d, DescriptionError, Flatten, Linear, MaxPool2d,
                                   ModelCaps, ModelDescription, ReLU, AvgPool2d, init_params,
                                   zoo_model, zoo_names)
from ss_engine.job import JobError, TrainJob, upload_shapes
from ss_engine.twin import torch_model


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_round_trips_and_its_shapes_are_torchs(name):
    d = zoo_model(name)
    assert ModelDescription.from_json(d.to_json()) == d
    net = torch_model(d, init_params(d, 0))
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == d.param_shapes()
    x = torch.zeros((3,) + d.input_shape)
    for s, layer in zip(d.shapes(), net):
        x = layer(x)
        assert tuple(x.shape[1:]) == s.out_shape, (name, s.index)
    assert d.num_outputs == 10 and d.param_count() == sum(p.numel() for p in net.parameters())


def test_literature_networks_have_their_papers_sizes():
    # SecureNN/Falcon: A 784-128-128-10; B conv to 5x14x14 = 980 then 100, 10; C 256-100-10
    # after two 16-channel convolutions; D LeNet 20/50 channels, 800-500-10
    assert zoo_model("network-a").param_count() == 784 * 128 + 128 + 128 * 128 + 128 + 1290
    assert zoo_model("network-b").shapes()[0].out_shape == (5, 14, 14)
    assert zoo_model("network-c").shapes()[6].out_shape == (256,)
    assert zoo_model("network-d").shapes()[6].out_shape == (800,)
    assert zoo_model("lenet").layers == zoo_model("network-c").layers
    assert isinstance(ZOO, tuple)


@st.composite
def descriptions(draw):
    """Random valid descriptions: optional conv/pool stages, then flatten and linear layers."""
    layers, c, hw = [], draw(st.integers(1, 3)), draw(st.sampled_from([4, 6, 8]))
    c0, shape = c, (c, hw, hw)
    for _ in range(draw(st.integers(0, 2))):
        k = draw(st.integers(1, 3))
        pad = draw(st.integers(0, 1))
        stride = draw(st.integers(1, 2))
        out = draw(st.integers(1, 4))
        conv = Conv2d(c, out, k, stride, pad)
        try:
            new = conv.out_shape(shape, "")
        except DescriptionError:
            break
        layers += [conv, ReLU()]
        c, shape = out, new
        if shape[1] % 2 == 0 and draw(st.booleans()):
            layers.append(draw(st.sampled_from([MaxPool2d(2), AvgPool2d(2)])))
            shape = (c, shape[1] // 2, shape[2] // 2)
    layers.append(Flatten())
    width = int(np.prod(shape))
    for _ in range(draw(st.integers(1, 3))):
        out = draw(st.integers(2, 12))
        layers += [Linear(width, out), ReLU()]
        width = out
    return ModelDescription((c0, hw, hw), tuple(layers[:-1]))


@given(descriptions())
def test_random_descriptions_round_trip_and_match_torch(d):
    assert ModelDescription.from_dict(d.to_dict()) == d
    net = torch_model(d, init_params(d, 1))
    out = net(torch.zeros((2,) + d.input_shape))
    assert tuple(out.shape) == (2, d.num_outputs)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == d.param_shapes()


@pytest.mark.parametrize("layers, shape, needle", [
    ([{"type": "linear", "in_features": 100, "out_features": 10}], [784], "layer 0 (linear): in_features 100"),
    ([{"type": "lstm", "hidden": 3}], [4], "layer 0: unsupported layer type 'lstm'; supported: linear, conv2d"),
    ([{"type": "relu", "inplace": True}], [4], "layer 0 (relu): unknown fields ['inplace']"),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
      {"type": "maxpool2d", "kernel_size": 4}], [1, 9, 9], "layer 1 (maxpool2d): window 4 must divide its 7x7"),
    ([{"type": "conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 3}], [1, 8, 8],
     "layer 0 (conv2d): in_channels 3 does not match"),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 9}], [1, 8, 8],
     "kernel 9x9 does not fit its 8x8"),
    ([{"type": "linear", "in_features": 64, "out_features": 2}], [1, 8, 8], "needs a flat input"),
    ([{"type": "linear", "in_features": 4, "out_features": 0}], [4], "out_features must be an integer >= 1"),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3}], [1, 8, 8],
     "the last layer must give a flat output"),
    ([], [4], "at least one layer"),
])
def test_bad_descriptions_get_one_line_errors_naming_the_layer(layers, shape, needle):
    with pytest.raises(DescriptionError) as e:
        ModelDescription.from_dict({"input_shape": shape, "layers": layers})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_json_file_errors_name_the_file(tmp_path):
    p = tmp_path / "m.json"
    p.write_text("{not json")
    with pytest.raises(DescriptionError, match="m.json: not valid JSON"):
        ModelDescription.load(p)
    p.write_text('{"input_shape": [4], "layers": [{"type": "softmax"}]}')
    with pytest.raises(DescriptionError, match="m.json: layer 0: unsupported layer type 'softmax'"):
        ModelDescription.load(p)


def test_caps_and_upload_shapes_come_from_the_description():
    d = ModelDescription((30,), (Linear(30, 8), ReLU(), Linear(8, 2)))
    job = TrainJob(model=d, batch_size=64)
    up = upload_shapes(job, ModelCaps(max_params=1000, max_activations_per_batch=64 * 18))
    assert up.x == (30,) and up.y == (2,) and up.params == {
        "0.weight": (8, 30), "0.bias": (8,), "2.weight": (2, 8), "2.bias": (2,)}
    with pytest.raises(JobError, match="266 parameters; this server accepts at most 100"):
        upload_shapes(job, ModelCaps(max_params=100))
    with pytest.raises(JobError, match="1,152 activations per batch of 64"):
        upload_shapes(job, ModelCaps(max_activations_per_batch=1000))


def test_the_job_carries_the_description_and_never_a_name_on_the_wire():
    job = TrainJob(model="network-b", task="classification", optimizer="adam")
    back = TrainJob.from_dict(job.to_dict())
    assert back == job and back.model == zoo_model("network-b")
    with pytest.raises(JobError, match="must be a model description"):
        TrainJob.from_dict({**job.to_dict(), "model": "network-b"})
    with pytest.raises(JobError, match="optimizer must be one of sgd, adam"):
        TrainJob(optimizer="rmsprop")
    with pytest.raises(JobError, match="classification needs at least 2 outputs"):
        TrainJob(model=ModelDescription((3,), (Linear(3, 1),)))
    assert TrainJob(model=ModelDescription((3,), (Linear(3, 1),)), task="regression").num_classes is None
