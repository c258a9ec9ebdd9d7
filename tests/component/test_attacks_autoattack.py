"""Native APGD, APGD-T, FMN and Square: the attack contract, exact costs, and strength against the peers.

Strength is measured on real MNIST against torchattacks' APGD / APGDT / FAB / Square
through torchattacks' own API, at the same iteration or query budget, and against
native PGD. A native attack passes when its robust accuracy is at most the peer's plus
a binomial margin: two standard errors of the peer's accuracy on ``n`` images,
``2 * sqrt(p * (1 - p) / n)``, and at least two images. Budgets are small (CI); the
slow test repeats the comparison at AutoAttack's 100 iterations.
"""

from __future__ import annotations

import math

import pytest
import torch
from support.needs import need
from torch import nn

import shieldkit as sk
from shieldkit.attacks import APGD, FMN, APGDTargeted, Square
from shieldkit.attacks.apgd import step_checkpoints
from shieldkit.attacks.square import square_share
from shieldkit.core.errors import InvalidParameterError
from shieldkit.testing import check_attack

torchattacks = need("torchattacks", "pip install 'shieldkit[torchattacks]'")  # the peer these tests compare with

EPS = 0.08  # L-inf on MNIST: the small MLP keeps about 40% of the images at this budget
N_IMAGES = 150


def binomial_margin(accuracy: float, n: int) -> float:
    """Two standard errors of an accuracy measured on ``n`` images, at least two images' worth."""
    return max(2 * math.sqrt(accuracy * (1 - accuracy) / n), 2 / n)


def robust_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(dim=1) == y).float().mean().item()


