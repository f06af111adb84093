from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit.errors import ConfigError, InputError
from edgekit.profiles import aliases, get_profile, host_profile, list_profiles

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
REQUIRED = {"jetson-orin-nano", "jetson-agx-orin", "jetson-nano", "raspberry-pi-5", "raspberry-pi-4",
            "x86-avx2", "x86-avx512", "host"}


def test_shipped_profiles_validate():
    assert REQUIRED <= set(list_profiles())
    for name in list_profiles():
        p = get_profile(name)
        assert p.runtimes and p.precisions and p.threads
        assert p.preferred_precision in p.precisions
        assert p.memory.bandwidth_gbs > 0 and p.memory.source
        assert all(u.source and u.peak_gops for u in p.compute)
        assert p.quantization.weights and p.channel_multiple >= 1 and p.budgets.accuracy_drop >= 0


def test_aliases_and_device_facts():
    assert aliases()["jetson"] == "jetson-orin-nano" and aliases()["rpi"] == "raspberry-pi-5"
    assert get_profile("x86").name == "x86-avx2"
    assert get_profile("jetson").runtimes == ["tensorrt"]
    assert get_profile("rpi").runtimes == ["onnxruntime"]
    nano = get_profile("jetson-nano")
    assert "int8" not in nano.precisions and "int8" not in nano.unit().peak_gops  # Maxwell: no INT8 path
    agx = get_profile("jetson-agx-orin")
    assert {u.kind for u in agx.compute} == {"gpu", "dla", "cpu"} and agx.unit().kind == "gpu"


def test_host_profile_from_this_machine(tmp_path):
    p = host_profile(calibration=None)
    assert p.name == "host" and p.unit().kind == "cpu" and p.unit().units >= 1
    assert p.unit().peak_gops["int8"] > p.unit().peak_gops["fp32"] > 0
    assert p.efficiency_source == "assumed"
    # a calibration from another CPU is ignored
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"host_id": "some other cpu x64", "efficiency": {"default": {"conv": 0.9}}}))
    assert host_profile(calibration=other).efficiency_source == "assumed"


def _mutated(tmp_path, change) -> Path:
    data = yaml.safe_load((PROFILES / "x86-avx2.yaml").read_text())
    change(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(key, value):
    def change(d):
        *parents, last = key.split(".")
        for p in parents:
            d = d[int(p)] if p.isdigit() else d[p]
        d[last] = value
    return change


@pytest.mark.parametrize("change,field", [
    (_set("precisions", ["int3"]), "precisions"),
    (_set("runtimes", ["tflite"]), "runtimes"),
    (lambda d: d.pop("runtimes"), "runtimes"),
    (lambda d: d.pop("memory"), "memory"),
    (_set("threads", [0]), "threads"),
    (_set("cores", 4), "cores"),
    (_set("memory.bandwidth_gbs", -1), "memory.bandwidth_gbs"),
    (lambda d: d["compute"][0].pop("source"), "compute.0.source"),
    (_set("compute.0.peak_gops", {"fp64": 1.0}), "compute.0.peak_gops"),
    (_set("efficiency", {"int8": {"conv": 0.3}}), "efficiency"),
    (_set("efficiency.default.conv", 0), "efficiency.default.conv"),
    (_set("preferred_precision", "fp16"), "preferred_precision"),
])
def test_broken_profile_names_the_field(tmp_path, change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        get_profile(str(_mutated(tmp_path, change)))


def test_unknown_profile_lists_valid():
    with pytest.raises(InputError, match="x86"):
        get_profile("pentium")
