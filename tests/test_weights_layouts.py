"""``--weights`` reads the usual checkpoint layouts: a plain state_dict, one wrapped in a
training checkpoint's ``state_dict`` / ``model`` / EMA entry, and DDP's ``module.`` prefix;
what still does not fit is named."""

from __future__ import annotations

import numpy as np
import pytest

import resdsl
from resdsl.cli import main
from resdsl.weights import WRAPPERS, WeightsError, check, load_file, resolve

torch = pytest.importorskip("torch")

SPEC = """\
network tiny() (x: (3, 8, 8)) {
    y = x -> conv1: conv2d(4, 3, padding=1, bias=false) -> bn1: batchnorm2d -> relu
    return y -> global_avgpool -> fc: linear(5)
}
"""


@pytest.fixture
def net(spec):
    path = spec(SPEC, "tiny.res")
    return path, resdsl.load(path)


def _state(net, seed=0):
    return {k: v.clone() for k, v in net.to_torch(seed=seed).state_dict().items()}


def _same(loaded, state):
    assert list(loaded) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value.numpy())


@pytest.mark.parametrize("layout", ["plain", *WRAPPERS, "nested"])
def test_checkpoint_layouts_load(net, tmp_path, capsys, layout):
    _, network = net
    state = _state(network)
    if layout == "plain":
        checkpoint = state
    elif layout == "nested":  # Lightning-style: weights two entries down
        checkpoint = {"epoch": 3, "state_dict": {"model": state}}
    else:
        checkpoint = {"epoch": 3, "optimizer": {"state": {}}, layout: state}
    path = tmp_path / "w.pt"
    torch.save(checkpoint, path)
    loaded, description = resolve(network.graph, str(path))
    _same(loaded, state)
    assert description == f"file {path}"
    err = capsys.readouterr().err
    if layout == "plain":
        assert err == ""
    elif layout == "nested":
        assert "checkpoint's `state_dict` entry's `model` entry" in err
    else:
        assert f"read the weights from the checkpoint's `{layout}` entry" in err


def test_plain_weights_are_preferred_to_the_moving_average(net, tmp_path, capsys):
    _, network = net
    plain, ema = _state(network, seed=1), _state(network, seed=2)
    path = tmp_path / "w.pt"
    torch.save({"model_ema": ema, "model": plain}, path)
    _same(load_file(str(path)), plain)
    assert "`model` entry" in capsys.readouterr().err


def test_ddp_prefix_is_removed(net, tmp_path, capsys):
    spec_path, network = net
    state = _state(network)
    checkpoint = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / "ddp.pt"
    torch.save(checkpoint, path)
    loaded, _ = resolve(network.graph, str(path))
    _same(loaded, state)
    assert "removed the `module.` prefix" in capsys.readouterr().err
    # and from the command line, into an ONNX model whose weights are the checkpoint's
    pytest.importorskip("onnx")
    path = tmp_path / "ddp2.pt"  # notes are said once per file in a process
    torch.save(checkpoint, path)
    out = tmp_path / "tiny.onnx"
    assert main(["compile", spec_path, "--target", "onnx", "--weights", str(path),
                 "-o", str(out)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "`state_dict` entry" in captured.err and "`module.` prefix" in captured.err
    import onnx
    from onnx import numpy_helper

    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    np.testing.assert_array_equal(stored["fc.weight"], state["fc.weight"].numpy())


def test_ddp_prefix_from_a_dict_and_a_wrapped_module(net):
    _, network = net
    model = network.to_torch(seed=3)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    _same(check(network.graph, state), model.state_dict())
    wrapped = torch.nn.DataParallel(model)  # its state_dict keys start with `module.`
    _same(resolve(network.graph, wrapped)[0], model.state_dict())


def test_a_network_named_module_keeps_its_keys():
    network = resdsl.loads(
        "block head() (x) {\n"
        "    y = x -> conv1: conv2d(4, 3, padding=1, bias=false) -> bn1: batchnorm2d -> relu\n"
        "    return y -> global_avgpool -> fc: linear(5)\n"
        "}\n"
        "network named() (x: (3, 8, 8)) {\n"
        "    return x -> module: head()\n"
        "}\n"
    )
    state = _state(network)
    assert state and all(k.startswith("module.") for k in state)
    _same(check(network.graph, state), state)


def test_a_wrong_key_is_named(net, tmp_path, capsys):
    spec_path, network = net
    state = _state(network)
    state["fc.wieght"] = state.pop("fc.weight")
    state["head.bias"] = torch.zeros(5)
    path = tmp_path / "w.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(WeightsError) as info:
        resolve(network.graph, str(path))
    error = info.value
    assert error.message == "w.pt lack `fc.weight` of shape (5, 4)"
    assert "closest key: `fc.wieght`" in error.hints
    assert "unexpected: `fc.wieght`, `head.bias`" in error.hints
    capsys.readouterr()
    rc = main(["compile", spec_path, "--target", "onnx", "--weights", str(path),
               "-o", str(tmp_path / "x.onnx")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "E0601" in err and "`fc.weight`" in err and "`head.bias`" in err
    assert not (tmp_path / "x.onnx").exists()


def test_unexpected_keys_are_all_named(net):
    _, network = net
    state = _state(network)
    state |= {f"extra.{i}": torch.zeros(1) for i in range(3)}
    with pytest.raises(WeightsError) as info:
        check(network.graph, state, "w.pt")
    assert info.value.message == "w.pt have `extra.0`, which the network does not (and 2 more)"
    assert "also unexpected: `extra.1`, `extra.2`" in info.value.hints


def test_a_checkpoint_without_weights_says_where_they_are_looked_for(net, tmp_path):
    _, network = net
    path = tmp_path / "w.pt"
    torch.save({"epoch": 3, "weights": _state(network)}, path)
    with pytest.raises(WeightsError, match="does not hold a state_dict") as info:
        load_file(str(path))
    assert any("`state_dict`, `model`" in hint for hint in info.value.hints)
