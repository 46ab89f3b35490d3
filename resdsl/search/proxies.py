"""Cheap scores for ranking candidates without training them to convergence.

Each is a score function for :class:`resdsl.search.parallel.Evaluator`:
``proxy(space, assignment) -> dict`` with the candidate's ``params``, ``macs`` and a
``score`` (higher is better). They live in the package, not in a script, so that worker
processes and Ray workers can import them by name.
"""

from __future__ import annotations

from typing import Any

from .space import Assignment, SearchSpace


def capacity(space: SearchSpace, assignment: Assignment) -> dict[str, Any]:
    """Parameters in millions: under a MACs budget, the most capacity for the compute.
    Costs one build (a few milliseconds); a stand-in for a real accuracy proxy."""
    net = space.build(assignment)
    return {"params": net.num_params, "macs": net.macs, "score": net.num_params / 1e6}


def short_training(
    space: SearchSpace, assignment: Assignment, steps: int = 3, batch: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Minus the loss after ``steps`` SGD steps on one fixed batch of noise with random
    labels: how fast the candidate starts to fit. Needs PyTorch; load the space with a
    small ``image`` to keep it cheap."""
    import torch

    net = space.build(assignment)
    model = net.to_torch(seed=seed).train()
    (name, shape), *_ = net.input_shapes.items()
    classes = next(iter(net.output_shapes.values()))[-1]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss = torch.zeros(())
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(**{name: x}), y)
        loss.backward()
        opt.step()
    return {"params": net.num_params, "macs": net.macs, "score": -loss.item()}


PROXIES = {"capacity": capacity, "train": short_training}
