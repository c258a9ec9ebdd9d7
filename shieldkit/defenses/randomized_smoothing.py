"""Randomised smoothing (Cohen et al. 2019): a classifier certified in L2, from Gaussian noise draws."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from shieldkit.core.defense import ABSTAIN, Certificate, DefendedModel, TransformDefense
from shieldkit.core.validation import check_int, check_logits, check_number, model_device

#: noisy images per ``randn`` call of :meth:`RandomizedSmoothing.counts` (not ``batch_size``: see ``_noise_blocks``).
NOISE_BLOCK = 64
#: entries of the binomial-tail table one bisection step of the confidence bound may build (8 MB in float64).
BOUND_TABLE = 1_000_000


def binomial_tail(k: Tensor, n: int, p: Tensor) -> Tensor:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, per element (float64, in log space for large ``n``)."""
    j = torch.arange(n + 1, dtype=torch.float64, device=k.device)
    log_choose = torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
    p = p.to(torch.float64)[:, None].clamp(1e-300, 1 - 1e-16)
    terms = log_choose + j * p.log() + (n - j) * torch.log1p(-p)
    terms = torch.where(j[None, :] >= k.to(torch.float64)[:, None], terms, torch.full_like(terms, -math.inf))
    return terms.logsumexp(dim=1).exp()


