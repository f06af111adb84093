"""The script copied into every TensorRT bundle (run_engine.py): standalone, it imports nothing
from edgekit, so it runs on a device where edgekit is not installed."""
