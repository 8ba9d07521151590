"""f-distill: the shared math (h, the ratio pipeline, the losses) and the 2-D toy protocol, from first principles."""

import math

import pytest
import torch

from edgesdk.train.fdistill import (
    DIVERGENCES,
    F_FUNCTIONS,
    H_FUNCTIONS,
    RATIO_CLIP,
    RatioWeights,
    discriminator_loss,
    distribution_matching_loss,
)
from edgesdk.train.fdistill_toy import MixtureTeacher, ToyConfig, run_toy


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_h_is_second_derivative_of_f_times_r_squared(divergence: str):
    r = torch.logspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    f = F_FUNCTIONS[divergence](r)
    (first,) = torch.autograd.grad(f.sum(), r, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), r)
    factor = (second * r.detach() ** 2) / H_FUNCTIONS[divergence](r.detach())
    assert F_FUNCTIONS[divergence](torch.tensor(1.0, dtype=torch.float64)).abs() < 1e-12  # f(1) = 0
    assert (factor > 0).all()  # f convex, h >= 0
    torch.testing.assert_close(factor, factor[0].expand_as(factor), rtol=1e-9, atol=0)


def _dm_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x, teacher_offset, fake_offset = torch.randn(3, 4, 3, 8, 8, generator=generator)
    return x, x + 0.3 * teacher_offset, x + 0.3 * fake_offset


def test_reverse_kl_is_dmd2_bit_for_bit():
    x, x0_teacher, x0_fake = _dm_inputs()
    x_ours, x_dmd2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = distribution_matching_loss(x_ours, x0_teacher, x0_fake, H_FUNCTIONS["rkl"](torch.rand(4)))
    # DMD2 as spec §5 writes it: per-sample 1/(mean |x - x̂_T| + 1e-6), regression onto a detached shifted target
    with torch.no_grad():
        normaliser = 1.0 / ((x_dmd2 - x0_teacher).abs().flatten(1).mean(1) + 1e-6)
        shifted = x_dmd2 - normaliser.view(-1, 1, 1, 1) * (x0_fake - x0_teacher)
    dmd2 = 0.5 * ((x_dmd2 - shifted) ** 2).mean()
    assert torch.equal(ours, dmd2)
    ours.backward()
    dmd2.backward()
    assert torch.equal(x_ours.grad, x_dmd2.grad)


def test_gradient_of_distribution_matching_loss():
    x, x0_teacher, x0_fake = (t.double() for t in _dm_inputs())
    x.requires_grad_()
    h = torch.rand(4, dtype=torch.float64) * 3
    distribution_matching_loss(x, x0_teacher, x0_fake, h).backward()
    w = 1.0 / ((x.detach() - x0_teacher).abs().flatten(1).mean(1) + 1e-6)
    expected = (h * w).view(-1, 1, 1, 1) * (x0_fake - x0_teacher) / x.numel()
    torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_ratio_weights_have_unit_batch_mean(divergence: str):
    generator = torch.Generator().manual_seed(1)
    for scale in (0.1, 3.0, 30.0):  # nearly equal ratios up to ratios pinned at both clip ends
        logit, t = scale * torch.randn(300, generator=generator), 0.05 + 1.95 * torch.rand(300, generator=generator)
        h = RatioWeights(divergence, 0.05, 2.0)(logit, t)
        assert (h >= 0).all()
        assert h.mean().item() == pytest.approx(1.0, abs=1e-5)


def test_ratio_weights_clip_ratio_and_carry_no_gradient():
    logit = torch.tensor([1e4, 50.0, 0.0, -50.0, -1e4], requires_grad=True)
    raw = RatioWeights("fkl", 0.0, 1.0, normalize=False)(logit, torch.full((5,), 0.5))  # h = r for forward KL
    torch.testing.assert_close(raw, torch.tensor([RATIO_CLIP[1], RATIO_CLIP[1], 1.0, RATIO_CLIP[0], RATIO_CLIP[0]]))
    assert not raw.requires_grad
    assert not RatioWeights("js", 0.0, 1.0)(logit, torch.rand(5)).requires_grad
    heads = torch.stack([logit.detach(), -logit.detach()], 1)  # two heads: their logits average to 0, r = 1
    torch.testing.assert_close(RatioWeights("fkl", 0.0, 1.0, normalize=False)(heads, torch.rand(5)), torch.ones(5))


