"""Model zoo, model cards, and loading/saving of model files."""

from __future__ import annotations

from .card import ModelCard
from .loading import LoadedModel, load_model, save_model
from .zoo import ARCHS, ArchSpec, arch_card, describe, get_model, list_models, parse_arch, register_arch

__all__ = [
    "ModelCard",
    "ArchSpec",
    "ARCHS",
    "get_model",
    "arch_card",
    "list_models",
    "parse_arch",
    "describe",
    "register_arch",
    "load_model",
    "save_model",
    "LoadedModel",
]
