"""`edgekit compress`: the whole pipeline for a hardware profile (see edgekit.pipeline.run)."""

from __future__ import annotations

from .pipeline.run import PROFILE_DEFAULT, CompressResult, compress

__all__ = ["compress", "CompressResult", "PROFILE_DEFAULT"]
