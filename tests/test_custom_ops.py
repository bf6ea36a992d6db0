"""custom_ops.py: a torch.compile training step equals the eager one."""

import torch

from triton_softmax import sampled_softmax_from_candidates


def _compiled_vs_eager(backend, num_uniform):
    torch.manual_seed(0)
    N, n, d = 16, 300, 8
    W = torch.randn(n, d, requires_grad=True)
    h, y = torch.randn(N, d), torch.randint(0, n, (N,))
    y[3] = -100
    ret = torch.randint(-1, n, (N, 12))

    def step(h, y, ret):
        from triton_softmax import sampled_softmax_cross_entropy

        a = sampled_softmax_from_candidates(h, W, y, ret, num_uniform=num_uniform)
        return a + sampled_softmax_cross_entropy(h, W, y, method="full")

    compiled = torch.compile(step, fullgraph=True, backend=backend)  # fullgraph: no graph break
    out = []
    for fn in (compiled, step):
        torch.manual_seed(1)
        W.grad = None
        loss = fn(h, y, ret)
        loss.backward()
        out.append((loss.detach(), W.grad.clone()))
    return out


def test_torch_compile_training_step_matches_eager_aot():
    (lc, gc), (le, ge) = _compiled_vs_eager("aot_eager", num_uniform=8)
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(gc, ge)


def test_torch_compile_inductor_cpu_matches_eager():
    """Inductor draws random numbers with its own generator: compare without uniform draws."""
    (lc, gc), (le, ge) = _compiled_vs_eager("inductor", num_uniform=0)
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(gc, ge)


def test_full_path_ops_are_registered_under_the_kernel_name():
    from triton_softmax import custom_ops

    assert custom_ops.linear_ce_fwd._qualname == "triton_softmax::linear_ce_fwd"
    assert custom_ops.linear_ce_bwd._qualname == "triton_softmax::linear_ce_bwd"
    assert custom_ops.chunked_ce_fwd is custom_ops.linear_ce_fwd  # the old Python names
    assert custom_ops.chunked_ce_bwd is custom_ops.linear_ce_bwd
    assert hasattr(torch.ops.triton_softmax, "linear_ce_fwd")
    assert not hasattr(torch.ops.triton_softmax, "chunked_ce_fwd")
