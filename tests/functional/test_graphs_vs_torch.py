"""Several ops together against PyTorch: small networks written once for both libraries, and
every op with only some inputs requiring grad.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402

from .torch_compare import TF, check_op, dtypes  # noqa: E402

# Ops save only what backward reads for the inputs that require grad (a network's input
# image never does): every subset of inputs, the others as constants.
PARTIAL_GRAD_OPS = {
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
               lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1, groups=2), [(2, 4, 7, 6), (6, 2, 3, 3), (6,)]),
    "conv_transpose2d": (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
                         lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
                         [(2, 3, 4, 3), (3, 2, 3, 3), (2,)]),
    "linear": (F.linear, TF.linear, [(4, 5), (3, 5), (3,)]),
    "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                   lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True), [(4, 3, 2, 2), (3,), (3,)]),
    "mul": (lambda a, b, c: a * b * c, lambda a, b, c: a * b * c, [(2, 3), (3,), (2, 1)]),
    "div-pow": (lambda a, b, c: a / b**c, lambda a, b, c: a / b**c, [(2, 3), (3,), (2, 1)]),
    "matmul": (lambda a, b, c: a @ b @ c, lambda a, b, c: a @ b @ c, [(2, 3), (3, 4), (4,)]),
    "cat": (lambda a, b, c: F.cat([a, b, c], 1), lambda a, b, c: torch.cat([a, b, c], 1), [(2, 1), (2, 3), (2, 2)]),
    "stack": (lambda a, b, c: F.stack([a, b, c], 0), lambda a, b, c: torch.stack([a, b, c], 0), [(2, 3)] * 3),
    "bce_with_logits": (lambda x, t, c: F.binary_cross_entropy_with_logits(x * c, t),
                        lambda x, t, c: TF.binary_cross_entropy_with_logits(x * c, t), [(3, 4), (3, 4), (4,)]),
    "mse_loss": (lambda x, t, c: F.mse_loss(x * c, t), lambda x, t, c: TF.mse_loss(x * c, t), [(3, 4), (3, 4), (4,)]),
    "cross_entropy-soft": (lambda x, q, c: F.cross_entropy(x * c, q), lambda x, q, c: TF.cross_entropy(x * c, q),
                           [(3, 4), (3, 4), (4,)]),
}
SUBSETS = [(True, False, False), (False, True, False), (False, False, True), (True, True, False),
           (False, True, True)]


@pytest.mark.parametrize("subset", SUBSETS, ids=["".join("xo"[not f] for f in s) for s in SUBSETS])
@pytest.mark.parametrize("name", list(PARTIAL_GRAD_OPS))
def test_gradients_of_some_inputs_only_match_torch(name, subset, rng, xp):
    cn, th, shapes = PARTIAL_GRAD_OPS[name]
    inputs = [rng.uniform(0.5, 1.5, s) if name == "div-pow" else rng.standard_normal(s) for s in shapes]
    if name in ("bce_with_logits", "cross_entropy-soft"):
        inputs[1] = rng.random(shapes[1])
    check_op(cn, th, inputs, dtype=np.float64, rng=rng, xp=xp, requires_grad=subset)


# Each graph is written once against a namespace `nn` (cnnkit.functional or
# torch.nn.functional): ops hand each other channel-major views, tensors feed several
# consumers (gradients add up), and the loss ends the graph.
def lenet_like(nn, x, w1, b1, w2, b2, w3, b3, w4, b4, t):
    y = nn.max_pool2d(nn.relu(nn.conv2d(x, w1, b1, padding=2)), 2)
    y = nn.max_pool2d(nn.relu(nn.conv2d(y, w2, b2)), 2, ceil_mode=True)
    y = nn.relu(nn.linear(y.reshape(y.shape[0], -1), w3, b3))
    return nn.cross_entropy(nn.linear(y, w4, b4), t)


def residual_block(nn, x, w1, w2, gamma, beta, w3, t):
    y = nn.conv2d(x, w1, padding=1)
    z = nn.batch_norm(nn.conv2d(nn.relu(y), w2, padding="same"), None, None, gamma, beta, training=True)
    z = nn.relu(z + y)  # y feeds two consumers
    z = nn.adaptive_avg_pool2d(z, 1)
    return nn.nll_loss(nn.log_softmax(nn.linear(z.flatten(1), w3), 1), t, reduction="sum")


def two_pools(nn, x, w, v):
    y = nn.conv2d(x, w, stride=(1, 2))
    a = nn.max_pool2d(y, 3, 2, 1) + nn.avg_pool2d(y, 3, 2, 1, count_include_pad=False)
    b = nn.adaptive_max_pool2d(y, (a.shape[2], a.shape[3]))
    return (nn.sigmoid(a) * nn.tanh(b) * v).sum()


def separable_and_cat(nn, x, dw, pw, target):
    y = nn.conv2d(x, dw, groups=x.shape[1], padding=1)
    y = nn.elu(nn.conv2d(y, pw))
    y = nn.leaky_relu(nn.softmax(nn.cat([y, x], 1) if nn is F else torch.cat([y, x], 1), 1), 0.1)
    return nn.mse_loss(y, target)


def upsample(nn, x, w1, w2, b2):
    y = nn.conv_transpose2d(x, w1, stride=2, padding=1, output_padding=1)
    y = nn.pad(y, (1, 2, 2, 1), mode="reflect")
    y = nn.conv2d(y, w2, b2, dilation=2)
    return nn.dropout(nn.tanh(y), p=0.3, training=False)


def attention_like(nn, x, wq, wk):
    q, k = nn.linear(x, wq), nn.linear(x, wk)                        # (N, L, D)
    scores = nn.softmax(q @ k.transpose(1, 2) / 2.0, -1)             # (N, L, L)
    return (scores @ x).amax(dim=1).sum() + x.mT.mean(dim=(1, 2)).sum()


GRAPHS = {
    "lenet_like": (lenet_like, [(3, 1, 12, 12), (4, 1, 5, 5), (4,), (6, 4, 3, 3), (6,), (10, 24), (10,), (5, 10), (5,)],
                   lambda rng: [rng.integers(0, 5, 3)]),
    "residual_block": (residual_block, [(2, 3, 6, 5), (4, 3, 3, 3), (4, 4, 3, 3), (4,), (4,), (3, 4)],
                       lambda rng: [rng.integers(0, 3, 2)]),
    "two_pools": (two_pools, [(2, 2, 9, 10), (3, 2, 2, 3), (3, 4, 2)], lambda rng: []),
    "separable_and_cat": (separable_and_cat, [(2, 3, 5, 6), (3, 1, 3, 3), (4, 3, 1, 1)],
                          lambda rng: [rng.random((2, 7, 5, 6))]),
    "upsample": (upsample, [(2, 3, 3, 4), (3, 2, 3, 3), (4, 2, 2, 3), (4,)], lambda rng: []),
    "attention_like": (attention_like, [(2, 5, 3), (3, 3), (3, 3)], lambda rng: []),
}


@pytest.mark.parametrize("name", list(GRAPHS))
@dtypes()
def test_graphs_of_several_ops_match_torch(name, dtype, rng, xp):
    graph, shapes, make_consts = GRAPHS[name]
    inputs = [rng.standard_normal(s) * 0.5 for s in shapes]
    check_op(lambda *a: graph(F, *a), lambda *a: graph(TF, *a), inputs, make_consts(rng), dtype=dtype, rng=rng, xp=xp)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_write_through_the_array_between_ops_is_seen_like_torch(threads, rng):
    """conv -> ReLU -> 2x2 max pool, repeated with one weight, with the convolution's output
    changed through its array (as a forward hook ablating a channel does) before the ReLU from
    the third call on: every call's result is that of the written values, as in PyTorch. An
    engine that computes the ReLU or the pooling ahead, guessing the chain from earlier calls,
    must not hand out values computed before such a write (it cannot see it: no op ran)."""
    import cnnkit
    from cnnkit import config

    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    cw, cb = cnnkit.Tensor(w, requires_grad=True), cnnkit.Tensor(b, requires_grad=True)
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    with config.num_threads(threads):
        for call in range(5):
            cy = F.conv2d(cnnkit.Tensor(x), cw, cb, padding=2)
            ty = TF.conv2d(torch.tensor(x), tw, tb, padding=2)
            if call >= 2:
                cy.data[:, call % 6] = -1.0
                cy.detach().numpy()[:, 5, :3] = 7.0
                ty.data[:, call % 6] = -1.0
                ty.data[:, 5, :3] = 7.0
            cp = F.max_pool2d(F.relu(cy), 2)
            tp = TF.max_pool2d(TF.relu(ty), 2)
            np.testing.assert_allclose(cp.data, tp.detach().numpy(), rtol=1e-5, atol=1e-5)
            cp.sum().backward()
            tp.sum().backward()
    np.testing.assert_allclose(cw.grad, tw.grad.numpy(), rtol=1e-4, atol=1e-3)
