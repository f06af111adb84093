"""Hardware profiles: one YAML file per device, validated by one schema (`Profile`).

Shipped profiles live in the repository's `profiles/` folder (installed as package data); a
user profile is any YAML path with the same fields; `host` is built from this machine (see
`host.py`). Adding a device is adding one YAML file.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import yaml
from .._io import read_yaml_model
from ..errors import InputError
from .host import calibration_path, host_id, host_profile
from .schema import Budgets, ComputeUnit, Efficiency, Memory, Profile, Quantization

__all__ = ["Profile", "ComputeUnit", "Memory", "Quantization", "Budgets", "Efficiency", "get_profile",
           "list_profiles", "load_profile_file", "aliases", "host_profile", "host_id", "calibration_path"]


def _profile_dir() -> Path:
    """The shipped profiles: the repo's profiles/ in a checkout, package data when installed."""
    repo = Path(__file__).resolve().parents[2] / "profiles"
    if repo.is_dir():
        return repo
    return Path(sys.prefix) / "share" / "edgekit" / "profiles"


def list_profiles() -> list[str]:
    """Shipped profile names, and `host`."""
    return sorted(p.stem for p in _profile_dir().glob("*.yaml")) + ["host"]


@lru_cache(maxsize=1)
def aliases() -> dict[str, str]:
    """Short names (`jetson`, `rpi`, `x86`) -> profile names, from the shipped files."""
    out: dict[str, str] = {}
    for p in sorted(_profile_dir().glob("*.yaml")):
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for a in data.get("aliases", []) if isinstance(data, dict) else []:
            out[str(a)] = p.stem
    return out


def load_profile_file(path: Path) -> Profile:
    """Read and validate one profile file; errors name the file and the field."""
    return read_yaml_model(path, Profile, "profile")


def get_profile(name: str | Profile) -> Profile:
    """A shipped profile by name or alias, `host`, or a user profile by path."""
    if isinstance(name, Profile):
        return name
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError(f"profile file not found: {path}")
        return load_profile_file(path)
    if name == "host":
        return host_profile()
    name = aliases().get(name, name)
    candidate = _profile_dir() / f"{name}.yaml"
    if not candidate.is_file():
        short = ", ".join(f"{a} ({t})" for a, t in aliases().items())
        raise InputError(f"unknown profile {name!r}; valid: {', '.join(list_profiles())}; aliases: {short} "
                         "(or a path to a profile YAML)")
    return load_profile_file(candidate)
