"""The machine's fp32 FLOP limit: cores x FLOP per cycle x GHz, from /proc/cpuinfo and the cpufreq files.

Assumptions, all printed with the figure:

- cores are the vCPUs this process may run on (``os.sched_getaffinity``), not the host's: a container or a
  ``taskset`` sees only its share. On a VM each vCPU is a hardware thread the hypervisor schedules; whether two vCPUs
  share one physical core (SMT) is invisible from inside unless the guest topology says so (``threads_per_core``,
  from cpuinfo's ``siblings`` / ``cpu cores``), and if they do the real limit is half;
- each core has two FMA pipes (true of the Zen and Skylake-class server cores these machines use), an FMA counting as
  two FLOPs: AVX-512 gives 2 x 16 lanes x 2 = 64 FLOP/cycle, AVX2 with FMA 2 x 8 x 2 = 32, AVX without FMA 16 (one add
  and one multiply pipe of 8 lanes), SSE 8;
- the clock is ``cpuinfo_max_freq`` when the kernel exposes cpufreq (the boost clock, so the limit is optimistic),
  otherwise the ``cpu MHz`` line of /proc/cpuinfo (on a VM without cpufreq, the nominal clock the hypervisor reports).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
STAT = Path("/proc/stat")
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
FMA_PIPES = 2
# Flags that decide whether reduced precision can be faster than fp32 on this CPU (reported, not used in the limit).
REDUCED_PRECISION_FLAGS = (
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "f16c",
)


@dataclass(frozen=True)
class MachineLimit:
    """The peak fp32 FLOP rate and how it was derived."""

    cpu_model: str
    cpu_family_model: str
    threads_per_core: int | None
    cores: int
    cores_source: str
    simd: str
    flop_per_cycle: int
    ghz: float
    ghz_source: str
    reduced_precision_flags: dict[str, bool]

    @property
    def peak_gflops(self) -> float:
        """Peak fp32 GFLOP/s: every core issuing ``flop_per_cycle`` every cycle at ``ghz``."""
        return self.cores * self.flop_per_cycle * self.ghz

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_gflops": self.peak_gflops}


def flop_per_cycle(flags: set[str]) -> tuple[str, int]:
    """(SIMD level, fp32 FLOP per cycle per core) for a set of /proc/cpuinfo flags, assuming two FMA pipes."""
    if "avx512f" in flags:
        return "avx512f", FMA_PIPES * 16 * 2
    if "avx2" in flags and "fma" in flags:
        return "avx2+fma", FMA_PIPES * 8 * 2
    if "avx" in flags:
        return "avx", 16
    return "sse", 8


def parse_machine_limit(cpuinfo: str, *, cores: int, max_freq_khz: int | None = None) -> MachineLimit:
    """The limit from the text of /proc/cpuinfo, a core count and (if the kernel has cpufreq) the max clock in kHz."""
    fields = _first_processor(cpuinfo)
    flags = set(fields.get("flags", "").split())
    simd, per_cycle = flop_per_cycle(flags)
    if max_freq_khz:
        ghz, ghz_source = max_freq_khz / 1e6, f"{MAX_FREQ}"
    elif "cpu MHz" in fields:
        ghz, ghz_source = float(fields["cpu MHz"]) / 1000, "/proc/cpuinfo cpu MHz (no cpufreq on this machine)"
    else:
        raise ValueError("cpuinfo has no 'cpu MHz' line and no cpufreq max frequency was given")
    siblings, physical = fields.get("siblings", ""), fields.get("cpu cores", "")
    return MachineLimit(
        cpu_model=fields.get("model name", "unknown"),
        cpu_family_model=f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}",
        threads_per_core=int(siblings) // int(physical) if siblings.isdigit() and physical.isdigit() else None,
        cores=cores,
        cores_source="len(os.sched_getaffinity(0)): vCPUs this process may use",
        simd=simd,
        flop_per_cycle=per_cycle,
        ghz=ghz,
        ghz_source=ghz_source,
        reduced_precision_flags={flag: flag in flags for flag in REDUCED_PRECISION_FLAGS},
    )


def detect_machine_limit() -> MachineLimit:
    """The limit of the machine this process runs on."""
    max_freq = int(MAX_FREQ.read_text().strip()) if MAX_FREQ.exists() else None
    limit = parse_machine_limit(CPUINFO.read_text(), cores=len(os.sched_getaffinity(0)), max_freq_khz=max_freq)
    logger.info(
        "machine limit %.1f GFLOP/s = %d cores x %d FLOP/cycle (%s) x %.3f GHz (%s)",
        limit.peak_gflops,
        limit.cores,
        limit.flop_per_cycle,
        limit.simd,
        limit.ghz,
        limit.ghz_source,
    )
    return limit


@dataclass(frozen=True)
class CpuSnapshot:
    """Wall clock, CPU time of the whole machine and of this process, taken together (see ``other_cpu_share``)."""

    wall_s: float
    machine_busy_s: float
    own_cpu_s: float


def cpu_snapshot() -> CpuSnapshot:
    """Now: wall clock, busy CPU seconds of all CPUs (/proc/stat) and CPU seconds of this process (all threads) and
    of the children it has waited for (the web and worker processes of the moderation benchmark, once stopped)."""
    # /proc/stat's first line: user nice system idle iowait irq softirq steal ..., in clock ticks.
    ticks = [int(value) for value in STAT.read_text().splitlines()[0].split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    own_s = own.user + own.system + own.children_user + own.children_system
    return CpuSnapshot(time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own_s)


def other_cpu_share(before: CpuSnapshot, after: CpuSnapshot, *, cpus: int) -> float:
    """Fraction of the machine's CPU time that other processes used between two snapshots (0: we had it to
    ourselves; 0.5 on two CPUs: another process kept one busy). Timings taken at a high share are unreliable."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return 0.0
    others = (after.machine_busy_s - before.machine_busy_s) - (after.own_cpu_s - before.own_cpu_s)
    return max(0.0, others / (wall * cpus))


def gemm_gflops(rows: int, inner: int, cols: int, *, warmup: int = 1, repeats: int = 5) -> float:
    """fp32 GFLOP/s of ``torch.mm`` on [rows, inner] x [inner, cols] (median of ``repeats``): what the BLAS reaches
    on this machine, the practical ceiling for a model made of matmuls."""
    import torch

    from bench import measure

    left, right = torch.randn(rows, inner), torch.randn(inner, cols)
    timing = measure(lambda: torch.mm(left, right), warmup=warmup, repeats=repeats)
    return 2 * rows * inner * cols / timing.median_s / 1e9


def _first_processor(cpuinfo: str) -> dict[str, str]:
    """The ``key : value`` lines of the first processor block (all cores of these machines are alike)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, separator, value = line.partition(":")
        if separator:
            fields.setdefault(key.strip(), value.strip())
    return fields
