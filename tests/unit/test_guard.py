"""Norms and projections (property-based), parameter checks, Normalize."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import shieldkit as sk
from shieldkit.core.threat import norm_of, project


@settings(max_examples=60, deadline=None)
@given(
    norm=st.sampled_from(["linf", "l2", "l1", "l0"]),
    eps=st.floats(0.0, 5.0),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_projection_lands_in_the_ball_and_is_idempotent(norm, eps, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    delta = torch.randn(batch, 2, 5, 5, generator=generator, dtype=torch.float64)
    if norm == "l0":
        eps = float(int(eps * 10))
    projected = project(delta, norm, eps)
    assert (norm_of(projected, norm) <= eps * (1 + 1e-9) + 1e-9).all()
    assert torch.allclose(project(projected, norm, eps), projected, atol=1e-9)
    inside = norm_of(delta, norm) <= eps
    assert torch.allclose(projected[inside], delta[inside])


@settings(max_examples=40, deadline=None)
@given(eps=st.floats(1e-3, 1.0), seed=st.integers(0, 2**16))
def test_threat_model_keeps_bounds_and_linf_exactly_in_float32(eps, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 6, 6, generator=generator)
    wild = torch.rand(3, 1, 6, 6, generator=generator) * 3 - 1
    projected = sk.ThreatModel("linf", eps).project(wild, x)
    assert projected.min() >= 0 and projected.max() <= 1
    assert ((projected - x).abs() <= eps).all()


def test_l2_projection_is_the_closest_point():
    delta = torch.tensor([[3.0, 4.0]]).view(1, 1, 1, 2)
    assert torch.allclose(project(delta, "l2", 1.0).flatten(), torch.tensor([0.6, 0.8]))


def test_normalize_layer():
    layer = sk.Normalize([0.5, 0.25], [0.5, 0.25])
    x = torch.full((1, 2, 2, 2), 0.5)
    assert torch.allclose(layer(x)[0, 0], torch.zeros(2, 2)) and torch.allclose(layer(x)[0, 1], torch.ones(2, 2))
    with pytest.raises(ValueError, match="std must be positive"):
        sk.Normalize(0.1, 0.0)
    with pytest.raises(ValueError, match="channels"):
        sk.Normalize([0.1, 0.2, 0.3], [1, 1, 1])(torch.rand(1, 2, 4, 4))


@pytest.mark.parametrize("ulps", [1, 3, 1000])
def test_round_inside_lands_in_the_linf_ball_from_float_error_and_beyond(ulps):
    generator = torch.Generator().manual_seed(ulps)
    x = torch.rand(4, 1, 8, 8, generator=generator)
    threat = sk.ThreatModel("linf", 0.1)
    x_adv = (x + 0.1 * torch.randn(4, 1, 8, 8, generator=generator).sign()).clamp(0, 1)
    for _ in range(ulps):  # push every coordinate at the boundary further out, one ulp at a time
        x_adv = torch.where((x_adv - x).abs() >= 0.09, torch.nextafter(x_adv, 2 * x_adv - x), x_adv).clamp(0, 1)
    rounded = threat.round_inside(x_adv, x)
    assert ((rounded - x).abs() <= 0.1).all() and rounded.min() >= 0 and rounded.max() <= 1
    inside = (x_adv - x).abs() <= 0.1
    assert torch.equal(rounded[inside], x_adv[inside])  # only the coordinates outside move
