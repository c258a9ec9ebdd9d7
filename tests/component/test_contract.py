"""The attack contract owned by the Attack base class, and the bad-input table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shieldkit as sk
from shieldkit.core.errors import InvalidModelError
from shieldkit.core.guard import compare_state, snapshot_state
from shieldkit.testing import tiny_batch, tiny_model


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def batch(model):
    return tiny_batch(model)


class Rogue(sk.Attack):
    """An attack that does whatever it is told, to prove the base class catches it."""

    family = "rogue"
    norms = ("linf", "l2")

    def __init__(self, *, behaviour: str = "honest", **common):
        super().__init__(**common)
        self.behaviour = behaviour

    def _run(self, model, x, y, target):
        if self.behaviour == "overshoot_eps":
            return (x + 2 * self.eps).clamp(0, 1)
        if self.behaviour == "float_error":
            return (x + self.eps * (1 + 1e-7)).clamp(0, 1)
        if self.behaviour == "leave_bounds":
            return x + 0.5
        if self.behaviour == "wrong_shape":
            return x[:1]
        if self.behaviour == "nan":
            return x * float("nan")
        if self.behaviour == "mutate_input":
            x.add_(self.eps).clamp_(0, 1)
            return x
        if self.behaviour == "break_model":
            model.train()
            for p in model.parameters():
                p.requires_grad_(True)
                p.grad = torch.ones_like(p)
            for b in model.buffers():
                b.add_(1)
            return x
        if self.behaviour == "write_parameters":
            with torch.no_grad():
                model[-1].weight.add_(1)
            model.train()
            return x
        if self.behaviour == "replace_storage":
            for p in model.parameters():
                p.data = torch.zeros_like(p)
            return x
        if self.behaviour == "write_through_data":
            model[-1].bias.data.add_(1)
            return x
        if self.behaviour == "raise":
            model.train()
            raise RuntimeError("algorithm crashed")
        if self.behaviour == "forward_backward":
            x = x.requires_grad_(True)
            model(x).sum().backward()
            model(x.detach())
            return x.detach()
        return x


# ----------------------------------------------------------------- bad input


def _fgsm():
    return sk.create_attack("fgsm", eps=0.1)


BAD_INPUTS = {
    "nan image": (lambda x, y: (x.masked_fill(torch.zeros_like(x, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True), float("nan")), y), "non-finite"),
    "inf image": (lambda x, y: (x.clone().index_fill_(0, torch.tensor([1]), float("inf")), y), "non-finite"),
    "wrong rank": (lambda x, y: (x[0], y), "4 dimensions"),
    "integer images": (lambda x, y: ((x * 255).to(torch.uint8), y), "floating-point"),
    "out-of-bounds pixels": (lambda x, y: (x * 2.0 + 0.1, y), "outside bounds"),
    "label out of range": (lambda x, y: (x, y + 10), "classes"),
    "negative label": (lambda x, y: (x, y - 20), "classes"),
    "labels wrong length": (lambda x, y: (x, y[:2]), "one label per image"),
    "float labels": (lambda x, y: (x, y.float()), "integer class indices"),
    "empty batch": (lambda x, y: (x[:0], y[:0]), "empty batch"),
    "not a tensor": (lambda x, y: (x.tolist(), y), "torch.Tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_rejected_with_a_clear_error(case, model, batch):
    make, expected = BAD_INPUTS[case]
    x, y = make(*batch)
    with pytest.raises(sk.InvalidInputError, match=expected):
        _fgsm().run(model, x, y)


def test_bad_target_is_rejected(model, batch):
    x, y = batch
    with pytest.raises(sk.InvalidInputError, match="target has labels"):
        _fgsm().run(model, x, y, target=y + 100)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"eps": -0.1}, "eps must be finite and >= 0"),
        ({"eps": float("nan")}, "eps must be finite"),
        ({"eps": "big"}, "eps must be a number"),
        ({"norm": "l7"}, "norm='l7' is not supported"),
        ({"bounds": (1, 0)}, "low < high"),
        ({"seed": -1}, "seed must be an integer"),
        ({"epz": 0.1}, "unknown parameter 'epz'; valid parameters: eps, norm, bounds, seed"),
    ],
)
def test_bad_parameters_name_the_parameter(params, expected):
    with pytest.raises(sk.InvalidParameterError, match=expected) as error:
        sk.create_attack("fgsm", **params)
    assert "fgsm.native" in str(error.value)
    assert isinstance(error.value, (TypeError, ValueError))


def test_unknown_name_suggests_close_matches():
    with pytest.raises(sk.UnknownNameError, match="did you mean 'fgsm'") as error:
        sk.create_attack("fgms")
    assert isinstance(error.value, KeyError)
    assert "fgsm" in error.value.suggestions


def test_model_returning_the_wrong_shape(batch):
    x, y = batch
    flat = nn.Sequential(nn.Flatten(), nn.Linear(256, 10), nn.Flatten(0))
    with pytest.raises(sk.InvalidModelError, match=r"logits of shape \[B, K\]"):
        _fgsm().run(flat, x, y)
    single = nn.Sequential(nn.Flatten(), nn.Linear(256, 1))
    with pytest.raises(sk.InvalidModelError, match="K >= 2"):
        _fgsm().run(single, x, y)


def test_model_without_data_or_split_across_devices(batch):
    x, y = batch
    with torch.device("meta"):
        meta = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    with pytest.raises(sk.InvalidModelError, match="meta"):
        _fgsm().run(meta, x, y)
    split = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    split[1].bias = nn.Parameter(torch.zeros(10, device="meta"))
    with pytest.raises(sk.InvalidModelError, match="several devices"):
        _fgsm().run(split, x, y)


def test_not_a_model(batch):
    with pytest.raises(sk.InvalidModelError, match="nn.Module"):
        _fgsm().run(lambda x: x, *batch)


def test_untargeted_attack_refuses_target(model, batch):
    x, y = batch

    class Untargeted(Rogue):
        targeted = False

    with pytest.raises(sk.InvalidParameterError, match="untargeted only"):
        Untargeted(eps=0.1).run(model, x, y, target=y)


# ------------------------------------------------------------- output checks


def test_real_epsilon_violation_raises_naming_the_attack(model, batch):
    with pytest.raises(sk.AttackContractError, match=r"rogue broke its linf budget.*by 0\.1"):
        Rogue(eps=0.1, behaviour="overshoot_eps").run(model, *batch)


def test_float_error_is_projected_away(model, batch):
    x, y = batch
    result = Rogue(eps=0.1, behaviour="float_error").run(model, x, y)
    assert result.linf.max() <= torch.tensor(0.1)  # exact in the images' dtype


@pytest.mark.parametrize("behaviour", ["leave_bounds", "wrong_shape", "nan"])
def test_broken_outputs_raise(behaviour, model, batch):
    with pytest.raises(sk.AttackContractError, match="rogue"):
        Rogue(eps=0.1, behaviour=behaviour).run(model, *batch)


def test_input_is_never_modified(model, batch):
    x, y = batch
    before = x.clone()
    Rogue(eps=0.1, behaviour="mutate_input").run(model, x, y)
    assert torch.equal(x, before)


# --------------------------------------------------------------- state guard


def _dirty_model():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    model(torch.rand(3, 1, 16, 16)).sum().backward()
    model.train()
    model[1].eval()  # a mixed state must come back mixed
    return model


@pytest.mark.parametrize("behaviour", ["break_model", "honest"])
def test_model_state_is_restored_exactly(behaviour, batch):
    model = _dirty_model()
    grad_objects = [p.grad for p in model.parameters()]
    before = snapshot_state(model)
    if behaviour == "break_model":  # it also leaves the model in train mode: refused, and still restored
        with pytest.raises(sk.AttackContractError, match="rogue left the model in train mode"):
            Rogue(eps=0.1, behaviour=behaviour).run(model, *batch)
    else:
        Rogue(eps=0.1, behaviour=behaviour).run(model, *batch)
    assert compare_state(before, snapshot_state(model)) == []
    assert all(a is b for a, b in zip(grad_objects, [p.grad for p in model.parameters()]))


def test_model_state_is_restored_when_the_attack_crashes(batch):
    model = _dirty_model()
    before = snapshot_state(model)
    with pytest.raises(RuntimeError, match="algorithm crashed"):
        Rogue(eps=0.1, behaviour="raise").run(model, *batch)
    assert compare_state(before, snapshot_state(model)) == []


def test_replaced_parameter_storage_is_put_back(batch):
    model = _dirty_model()
    pointers = [p.data_ptr() for p in model.parameters()]
    before = snapshot_state(model)
    Rogue(eps=0.1, behaviour="replace_storage").run(model, *batch)
    assert compare_state(before, snapshot_state(model)) == []
    assert [p.data_ptr() for p in model.parameters()] == pointers


def test_an_attack_writing_parameters_in_place_is_named_and_the_rest_restored(batch):
    model = _dirty_model()
    before = snapshot_state(model)
    with pytest.raises(sk.AttackContractError, match=r"rogue wrote to the model's parameters in place \(8\.weight\)"):
        Rogue(eps=0.1, behaviour="write_parameters").run(model, *batch)
    problems = compare_state(before, snapshot_state(model))
    assert len(problems) == 1 and problems[0].startswith("params of '8.weight' changed")


def test_conformance_kit_catches_writes_the_guard_cannot_see(batch):
    # A write through .data bypasses autograd's version counter, which the guard watches at run time.
    from shieldkit.testing import ConformanceError, check_attack

    with pytest.raises(ConformanceError, match="model state restored.*params of '8.bias' changed"):
        check_attack(Rogue, eps=0.1, behaviour="write_through_data")


def test_output_inside_the_threat_model_is_returned_untouched(model, batch):
    x, y = batch

    class Exact(sk.Attack):
        family = "exact"

        def _run(self, model, x, y, target):
            self.made = (x + self.eps * torch.randn_like(x).sign()).clamp(0, 1)
            self.made = self.made + ((self.made - x).abs() > self.eps) * (torch.nextafter(self.made, x) - self.made)
            return self.made

    attack = Exact(eps=0.1, seed=0)
    assert torch.equal(attack(model, x, y), attack.made)


# ------------------------------------------------------- number of classes


def _forward_counter(model):
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    return calls


def test_labels_are_checked_without_a_forward_pass_of_their_own(model, batch):
    x, y = batch
    calls = _forward_counter(model)
    Rogue(eps=0.1)(model, x, y)
    Rogue(eps=0.1, behaviour="forward_backward")(model, x, y)
    assert calls == [6, 6]  # the attack's own two forward passes, nothing else


@pytest.mark.parametrize("known", [False, True], ids=["first call", "K remembered"])
def test_bad_labels_are_refused_before_any_gradient(known, model, batch):
    x, y = batch
    if known:
        Rogue(eps=0.1, behaviour="forward_backward")(model, x, y)
    backwards = []
    model.register_full_backward_hook(lambda *args: backwards.append(1))
    with pytest.raises(sk.InvalidInputError, match=r"y has labels in \[12, 12\] but the model has 10 classes"):
        Rogue(eps=0.1, behaviour="forward_backward").run(model, x, torch.full_like(y, 12))
    assert backwards == []


def test_labels_are_checked_again_when_the_model_changes_its_classes(model, batch):
    x, y = batch
    y = torch.full_like(y, 7)
    Rogue(eps=0.1, behaviour="forward_backward")(model, x, y)  # K = 10 remembered
    model[-1] = nn.Linear(32, 5)
    with pytest.raises(sk.InvalidInputError, match=r"y has labels in \[7, 7\] but the model has 5 classes"):
        Rogue(eps=0.1, behaviour="forward_backward")(model, x, y)
    model[-1] = nn.Linear(32, 10)
    Rogue(eps=0.1, behaviour="forward_backward")(model, x, y)
    model[-1] = nn.Linear(32, 5)
    with pytest.raises(sk.InvalidInputError, match="5 classes"):
        Rogue(eps=0.1).run(model, x, y)  # the attack never runs the model; the evaluation forward does
    assert Rogue(eps=0.1).run(model, x, y % 5).y.max() == 2


def test_model_is_in_eval_mode_with_frozen_parameters_during_the_attack(batch):
    seen = {}

    class Spy(Rogue):
        def _run(self, model, x, y, target):
            seen["training"] = any(m.training for m in model.modules())
            seen["requires_grad"] = any(p.requires_grad for p in model.parameters())
            return x

    Spy(eps=0.1).run(_dirty_model(), *batch)
    assert seen == {"training": False, "requires_grad": False}


# --------------------------------------------------------- devices, results


def test_output_returns_on_the_input_dtype(model, batch):
    x, y = batch
    result = _fgsm().run(model, x.double(), y)
    assert result.x_adv.dtype == torch.float64 and result.x_adv.device == x.device
    assert torch.allclose(result.x_adv.float(), _fgsm().run(model, x, y).x_adv, atol=1e-6)


def test_forwards_and_backwards_are_counted(model, batch):
    result = Rogue(eps=0.1, behaviour="forward_backward").run(model, *batch)
    assert (result.forwards, result.backwards, result.queries) == (2, 1, 2 * len(batch[0]))


def test_result_reports_success_and_norms(model, batch):
    x, y = batch
    result = _fgsm().run(model, x, y)
    with torch.no_grad():
        predictions = model.eval()(result.x_adv).argmax(1)
    assert torch.equal(result.success, predictions != y)
    assert torch.allclose(result.linf, (result.x_adv - x).flatten(1).abs().amax(1))
    assert result.seconds > 0 and "fgsm.native" in repr(result)


def test_labels_default_to_the_model_predictions(model, batch):
    x, _ = batch
    result = _fgsm().run(model, x)
    with torch.no_grad():
        assert torch.equal(result.y, model.eval()(x).argmax(1))


def test_targeted_success_means_reaching_the_target(model, batch):
    x, y = batch
    target = (y + 3) % 10
    result = sk.create_attack("fgsm", eps=0.5).run(model, x, y, target=target)
    assert torch.equal(result.success, result.predictions == target)


def test_unbounded_attack_given_eps_is_projected_foolbox_style(model, batch):
    class Negative(Rogue):
        bounded = False

        def _run(self, model, x, y, target):
            return 1 - x

    x, y = batch
    assert Negative().run(model, x, y).linf.max() > 0.5
    assert Negative(eps=0.05).run(model, x, y).linf.max() <= 0.05 + 1e-7


def test_seed_makes_attacks_deterministic_and_leaves_global_rng_alone(model, batch):
    class Random(Rogue):
        def _run(self, model, x, y, target):
            return self.project(x + self.eps * torch.randn_like(x).sign(), x)

    state = torch.random.get_rng_state()
    first = Random(eps=0.1, seed=3)(model, *batch)
    second = Random(eps=0.1, seed=3)(model, *batch)
    assert torch.equal(first, second)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_threat_model_projection_in_every_norm():
    x = torch.rand(4, 1, 8, 8)
    far = torch.rand(4, 1, 8, 8)
    for norm, eps in (("linf", 0.1), ("l2", 0.5), ("l1", 2.0), ("l0", 5)):
        threat = sk.ThreatModel(norm=norm, eps=eps)
        projected = threat.project(far, x)
        assert (threat.distance(projected, x) <= eps * (1 + 1e-5) + 1e-6).all(), norm
        assert projected.min() >= 0 and projected.max() <= 1


def test_non_finite_logits_are_refused_naming_the_model_and_the_first_bad_sample():
    """A model whose output turns NaN must not count as fooled (argmax of NaN is 0 for every sample)."""

    class NaNAbove(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(16, 3)

        def forward(self, x):
            logits = self.linear(x.flatten(1))
            moved = (x.flatten(1)[:, :1] - 0.45).abs() > 0.01  # NaN anywhere but at 0.45
            return torch.where(moved, torch.full_like(logits, float("nan")), logits)

    model = NaNAbove()
    x = torch.full((4, 1, 4, 4), 0.45)
    x[2] = 0.9  # sample 2 gives NaN logits from the start
    with pytest.raises(InvalidModelError, match=r"model returned non-finite logits \(NaN or inf\) for sample 2"):
        sk.create_attack("fgsm", eps=0.1).run(model, x, torch.zeros(4, dtype=torch.long))
    x = torch.full((4, 1, 4, 4), 0.45)  # finite on the clean images, NaN once the attack moves them
    with pytest.raises(InvalidModelError, match="non-finite logits"):
        sk.create_attack("fgsm", eps=0.1).run(model, x, torch.zeros(4, dtype=torch.long))
