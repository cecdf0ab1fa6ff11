"""A check shared by the numba and Triton tests: the Bi-WKV kernels' custom ops under ``torch.compile``."""

from __future__ import annotations

from collections.abc import Callable

import torch


def assert_compiled_like_eager(
    fn: Callable[..., torch.Tensor], args: tuple[torch.Tensor, ...], grad_out: torch.Tensor, op_name: str
) -> None:
    """Compiles ``fn`` (``aot_eager``, one full graph) and checks that the graph holds the custom op ``op_name`` (the
    kernels stay one opaque call, not the pure PyTorch path) and that its outputs and the gradients of
    ``sum(fn(*args) * grad_out)`` with respect to ``args`` (w, u, k, v) match eager mode's."""
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fn, backend=counter, fullgraph=True)

    def grads(f: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, ...]:
        leaves = tuple(x.detach().requires_grad_() for x in args)
        return torch.autograd.grad((f(*leaves) * grad_out).sum(), leaves)

    ours, eager = grads(compiled), grads(fn)
    assert counter.frame_count == 1
    graph_ops = {str(node.target) for graph in counter.graphs for node in graph.graph.nodes}
    assert any(op_name in op for op in graph_ops), graph_ops
    for name, a, b in zip("wukv", ours, eager):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item()), name
    assert torch.equal(compiled(*args), fn(*args))
