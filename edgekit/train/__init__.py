"""The training loop every training stage shares."""

from .loop import FitConfig, fit

__all__ = ["FitConfig", "fit"]
