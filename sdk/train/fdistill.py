"""f-distill's shared math: the divergences' weights h(r), the density-ratio pipeline, the three losses.

Spec: ../shared/specs/f-distill.md. Everything here is model-agnostic tensors in, tensors out; the toy 2-D
protocol (fdistill_toy.py) and the tiny-sd one-step student (onestep.py) both train through these functions.

Direction convention (spec §1, §12): r = p / q, teacher (real) over student, and the discriminator is trained
with real -> +logit, so r = exp(logit). A flipped sign turns every mode-covering divergence mode-seeking.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import distributed as dist

# h(r) = f''(r) r^2, up to a constant factor (h is divided by its batch mean, so constants cancel; spec §3)
H_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "rkl": torch.ones_like,  # reverse KL: h == 1, exactly DMD2
    "srkl": lambda r: 1.0 / (r + 1.0),  # softened reverse KL
    "js": lambda r: r / (r + 1.0),  # Jensen-Shannon
    "hellinger": lambda r: 0.25 * torch.sqrt(r),  # squared Hellinger
    "fkl": lambda r: r,  # forward KL
    "jeffreys": lambda r: r + 1.0,  # Jeffreys (forward + reverse KL)
}

# f(r) with f(1) = 0 and D_f(p||q) = E_q[f(p/q)]: the generators of the weights above (tests check h = f'' r^2)
F_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "rkl": lambda r: -torch.log(r),
    "srkl": lambda r: (r + 1.0) * torch.log(0.5 + 0.5 / r),
    "js": lambda r: r * torch.log(r) - (r + 1.0) * torch.log((r + 1.0) / 2.0),
    "hellinger": lambda r: 1.0 - torch.sqrt(r),
    "fkl": lambda r: r * torch.log(r),
    "jeffreys": lambda r: (r - 1.0) * torch.log(r),
}

DIVERGENCES: tuple[str, ...] = tuple(H_FUNCTIONS)

LOGIT_CLAMP = 10.0  # spec §4: clamp the mean logit to [-10, 10] ...
RATIO_CLIP = (0.1, 20.0)  # ... then clip r = exp(logit) to [0.1, 20]


def h_alpha(r: Tensor, alpha: float) -> Tensor:
    """The optional alpha family: h = r^alpha (alpha -> 0 reverse KL, 1/2 Hellinger, 1 forward KL)."""
    return r**alpha


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over data-parallel ranks (bin and batch means must be global, spec §12); identity when alone."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


class RatioWeights:
    """logits of the discriminator -> per-sample weights h with mean 1 over the global batch (spec §4).

    Stage 1 divides r by the mean r of its noise-level bin (equal-width bins over [t_min, t_max], optionally an
    EMA per bin); stage 2 divides h by its global batch mean. All in fp32 without gradients.
    """

    def __init__(self, divergence: str, t_min: float, t_max: float, bins: int = 10, ema: float = 0.0,
                 normalize: bool = True, alpha: float | None = None) -> None:
        if divergence not in H_FUNCTIONS and alpha is None:
            raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
        if not t_max > t_min:
            raise ValueError(f"t_max must exceed t_min, got [{t_min}, {t_max}]")
        self.divergence, self.alpha = divergence, alpha
        self.t_min, self.t_max, self.bins, self.ema, self.normalize = float(t_min), float(t_max), bins, ema, normalize
        self.bin_means: Tensor | None = None  # EMA state per bin (only kept when ema > 0)

    def h(self, r: Tensor) -> Tensor:
        return h_alpha(r, self.alpha) if self.alpha is not None else H_FUNCTIONS[self.divergence](r)

    def bin_of(self, t: Tensor) -> Tensor:
        position = (t.float() - self.t_min) / (self.t_max - self.t_min) * self.bins
        return position.floor().long().clamp(0, self.bins - 1)

    @torch.no_grad()
    def __call__(self, logit: Tensor, t: Tensor) -> Tensor:
        logit = logit.detach().float()
        if logit.dim() > 1:  # several discriminator heads: average their logits
            logit = logit.flatten(1).mean(1)
        r = logit.clamp(-LOGIT_CLAMP, LOGIT_CLAMP).exp().clamp(*RATIO_CLIP)
        if self.normalize:
            bins = self.bin_of(t)
            sums = _all_reduce_sum(r.new_zeros(self.bins).index_add_(0, bins, r))  # on r's device (CUDA, NCCL)
            counts = _all_reduce_sum(r.new_zeros(self.bins).index_add_(0, bins, torch.ones_like(r)))
            means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.ones_like(sums))
            if self.ema > 0:
                if self.bin_means is None:
                    self.bin_means = means.clone()
                else:  # bins absent from this batch keep their old mean
                    updated = self.ema * self.bin_means + (1 - self.ema) * means
                    self.bin_means = torch.where(counts > 0, updated, self.bin_means)
                means = self.bin_means
            r = r / (means[bins] + 1e-6)
        h = self.h(r)
        if self.normalize:
            total = _all_reduce_sum(torch.stack([h.sum(), h.new_tensor(float(h.numel()))]))
            h = h / (total[0] / total[1] + 1e-6)
        return h

    def state_dict(self) -> dict:
        return {"bin_means": self.bin_means}

    def load_state_dict(self, state: dict) -> None:
        self.bin_means = state.get("bin_means")


def dmd_normalizer(x: Tensor, x0_teacher: Tensor) -> Tensor:
    """Per-sample w = 1 / (mean |x - x̂_teacher| + 1e-6), no gradient (DMD's step-size normaliser, spec §5)."""
    with torch.no_grad():
        return 1.0 / ((x - x0_teacher).abs().flatten(1).mean(1) + 1e-6)


def distribution_matching_loss(x: Tensor, x0_teacher: Tensor, x0_fake: Tensor, h: Tensor) -> Tensor:
    """L_fd = 0.5 mean((x - stopgrad(x - g))^2) with g = h w (x̂_fake - x̂_teacher): dL/dx = g / numel.

    Descending it moves each sample by +h w (x̂_teacher - x̂_fake), along the teacher-minus-student score."""
    with torch.no_grad():
        weight = (h.detach().float() * dmd_normalizer(x, x0_teacher)).view(-1, *([1] * (x.dim() - 1)))
        step = weight * (x0_fake - x0_teacher)
        target = x - step
    return 0.5 * F.mse_loss(x, target, reduction="mean")


def discriminator_loss(logit_real: Tensor, logit_fake: Tensor) -> Tensor:
    """Non-saturating logistic loss with real -> +logit: at the optimum sigmoid(logit) = p/(p+q), r = exp(logit)."""
    return F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()


def generator_gan_loss(logit_fake: Tensor) -> Tensor:
    """The generator's non-saturating GAN term: push its samples' logits up."""
    return F.softplus(-logit_fake).mean()
