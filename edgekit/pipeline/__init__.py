"""The compress pipeline: a recipe of stages run in order, with a budget, resume and a report."""

from .recipe import (MODEL_STAGES, DeployStage, DistillStage, FinetuneStage, PruneStage, QuantizeStage, Recipe,
                     TrainSettings, default_recipe, load_recipe)

__all__ = ["MODEL_STAGES", "DeployStage", "DistillStage", "FinetuneStage", "PruneStage", "QuantizeStage", "Recipe",
           "TrainSettings", "default_recipe", "load_recipe"]
