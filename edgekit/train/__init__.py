"""The training engine every training stage shares (fine-tune, distill, QAT, pruning recovery)."""

from .config import TrainConfig
from .engine import Objective, Supervised, TrainResult, evaluate_top1, train

__all__ = ["TrainConfig", "Objective", "Supervised", "TrainResult", "evaluate_top1", "train"]
