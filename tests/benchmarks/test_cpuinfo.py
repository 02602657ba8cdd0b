"""The benchmarks' one reader of /proc/cpuinfo: model and flags on x86 and ARM layouts."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))

import cpuinfo  # noqa: E402

X86 = ["processor\t: 0", "model name\t: AMD EPYC", "flags\t\t: fpu sse4_2 avx2 popcnt", "",
       "processor\t: 1", "model name\t: other", "flags\t\t: fpu"]
ARM = ["processor\t: 0", "BogoMIPS\t: 50.00", "Features\t: fp asimd asimddp"]


def test_x86_model_and_first_cpu_flags(monkeypatch):
    monkeypatch.setattr(cpuinfo, "_cpuinfo_lines", lambda: X86)
    assert cpuinfo.cpu_model() == "AMD EPYC"
    assert cpuinfo.cpu_flags() == {"fpu", "sse4_2", "avx2", "popcnt"}


def test_arm_features_and_missing_model(monkeypatch):
    monkeypatch.setattr(cpuinfo, "_cpuinfo_lines", lambda: ARM)
    assert cpuinfo.cpu_flags() == {"fp", "asimd", "asimddp"}
    monkeypatch.setattr(cpuinfo.platform, "processor", lambda: "")
    assert cpuinfo.cpu_model() == "unknown CPU"


def test_no_cpuinfo_means_no_flags(monkeypatch):
    monkeypatch.setattr(cpuinfo, "_cpuinfo_lines", lambda: [])
    assert cpuinfo.cpu_flags() == set()
