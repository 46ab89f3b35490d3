"""One small network per op of the table, on edge shapes, with PyTorch's own functional form
of what it computes: the reference every backend is held to (tests/test_op_table.py).

A case is a network ``t`` over inputs (``x`` unless given) whose outputs all exercise its op,
and ``ref(xs, w)`` computing the same outputs from the batched inputs and the state_dict
``w`` with ``torch`` / ``torch.nn.functional`` directly (not with resdsl's emitters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812


@dataclass(frozen=True)
class Case:
    inputs: str  # the network's input list: "x: (3, 7, 6)"
    body: str  # the statements; the last is the return
    ref: Callable[..., tuple[torch.Tensor, ...]]


def _mha(x: torch.Tensor, w: dict, prefix: str, heads: int) -> torch.Tensor:
    d = x.shape[-1]
    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True).eval()
    mha.load_state_dict({k[len(prefix) + 1 :]: v for k, v in w.items() if k.startswith(prefix)})
    return mha(x, x, x, need_weights=False)[0]


def _standardised(weight, gain, gamma: float, eps: float) -> torch.Tensor:
    """timm's ScaledStdConv2d weight: per filter (w - mean) / sqrt(var + eps) * gain * scale."""
    flat = weight.reshape(weight.shape[0], -1)
    mean, var = flat.mean(1, keepdim=True), flat.var(1, unbiased=False, keepdim=True)
    scale = gain.reshape(-1, 1) * gamma * flat.shape[1] ** -0.5
    return ((flat - mean) / torch.sqrt(var + eps) * scale).reshape(weight.shape)


