"""Quantized saved activations: codec properties, Functions' gradients, exact byte accounting."""

import math

import pytest
import torch
import torch.nn.functional as F

from bigkg import quant
from bigkg.quant import QuantizationError, SavedBytes


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("numel", [1, 7, 64, 1001])
def test_bit_pack_round_trip(bits, numel):
    gen = torch.Generator().manual_seed(numel)
    codes = torch.randint(0, 1 << bits, (numel,), generator=gen, dtype=torch.uint8)
    packed = quant.pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(numel * bits / 8)
    assert torch.equal(quant.unpack_bits(packed, bits, numel), codes)


def test_mask_round_trip_is_one_bit_per_entry():
    mask = torch.rand(13, 37, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = quant.pack_mask(mask)
    assert packed.numel() == math.ceil(13 * 37 / 8)
    assert torch.equal(quant.unpack_mask(packed, mask.shape), mask)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_dequantization_is_unbiased_and_within_variance_bound(bits):
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(6, 50, generator=gen) * torch.tensor([[0.1], [1.0], [3.0], [10.0], [0.5], [2.0]])
    samples = 4000
    q = quant.quantize(x.repeat(samples, 1), bits, generator=gen)
    draws = quant.dequantize(q).view(samples, *x.shape)
    step = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) / ((1 << bits) - 1)
    # Each entry's mean has standard deviation at most (step / 2) / sqrt(samples).
    err = (draws.mean(0) - x).abs()
    assert torch.all(err <= 5 * (step / 2) / math.sqrt(samples) + 1e-6)
    variance = draws.var(0).sum(1)
    assert torch.all(variance <= quant.variance_bound(x, bits) * 1.1)
    # Every draw lies on the grid between the row's min and max.
    assert torch.all(draws >= x.amin(1, keepdim=True) - 1e-5)
    assert torch.all(draws <= x.amax(1, keepdim=True) + 1e-5)


def test_constant_rows_and_grid_values_are_exact():
    x = torch.tensor([[3.0, 3.0, 3.0], [0.0, 0.5, 1.0]])
    deq = quant.dequantize(quant.quantize(x, 2))
    assert torch.equal(deq[0], x[0])
    # 0.5 is not on the 2-bit grid {0, 1/3, 2/3, 1}; the endpoints are.
    assert deq[1, 0] == 0.0 and deq[1, 2] == 1.0


def test_bad_bit_width_is_refused():
    with pytest.raises(QuantizationError, match="one of"):
        quant.quantize(torch.randn(3, 4), 3)


