"""Ray Tune searches a space with ASHA: short training on synthetic CIFAR-like data.

`resdsl.search.tune.SpecSearcher` suggests each trial's candidate (dependent choices
consistent, no architecture twice); the trainable builds it with `build(config, space)`,
trains it for a few SGD steps per epoch and reports validation accuracy and loss each
epoch; ASHA stops the trials that fall behind at its rungs. The learning rate is tuned
alongside the architecture (a Tune domain in `param_space`). `ray.init()` starts a local
Ray instance (`--address` joins a cluster instead). See docs/search.md.

    python examples/search/ray_tune_asha.py --tiny          # 4 trials, 2 epochs, 1 CPU
    python examples/search/ray_tune_asha.py --trials 32 --epochs 8 --cpus 4
    python examples/search/ray_tune_asha.py --space examples/search/resnet_space.res --image 32
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from resdsl.search import SearchSpace, describe, load_space, loads_space
from resdsl.search.tune import SpecSearcher, assignment, build

# A CIFAR-sized ResNet space (std.resnet's blocks): 162 candidates. The stem's width is a
# choice that depends on the base width, which a flat Tune param space cannot express.
SPACE = """\
import std.resnet

network cifar_space(
    width: int = choice(8, 16, 24),         # channels of the first stage; doubled per stage
    stem: int = choice(width // 2, width),  # depends on `width`
    depth1: int = choice(1, 2, 3),
    depth2: int = choice(1, 2, 3),
    depth3: int = choice(1, 2, 3),
    num_classes: int = 10,
    image: int = 32,
) (x: (3, image, image)) {
    y = x -> conv1: conv2d(stem, 3, padding=1, bias=false) -> bn1: batchnorm2d -> relu
          -> layer1: stage(basic, width, depth1)
          -> layer2: stage(basic, width * 2, depth2, stride=2)
          -> layer3: stage(basic, width * 4, depth3, stride=2)
    return y -> avgpool: global_avgpool -> fc: linear(num_classes)
}
"""

# --tiny: what CI runs (tests/test_search_tune.py), well under a minute on one CPU
TINY = {"trials": 4, "epochs": 2, "steps": 2, "batch": 16, "cpus": 1, "train": 128, "val": 64,
        "image": 16}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", help="a .res search space (default: the CIFAR space above)")
    p.add_argument("--image", type=int, help="input size, if the space has an `image` parameter")
    p.add_argument("--trials", type=int, default=16, help="candidates to train (default: 16)")
    p.add_argument("--epochs", type=int, default=6, help="epochs at most (ASHA's max_t)")
    p.add_argument("--steps", type=int, default=8, help="SGD steps per epoch")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train", type=int, default=1024, help="synthetic training images")
    p.add_argument("--val", type=int, default=256, help="synthetic validation images")
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    p.add_argument("--address", help="join the Ray cluster at ADDRESS instead ('auto', ...)")
    p.add_argument("--storage", help="where Tune writes results (default: ~/ray_results)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true",
                   help="the CI profile: 4 trials, 2 epochs, 1 CPU, 16x16 images")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no Tune progress output")
    args = p.parse_args(argv)
    if args.tiny:
        vars(args).update(TINY)
    return args


def open_space(args: argparse.Namespace) -> SearchSpace:
    fixed = {"image": args.image} if args.image else {}
    if args.space:
        return load_space(args.space, **fixed)
    return loads_space(SPACE, path="<cifar_space>", **fixed)


def synthetic_data(n: int, shape: tuple[int, ...], classes: int, seed: int) -> tuple[Any, Any]:
    """``n`` CIFAR-like images: a fixed random template per class plus noise, so that a
    candidate can learn something in a few steps. The same seed gives the same data."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(classes, *shape, generator=torch.Generator().manual_seed(1234))
    labels = torch.randint(0, classes, (n,), generator=g)
    return templates[labels] + torch.randn(n, *shape, generator=g), labels


def train_candidate(config: dict[str, Any], space: SearchSpace, args: dict[str, Any]) -> None:
    """One trial: build the candidate, train it a few steps per epoch, report each epoch."""
    torch.manual_seed(args["seed"])
    net = build(config, space)
    model = net.to_torch(seed=args["seed"])
    (name, shape), *_ = net.input_shapes.items()
    classes = next(iter(net.output_shapes.values()))[-1]
    x, y = synthetic_data(args["train"], shape, classes, seed=args["seed"])
    vx, vy = synthetic_data(args["val"], shape, classes, seed=args["seed"] + 1)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(args["seed"])
    for _ in range(args["epochs"]):
        model.train()
        for _ in range(args["steps"]):
            idx = torch.randint(0, len(x), (args["batch"],), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(**{name: x[idx]}), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(**{name: vx})
        tune.report({
            "accuracy": (logits.argmax(1) == vy).float().mean().item(),
            "loss": torch.nn.functional.cross_entropy(logits, vy).item(),
            "params": net.num_params, "macs": net.macs,
        })  # fmt: skip


def tune_config(space: SearchSpace, args: argparse.Namespace) -> tune.TuneConfig:
    """SpecSearcher suggests the candidates, ASHA stops the weak ones at its rungs."""
    return tune.TuneConfig(
        search_alg=SpecSearcher(space, seed=args.seed),
        scheduler=ASHAScheduler(max_t=args.epochs, grace_period=1, reduction_factor=2),
        metric="accuracy",
        mode="max",
        num_samples=args.trials,
        reuse_actors=True,  # one worker process per CPU, not one per trial
    )


def make_tuner(space: SearchSpace, args: argparse.Namespace) -> tune.Tuner:
    """The Tuner: the trainable gets the space once (``with_parameters``), each trial one CPU;
    the learning rate is a Tune domain that the searcher samples alongside the candidate."""
    keep = ("epochs", "steps", "batch", "train", "val", "seed")
    trainable = tune.with_parameters(
        train_candidate, space=space, args={k: getattr(args, k) for k in keep}
    )
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"lr": tune.loguniform(1e-2, 2e-1)},
        tune_config=tune_config(space, args),
        run_config=tune.RunConfig(
            name="resdsl_asha",
            storage_path=os.path.abspath(args.storage) if args.storage else None,
            verbose=0 if args.quiet else 1,
        ),
    )


def run(args: argparse.Namespace, space: SearchSpace) -> tune.ResultGrid:
    """The search on the Ray instance this process is connected to (``ray.init`` first)."""
    if not args.quiet:
        print(f"{space.network}: {space.size:,} candidates, {args.trials} trials of at most "
              f"{args.epochs} epochs", file=sys.stderr)  # fmt: skip
    return make_tuner(space, args).fit()


def report(results: tune.ResultGrid, space: SearchSpace) -> int:
    rows = sorted(
        (r for r in results if r.metrics and "accuracy" in r.metrics),
        key=lambda r: r.metrics["accuracy"], reverse=True,
    )  # fmt: skip
    print(f"{'accuracy':>8} {'loss':>7} {'epochs':>6} {'params':>9} {'lr':>7}  candidate")
    for r in rows:
        m = r.metrics
        print(f"{m['accuracy']:>8.3f} {m['loss']:>7.3f} {m['training_iteration']:>6} "
              f"{m['params']:>9,} {r.config['lr']:>7.4f}  "
              f"{describe(assignment(r.config, space))}")  # fmt: skip
    errors = len(results.errors)
    if errors:
        print(f"{errors} trials failed", file=sys.stderr)
    return 0 if rows and not errors else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space = open_space(args)
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=args.cpus, include_dashboard=False)
    try:
        return report(run(args, space), space)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