def lower_confidence_bound(k: Tensor, n: int, alpha: float) -> Tensor:
    """The one-sided Clopper-Pearson lower bound on ``p`` from ``k`` successes in ``n`` trials at ``1 - alpha``.

    The ``p`` with ``P(X >= k | p) = alpha`` (0 when ``k = 0``), found by bisection on the exact binomial tail.
    Samples are bounded a few at a time, so the ``[samples, n + 1]`` table of the tail stays near
    ``BOUND_TABLE`` entries even for Cohen et al.'s ``n = 100,000``.
    """
    rows = max(1, BOUND_TABLE // (n + 1))
    if k.numel() > rows:
        return torch.cat([lower_confidence_bound(part, n, alpha) for part in k.split(rows)])
    low = torch.zeros(k.shape, dtype=torch.float64, device=k.device)
    high = torch.ones_like(low)
    for _ in range(60):  # 2^-60: far below any Monte-Carlo error
        middle = (low + high) / 2
        too_low = binomial_tail(k, n, middle) < alpha
        low, high = torch.where(too_low, middle, low), torch.where(too_low, high, middle)
    return torch.where(k > 0, low, torch.zeros_like(low))


def upper_confidence_bound(k: Tensor, n: int, alpha: float) -> Tensor:
    """The one-sided Clopper-Pearson upper bound on ``p`` from ``k`` successes in ``n`` trials at ``1 - alpha``."""
    return 1 - lower_confidence_bound(n - k, n, alpha)


class RandomizedSmoothing(TransformDefense):
    """The smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)``, certified in L2.

    :meth:`certify` is Cohen et al.'s CERTIFY: ``n0`` noise draws choose the class,
    ``n`` more estimate its probability, and the one-sided Clopper-Pearson bound
    ``p_A`` at confidence ``1 - alpha`` gives the radius ``sigma * Phi^-1(p_A)``
    (abstaining when ``p_A <= 1/2``). The deployed model (:meth:`wrap`) predicts
    by majority vote over ``n_predict`` draws; its adaptive view (Salman et al.'s
    attack on the smoothed classifier) averages the base model's softmax over
    ``attack_samples`` draws, so gradient attacks of the evaluation attack ``g``
    itself, not the base model. A base model trained with the same noise
    (``noise_training``) makes the smoothed classifier accurate.

    Args:
        sigma: noise standard deviation, in pixel units (``> 0``).
        n0: draws that select the class.
        n: draws that estimate its probability.
        alpha: the certificate fails with probability at most ``alpha``.
        n_predict: draws per prediction of the deployed model.
        attack_samples: draws averaged by the adaptive view per forward pass.
        batch_size: noisy images per forward pass of the base model (the memory budget).
        **common: ``bounds``, ``seed`` (the noise's own RNG).

    Reference:
        Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized Smoothing. ICML 2019.
        Salman et al. Provably Robust Deep Learning via Adversarially Trained Smoothed Classifiers. NeurIPS 2019.
    """

    family = "randomized_smoothing"
    randomized = True
    certifies = "l2"
    smoke_params = {"n0": 4, "n": 16, "n_predict": 8, "attack_samples": 2}

    def __init__(self, *, sigma: float = 0.25, n0: int = 100, n: int = 1000, alpha: float = 0.001,
                 n_predict: int = 100, attack_samples: int = 8, batch_size: int = 1000, **common):
        super().__init__(**common)
        owner = self.name
        self.sigma = check_number(owner, "sigma", sigma, 0.0, strict=True)
        self.n0 = check_int(owner, "n0", n0)
        self.n = check_int(owner, "n", n)
        self.alpha = check_number(owner, "alpha", alpha, 0.0, 1.0, strict=True)
        self.n_predict = check_int(owner, "n_predict", n_predict)
        self.attack_samples = check_int(owner, "attack_samples", attack_samples)
        self.batch_size = check_int(owner, "batch_size", batch_size)

    # ----------------------------------------------------------------- noise

    def _transform(self, x: Tensor) -> Tensor:
        """One noisy copy of ``x``, unclipped (as in Cohen et al.: the certificate is for Gaussian noise).

        The votes and the adaptive view use it as it is; the public ``transform`` (one draw,
        for a user who wants to see the noise) clips to the bounds like every transform.
        """
        return x + self.sigma * torch.randn(x.shape, generator=self.rng(x.device), device=x.device, dtype=x.dtype)

    def _noise_blocks(self, total: int, shape: torch.Size, device: torch.device,
                      dtype: torch.dtype) -> Iterator[Tensor]:
        """The noise of ``total`` noisy images, drawn ``NOISE_BLOCK`` images at a time.

        Fixed blocks make the stream (and so a seeded certificate) the same whatever
        ``batch_size`` cuts it into: one ``randn`` of a chunk's size would not be, on
        CUDA nor on CPU for images whose size is not a multiple of 16 values.
        """
        generator = self.rng(device)
        for start in range(0, total, NOISE_BLOCK):
            size = (min(NOISE_BLOCK, total - start), *shape)
            yield self.sigma * torch.randn(size, generator=generator, device=device, dtype=dtype)

    def counts(self, model: nn.Module, x: Tensor, draws: int, batch_size: int | None = None) -> tuple[Tensor, int]:
        """Votes ``[B, K]`` of the base model over ``draws`` noisy copies of each image, and the forwards made.

        Images and draws are flattened into forward passes of at most ``batch_size`` (default: the
        defence's) noisy images; the noise does not depend on ``batch_size`` (see ``_noise_blocks``).
        """
        batch_size = self.batch_size if batch_size is None else batch_size
        device = model_device(model)
        x = x.to(device)
        votes: Tensor | None = None
        forwards = 0
        total = x.shape[0] * draws
        owner = torch.arange(x.shape[0], device=device).repeat_interleave(draws)
        blocks = self._noise_blocks(total, x.shape[1:], device, x.dtype)
        pending: list[Tensor] = []
        with torch.no_grad():
            for start in range(0, total, batch_size):
                index = owner[start:start + batch_size]
                while sum(len(block) for block in pending) < len(index):
                    pending.append(next(blocks))
                noise = torch.cat(pending) if len(pending) > 1 else pending[0]
                pending = [noise[len(index):]] if len(noise) > len(index) else []
                logits = check_logits(model(x[index] + noise[:len(index)]), len(index),
                                      f"{self.name}: the base model")
                forwards += 1
                if votes is None:
                    votes = torch.zeros(x.shape[0], logits.shape[1], dtype=torch.long, device=device)
                votes.index_put_((index, logits.argmax(dim=1)), torch.ones_like(index), accumulate=True)
        return votes, forwards

    # ------------------------------------------------------------- certify

    def radius(self, p_lower: Tensor) -> Tensor:
        """The certified L2 radius for a lower bound ``p_lower`` on the top class's probability."""
        return self.sigma * torch.special.ndtri(p_lower.clamp(max=1 - 1e-12))

    def certify(self, model: nn.Module, x: Tensor, y: Tensor | None = None, *, n0: int | None = None,
                n: int | None = None, alpha: float | None = None, batch_size: int | None = None) -> Certificate:
        """CERTIFY (Cohen et al., Algorithm 1) for every image of ``x``; ``y`` is not used (it is the caller's to judge).

        ``n0``, ``n``, ``alpha`` and ``batch_size`` override the defence's for this call.
        """
        self._check_x(x)
        n0 = self.n0 if n0 is None else check_int(self.name, "n0", n0)
        n, alpha = self._n_alpha(n, alpha)
        batch_size = None if batch_size is None else check_int(self.name, "batch_size", batch_size)
        started = time.perf_counter()
        selection, forwards0 = self.counts(model, x, n0, batch_size)
        top = selection.argmax(dim=1)
        estimation, forwards = self.counts(model, x, n, batch_size)
        p_lower = lower_confidence_bound(estimation.gather(1, top[:, None]).squeeze(1).cpu(), n, alpha)
        certified = p_lower > 0.5
        predictions = torch.where(certified, top.cpu(), torch.full_like(top.cpu(), ABSTAIN))
        radii = torch.where(certified, self.radius(p_lower), torch.zeros_like(p_lower)).float()
        return Certificate(predictions, radii, forwards0 + forwards, (n0 + n) * x.shape[0],
                           time.perf_counter() - started)

    def _n_alpha(self, n: int | None, alpha: float | None) -> tuple[int, float]:
        """A call's ``n`` and ``alpha``: the defence's, or the overrides given, checked."""
        n = self.n if n is None else check_int(self.name, "n", n)
        alpha = self.alpha if alpha is None else check_number(self.name, "alpha", alpha, 0.0, 1.0, strict=True)
        return n, alpha

    def predict(self, model: nn.Module, x: Tensor, *, n: int | None = None, alpha: float | None = None) -> Tensor:
        """PREDICT (Cohen et al.): the vote over ``n`` draws, ``ABSTAIN`` unless a two-sided binomial test
        at level ``alpha`` separates the top two classes. Wrong with probability at most ``alpha``."""
        self._check_x(x)
        n, alpha = self._n_alpha(n, alpha)
        votes, _ = self.counts(model, x, n)
        top2 = votes.cpu().topk(min(2, votes.shape[1]), dim=1)
        first, second = top2.values[:, 0], top2.values[:, 1]
        p_values = torch.ones(len(first), dtype=torch.float64)
        for trials in (first + second).unique().tolist():  # the test's number of trials differs per sample
            rows = (first + second) == trials
            tail = binomial_tail(first[rows], int(trials), torch.full((int(rows.sum()),), 0.5))
            p_values[rows] = (2 * tail).clamp(max=1.0)
        return torch.where(p_values <= alpha, top2.indices[:, 0], torch.full_like(first, ABSTAIN))

    def disproves(self, model: nn.Module, x: Tensor, classes: Tensor, *, n: int | None = None,
                  alpha: float | None = None) -> Tensor:
        """``[B]`` bool: with confidence ``1 - alpha``, the smoothed classifier does not give ``classes`` on ``x``.

        The upper confidence bound on the probability of ``classes[i]`` at ``x[i]`` is
        below 1/2, so ``g(x[i]) != classes[i]``: a point inside a certificate's radius
        for which this holds shows the certificate (or the noise model) wrong.
        """
        self._check_x(x)
        n, alpha = self._n_alpha(n, alpha)
        votes, _ = self.counts(model, x, n)
        hits = votes.gather(1, classes.to(votes.device)[:, None]).squeeze(1).cpu()
        return upper_confidence_bound(hits, n, alpha) < 0.5

    # ---------------------------------------------------------- deployment

    def wrap(self, model: nn.Module) -> SmoothedClassifier:
        """The smoothed classifier as deployed: a majority vote over ``n_predict`` draws."""
        return SmoothedClassifier(model, self)

    def adaptive_view(self, deployed: nn.Module) -> nn.Module:
        """The smoothed soft classifier (mean softmax over ``attack_samples`` draws): what PGD on ``g`` differentiates."""
        return SoftSmoothedClassifier(deployed.model, self)


class SmoothedClassifier(DefendedModel):
    """The deployed smoothed classifier: vote shares ``[B, K]`` over ``n_predict`` noisy copies (argmax = the vote)."""

    def forward(self, x: Tensor) -> Tensor:
        defense = self.defense
        votes, _ = defense.counts(self.model, x, defense.n_predict)
        shares = votes.to(x.dtype) / defense.n_predict
        # A vote is piecewise constant in x: its gradient is zero wherever it exists. Say so to autograd
        # (a zero gradient, not none), so a naive gradient attack sees masked gradients instead of crashing.
        # (x * 0 rather than 0 * sum(x): its gradient is a dense tensor that attacks may update in place.)
        return shares + (x * 0).flatten(1).sum(dim=1, keepdim=True) if x.requires_grad else shares


class SoftSmoothedClassifier(nn.Module):
    """``log E[softmax(f(x + noise))]`` over ``attack_samples`` draws: differentiable, for attacks on ``g``."""

    def __init__(self, model: nn.Module, defense: RandomizedSmoothing):
        super().__init__()
        self.model = model
        self.defense = defense

    def forward(self, x: Tensor) -> Tensor:
        draws = self.defense.attack_samples
        noisy = self.defense._transform(x.repeat_interleave(draws, dim=0))
        probabilities = self.model(noisy).softmax(dim=1).view(x.shape[0], draws, -1).mean(dim=1)
        return probabilities.clamp_min(1e-12).log()