@pytest.fixture(scope="module")
def small_model():
    """A one-hidden-layer MLP trained for two epochs on 5,000 real MNIST training images (about 90% accurate).

    An MLP rather than a CNN: the comparisons run hundreds of steps on a hundred images for several
    libraries, and must fit in CI on two cores.
    """
    from shieldkit.data import load
    from shieldkit.models import fit_classifier, mlp

    train = load("mnist", split="train").subset(5000, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mlp(hidden=(128,))
    return fit_classifier(model, train, epochs=2, seed=0).eval()


@pytest.fixture(scope="module")
def images(small_model, mnist_test):
    """``N_IMAGES`` real MNIST test images the model classifies correctly, and their labels."""
    data = mnist_test.subset(N_IMAGES + 40, seed=1)
    with torch.no_grad():
        correct = small_model(data.x).argmax(dim=1) == data.y
    return data.x[correct][:N_IMAGES], data.y[correct][:N_IMAGES]


# ------------------------------------------------------------------ contract


@pytest.mark.parametrize("name, params", [
    ("apgd.native", {"steps": 5}),
    ("apgd.native", {"steps": 5, "loss": "dlr", "restarts": 2}),
    ("apgd_t.native", {"steps": 4, "target_classes": 3}),
    ("fmn.native", {"steps": 10}),
    ("fmn.native", {"steps": 10, "eps": 0.2}),
    ("square.native", {"queries": 40}),
])
def test_conforms(name, params):
    report = check_attack(name, **params)
    assert set(report["norms"]) == {"linf", "l2"}


def test_bare_family_names_resolve_to_the_native_attacks():
    assert type(sk.create_attack("apgd")) is APGD
    assert type(sk.create_attack("apgd_t")) is APGDTargeted
    assert type(sk.create_attack("square")) is Square
    assert type(sk.create_attack("fmn")) is FMN


@pytest.mark.parametrize("cls, params, needle", [
    (APGD, {"steps": 0}, "steps"),
    (APGD, {"loss": "margin"}, "loss"),
    (APGD, {"rho": 1.0}, "rho"),
    (APGD, {"restarts": 0}, "restarts"),
    (APGDTargeted, {"target_classes": 0}, "target_classes"),
    (FMN, {"gamma": 0.0}, "gamma"),
    (FMN, {"step_size": -1.0}, "step_size"),
    (Square, {"queries": 0}, "queries"),
    (Square, {"p_init": 1.5}, "p_init"),
    (Square, {"norm": "l1"}, "norm"),
])
def test_bad_parameters_are_refused_naming_the_argument(cls, params, needle):
    with pytest.raises(InvalidParameterError, match=needle):
        cls(**params)


def test_schedules_are_the_papers():
    # Croce & Hein: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j * N).
    assert step_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    # Andriushchenko et al.: p halves after iterations 10, 50, 200, ... of 10,000 (rescaled to the budget).
    assert square_share(0.8, 10, 10000) == 0.8
    assert square_share(0.8, 11, 10000) == 0.4
    assert square_share(0.8, 100, 5000) == 0.2  # iteration 100 of 5000 is 200 of 10,000
    assert square_share(0.8, 9999, 10000) == pytest.approx(0.8 / 512)


# --------------------------------------------------------------------- costs


def test_apgd_costs_are_exact_when_nothing_breaks(small_model, images):
    x, y = images[0][:20], images[1][:20]
    steps = 7
    result = APGD(eps=1e-4, steps=steps, seed=0).run(small_model, x, y)
    assert not result.success.any()
    # One clean forward, one forward+backward at the start, one per step (the last without backward).
    assert result.forwards == steps + 2
    assert result.backwards == steps
    assert result.queries == 20 * (steps + 2)
    assert result.info["steps"].tolist() == [steps] * 20


def test_apgd_only_forwards_unbroken_samples(small_model, images):
    x, y = images
    steps = 20
    result = APGD(eps=0.3, steps=steps, seed=0).run(small_model, x, y)
    assert result.success.all()
    # Everything breaks within a few steps at eps=0.3: far fewer images forwarded than the full schedule.
    assert result.queries < 0.3 * len(y) * (steps + 2)
    assert result.queries == len(y) * 2 + int(result.info["steps"].sum())


def test_square_respects_its_query_budget_and_counts_queries(small_model, images):
    x, y = images[0][:30], images[1][:30]
    budget = 60
    quiet = Square(eps=1e-4, queries=budget, seed=0).run(small_model, x, y)
    assert not quiet.success.any()
    assert quiet.queries == 30 * budget and quiet.forwards == budget and quiet.backwards == 0
    assert quiet.info["queries"].tolist() == [budget] * 30
    loud = Square(eps=0.3, queries=budget, seed=0).run(small_model, x, y)
    assert loud.info["queries"].max().item() <= budget
    assert loud.queries == int(loud.info["queries"].sum()) < 30 * budget


class _BrightFooledLate(nn.Module):
    """Labels 0 everywhere; from its ``late``-th forward on, an image brighter than 0.5 on average reads 1.

    The bright image is fooled at once from then on; the dark ones never are (eps keeps them below 0.5).
    """

    def __init__(self, late: int):
        super().__init__()
        self.late, self.calls = late, 0

    def forward(self, x):
        self.calls += 1
        bright = (x.flatten(1).mean(dim=1) > 0.5) & (self.calls >= self.late)
        return torch.stack([(~bright).float(), bright.float()], dim=1)


def test_a_square_probe_that_fools_nothing_ends_the_search():
    x = torch.full((3, 1, 8, 8), 0.1)
    found = Square(eps=0.05, queries=100, probe=10, seed=0).run(_BrightFooledLate(late=10**6), x, torch.zeros(3).long())
    assert found.info["probe_stopped"] is True
    assert found.info["queries"].tolist() == [10, 10, 10]
    assert found.queries == 30


@pytest.mark.parametrize("late, whole_budget", [(5, True), (40, False)])
def test_a_square_probe_that_fools_a_sample_gets_the_whole_budget(late, whole_budget):
    x = torch.cat([torch.full((1, 1, 8, 8), 0.9), torch.full((2, 1, 8, 8), 0.1)])
    found = Square(eps=0.05, queries=100, probe=10, seed=0).run(_BrightFooledLate(late), x, torch.zeros(3).long())
    # fooled at the 5th forward (inside the probe): the dark images go on to the budget; at the 40th: too late
    assert found.info["probe_stopped"] is (not whole_budget)
    assert found.info["queries"].tolist() == ([5, 100, 100] if whole_budget else [10, 10, 10])
    assert found.success.tolist() == [whole_budget, False, False]


def test_a_square_probe_beyond_the_budget_is_refused():
    with pytest.raises(InvalidParameterError, match="probe"):
        Square(eps=0.1, queries=100, probe=101)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this model refuses backward passes")


class ScoresOnly(nn.Module):
    """A model whose forward works and whose backward raises: only score-based attacks can run."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(_NoBackward.apply(x))


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 3.0)])
def test_square_uses_no_gradients(small_model, images, norm, eps):
    model = ScoresOnly(small_model)
    x, y = images[0][:24], images[1][:24]
    with pytest.raises(RuntimeError, match="refuses backward"):
        APGD(eps=eps, norm=norm, steps=2).run(model, x, y)
    result = Square(eps=eps, norm=norm, queries=100, seed=0).run(model, x, y)
    assert result.backwards == 0
    assert result.success.float().mean().item() > 0.5  # it still finds adversarial examples
    assert result.info["queries"].max().item() <= 100


def test_fmn_costs(small_model, images):
    x, y = images[0][:20], images[1][:20]
    result = FMN(steps=12).run(small_model, x, y)
    assert result.forwards == 12 and result.backwards == 11  # the last iterate needs no gradient
    assert torch.allclose(result.info["norm"][result.success], result.linf[result.success], atol=1e-5)


# ------------------------------------------------------------------ strength


def _compare(native_accuracy: float, peer_accuracy: float, n: int, what: str) -> None:
    margin = binomial_margin(peer_accuracy, n)
    assert native_accuracy <= peer_accuracy + margin, (
        f"{what}: native robust accuracy {native_accuracy:.3f} > peer {peer_accuracy:.3f} + margin {margin:.3f}")


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_is_as_strong_as_torchattacks_and_pgd(small_model, images, loss):
    x, y = images
    steps = 20
    native = APGD(eps=EPS, steps=steps, loss=loss, seed=0).run(small_model, x, y)
    native_accuracy = 1 - native.success.float().mean().item()
    peer = torchattacks.APGD(small_model, norm="Linf", eps=EPS, steps=steps, loss=loss, seed=0)
    peer_accuracy = robust_accuracy(small_model, peer(x, y), y)
    assert 0.05 < peer_accuracy < 0.8  # a budget where robust accuracy tells attacks apart
    _compare(native_accuracy, peer_accuracy, len(y), f"APGD-{loss} vs torchattacks")
    pgd = sk.create_attack("pgd", eps=EPS, steps=steps, loss=loss, seed=0).run(small_model, x, y)
    _compare(native_accuracy, 1 - pgd.success.float().mean().item(), len(y), f"APGD-{loss} vs native PGD")


@pytest.mark.parametrize("batch_rows", [None, 4 * N_IMAGES])  # one target at a time; all three together
def test_apgd_targeted_is_as_strong_as_torchattacks(small_model, images, batch_rows):
    x, y = images
    steps, targets = 15, 3  # torchattacks' APGDT tries n_classes - 1 targets
    native = APGDTargeted(eps=EPS, steps=steps, target_classes=targets, batch_rows=batch_rows,
                          seed=0).run(small_model, x, y)
    native_accuracy = 1 - native.success.float().mean().item()
    peer = torchattacks.APGDT(small_model, norm="Linf", eps=EPS, steps=steps, n_classes=targets + 1, seed=0)
    _compare(native_accuracy, robust_accuracy(small_model, peer(x, y), y), len(y), "APGD-T vs torchattacks APGDT")
    assert native.info["steps"].max().item() <= targets * steps  # every sample's runs counted, none beyond


class _TargetLog(nn.Module):
    """The small model, recording the rows of every backward-enabled forward (one per APGD iteration)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base, self.rows = base, []

    def forward(self, x):
        if torch.is_grad_enabled():
            self.rows.append(x.shape[0])
        return self.base(x)


def test_apgd_targeted_runs_its_targets_together_up_to_batch_rows(small_model, images):
    x, y = images[0][:20], images[1][:20]
    one_by_one, together = _TargetLog(small_model), _TargetLog(small_model)  # eps 0.01: few samples break
    APGDTargeted(eps=0.01, steps=5, target_classes=3, seed=0).run(one_by_one, x, y)
    APGDTargeted(eps=0.01, steps=5, target_classes=3, batch_rows=60, seed=0).run(together, x, y)
    assert max(one_by_one.rows) <= 20 and len(one_by_one.rows) > 3 * 4  # three runs of up to 20 rows
    assert max(together.rows) > 20 and max(together.rows) <= 60  # the three targets in one batch
    assert len(together.rows) <= len(one_by_one.rows) / 2


@pytest.mark.parametrize("norm, eps", [("linf", EPS), ("l2", 1.0)])
def test_square_is_as_strong_as_torchattacks(small_model, images, norm, eps):
    x, y = images[0][:80], images[1][:80]
    queries = 150
    native = Square(eps=eps, norm=norm, queries=queries, seed=0).run(small_model, x, y)
    native_accuracy = 1 - native.success.float().mean().item()
    peer = torchattacks.Square(small_model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                               n_queries=queries, seed=0)
    peer_accuracy = robust_accuracy(small_model, peer(x, y), y)
    _compare(native_accuracy, peer_accuracy, len(y), f"Square {norm} vs torchattacks")


def _fmn_and_fab_medians(model, x, y, norm: str, steps: int) -> tuple[float, float, float]:
    """(FMN's success rate, FMN's median norm, torchattacks FAB's median norm) at the same number of steps."""
    native = FMN(norm=norm, steps=steps).run(model, x, y)
    # FAB keeps a point only when it is within eps: a huge eps keeps its minimal-norm points.
    peer = torchattacks.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=100.0, steps=steps,
                            n_classes=10, seed=0)
    x_fab = peer(x, y)
    with torch.no_grad():
        fab_fooled = model(x_fab).argmax(dim=1) != y
    distance = (x_fab - x).flatten(1).norm(p=float("inf") if norm == "linf" else 2, dim=1)
    ours = native.linf if norm == "linf" else native.l2
    return (native.success.float().mean().item(), ours[native.success].median().item(),
            distance[fab_fooled].median().item())


