"""Peak training memory: measured, simulated and an analytic floor.

One protocol everywhere: the peak of bytes held by live tensors during the
first two full training steps (every stage's forward and backward, the EMA
updates and the optimizer step), counting the weights, gradients, optimizer
state, aux nets, EMA copies and the input batch. The second step is the
steady state: the optimizer state the first one creates is live through all
of it (the first alone understated lean designs by up to 15%).

* ``measured`` on CUDA: the caching allocator's counters (not nvidia-smi's):
  the training state before the step plus the most the step allocated beyond
  what was allocated when it began (:func:`cuda_call`), so the data set held on
  the device, other loaders' buffers and the libraries' workspaces (created
  before the measured steps, :func:`warm_up`) are not counted.
* ``measured`` on CPU: :class:`LiveBytes`, a ``TorchDispatchMode`` that
  counts the bytes of every tensor storage while it is alive (the same
  totals as torch's ``MemTracker``, without its per-operator re-sum).
* ``simulated``: the same step and the same tracker, but under
  ``FakeTensorMode``, so nothing is allocated: any batch or input size can
  be sized on a laptop for a GPU.
* ``floor``: weights + gradients + optimizer state + the largest stage's
  saved activations (what autograd keeps for backward), a lower bound.

Each honours ``train.precision``: under bf16 / fp16 the step runs under autocast, so the
counted activations are the low-precision tensors autocast makes (and its cached
half-width weight copies); weights, gradients and optimizer state stay fp32.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch._guards import detect_fake_mode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from auxsearch.config import StudyConfig, TrainConfig
from auxsearch.design.graph import as_design
from auxsearch.errors import ConfigError
from auxsearch.model import engine
from auxsearch.model.precision import Precision
from auxsearch.tasks import get_task


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every live tensor storage, and their peak, at O(1) per operator.

    Every tensor an operator returns is looked at once: a storage not seen
    before is added to the count, and a ``weakref.finalize`` on it takes it
    off when the storage is freed, so views and in-place ops are not counted
    twice and freed activations leave the count at once. (torch's own
    ``MemTracker`` gives the same totals, to the byte, but re-sums every
    tracked tensor on each operator: 3 to 8 times slower on a ResNet-110 step.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}

    def track(self, t: Any) -> None:
        if not isinstance(t, torch.Tensor):
            return
        st = t.untyped_storage()
        key = st._cdata
        if key in self._live:
            return
        n = st.nbytes()
        self._live[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def track_all(self, *objs: Any) -> None:
        """Count what exists before the step: modules (weights, buffers, grads), optimizers, tensors."""
        for obj in objs:
            if isinstance(obj, nn.Module):
                for t in (*obj.parameters(), *obj.buffers()):
                    self.track(t)
                    self.track(t.grad)
            elif isinstance(obj, torch.optim.Optimizer):
                for state in obj.state.values():
                    for t in state.values():
                        self.track(t)
            else:  # a tensor, or a batch of them (detection targets: a list of dicts of tensors)
                for t in tree_leaves(obj):
                    self.track(t)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            self.track(t)
        return out


def tracked_call(step: Callable[[], Any], *external: Any) -> tuple[int, Any]:
    """``(peak live bytes during step(), what step() returned)``, counting ``external`` (weights,
    optimizer, batch) too."""
    counter = LiveBytes()
    counter.track_all(*external)
    with counter:
        out = step()
    return int(counter.peak), out


def tracked_peak(step: Callable[[], Any], *external: Any) -> int:
    """Peak live bytes during ``step()``, counting ``external`` (weights, optimizer, batch) too."""
    return tracked_call(step, *external)[0]


class CudaAllocator:
    """The caching allocator's counters of one CUDA device, as :func:`cuda_call` reads them (a test passes
    a stand-in with the same four methods)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def allocated(self) -> int:
        return int(torch.cuda.memory_allocated(self.device))

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        return int(torch.cuda.max_memory_allocated(self.device))


def held_bytes(*objs: Any) -> int:
    """Bytes of the distinct storages of ``objs`` (modules: weights, buffers, gradients; optimizers: their
    state; tensors or batches of them), each storage once."""
    seen: dict[int, int] = {}

    def add(t: Any) -> None:
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            seen.setdefault(st.data_ptr() if st.device.type != "meta" else id(st), st.nbytes())

    for obj in objs:
        if isinstance(obj, nn.Module):
            for t in (*obj.parameters(), *obj.buffers()):
                add(t)
                add(t.grad)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for t in state.values():
                    add(t)
        else:
            for t in tree_leaves(obj):
                add(t)
    return sum(seen.values())


