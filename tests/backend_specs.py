"""Specs shared by the backend tests (TVM, ONNX): each backend is compared with the
PyTorch backend on the same texts."""

# A small ViT: patches by reshape and permute, a class token and position embedding
# (parameter), concat on the token axis, pre-norm attention and MLP residuals (layernorm,
# attention, linear on rank-2 tokens, gelu, dropout, drop_path), select (x[0], x[-1],
# another axis), and linear on a rank-1 input of a second graph input.
TOKENS = """
block mlp(hidden: int) (x) {
    return x -> "0": linear(hidden) -> gelu -> dropout(0.1) -> "3": linear(x.features, bias=false)
}
network tokens() (x: (3, 8, 8), v: 6) {
    t = x -> patch: conv2d(8, 4, stride=4) -> reshape((8, -1)) -> permute((1, 0))
    t = concat(cls: parameter((1, 8), init="normal"), t)
    t = t + pos: parameter((5, 8), init="normal")
    t = t + (t -> ln_1: layernorm -> attn: attention(2))
    t = t + (t -> ln_2: layernorm(1e-6) -> mlp: mlp(16) -> drop_path(0.2))
    u = v -> fc: linear(4) -> sigmoid
    return t[0] -> head: linear(3), t[-1], t -> select(1, 2), t -> tok: linear(2, bias=false), u
}
"""

# Two outputs: a vector and a feature map. The artifact of the runtime and CLI tests.
SMALL = """
network small() (x: (3, 8, 8)) {
    y = x -> c: conv2d(4, 3, padding=1) -> b: batchnorm2d -> relu
    return y -> global_avgpool -> fc: linear(5), y
}
"""

# A shape error: compiling it must fail and write nothing.
BAD_SPEC = """
network bad() (x: (3, 8, 8)) {
    return (x -> conv2d(4, 3)) + x
}
"""