@pytest.fixture(scope="module")
def fmn_vs_fab(small_model, images):
    x, y = images[0][:30], images[1][:30]
    return {norm: _fmn_and_fab_medians(small_model, x, y, norm, steps=50) for norm in ("linf", "l2")}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fmn_fools_all_near_fab_norms(fmn_vs_fab, norm):
    success, ours, fab = fmn_vs_fab[norm]
    assert success >= 0.98
    # A regression bound, not the goal (next test): measured 0.0816 vs 0.0751 (L-inf), 1.357 vs 1.123 (L2).
    assert ours <= 1.25 * fab, f"FMN median {ours:.4f} vs FAB {fab:.4f}"


@pytest.mark.xfail(strict=True, reason="known gap: on this MLP FMN settles about 8% (L-inf) and 21% (L2) above "
                                       "FAB's median norm; more steps, other step sizes or a final line search "
                                       "do not close it (DeepFool reaches FAB's L2)")
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fmn_median_norm_within_five_percent_of_fab(fmn_vs_fab, norm):
    _, ours, fab = fmn_vs_fab[norm]
    assert ours <= 1.05 * fab, f"FMN median {ours:.4f} vs FAB {fab:.4f}"


# --------------------------------------------------------- AutoAttack's budget


@pytest.mark.slow
def test_full_budget_matches_torchattacks(small_model, images):
    x, y = images
    for native, peer, what in [
        (APGD(eps=EPS, steps=100, seed=0),
         torchattacks.APGD(small_model, eps=EPS, steps=100, seed=0), "APGD-CE"),
        (APGDTargeted(eps=EPS, steps=100, seed=0),
         torchattacks.APGDT(small_model, eps=EPS, steps=100, n_classes=10, seed=0), "APGD-T"),
        (Square(eps=EPS, queries=5000, seed=0),
         torchattacks.Square(small_model, eps=EPS, n_queries=5000, seed=0), "Square"),
    ]:
        ours = 1 - native.run(small_model, x, y).success.float().mean().item()
        _compare(ours, robust_accuracy(small_model, peer(x, y), y), len(y), what)
