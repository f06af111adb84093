from __future__ import annotations

import pytest

from edgekit.errors import ConfigError, InputError
from edgekit.profiles import get_profile, list_profiles


def test_shipped_profiles_validate():
    assert "x86" in list_profiles()
    for name in list_profiles():
        p = get_profile(name)
        assert p.runtimes and p.precisions and p.threads


@pytest.mark.parametrize("body,field", [
    ("name: p\nruntimes: [onnxruntime]\nprecisions: [int4]\n", "precisions"),
    ("name: p\nruntimes: [tflite]\nprecisions: [fp32]\n", "runtimes"),
    ("name: p\nprecisions: [fp32]\n", "runtimes"),
    ("name: p\nruntimes: [onnxruntime]\nprecisions: [fp32]\nthreads: [0]\n", "threads"),
    ("name: p\nruntimes: [onnxruntime]\nprecisions: [fp32]\ncores: 4\n", "cores"),
])
def test_broken_profile_names_the_field(tmp_path, body, field):
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=f"field '{field}"):
        get_profile(str(path))


def test_unknown_profile_lists_valid():
    with pytest.raises(InputError, match="x86"):
        get_profile("pentium")
