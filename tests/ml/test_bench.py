"""``python -m bench``: the FLOP-limit arithmetic and a quick run's results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.encoders import embedding_agreement
from bench.machine import flop_per_cycle, parse_machine_limit

REPO = Path(__file__).resolve().parents[2]

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
cpu MHz\t\t: {mhz}
flags\t\t: fpu sse sse2 {flags}

processor\t: 1
model name\t: AMD EPYC 7B13
cpu MHz\t\t: 1.0
flags\t\t: fpu sse sse2
"""


def test_flop_limit_of_two_avx2_fma_cores_at_2_6_ghz() -> None:
    limit = parse_machine_limit(CPUINFO.format(mhz="2600.000", flags="avx avx2 fma f16c"), cores=2)

    assert (limit.simd, limit.flop_per_cycle, limit.ghz) == ("avx2+fma", 32, pytest.approx(2.6))
    assert limit.peak_gflops == pytest.approx(166.4)
    assert "cpu MHz" in limit.ghz_source
    assert limit.reduced_precision_flags["f16c"] and not limit.reduced_precision_flags["avx512_bf16"]


def test_flop_limit_prefers_cpufreq_max_and_avx512() -> None:
    limit = parse_machine_limit(
        CPUINFO.format(mhz="1200.0", flags="avx avx2 fma avx512f"), cores=4, max_freq_khz=3_500_000
    )

    assert (limit.flop_per_cycle, limit.ghz) == (64, pytest.approx(3.5))
    assert limit.peak_gflops == pytest.approx(4 * 64 * 3.5)
    assert "cpuinfo_max_freq" in limit.ghz_source


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({"avx", "avx2"}, ("avx", 16)), ({"sse", "sse2"}, ("sse", 8))],
)
def test_avx2_without_fma_and_plain_sse(flags: set[str], expected: tuple[str, int]) -> None:
    assert flop_per_cycle(flags) == expected


def test_embedding_agreement_separates_shared_direction_from_what_differs() -> None:
    rng = np.random.default_rng(0)
    shared = np.ones((1, 16))
    reference = _unit(shared + 0.1 * rng.normal(size=(8, 16)))
    scrambled = _unit(shared + 0.1 * rng.normal(size=(8, 16)))

    same = embedding_agreement(reference, reference)
    other = embedding_agreement(reference, scrambled)

    assert same["mean_cosine"] == pytest.approx(1.0) and same["centred_mean_cosine"] == pytest.approx(1.0)
    # Both sets hug the shared direction: the plain cosine looks fine, the centred one does not.
    assert other["mean_cosine"] > 0.95 and other["centred_mean_cosine"] < 0.5


def test_quick_batching_run_writes_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench", "--quick", "--tiny", "--only", "batching", "--out", str(out)]

    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)

    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads(out.read_text())
    assert {
        "timestamp",
        "machine",
        "torch",
        "figures",
        "benchmarks",
        "load_average",
        "other_cpu_share",
    } <= document.keys()
    assert 0 <= document["other_cpu_share"]["batching"] <= 1
    assert document["machine"]["peak_gflops"] > 0 and document["torch"]["threads"] >= 1
    assert list(document["benchmarks"]) == ["batching"]
    figures = {figure["name"]: figure for figure in document["figures"]}
    ratios = [figure for name, figure in figures.items() if name.startswith("BatchRunner/direct")]
    assert len(ratios) == 2
    for figure in ratios:
        assert figure["value"] > 0 and figure["target"] == ">= 0.8x" and isinstance(figure["met"], bool)
    for case in document["benchmarks"]["batching"].values():
        # Every caller got its own item's embedding, identical to the direct call's.
        assert case["max_abs_difference"] < 1e-4
        assert case["runner_stats"]["items"] >= case["items"] and case["runner_stats"]["failed_batches"] == 0
    assert "BatchRunner/direct" in completed.stdout


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
