"""Pipeline stages: each takes a model and returns a trained/compressed model plus a record."""

from .distill import DistillObjective, distill
from .finetune import finetune
from .prune import PruneResult, prune
from .quantize import QuantizeResult, quantize

__all__ = ["finetune", "distill", "DistillObjective", "quantize", "QuantizeResult", "prune", "PruneResult"]
