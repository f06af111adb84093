"""TensorRT: rules of each TensorRT version checked here, a deployment bundle the device
builds and runs, and an engine runner wherever TensorRT and a GPU are importable."""

from .rules import DEFAULT_VERSION, RULES, TrtRules, Violation, check_onnx, rules_for

__all__ = ["DEFAULT_VERSION", "RULES", "TrtRules", "Violation", "check_onnx", "rules_for"]
