"""Runtimes behind one interface; see base.py."""

from .base import (BACKENDS, DEFAULT_PRECISIONS, PRECISIONS, QAT_ONLY, Artifact, Backend, ExportContext, Runner, all_backends,
                   get_backend, register_backend)

__all__ = ["BACKENDS", "DEFAULT_PRECISIONS", "PRECISIONS", "QAT_ONLY", "Artifact", "Backend", "ExportContext", "Runner",
           "all_backends", "get_backend", "register_backend"]
