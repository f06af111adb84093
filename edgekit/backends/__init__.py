"""Runtimes behind one interface; see base.py."""

from .base import (BACKENDS, PRECISIONS, Artifact, Backend, ExportContext, Runner, all_backends,
                   get_backend, register_backend)

__all__ = ["BACKENDS", "PRECISIONS", "Artifact", "Backend", "ExportContext", "Runner",
           "all_backends", "get_backend", "register_backend"]
