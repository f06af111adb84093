"""Latency prediction for devices that are not here: graph work x profile roofline, calibrated on the host."""

from .graph import LayerWork, graph_work
from .predict import BYTES, LayerPrediction, Prediction, predict, predict_model

__all__ = ["LayerWork", "graph_work", "BYTES", "LayerPrediction", "Prediction", "predict", "predict_model"]
