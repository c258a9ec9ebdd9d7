"""Diagnosis of a model from outside, before attacking it: what would make gradient attacks fail or mislead.

``diagnose(model, x, y)`` probes any ``nn.Module`` (the defence possibly hidden in its
``forward()``) and returns a :class:`Diagnosis`: one :class:`Finding` per check of
:data:`CHECKS` and the gradient noise that sets EOT's number of draws. The checks, their
thresholds and what they cannot detect are in docs/diagnosis.md.
"""

from shieldkit.diagnosis.diagnose import diagnose
from shieldkit.diagnosis.records import CHECKS, Diagnosis, Finding

__all__ = ["CHECKS", "Diagnosis", "Finding", "diagnose"]
