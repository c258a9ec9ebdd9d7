"""Diagnosis of a model from outside, before attacking it: what would make gradient attacks fail or mislead.

``diagnose(model, x, y)`` probes any ``nn.Module`` (the defence possibly hidden in its
``forward()``) and returns a :class:`Diagnosis`: one :class:`Finding` per check of
:data:`CHECKS` and the gradient noise that sets EOT's number of draws. The checks, their
thresholds and what they cannot detect are in docs/diagnosis.md. :func:`scan_deployment` reads
the model's structure for what a differentiable float32 twin would change (quantised modules,
float16/bfloat16 tensors, forwards decorated with ``torch.inference_mode``/``torch.no_grad``).
"""

from shieldkit.diagnosis.deployment import DeploymentScan, scan_deployment
from shieldkit.diagnosis.diagnose import diagnose
from shieldkit.diagnosis.records import CHECKS, Diagnosis, Finding

__all__ = ["CHECKS", "DeploymentScan", "Diagnosis", "Finding", "diagnose", "scan_deployment"]
