"""``python -m bench [--quick] [--tiny] [--only NAME] [--out PATH]``: run the benchmarks, print a table of ratios and
write every measurement to a JSON file (see bench/README.md)."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench import BenchResult, Figure, Settings
from bench.machine import MachineLimit, cpu_snapshot, detect_machine_limit, other_cpu_share

if TYPE_CHECKING:
    from ml.encoders.clip import OpenClipEncoder

logger = logging.getLogger("bench")

BENCHMARKS = ("encoders", "precision", "batching", "moderation")
DEFAULT_OUT = Path("bench/results.json")
# Above this share of the CPUs used by other processes, a benchmark's timings say more about them than about us.
BUSY_SHARE = 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: which benchmarks, how hard, where the JSON goes."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few repeats and few items (smoke test; noisy figures)")
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny random open_clip instead of ViT-B-32 (checks the code, not speed)"
    )
    parser.add_argument("--only", choices=BENCHMARKS, help="run one benchmark (the machine limit is always measured)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the image tower (slow)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})")
    parser.add_argument("--log-level", default="INFO", help="logging level of the progress messages")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected benchmarks and return the results document."""
    from bench.batching import run_batching
    from bench.encoders import load_open_clip, run_encoders, run_precision
    from bench.moderation import run_moderation

    settings = Settings(quick=args.quick, tiny=args.tiny)
    machine = detect_machine_limit()
    selected = [args.only] if args.only else list(BENCHMARKS)
    load_before = os.getloadavg()
    cpus = os.cpu_count() or 1
    start = cpu_snapshot()
    results: dict[str, BenchResult] = {}
    shares: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vlp-bench-") as workdir:
        loaded: list[OpenClipEncoder] = []  # ViT-B-32, loaded for the first benchmark that needs it

        def encoder() -> OpenClipEncoder:
            if not loaded:
                loaded.append(load_open_clip(Path(workdir), use_tiny=settings.tiny))
            return loaded[0]

        steps: dict[str, Callable[[], BenchResult]] = {
            "encoders": lambda: run_encoders(settings, encoder(), machine, try_compile=args.compile),
            "precision": lambda: run_precision(settings, encoder(), machine),
            "batching": lambda: run_batching(settings, image_encoder=encoder()),
            "moderation": lambda: run_moderation(settings),
        }
        for name in selected:
            logger.info("running %s", name)
            before = cpu_snapshot()
            results[name] = steps[name]()
            share = other_cpu_share(before, cpu_snapshot(), cpus=cpus)
            shares[name] = share
            if share > BUSY_SHARE:
                logger.warning(
                    "other processes used %.0f%% of the CPUs during %s: its timings are unreliable", 100 * share, name
                )
    end = cpu_snapshot()
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": {"quick": settings.quick, "tiny": settings.tiny, "only": args.only, "compile": args.compile},
        "model": loaded[0].spec.name if loaded else "moderation pipeline",
        "machine": machine.to_dict(),
        "torch": torch_info(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "other_cpu_share": {"whole_run": other_cpu_share(start, end, cpus=cpus), **shares},
        "elapsed_s": end.wall_s - start.wall_s,
        "figures": [figure.to_dict() for figure in _all_figures(machine, results)],
        "benchmarks": {name: result.details for name, result in results.items()},
    }


def torch_info() -> dict[str, Any]:
    """The torch build and threading the figures were measured with."""
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "quantized_engine": torch.backends.quantized.engine,
    }


def format_table(document: dict[str, Any]) -> str:
    """The figures as a fixed-width table, with the machine and the caveat about shared CPUs."""
    machine = document["machine"]
    lines = [
        f"{document['model']} on {machine['cpu_model']}: {machine['cores']} cores x {machine['flop_per_cycle']} "
        f"FLOP/cycle ({machine['simd']}) x {machine['ghz']:.3f} GHz = {machine['peak_gflops']:.1f} GFLOP/s peak fp32; "
        f"torch {document['torch']['version']}, {document['torch']['threads']} threads; "
        f"load average before {document['load_average']['before'][0]:.2f}",
        "other processes used "
        + ", ".join(f"{100 * share:.0f}% ({name})" for name, share in document["other_cpu_share"].items())
        + " of the CPUs",
        "",
        f"{'figure':<44} {'value':>10} {'unit':<8} {'target':<24} {'met':<4} note",
    ]
    for figure in document["figures"]:
        met = "" if figure["met"] is None else ("yes" if figure["met"] else "NO")
        lines.append(
            f"{figure['name']:<44} {_number(figure['value']):>10} {figure['unit']:<8} "
            f"{figure['target'] or '':<24} {met:<4} {figure['note']}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    document = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    logger.info("wrote %s", args.out)
    sys.stdout.write(format_table(document))
    return 0


def _all_figures(machine: MachineLimit, results: dict[str, BenchResult]) -> list[Figure]:
    figures = [
        Figure(
            "machine peak fp32",
            machine.peak_gflops,
            "GFLOP/s",
            note=f"{machine.cores} vCPUs x {machine.flop_per_cycle} x {machine.ghz:.3f} GHz ({machine.ghz_source})",
        )
    ]
    for result in results.values():
        figures += result.figures
    return figures


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


if __name__ == "__main__":
    sys.exit(main())