def _grads(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    weights = torch.linspace(-1, 1, out.numel()).view(out.shape)
    (out * weights).sum().backward()
    return out.detach(), [t.grad for t in inputs]


def test_exact_mode_functions_match_torch():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(20, 8, generator=gen), torch.randn(5, 8, generator=gen), torch.randn(5, generator=gen)
    out, grads = _grads(lambda x, w, b: quant.linear(x, w, b, 32), x, w, b)
    ref, ref_grads = _grads(F.linear, x, w, b)
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    for ours, theirs in ((quant.relu, torch.relu), (lambda t: quant.tanh(t, 32), torch.tanh)):
        out, (g,) = _grads(ours, x)
        ref, (r,) = _grads(theirs, x)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(g, r)


def test_dropout_gradient_uses_the_forward_mask():
    x = torch.randn(30, 10).requires_grad_(True)
    out = quant.dropout(x, 0.4, True, torch.Generator().manual_seed(3))
    out.sum().backward()
    kept = out.detach() != 0
    torch.testing.assert_close(x.grad, kept.float() / 0.6)
    assert quant.dropout(x, 0.4, False) is x


def test_recompute_matches_plain_autograd_and_reaches_params():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(10, 6, generator=gen)
    z = torch.randn(3, 6, generator=gen).requires_grad_(True)
    src = torch.randint(0, 10, (40,), generator=gen)
    rel = torch.randint(0, 3, (40,), generator=gen)

    def stage(h, src, rel):
        return torch.zeros(10, 6).index_add(0, src, h[src] * z[rel])

    xa = x.clone().requires_grad_(True)
    ours = quant.recompute(stage, xa, (src, rel), (z,), 32)
    ours.pow(2).sum().backward()
    gx, gz = xa.grad, z.grad.clone()
    z.grad = None
    xb = x.clone().requires_grad_(True)
    stage(xb, src, rel).pow(2).sum().backward()
    torch.testing.assert_close(ours, stage(x, src, rel))
    torch.testing.assert_close(gx, xb.grad)
    torch.testing.assert_close(gz, z.grad)


def test_saved_bytes_are_exact_for_quantized_linear():
    n, d = 100, 40
    x = torch.randn(n, d, requires_grad=True) * 2.0  # a non-leaf activation; the product saves nothing
    w = torch.nn.Parameter(torch.randn(8, d))
    with SavedBytes([w]) as plain:
        F.linear(x, w)
    assert plain.report.activations == n * d * 4
    assert plain.report.parameters == w.numel() * 4
    for bits in (8, 4, 2, 1):
        with SavedBytes([w]) as saved:
            quant.linear(x, w, None, bits)
        codes = math.ceil(n * d * bits / 8)
        assert saved.report.activations == codes + 2 * n * 4  # codes + per-row lo and step
        assert saved.report.by_dtype["uint8"] == codes


def test_saved_bytes_count_a_storage_once():
    x = torch.randn(50, 20).exp()
    w1, w2 = torch.nn.Parameter(torch.randn(4, 20)), torch.nn.Parameter(torch.randn(4, 20))
    with SavedBytes([w1, w2]) as saved:
        F.linear(x, w1)
        F.linear(x, w2)
        F.linear(x[:10], w1)
    assert saved.report.activations == 50 * 20 * 4


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("shape", [(17, 200), (5, 13), (1, 3)])
def test_kernels_agree_with_torch_reference(bits, shape):
    from bigkg.quant import kernels
    from bigkg.quant.codec import _quantize_kernel, dequantize_reference, quantize_reference

    gen = torch.Generator().manual_seed(bits)
    rows = torch.randn(shape, generator=gen) * 3
    rows[0] = 1.5  # a constant row
    noise = torch.rand(shape, generator=gen)
    ours = _quantize_kernel(rows, bits, noise=noise)
    ref = quantize_reference(rows, noise, bits)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    # Noise drawn inside the kernel is the noise uniform_noise gives for the seed.
    drawn = torch.empty(shape)
    kernels.uniform_noise(12345, drawn.numpy())
    for a, b in zip(_quantize_kernel(rows, bits, seed=12345), quantize_reference(rows, drawn, bits)):
        assert torch.equal(a, b)
    q = quant.Quantized(*ours, torch.Size(shape), bits, torch.float32)
    assert torch.equal(quant.dequantize(q), dequantize_reference(q))
    # Some rows only, in any order and repeated (backward reads the rows a gradient reaches).
    at = torch.tensor([shape[0] - 1, 0, shape[0] - 1])
    assert torch.equal(quant.dequantize(q, at), quant.dequantize(q)[at])
    assert torch.equal(dequantize_reference(q, at), quant.dequantize(q, at))


def test_kernel_noise_is_uniform_and_uncorrelated():
    from bigkg.quant import kernels

    u = torch.empty(1000, 200)
    kernels.uniform_noise(7, u.numpy())
    flat = u.flatten()
    assert 0 <= float(flat.min()) and float(flat.max()) < 1
    assert abs(float(flat.mean()) - 0.5) < 0.002 and abs(float(flat.var()) - 1 / 12) < 0.001
    counts = torch.histc(flat, bins=16, min=0, max=1)
    assert float((counts - flat.numel() / 16).abs().max()) < 0.02 * flat.numel() / 16
    # Neighbouring entries (consecutive counters) are uncorrelated; another seed gives other noise.
    assert abs(float(torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1])) < 0.01
    other = torch.empty(1000, 200)
    kernels.uniform_noise(8, other.numpy())
    assert abs(float(torch.corrcoef(torch.stack([flat, other.flatten()]))[0, 1])) < 0.01


def test_live_rows_are_the_rows_with_a_nonzero_entry():
    from bigkg.quant.functions import live_rows

    g = torch.zeros(40, 6)
    g[3, 5] = 1.0
    g[17, 0] = -2.0
    g[30, 2] = float("nan")
    assert live_rows(g).tolist() == [3, 17, 30]
    assert live_rows(g.double()).tolist() == [3, 17, 30]  # the torch scan (other dtypes and devices)
    assert live_rows(torch.ones(40, 6)) is None  # nearly all live: the dense product
    assert live_rows(g.t().contiguous().t()) is None  # not contiguous: not scanned
