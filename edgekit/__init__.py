"""edgekit: take a trained PyTorch vision model to an edge device, honestly measured.

The Python API the CLI calls:

    import edgekit
    edgekit.benchmark("resnet20.th", arch="cifar_resnet20", data="images/", out="bench/")
"""

from .benchmark import benchmark, export
from .compress import compress
from .demo import demo
from .errors import EdgekitError
from .evaluate import evaluate
from .models import get_model, list_models, load_model, save_model
from .profiles import get_profile, list_profiles
from .stages import distill, finetune, prune, quantize

__version__ = "0.1.0"

__all__ = ["benchmark", "export", "compress", "demo", "evaluate", "EdgekitError", "get_model",
           "list_models", "load_model", "save_model", "get_profile", "list_profiles", "finetune", "distill",
           "quantize", "prune", "__version__"]
