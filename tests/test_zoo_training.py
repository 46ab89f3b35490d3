"""GoogLeNet and Inception v3 in training mode, against torchvision: their auxiliary
classifiers are training-only outputs (``return logits, training(aux2), training(aux1)``).

In training mode torchvision's GoogLeNet returns ``(logits, aux_logits2, aux_logits1)`` and
Inception3 ``(logits, aux_logits)``; in eval mode both return the logits alone. The zoo's
models must do the same, output for output, on a randomised state
(``resdsl.backends.check.randomise_state``) loaded strictly from torchvision's. Batch norm
stays in training mode (batch statistics, running statistics updated). Dropout is made
deterministic rather than switched off: ``F.dropout`` (which both torchvision's
``nn.Dropout`` and the generated ``F.dropout(x, p, self.training)`` call) is replaced by a
mask drawn from a generator seeded by ``p`` and the tensor's size, so both models drop the
same elements whatever order they call it in, and a wrong ``p`` gives another mask.
"""

from __future__ import annotations

import pytest

import resdsl
from resdsl.backends.check import randomise_state

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

# name: (input shape, training-only outputs in torchvision's order, dropout p's per forward)
MODELS = {
    "googlenet": ((3, 224, 224), ("aux2", "aux1"), [0.2, 0.7, 0.7]),
    "inception_v3": ((3, 299, 299), ("aux",), [0.5]),
}


def close(got, want) -> float:
    """The relative max difference of ``got`` from ``want`` (which must be non-trivial)."""
    assert got.shape == want.shape
    scale = want.abs().max()
    assert torch.isfinite(scale) and scale > 0
    return float((got - want).abs().max() / scale)


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request):
    """(name, torchvision's model, the zoo's), the same randomised state in both."""
    import warnings

    name = request.param
    with warnings.catch_warnings():  # init_weights' FutureWarning
        warnings.simplefilter("ignore", FutureWarning)
        reference = randomise_state(torchvision.models.get_model(name, weights=None), seed=3)
    assert reference.aux_logits and not reference.transform_input
    model = resdsl.create_model(name)
    model.load_state_dict(reference.state_dict(), strict=True)
    return name, reference, model


@pytest.fixture
def seeded_dropout(monkeypatch):
    """``F.dropout`` with a mask that depends only on ``p`` and the input's size; returns
    the list of ``p``'s it was called with in training mode."""
    calls = []

    def dropout(x, p=0.5, training=True, inplace=False):
        if not training:
            return x
        calls.append(p)
        gen = torch.Generator().manual_seed(round(p * 1000) * 1_000_003 + x.numel())
        keep = torch.rand(x.shape, generator=gen) >= p
        return x * keep / (1 - p)

    monkeypatch.setattr(torch.nn.functional, "dropout", dropout)
    return calls


def test_training_mode_returns_torchvisions_aux_outputs(pair, seeded_dropout):
    name, reference, model = pair
    shape, aux, ps = MODELS[name]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    reference.train()
    model.train()
    with torch.no_grad():
        want = reference(x)
        assert len(seeded_dropout) == len(ps)
        got = model(x)
    assert sorted(seeded_dropout) == sorted(ps + ps), "the dropout layers and their p"
    assert isinstance(got, tuple) and len(got) == 1 + len(aux) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == (2, 1000)
        assert close(g, w) <= 1e-5, f"output {i} ({(['logits', *aux])[i]})"
    # the outputs differ from each other: a swapped order could not pass
    for i in range(len(want)):
        for j in range(i + 1, len(want)):
            assert close(want[i], want[j]) > 1e-2
    # batch norm ran in training mode on both sides: the running statistics moved alike
    ours = model.state_dict()
    for key, value in reference.state_dict().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.allclose(ours[key], value, rtol=1e-4, atol=1e-6), key
    assert int(ours["conv1.bn.num_batches_tracked" if name == "googlenet"
                    else "Conv2d_1a_3x3.bn.num_batches_tracked"]) == 1  # fmt: skip
    # the training-only outputs are the network's, named as in the spec
    net = resdsl.load(f"zoo:{name}")
    assert list(net.output_shapes) == ["logits"]
    assert list(net.training_output_shapes) == list(aux)


def test_eval_mode_returns_the_logits_alone(pair):
    name, reference, model = pair
    shape, _, _ = MODELS[name]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(2))
    reference.eval()
    model.eval()
    with torch.no_grad():
        want, got = reference(x), model(x)
    assert isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)
    assert close(got, want) <= 1e-5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_has_only_the_inference_output(name, tmp_path):
    from resdsl.backends.onnx import export

    net = resdsl.load(f"zoo:{name}")
    model = export(net, str(tmp_path / f"{name}.onnx"), batch=1)
    outputs = [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim])
               for o in model.graph.output]  # fmt: skip
    assert outputs == [("logits", [1, 1000])]
    names = {n.name for n in model.graph.node} | {i.name for i in model.graph.initializer}
    assert not any(n.startswith("aux") or n.startswith("AuxLogits") for n in names)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_macs_are_torchvisions_eval_flop_count(name):
    """The MACs leave out the auxiliary classifiers, as FlopCounterMode on torchvision's
    model in eval mode (multiply-adds: half its FLOPs); the parameters include them."""
    import warnings

    from torch.utils.flop_counter import FlopCounterMode

    net = resdsl.load(f"zoo:{name}")
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", FutureWarning)
        model = torchvision.models.get_model(name, weights=None)
    assert net.num_params == sum(p.numel() for p in model.parameters())
    x = torch.empty(1, *MODELS[name][0], device="meta")
    with FlopCounterMode(display=False) as counter:
        model.eval()(x)
    assert net.macs == counter.get_total_flops() // 2
    with FlopCounterMode(display=False) as counter:
        model.train()(torch.empty(2, *MODELS[name][0], device="meta"))
    assert net.macs < counter.get_total_flops() // 4  # training adds the aux classifiers