CASES: dict[str, Case] = {
    "conv2d": Case(
        "x: (4, 7, 6)",
        'return x -> c: conv2d(6, 4, padding="same", groups=2, bias=false), '
        "x -> d: conv2d(3, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2))",
        lambda x, w: (
            F.conv2d(x, w["c.weight"], None, padding="same", groups=2),
            F.conv2d(x, w["d.weight"], w["d.bias"], (2, 1), 1, (1, 2)),
        ),
    ),
    "conv1d": Case(
        "x: (4, 9)",
        "return x -> c: conv1d(6, 3, stride=2, padding=1, dilation=2, groups=2), "
        "x -> d: conv1d(1, 5, padding=2, bias=false)",
        lambda x, w: (
            F.conv1d(x, w["c.weight"], w["c.bias"], 2, 1, 2, 2),
            F.conv1d(x, w["d.weight"], None, padding=2),
        ),
    ),
    "std_conv2d": Case(
        "x: (4, 7, 6)",
        "return x -> c: std_conv2d(6, 3, padding=1, groups=2), "
        "x -> d: std_conv2d(3, 1, bias=false, gamma=1.7, eps=1e-4)",
        lambda x, w: (
            F.conv2d(
                x,
                _standardised(w["c.weight"], w["c.gain"], 1.0, 1e-6),
                w["c.bias"],
                padding=1,
                groups=2,
            ),
            F.conv2d(x, _standardised(w["d.weight"], w["d.gain"], 1.7, 1e-4)),
        ),
    ),
    "batchnorm2d": Case(
        "x: (3, 4, 5)",
        "return x -> b: batchnorm2d(eps=1e-3), x -> n: batchnorm2d(affine=false)",
        lambda x, w: (
            F.batch_norm(
                x, w["b.running_mean"], w["b.running_var"], w["b.weight"], w["b.bias"], eps=1e-3
            ),
            F.batch_norm(x, w["n.running_mean"], w["n.running_var"]),
        ),
    ),
    "linear": Case(
        "x: (5, 6), v: (7,)",
        "return x -> f: linear(3), v -> g: linear(2, bias=false)",
        lambda x, v, w: (F.linear(x, w["f.weight"], w["f.bias"]), F.linear(v, w["g.weight"])),
    ),
    "relu": Case("x: (3, 4)", "return relu(x)", lambda x, w: (F.relu(x),)),
    "identity": Case("x: (3, 4)", "return x -> identity", lambda x, w: (x,)),
    "zero": Case(
        "x: (3, 4)",
        "return x -> zero, x -> sqrt -> zero",  # sqrt of a negative is NaN: still zeros
        lambda x, w: (torch.zeros_like(x), torch.zeros_like(x)),
    ),
    "dropout": Case("x: (3, 4)", "return x -> dropout(0.4)", lambda x, w: (x,)),
    "drop_path": Case("x: (3, 4)", "return x -> drop_path(0.4)", lambda x, w: (x,)),
    "maxpool2d": Case(
        "x: (3, 8, 7)",
        "return x -> maxpool2d(3, stride=2, padding=1, ceil_mode=true), "
        "x -> maxpool2d(2, stride=1, dilation=2)",
        lambda x, w: (
            F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
            F.max_pool2d(x, 2, 1, dilation=2),
        ),
    ),
    "avgpool2d": Case(
        "x: (3, 8, 7)",
        "return x -> avgpool2d(3, stride=2, padding=1, ceil_mode=true, count_include_pad=false), "
        "x -> avgpool2d((2, 3), stride=(2, 1), padding=(1, 1))",
        lambda x, w: (
            F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
            F.avg_pool2d(x, (2, 3), (2, 1), (1, 1)),
        ),
    ),
    "adaptive_avgpool2d": Case(
        "x: (2, 7, 5)",
        "return x -> adaptive_avgpool2d((3, 2))",
        lambda x, w: (F.adaptive_avg_pool2d(x, (3, 2)),),
    ),
    "global_avgpool": Case(
        "x: (3, 5, 4)", "return x -> global_avgpool", lambda x, w: (x.mean((2, 3)),)
    ),
    "flatten": Case(
        "x: (2, 3, 4)",
        "return x -> flatten(1), x -> flatten",
        lambda x, w: (x.flatten(2), x.flatten(1)),
    ),
    "add": Case(
        "x: (3, 4), g: (2, 3, 1), h: (4,)",
        "return add(x, relu(x), x), x + g, add(x, h, g)",
        lambda x, g, h, w: (x + F.relu(x) + x, x[:, None] + g, x[:, None] + h[:, None, None] + g),
    ),
    "concat": Case(
        "x: (2, 3, 4)",
        "return concat(x, relu(x), axis=1), concat(x, x, relu(x))",
        lambda x, w: (torch.cat([x, F.relu(x)], 2), torch.cat([x, x, F.relu(x)], 1)),
    ),
    "mul": Case(
        "x: (4, 5, 6), g: (4, 1, 1), h: (6,)",
        "return x * g, x * h",
        lambda x, g, h, w: (x * g, x * h[:, None, None, :]),
    ),
    "sub": Case(
        "x: (3, 4), g: (3, 1), h: (4,)",
        "return x - relu(x), x - g, g - h",
        lambda x, g, h, w: (x - F.relu(x), x - g, g - h[:, None]),
    ),
    "div": Case(
        "x: (3, 4), g: (3, 1)",
        "return div(x, g), div(g, x -> abs -> clamp(min=0.5))",
        lambda x, g, w: (x / g, g / x.abs().clamp(min=0.5)),
    ),
    "tanh": Case("x: (3, 4)", "return x -> tanh", lambda x, w: (torch.tanh(x),)),
    "leaky_relu": Case(
        "x: (3, 4)",
        "return x -> leaky_relu, x -> leaky_relu(0.2)",
        lambda x, w: (F.leaky_relu(x), F.leaky_relu(x, 0.2)),
    ),
    "exp": Case("x: (3, 4)", "return x -> exp", lambda x, w: (torch.exp(x),)),
    "sin": Case("x: (3, 4)", "return x -> sin", lambda x, w: (torch.sin(x),)),
    "cos": Case("x: (3, 4)", "return x -> cos", lambda x, w: (torch.cos(x),)),
    "abs": Case("x: (3, 4)", "return x -> abs", lambda x, w: (torch.abs(x),)),
    "sqrt": Case("x: (3, 4)", "return x -> abs -> sqrt", lambda x, w: (torch.sqrt(x.abs()),)),
    "normalize": Case(
        "x: (3, 4, 5)",
        "return x -> normalize, x -> normalize(axis=0, eps=0.5)",
        lambda x, w: (F.normalize(x, dim=-1), F.normalize(x, dim=1, eps=0.5)),
    ),
    "take": Case(
        "x: (3, 4)",
        'return x -> take(i: buffer((5,), values=(2, 0, 1, 1, 2), dtype="int64")), '
        'take(x, j: buffer((2,), values=(3, 0), dtype="int64", stored=(2,)), axis=1)',
        lambda x, w: (x[:, w["i"][0]], x[:, :, w["j"]]),
    ),
    "scale_shift": Case(
        "x: (3, 4)", "return x * 0.5 + 1, 1 - x", lambda x, w: (x * 0.5 + 1, 1 - x)
    ),
    "clamp": Case(
        "x: (3, 4)",
        "return x -> clamp(-0.5, 0.25), x -> clamp(max=0.3)",
        lambda x, w: (x.clamp(-0.5, 0.25), x.clamp(max=0.3)),
    ),
    "sigmoid": Case("x: (3, 4)", "return x -> sigmoid", lambda x, w: (torch.sigmoid(x),)),
    "gelu": Case(
        "x: (3, 4)",
        'return x -> gelu, x -> gelu(approximate="tanh")',
        lambda x, w: (F.gelu(x), F.gelu(x, approximate="tanh")),
    ),
    "hardtanh": Case(
        "x: (3, 4)", "return x -> hardtanh(-0.5, 0.75)", lambda x, w: (F.hardtanh(x, -0.5, 0.75),)
    ),
    "relu6": Case("x: (3, 4)", "return x * 8 -> relu6", lambda x, w: (F.relu6(x * 8),)),
    "silu": Case("x: (3, 4)", "return x * 4 -> silu", lambda x, w: (F.silu(x * 4),)),
    "hardsigmoid": Case(
        "x: (3, 4)", "return x * 4 -> hardsigmoid", lambda x, w: (F.hardsigmoid(x * 4),)
    ),
    "hardswish": Case("x: (3, 4)", "return x * 4 -> hardswish", lambda x, w: (F.hardswish(x * 4),)),
    "softmax": Case(
        "x: (3, 4, 5)",
        "return x -> softmax(0), x -> softmax, x -> softmax(-2)",
        lambda x, w: (x.softmax(1), x.softmax(-1), x.softmax(-2)),
    ),
    "layernorm": Case(
        "x: (5, 8)",
        "return x -> n: layernorm(1e-6)",
        lambda x, w: (F.layer_norm(x, (8,), w["n.weight"], w["n.bias"], 1e-6),),
    ),
    "layernorm2d": Case(
        "x: (6, 3, 4)",
        "return x -> n: layernorm2d",
        lambda x, w: (
            F.layer_norm(x.permute(0, 2, 3, 1), (6,), w["n.weight"], w["n.bias"], 1e-6).permute(
                0, 3, 1, 2
            ),
        ),
    ),
    "groupnorm": Case(
        "x: (6, 4, 5)",
        "return x -> n: groupnorm(3), x -> groupnorm(2, eps=1e-3, affine=false)",
        lambda x, w: (
            F.group_norm(x, 3, w["n.weight"], w["n.bias"]),
            F.group_norm(x, 2, eps=1e-3),
        ),
    ),
    "attention": Case(
        "x: (5, 8)",
        "return x -> a: attention(2, dropout=0.1)",
        lambda x, w: (_mha(x, w, "a", 2),),
    ),
    "parameter": Case(
        "x: (4, 2, 3)",
        'return x * p: parameter((4, 1, 1), stored=(4, 1, 1), init="constant", value=0.5), '
        'q: parameter((2, 3), init="normal")',
        lambda x, w: (x * w["p"].reshape(1, 4, 1, 1), w["q"].expand(x.shape[0], 2, 3)),
    ),
    "buffer": Case(
        "x: (4, 2, 3)",
        'return x * b: buffer((4, 1, 1), stored=(4,), init="ones"), c: buffer((3,)), '
        "x + d: buffer((2, 3), values=(1, 2.5, 3, 4, 5, -6), persistent=false)",
        lambda x, w: (
            x * w["b"].reshape(1, 4, 1, 1),
            w["c"].expand(x.shape[0], 3),
            x + torch.tensor([[1, 2.5, 3], [4, 5, -6]]),
        ),
    ),
    "reshape": Case(
        "x: (4, 2, 3)", "return x -> reshape((4, -1))", lambda x, w: (x.reshape(-1, 4, 6),)
    ),
    "permute": Case(
        "x: (4, 2, 3)",
        "return x -> permute((2, 0, 1))",
        lambda x, w: (x.permute(0, 3, 1, 2),),
    ),
    "select": Case(
        "x: (4, 2, 3)",
        "return x[0], x -> select(2, -1)",
        lambda x, w: (x[:, 0], x[:, :, :, -1]),
    ),
    "slice": Case(
        "x: (6, 5, 4)",
        "return x -> slice(0, 1, 5, step=2), x -> slice(-1, -3), x -> slice(1, end=-1)",
        lambda x, w: (x[:, 1:5:2], x[..., -3:], x[:, :, :-1]),
    ),
    "pad": Case(
        "x: (3, 4, 5)",
        "return x -> pad((1, 2, 0, 1)), x -> pad((0, 0, 0, 0, 2, 2), value=0.5)",
        lambda x, w: (F.pad(x, (1, 2, 0, 1)), F.pad(x, (0, 0, 0, 0, 2, 2), value=0.5)),
    ),
    "roll": Case(
        "x: (3, 4, 5)",
        "return x -> roll((2, -1), (1, 2)), x -> roll(7, 0)",
        lambda x, w: (torch.roll(x, (2, -1), (2, 3)), torch.roll(x, 7, 1)),
    ),
    "channel_shuffle": Case(
        "x: (6, 2, 3)",
        "return x -> channel_shuffle(3)",
        lambda x, w: (torch.nn.ChannelShuffle(3)(x),),
    ),
    "sum": Case(
        "x: (3, 4, 5)",
        "return x -> sum((0, 2), keepdim=true), x -> sum(-1)",
        lambda x, w: (x.sum((1, 3), keepdim=True), x.sum(-1)),
    ),
    "mean": Case(
        "x: (3, 4, 5)",
        "return x -> mean((1, 2)), x -> mean(0, keepdim=true)",
        lambda x, w: (x.mean((2, 3)), x.mean(1, keepdim=True)),
    ),
    "matmul": Case(
        "a: (2, 3, 4), b: (2, 4, 5), c: (4, 5)",
        "return matmul(a, b), matmul(a, c)",
        lambda a, b, c, w: (a @ b, a @ c[:, None]),
    ),
}


def spec(op: str) -> str:
    case = CASES[op]
    return f"network t() ({case.inputs}) {{\n    {case.body}\n}}\n"
