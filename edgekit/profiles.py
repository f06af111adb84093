"""Hardware profiles: one YAML file per device, validated by one schema (`Profile`).

Shipped profiles live in the repository's `profiles/` folder (installed as package data);
a user profile is any YAML path with the same fields.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, InputError

__all__ = ["Profile", "get_profile", "list_profiles", "load_profile_file"]


class Profile(BaseModel):
    """Where a model goes: which runtimes and precisions to produce, how to measure them."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    runtimes: list[str] = Field(min_length=1)
    precisions: list[str] = Field(min_length=1)
    threads: list[int] = Field(default_factory=lambda: [1], min_length=1)
    calibration_images: int = Field(300, gt=0)
    eval_images: int | None = Field(1000, gt=0)
    #: pruning keeps channel counts at multiples of this (the runtime's vector width in elements)
    channel_multiple: int = Field(8, ge=1)

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, v: list[str]) -> list[str]:
        from .backends import all_backends
        bad = [r for r in v if r not in all_backends()]
        if bad:
            raise ValueError(f"unknown runtime(s) {bad}; valid: {all_backends()}")
        return v

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, v: list[str]) -> list[str]:
        from .backends import PRECISIONS
        bad = [p for p in v if p not in PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision(s) {bad}; valid: {list(PRECISIONS)}")
        return v

    @field_validator("threads")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(t < 1 for t in v):
            raise ValueError("thread counts must be >= 1")
        return v


def _profile_dir() -> Path:
    """The shipped profiles: the repo's profiles/ in a checkout, package data when installed."""
    repo = Path(__file__).resolve().parents[1] / "profiles"
    if repo.is_dir():
        return repo
    return Path(sys.prefix) / "share" / "edgekit" / "profiles"


def list_profiles() -> list[str]:
    return sorted(p.stem for p in _profile_dir().glob("*.yaml"))


def load_profile_file(path: Path) -> Profile:
    """Read and validate one profile file; errors name the file and the field."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read profile {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path} must be a YAML mapping of fields")
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ConfigError(f"profile {path}: field '{field}': {err['msg']}") from e


def get_profile(name: str) -> Profile:
    """A shipped profile by name, or a user profile by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError(f"profile file not found: {path}")
        return load_profile_file(path)
    candidate = _profile_dir() / f"{name}.yaml"
    if not candidate.is_file():
        raise InputError(f"unknown profile {name!r}; valid: {', '.join(list_profiles())} "
                         "(or a path to a profile YAML)")
    return load_profile_file(candidate)
