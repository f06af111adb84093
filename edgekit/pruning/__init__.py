"""Pruning: structured channel pruning (Torch-Pruning's dependency graph) and unstructured
magnitude pruning, each with what it really changes measured."""

from .structured import IMPORTANCES, PruneOutcome, prune_channels, prune_to_macs
from .unstructured import sparsify

__all__ = ["IMPORTANCES", "PruneOutcome", "prune_channels", "prune_to_macs", "sparsify"]