def cuda_call(step: Callable[[], Any], device: torch.device, held: int,
              allocator: CudaAllocator | None = None) -> tuple[int, Any]:
    """``(peak training memory of step(), what step() returned)`` on a CUDA device.

    The allocator counts everything live in the process: the data set held on the device, other
    loaders' buffers, library workspaces. The peak of training is ``held`` (the training state and
    batch before the step: weights, gradients, optimizer state, EMA copies, batch) plus the most the
    step allocated beyond what was allocated when it began; what was allocated for other purposes
    before it is not counted. The same quantity as :class:`LiveBytes` on the CPU and the simulator.
    """
    a = allocator or CudaAllocator(device)
    a.synchronize()
    before = a.allocated()
    a.reset_peak()
    out = step()
    a.synchronize()
    return a.peak() - before + held, out


@torch.no_grad()
def warm_up(device: torch.device, precision: Precision | None = None) -> None:
    """Create the CUDA libraries' persistent workspaces (cuBLAS, cuBLASLt) before the measured steps, in
    fp32 and in the autocast dtype, so their bytes are allocated before a step and not counted in it."""
    if torch.device(device).type != "cuda":
        return
    a = torch.ones(16, 16, device=device)
    torch.mm(a, a)
    torch.nn.functional.linear(a, a, a[0])
    if precision is not None and precision.enabled:
        with precision.autocast():
            torch.mm(a, a)
            torch.nn.functional.linear(a, a, a[0])
    del a
    torch.cuda.synchronize(device)


# A training step's peak is counted over the first two steps: the optimizer's state (SGD momentum, Adam's
# moments) is created at the end of the first step and is live through every later one, so the first step alone
# understates the memory training holds (by 4-15% on the quickstart's proxy, most for the lean designs).
STEPS_MEASURED = 2


def measure_step(model: nn.Module, opt: torch.optim.Optimizer, step: Callable[[], Any],
                 x: torch.Tensor, y: Any, allocator: CudaAllocator | None = None) -> tuple[int, Any]:
    """``(measured peak, what step() returned)`` of one training step on the device ``x`` lives on: the CUDA
    allocator's counters (:func:`cuda_call`; ``allocator`` stands in for them in tests), else :class:`LiveBytes`."""
    if x.device.type == "cuda" or allocator is not None:
        return cuda_call(step, x.device, held_bytes(model, opt, x, y), allocator)
    return tracked_call(step, model, opt, x, y)


def simulate_step(make: Callable[[], tuple[nn.Module, torch.optim.Optimizer, Callable, torch.Tensor,
                                           torch.Tensor]]) -> int:
    """Simulated peak: ``make()`` builds model, optimizer, step and batch under fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        model, opt, step, x, y = make()
        return max(tracked_peak(step, model, opt, x, y) for _ in range(STEPS_MEASURED))


def state_bytes(model: nn.Module, opt_state_per_param: int = 1) -> int:
    """Weights + gradients + optimizer state of the trainable parameters, plus buffers and frozen weights."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return trainable * (2 + opt_state_per_param) + frozen + buffers