def test_ratio_weights_bins_and_per_bin_normalisation():
    weights = RatioWeights("fkl", 0.05, 2.0, bins=10)
    bins = weights.bin_of(torch.tensor([0.05, 0.05 + 0.195 * 0.5, 0.05 + 0.195 * 3.5, 1.99, 2.0]))
    assert bins.tolist() == [0, 0, 3, 9, 9]
    # ratios whose scale depends strongly on t: stage 1 removes it, so h = r / bin mean has equal bin means
    t = torch.linspace(0.05, 2.0, 1000)
    logit = 2.0 * t + 0.3 * torch.randn(1000, generator=torch.Generator().manual_seed(2))
    h = weights(logit, t)
    bin_means = torch.stack([h[weights.bin_of(t) == b].mean() for b in range(10)])
    torch.testing.assert_close(bin_means, torch.ones(10), rtol=1e-4, atol=1e-4)


def test_ratio_weights_ema_state_round_trips():
    generator = torch.Generator().manual_seed(3)
    batches = [(torch.randn(200, generator=generator), torch.rand(200, generator=generator)) for _ in range(3)]
    original = RatioWeights("hellinger", 0.0, 1.0, ema=0.5)
    for logit, t in batches[:2]:
        original(logit, t)
    restored = RatioWeights("hellinger", 0.0, 1.0, ema=0.5)
    restored.load_state_dict(original.state_dict())
    fresh = RatioWeights("hellinger", 0.0, 1.0, ema=0.5)
    assert torch.equal(restored(*batches[2]), original(*batches[2]))
    assert not torch.allclose(fresh(*batches[2]), original(*batches[2]))  # the state matters


def test_discriminator_logit_is_log_density_ratio():
    # real ~ N(0, 1) = p, student ~ N(1, 1) = q: log p/q = 0.5 - x
    torch.manual_seed(4)
    disc = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-2)
    for _ in range(400):
        real, student = torch.randn(512, 1), torch.randn(512, 1) + 1.0
        loss = discriminator_loss(disc(real), disc(student))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        ratio = disc(torch.tensor([[-1.0], [0.5], [2.0]])).squeeze(1).exp()
    true_ratio = torch.tensor([math.exp(1.5), 1.0, math.exp(-1.5)])
    assert ratio[0] > 2.0 and ratio[2] < 0.5  # real-dense region: r > 1; student-dense region: r < 1
    torch.testing.assert_close(ratio.log(), true_ratio.log(), rtol=0, atol=0.35)


def test_teacher_denoiser_is_tweedie_of_exact_mixture():
    teacher = MixtureTeacher.named("8-ring")
    x_t = (3 * torch.randn(64, 2, generator=torch.Generator().manual_seed(5))).requires_grad_()
    sigma = torch.linspace(0.05, 2.0, 64)
    variance = (teacher.std**2 + sigma**2).unsqueeze(1)
    squared = (x_t.unsqueeze(1) - teacher.means).square().sum(-1)
    log_p = torch.logsumexp(teacher.weights.log() - squared / (2 * variance) - variance.log(), 1)  # 2-D Gaussians
    (score,) = torch.autograd.grad(log_p.sum(), x_t)
    expected = x_t.detach() + sigma.unsqueeze(1) ** 2 * score  # x̂ = x_t + σ² ∇log p_t
    torch.testing.assert_close(teacher.denoise(x_t.detach(), sigma), expected, rtol=1e-5, atol=1e-5)


def test_short_toy_run_returns_sane_metrics():
    config = ToyConfig(width=32, batch=128, pretrain_steps=300, warmup_steps=100, eval_every=100, eval_samples=1024)
    result = run_toy("2-modes", "fkl", seed=0, generator_steps=200, config=config)
    history = result["history"]
    assert [m["step"] for m in history] == [0, 100, 200]
    assert history[0]["mode_fractions"][0] > 0.95  # the skewed init sits on the heavy mode
    for metrics in history:
        assert 0.0 <= metrics["tv"] <= 1.0 and 0.0 <= metrics["quality"] <= 1.0
        assert 0 <= metrics["modes_covered"] <= 2
        assert sum(metrics["mode_fractions"]) == pytest.approx(1.0, abs=1e-3)
    for metrics in history[1:]:
        assert math.isfinite(metrics["h_max"]) and metrics["h_mean"] == pytest.approx(1.0, abs=1e-4)
    assert result["final"] == history[-1]
