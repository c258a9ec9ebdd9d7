"""Escalation: attack views of an opaque model whose defence hides inside ``forward()``.

A user hands shieldkit an ``nn.Module`` and says nothing about what it does. The
diagnosis (:mod:`shieldkit.diagnosis`) measures what is wrong with its outputs and
gradients; :func:`plan_remedies` turns those findings into :class:`Remedy` entries,
each building an *attack view*: an ``nn.Module`` whose forward values are the
model's (or a monotone transform that keeps the argmax), so success on the view is
success on the model, and whose backward pass is a useful gradient. Any attack of
any backend then runs through the view unchanged.

| remedy            | file            | for                                                   |
| ----------------- | --------------- | ----------------------------------------------------- |
| ``eot``           | ``eot.py``      | randomised forwards (draws set by the gradient noise) |
| ``auto_bpda``     | ``auto_bpda.py``| operations that cut or zero the gradient              |
| ``smoothing``     | ``smoothing.py``| shattered, input-seeded, missing or zero gradients    |
| ``log_probabilities`` / ``normalized_logits`` | ``logits.py`` | probability outputs, saturated logits |
| ``surrogate``     | ``surrogate.py``| anything the above cannot differentiate               |
| ``twin``          | ``twin.py``     | a quantised, float16/bfloat16 or inference_mode model (``deployed_precision``) |
| ``score_based``   | ``plan.py``     | the fallback: a score-based attack on the model itself |
"""

from shieldkit.escalation.auto_bpda import AutoBPDAView, find_gradient_cuts
from shieldkit.escalation.eot import EOTView, eot_draws
from shieldkit.escalation.logits import LogProbabilityView, NormalizedLogitsView
from shieldkit.escalation.plan import GRADIENT_FREE_REMEDIES, AttackSettings, Remedy, plan_remedies
from shieldkit.escalation.smoothing import SmoothedView
from shieldkit.escalation.surrogate import SurrogateView, distill_surrogate
from shieldkit.escalation.twin import TwinView, differentiable_twin
from shieldkit.escalation.view import EscalationView

__all__ = [
    "GRADIENT_FREE_REMEDIES",
    "AttackSettings",
    "AutoBPDAView",
    "EOTView",
    "EscalationView",
    "LogProbabilityView",
    "NormalizedLogitsView",
    "Remedy",
    "SmoothedView",
    "SurrogateView",
    "TwinView",
    "differentiable_twin",
    "distill_surrogate",
    "eot_draws",
    "find_gradient_cuts",
    "plan_remedies",
]
