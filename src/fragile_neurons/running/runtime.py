"""Where the work runs and how it is made repeatable: device choice, threads, seeding, the
allocator, and how the run is described in the metrics. Every stage runs this module (through
`stage`), so every stage depends on it in dvc.yaml: an edit here reruns them all."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .errors import ParamError


def select_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else the CPU; a CUDA device that is not there is a
    ParamError naming what is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            there = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ParamError(
                "device", name, f"a device this machine has ({there}): 'auto' or 'cpu'"
            )
    return torch.device(name)


def use_threads(threads: int | None) -> None:
    """torch's CPU threads (`threads`; None: torch's default, all cores). Results are exact for a
    given thread count, and may differ in the last bits between counts."""
    if threads is not None:
        torch.set_num_threads(threads)


def cpu_model() -> str | None:
    """The CPU's model name as the kernel reports it (/proc/cpuinfo's first `model name`, else
    platform.processor()); None where neither says. Another CPU type may round differently, and
    results then move about as much as with another seed (a sweep records it per seed)."""
    import platform

    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()[:200]
    except OSError:
        pass
    return platform.processor() or None


def describe(device: torch.device, nondeterministic: list[str]) -> dict:
    """Where a stage ran, for its metrics: the device type (and on CUDA its name), the CPU
    model, torch's CPU threads, and the operations that ran without a deterministic kernel
    (empty: a rerun writes the same bytes)."""
    found = {"device": device.type, "cpu": cpu_model(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    return found | {"nondeterministic_ops": list(nondeterministic)}


def seed_everything(
    seed: int, device: torch.device | None = None, deterministic: str = "warn"
) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded with `seed`.

    With the same params and the same machine type, a stage rewrites identical bytes. On CUDA
    that needs torch's deterministic kernels, which are switched on here. Some operations have no
    deterministic CUDA kernel (e.g. the backward of adaptive average pooling, which ResNet-18
    runs): `deterministic: warn` (the default) lets them run and records them (see
    :func:`watch_nondeterminism`), `strict` stops the stage with torch's error. The CPU kernels
    this package runs are deterministic for a given thread count without the switch (the
    pipeline test checks byte-identical reruns), and on the CPU it would only cost every stage
    the import of torch's compiler.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device is not None and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deterministic != "strict")
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


NONDETERMINISTIC = " does not have a deterministic implementation"


@contextmanager
def watch_nondeterminism() -> Iterator[list[str]]:
    """Collect the operations that ran without a deterministic kernel (torch warns about each
    under ``use_deterministic_algorithms(True, warn_only=True)``); the warnings still print."""
    ops: list[str] = []
    with warnings.catch_warnings():
        show = warnings.showwarning

        def record(message, category, filename, lineno, file=None, line=None):
            text = str(message)
            if NONDETERMINISTIC in text:
                op = text.split(NONDETERMINISTIC)[0].strip()
                if op not in ops:
                    ops.append(op)
            show(message, category, filename, lineno, file, line)

        warnings.showwarning = record
        # every such warning reaches `record`, whatever filters the user set (PYTHONWARNINGS)
        warnings.filterwarnings("always", message=f".*{NONDETERMINISTIC}")
        yield ops


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc's malloc to keep freed activation buffers for reuse (Linux only; a no-op
    elsewhere). Returns whether the setting took.

    By default glibc serves every block above a few MB with a fresh mmap and returns it to the
    kernel on free, so each CPU forward pass page-faults its activations in anew, which can cost
    more than the arithmetic of small images (benchmarks/README.md). Blocks up to
    `mmap_threshold` (32 MiB, glibc's ceiling) now come from the heap, and up to
    `trim_threshold` of freed heap stays mapped. Results are unchanged: only where memory comes
    from changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def available_memory(device: torch.device) -> int:
    """Bytes a stage may still take on `device`: on a GPU what CUDA reports free; on the CPU the
    kernel's MemAvailable, and at most what the address-space limit (ulimit -v) leaves."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import resource

    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    status = {}
    try:
        for name in ("/proc/meminfo", "/proc/self/status"):
            with open(name) as f:
                status.update(line.split(":", 1) for line in f if ":" in line)
        available = int(status["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and "VmSize" in status:
        available = min(available, soft - int(status["VmSize"].split()[0]) * 1024)
    return max(available, 0)