@contextlib.contextmanager
def saved_tensor_bytes(held: Iterable[torch.Tensor] = ()):
    """Count the bytes autograd saves for backward inside the block (``box[0]``), except the storages of
    ``held`` (weights and buffers, counted elsewhere: a conv saves its weight)."""
    box = [0]
    seen: set[int] = {t.untyped_storage()._cdata for t in held}  # the storage itself: stable across views

    def pack(t: torch.Tensor):
        key = t.untyped_storage()._cdata if not t.is_sparse else id(t)
        if key not in seen:
            seen.add(key)
            box[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield box


def _with_input(design: Any, input_size: tuple[int, int] | None) -> dict:
    d = as_design(design)
    if input_size is not None:
        d["input_shape"] = [d["input_shape"][0], int(input_size[0]), int(input_size[1])]
    return d


def _setup(d: dict, cfg: TrainConfig, batch_size: int, device: torch.device | str = "cpu"):
    model = engine.build(d)
    if torch.device(device).type != "cpu":  # .to() under FakeTensorMode cannot swap weights
        model = model.to(device)
    opt, _ = engine.make_optimizer(model, cfg, 10)
    x, y = get_task(d["task"]["name"]).example_batch(d, batch_size, device)
    if cfg.channels_last and detect_fake_mode() is None:  # same bytes; fake weights cannot be swapped in place
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, opt, x, y, Precision(cfg.precision, device)


def _index(model: engine.LocalNetwork, x: torch.Tensor) -> torch.Tensor | None:
    """Sample positions for a model with a long-term bank (its reads and writes cost bytes too), else None."""
    return torch.arange(x.shape[0], device=x.device) if model.keeps_samples else None


def check_simulatable(design: Any) -> None:
    """Refuse a simulation the task cannot run on fake tensors."""
    task = get_task(as_design(design)["task"]["name"])
    if not task.simulatable:
        raise ConfigError("memory.mode", f"task {task.name!r} cannot be simulated: its loss has data-dependent "
                          "shapes (target assignment); measure it instead (study: memory: {mode: measured}; "
                          "CLI: auxsearch memory --mode measured)")


def simulate(design: Any, batch_size: int, input_size: tuple[int, int] | None = None,
             train: TrainConfig | None = None) -> int:
    """Simulated peak bytes of training ``design`` at this batch and input size (:data:`STEPS_MEASURED` steps)."""
    d, cfg = _with_input(design, input_size), train or TrainConfig()
    check_simulatable(d)

    def make():
        model, opt, x, y, amp = _setup(d, cfg, batch_size)
        index = _index(model, x)
        return model, opt, lambda: engine.train_step(model, opt, x, y, amp, index), x, y

    return simulate_step(make)


def simulate_in_study(design: Any, cfg: StudyConfig) -> int:
    """:func:`simulate` at the scale a study scores memory: ``memory.batch_size`` / ``input_size`` when
    given (the target), else the training batch and input; the study's recipe."""
    m = cfg.memory
    return simulate(design, m.batch_size or cfg.train.batch_size, tuple(m.input_size) if m.input_size else None,
                    cfg.train)


def peak_in_study(design: Any, cfg: StudyConfig) -> int:
    """The peak a trial of this study will score for ``design``, before it trains: real steps when the study
    measures memory on the CPU (the same counter as the trial's, and on small proxies about twice as fast as
    faking the step) or its task cannot be faked (detection: real steps on the study's device, on a synthetic
    batch, so within a fraction of a percent of the trial's peak, which depends on its boxes), else
    :func:`simulate_in_study`."""
    m = cfg.memory
    device = engine.resolve_device(cfg.train.device)
    if m.mode == "measured" and (device.type == "cpu" or not get_task(as_design(design)["task"]["name"]).simulatable):
        return measure(design, cfg.train.batch_size, None, cfg.train, str(device))
    return simulate_in_study(design, cfg)


def measure(design: Any, batch_size: int, input_size: tuple[int, int] | None = None,
            train: TrainConfig | None = None, device: str = "cpu") -> int:
    """Measured peak bytes of real training steps (random data, :data:`STEPS_MEASURED` of them) on ``device``."""
    d, cfg = _with_input(design, input_size), train or TrainConfig()
    torch.manual_seed(cfg.seed)
    model, opt, x, y, amp = _setup(d, cfg, batch_size, device)
    warm_up(torch.device(device), amp)
    index = _index(model, x)
    return max(measure_step(model, opt, lambda: engine.train_step(model, opt, x, y, amp, index), x, y)[0]
               for _ in range(STEPS_MEASURED))


def floor(design: Any, batch_size: int, input_size: tuple[int, int] | None = None,
          train: TrainConfig | None = None) -> int:
    """Analytic floor: weights + grads + optimizer state + batch + the largest stage's saved activations."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    d, cfg = _with_input(design, input_size), train or TrainConfig()
    check_simulatable(d)
    per_stage: list[int] = []

    @contextlib.contextmanager
    def count(k: int):
        with saved_tensor_bytes([*model.parameters(), *model.buffers()]) as box:
            yield
        per_stage.append(box[0])

    with FakeTensorMode(allow_non_fake_inputs=True):
        model, opt, x, y, amp = _setup(d, cfg, batch_size)
        engine.local_step(model, x, y, stage_context=count, precision=amp)
        opt_state = 2 if cfg.optimizer == "adamw" else (1 if cfg.momentum > 0 else 0)
        batch = sum(t.numel() * t.element_size() for t in tree_leaves((x, y)) if isinstance(t, torch.Tensor))
        return state_bytes(model, opt_state) + batch + max(per_stage)
