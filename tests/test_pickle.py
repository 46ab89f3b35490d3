"""Generated modules behave like any PyTorch module: pickle, torch.save, copy.deepcopy and
multiprocessing spawn workers (where the generated class does not exist yet)."""

from __future__ import annotations

import copy
import functools
import io
import multiprocessing
import pickle

import pytest

import resdsl

from .conftest import EXAMPLES

torch = pytest.importorskip("torch")

ALL_SPECS = sorted(EXAMPLES.rglob("*.res"))
SMALL = ["resnet18", "cifar_resnet20", "mobilenet_v2"]  # outputs compared, in a worker too
# Above this many parameters the round trips run on the meta device (same classes, keys,
# shapes and dtypes, no data): copying hundreds of megabytes thrice proves nothing more.
REAL_UP_TO = 30_000_000


def _id(path) -> str:
    return str(path.relative_to(EXAMPLES))


@functools.cache
def _network(path) -> resdsl.Network:
    return resdsl.load(path)


def _input(net: resdsl.Network, seed: int = 0) -> torch.Tensor:
    (shape,) = net.input_shapes.values()
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed))


def _assert_same(a, b) -> None:
    assert type(a).__module__ == type(b).__module__
    assert type(a).__qualname__ == type(b).__qualname__
    assert a.training == b.training
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].shape == sb[key].shape and sa[key].dtype == sb[key].dtype, key
        if sa[key].device.type != "meta":
            assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("path", ALL_SPECS, ids=_id)
def test_pickle_deepcopy_and_torch_save_round_trip(path):
    net = _network(path)
    device = "cpu" if net.num_params <= REAL_UP_TO else "meta"
    with torch.device(device):
        model = net.to_torch(seed=0)
    assert type(model).__module__.startswith("resdsl._generated.m_")
    assert isinstance(model, torch.nn.Module)

    unpickled = pickle.loads(pickle.dumps(model))
    assert type(unpickled) is type(model)  # the registered class, not a copy
    _assert_same(model, unpickled)

    copied = copy.deepcopy(model)
    assert type(copied) is type(model)
    _assert_same(model, copied)
    if device == "cpu":
        assert next(copied.parameters()).data_ptr() != next(model.parameters()).data_ptr()

    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    _assert_same(model, torch.load(buffer, weights_only=False))


def _describe(model):
    """Runs in a spawned worker: the class is rebuilt there from the pickled source."""
    return (
        type(model).__module__,
        type(model).__qualname__,
        [(k, tuple(v.shape)) for k, v in model.state_dict().items()],
    )


def _forward(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def spawned():
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        yield pool


@pytest.mark.parametrize("name", SMALL)
def test_copies_compute_the_same_here_and_in_a_spawned_worker(name, spawned):
    net = _network(EXAMPLES / f"{name}.res")
    model = net.to_torch(seed=1).eval()
    x = _input(net)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [pickle.loads(pickle.dumps(model)), copy.deepcopy(model)]
    copies.append(torch.load(buffer, weights_only=False))
    with torch.no_grad():
        want = model(x)
        for other in copies:
            assert not other.training
            torch.testing.assert_close(other(x), want, rtol=0, atol=0)
    torch.testing.assert_close(spawned.apply(_forward, (model, x)), want, rtol=0, atol=0)


def test_spawn_worker_rebuilds_every_example(spawned):
    models = []
    for path in ALL_SPECS:
        with torch.device("meta"):  # the classes cross, not gigabytes of weights
            models.append(_network(path).to_torch(seed=None))
    described = spawned.map(_describe, models)
    for model, (module, qualname, state) in zip(models, described, strict=True):
        assert (module, qualname) == (type(model).__module__, type(model).__qualname__)
        assert state == [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_unpickling_rebuilds_a_missing_generated_module(monkeypatch):
    """As in a fresh process: the module is recreated from the text in the pickle."""
    import sys

    model = _network(EXAMPLES / "cifar_resnet20.res").to_torch(seed=0)
    data = pickle.dumps(model)
    name = type(model).__module__
    monkeypatch.delitem(sys.modules, name)
    rebuilt = pickle.loads(data)
    assert type(rebuilt).__module__ == name and type(rebuilt) is not type(model)
    assert sys.modules[name] is not None
    _assert_same(model, rebuilt)


def test_restricted_unpicklers_refuse_the_rebuild():
    """resdsl reads --weights with weights_only=True, which never reaches generated code."""
    model = _network(EXAMPLES / "highway.res").to_torch(seed=0)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buffer, weights_only=True)


def test_unknown_class_is_refused():
    from resdsl.backends.torch import _rebuild, generate

    source = generate(_network(EXAMPLES / "highway.res").graph)
    for name in ("build", "nn", "torch", "Missing"):  # a function, imports, nothing
        with pytest.raises(pickle.UnpicklingError, match="no module class"):
            _rebuild(source, name)
