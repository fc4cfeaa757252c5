"""Where a trial runs: the GPUs a worker may use, its share of one, the CPUs it may use, what an
out-of-memory means, and whether a precision runs natively. Pure functions (torch only where it
reads the device), so every rule is tested on a machine without a GPU.

* :func:`visible_devices` reads the ``CUDA_VISIBLE_DEVICES`` list a scheduler gave (indices,
  ``GPU-...`` / ``MIG-...`` UUIDs); :func:`worker_devices` hands worker ``i`` one of them; when
  workers outnumber GPUs each worker gets :func:`memory_share` of its GPU
  (``torch.cuda.set_per_process_memory_fraction`` in the process that trains, :func:`apply_share`).
* :func:`gpu_count` and :func:`device_name` ask NVML, never CUDA: the process that runs a study
  (and not its trials) creates no CUDA context.
* :func:`is_out_of_memory` names an allocation failure, cuBLAS' and cuDNN's included;
  :func:`oom_verdict` says whether it is the design's (it reached its share of the GPU) or the
  neighbours' (it did not: the trial is tried again).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

SHARE_ENV = "AUXSEARCH_GPU_SHARE"  # the fraction of its GPU's memory a worker process may allocate
OOM_MARGIN = 0.9  # an OOM below this share of the limit was caused by someone else's memory


def visible_devices(env: Mapping[str, str] | None = None) -> list[str] | None:
    """The ``CUDA_VISIBLE_DEVICES`` list (``None``: unset, every GPU of the machine is visible)."""
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return [d.strip() for d in raw.split(",") if d.strip() and d.strip() != "-1"]


def worker_devices(index: int, workers: int, visible: list[str] | None, count: int) -> tuple[str | None, float]:
    """``(CUDA_VISIBLE_DEVICES of worker index, its memory share)``; ``(None, 1.0)`` without a GPU.

    Worker ``i`` takes entry ``i mod n`` of the visible list (or GPU index ``i mod count`` when
    nothing was set); a GPU shared by ``k`` workers gives each ``1 / k`` of its memory.
    """
    devices = visible if visible is not None else [str(i) for i in range(count)]
    if not devices or workers < 1:
        return None, 1.0
    mine = index % len(devices)
    sharing = len(range(mine, workers, len(devices)))  # workers mine, mine + n, mine + 2n, ... < workers
    return devices[mine], memory_share(sharing)


def memory_share(workers_on_gpu: int) -> float:
    """The fraction of one GPU's memory each of ``workers_on_gpu`` worker processes may allocate."""
    return 1.0 / max(1, workers_on_gpu)


def apply_share(device, env: Mapping[str, str] | None = None, set_fraction=None) -> float | None:
    """In the process that trains on CUDA ``device``: cap its allocations at the share the supervisor gave."""
    env = os.environ if env is None else env
    if getattr(device, "type", str(device).split(":")[0]) != "cuda" or SHARE_ENV not in env:
        return None
    share = float(env[SHARE_ENV])
    if share < 1.0:
        if set_fraction is None:
            import torch

            set_fraction = torch.cuda.set_per_process_memory_fraction
        set_fraction(share, device)
    return share


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a scheduler's cgroup or taskset), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------- NVML: the GPUs, without CUDA

def _nvml():
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    if lib.nvmlInit_v2() != 0:
        raise OSError("nvmlInit failed")
    return lib


def gpu_count(env: Mapping[str, str] | None = None) -> int:
    """GPUs a worker can be given: the visible list's length, else NVML's count (0: no GPU, no driver)."""
    visible = visible_devices(env)
    if visible is not None:
        return len(visible)
    try:
        lib = _nvml()
    except OSError:
        return 0
    try:
        n = ctypes.c_uint()
        return int(n.value) if lib.nvmlDeviceGetCount_v2(ctypes.byref(n)) == 0 else 0
    finally:
        lib.nvmlShutdown()


def device_name() -> str:
    """The first GPU's name through NVML (no CUDA context is created), else the processor."""
    try:
        lib = _nvml()
    except OSError:  # no NVML: no NVIDIA driver on this machine
        return platform.processor() or "cpu"
    try:
        handle, name = ctypes.c_void_p(), ctypes.create_string_buffer(96)
        if lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == 0 and \
                lib.nvmlDeviceGetName(handle, name, 96) == 0:
            return name.value.decode()
        return platform.processor() or "cpu"
    finally:
        lib.nvmlShutdown()


# ----------------------------------------------------------------- out of memory

_OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory", "cublas_status_alloc_failed",
              "cudnn_status_alloc_failed", "cudnn_status_not_enough_workspace")


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed: torch's OutOfMemoryError, a host MemoryError, or a library's
    allocation failure (cuBLAS and cuDNN raise RuntimeError with their status names)."""
    import torch

    if isinstance(exc, MemoryError | torch.OutOfMemoryError) or getattr(exc, "out_of_memory", False):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(s in text for s in _OOM_WORDS)


def oom_verdict(reached: int | None, limit: int | None, margin: float = OOM_MARGIN) -> str:
    """``infeasible`` when the design's own peak came within ``margin`` of the memory it may use
    (``limit``: its share of the GPU), else ``retry``: the memory went to another process on the GPU.
    Without a limit (the CPU, or an unknown GPU size) or a peak, the design is held responsible."""
    if reached is None or limit is None or limit <= 0:
        return "infeasible"
    return "infeasible" if reached >= margin * limit else "retry"


# ----------------------------------------------------------------- precision

def check_precision(name: str, device, bf16_native=None) -> None:
    """Refuse bf16 on a CUDA device without native bf16 (it would run emulated, several times slower)."""
    from auxsearch.errors import ConfigError

    if name != "bf16" or getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return
    if bf16_native is None:
        import torch

        def bf16_native() -> bool:
            return torch.cuda.is_bf16_supported(including_emulation=False)

    if not bf16_native():
        raise ConfigError("train.precision", "bf16 is not native on this GPU (compute capability < 8.0: it would "
                          "run emulated, several times slower); use fp16 or fp32")
