"""Quantization: fake-quant layers with learned scales, preparation, calibration, sensitivity."""

from .fakequant import ActQuant, QuantConv2d, QuantLinear, fake_quant, qrange
from .prepare import (SPEC_ATTR, QuantSpec, act_quants, calibrate, fold_batchnorm, int4_convolutions, is_quantized, link_bias_grid, plan,
                      prepare, quant_layers, rebuild, spec_of, unsigned_tensors)

__all__ = ["ActQuant", "QuantConv2d", "QuantLinear", "fake_quant", "qrange", "SPEC_ATTR", "QuantSpec",
           "act_quants", "calibrate", "fold_batchnorm", "int4_convolutions", "is_quantized", "link_bias_grid", "plan", "prepare", "quant_layers",
           "rebuild", "spec_of", "unsigned_tensors"]
