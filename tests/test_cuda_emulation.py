"""CUDA paths, checked on a machine without a GPU (docs/testing.md, "CUDA without a GPU").

* Every aux family x task x precision (bf16, fp16), and the wiring options (global ends, global-local), runs
  its forward and its loss on fake tensors on device ``cuda`` under CUDA's autocast policy, which
  refuses ops CPU autocast allows (InfoPro's sigmoid + BCE was one). The fake tensors also check
  device placement: a parameter, EMA copy, banked tap or batch left on the CPU fails the step.
* The CUDA peak accounting, with the allocator's counters injected: the data set held on the device
  and the libraries' workspaces are not training memory.
* The rules of where and how a trial runs on GPUs, as pure functions: CUDA_VISIBLE_DEVICES, a shared
  GPU's memory share, what an out-of-memory means, native bf16.

What this cannot see: the allocator's real behaviour (rounding, caching), the kernels themselves and the
backward pass (the autograd engine needs a real device). benchmarks/gpu_truth.py checks those on a GPU.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_map

from auxsearch.backbones import create_units
from auxsearch.design.families import family, family_names
from auxsearch.design.graph import normalize
from auxsearch.errors import ConfigError
from auxsearch.model import engine
from auxsearch.model.precision import Precision
from auxsearch.tasks import get_task
from auxsearch.train import devices, memory

# task -> (backbone, input shape, classes): the smallest shapes each task's heads accept
SHAPES = {"classification": ("resnet8", [1, 16, 16], 10), "segmentation": ("resnet8", [3, 32, 32], 5),
          "superres": ("edsr", [3, 16, 16], 1), "detection": ("resnet8", [3, 32, 32], 3)}
WIRING = [{}, {"end": "global_copy", "global_weight": 0.5}, {"end": "global"}, {"end": "global_ema", "through": "ema"}, {"head": "infopro"}]


class EmulatedCuda(Precision):
    """A precision whose autocast is CUDA's policy switched on directly (torch.autocast('cuda') refuses to
    start without a GPU), and whose backward only keeps the loss (the autograd engine needs a real device)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "cpu")
        self.device_type, self.scaler, self.losses = "cuda", None, []

    @contextlib.contextmanager
    def _cuda_autocast(self):
        before = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
        torch.set_autocast_enabled("cuda", True)
        torch.set_autocast_dtype("cuda", self.dtype)
        torch.autocast_increment_nesting()
        try:
            yield
        finally:
            if torch.autocast_decrement_nesting() == 0:
                torch.clear_autocast_cache()
            torch.set_autocast_enabled("cuda", before[0])
            torch.set_autocast_dtype("cuda", before[1])

    def autocast(self):
        return self._cuda_autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.losses.append(loss)


def on_fake_cuda(model: torch.nn.Module, mode: FakeTensorMode) -> None:
    """Every parameter and buffer of ``model`` replaced by a fake tensor on ``cuda`` (what ``.to('cuda')`` does)."""
    for m in model.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = torch.nn.Parameter(mode.from_tensor(p.detach()).to("cuda"),
                                                         requires_grad=p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = mode.from_tensor(b).to("cuda")


def design(task: str, entry: dict) -> dict:
    name, shape, classes = SHAPES[task]
    return normalize({"task": task, "backbone": {"name": name}, "input_shape": shape, "num_classes": classes,
                      "num_units": len(create_units(name, shape[0], {})), "splits": [2], "aux": [entry]})


def emulated_step(d: dict, precision: str) -> EmulatedCuda:
    """One local step of ``d`` on fake CUDA tensors under CUDA's autocast: every module's forward and loss."""
    model = engine.build(d)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    amp = EmulatedCuda(precision)
    with mode:
        on_fake_cuda(model, mode)
        x, y = get_task(d["task"]["name"]).example_batch(d, 2, "cpu")
        x = mode.from_tensor(x).to("cuda")
        y = tree_map(lambda t: mode.from_tensor(t).to("cuda") if isinstance(t, torch.Tensor) else t, y)
        engine.local_step(model, x, y, precision=amp)
        assert all(t.device.type == "cuda" for t in (*model.parameters(), *model.buffers()))
    return amp


@contextlib.contextmanager
def fp32_detection_loss():
    """FCOS's target assignment has data-dependent shapes that fake tensors cannot follow: the loss is
    replaced by one that checks what reaches it (fp32 head outputs, autocast off) and sums them."""
    from torchvision.models.detection import FCOS

    seen = []

    def loss(self, targets, outputs, anchors, per_level):
        seen.append((not torch.is_autocast_enabled("cuda"), {v.dtype for v in outputs.values()}))
        return {k: v.float().sum() for k, v in outputs.items()}

    with mock.patch.object(FCOS, "compute_loss", loss):
        yield seen


CASES = [pytest.param(task, fam, precision, wiring, id=f"{task}-{fam}-{precision}-{'-'.join(map(str, wiring.values())) or 'local'}")
         for task in SHAPES for fam in family_names() for precision in ("bf16", "fp16") for wiring in WIRING
         if not (task != "classification" and family(fam).classification_only)
         and not (wiring.get("end") and not family(fam).global_end)
         and not ("head" in wiring and (fam != "momentum" or task != "classification"))]


@pytest.mark.parametrize("task, fam, precision, wiring", CASES)
def test_forward_and_loss_run_under_cudas_autocast_on_cuda_tensors(task, fam, precision, wiring):
    d = design(task, {"family": fam, **wiring})
    with fp32_detection_loss() if task == "detection" else contextlib.nullcontext() as seen:
        amp = emulated_step(d, precision)
    assert len(amp.losses) == 2 and all(loss.dtype == torch.float32 and loss.device.type == "cuda"
                                        for loss in amp.losses)
    if task == "detection":  # the box losses see fp32 outputs outside autocast (fp16 overflows past 256 px)
        assert seen and all(off and dtypes == {torch.float32} for off, dtypes in seen)


@pytest.mark.torchvision  # segmentation's head
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_long_term_bank_reads_and_keeps_on_cuda_under_autocast(precision):
    """Slots, ids and the batch's positions all on the device; the second step reads what the first kept."""
    d = design("segmentation", {"family": "dgl", "end": "global", "bank_keep": 4})
    model = engine.build(d)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    amp = EmulatedCuda(precision)
    with mode:
        on_fake_cuda(model, mode)
        x, y = get_task("segmentation").example_batch(d, 2, "cpu")
        x, y = mode.from_tensor(x).to("cuda"), mode.from_tensor(y).to("cuda")
        index = mode.from_tensor(torch.tensor([1, 2])).to("cuda")
        for _ in range(2):
            engine.local_step(model, x, y, precision=amp, index=index)
        bank = model.bank
        assert bank.levels == [3] and {bank.level(3).device.type, bank.ids.device.type} == {"cuda"}
        assert bank.level(3).dtype == torch.float32
    assert len(amp.losses) == 4 and all(loss.dtype == torch.float32 for loss in amp.losses)


def test_the_emulation_refuses_what_cudas_autocast_refuses():
    """The check is real: a plain BCE after a sigmoid, which CPU autocast runs, fails here as on a GPU."""
    import torch.nn.functional as F

    amp = EmulatedCuda("bf16")
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode, amp.autocast(), pytest.raises(RuntimeError, match="unsafe to autocast"):
        x = mode.from_tensor(torch.rand(2, 3)).to("cuda")
        F.binary_cross_entropy(torch.sigmoid(x), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # CPU autocast lets it through: why CPU tests passed
        F.binary_cross_entropy(torch.sigmoid(torch.rand(2, 3)), torch.rand(2, 3))


def test_a_tensor_left_on_the_cpu_fails_the_emulated_step():
    d = design("classification", {"family": "momentum"})
    model = engine.build(d)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        on_fake_cuda(model, mode)
        model.aux[0].ema.register_buffer("stray", mode.from_tensor(torch.zeros(1)))  # stays on the CPU
        original = model.aux[0].transform

        def transform(feat):
            return original(feat) + model.aux[0].ema.stray  # a CPU tensor meeting CUDA ones
        model.aux[0].transform = transform
        x, y = get_task("classification").example_batch(d, 2, "cpu")
        with pytest.raises(Exception, match="(?i)device"):
            engine.local_step(model, mode.from_tensor(x).to("cuda"), mode.from_tensor(y).to("cuda"),
                              precision=EmulatedCuda("bf16"))


def test_infopros_fused_reconstruction_loss_equals_sigmoid_then_bce_in_fp32():
    import torch.nn.functional as F

    from auxsearch.aux.infopro import InfoProHead

    torch.manual_seed(0)
    head = InfoProHead((8, 8, 8), (3, 16, 16), 10, 1, 8, ratio=0.0, recon_first=1.0, recon_last=0.0,
                       task_first=0.0, task_last=1.0, decoder_width=12)
    feat, image = torch.randn(4, 8, 8, 8), torch.rand(4, 3, 16, 16)
    up = F.interpolate(feat, size=(16, 16), mode="bilinear", align_corners=False)
    unfused = F.binary_cross_entropy(torch.sigmoid(head.decoder(up)), image)
    assert head.loss(feat, image, torch.zeros(4, dtype=torch.long)).item() == pytest.approx(unfused.item(), rel=1e-6)


def test_fp16_detection_losses_stay_finite_for_boxes_past_256_px():
    """A 300 x 300 px box: its area is past fp16's largest number (65504); the loss runs in fp32."""
    d = normalize({"task": "detection", "backbone": {"name": "resnet8"}, "input_shape": [3, 320, 320],
                   "num_classes": 3, "num_units": 4, "splits": [], "aux": []})
    torch.manual_seed(0)
    model = engine.build(d)
    x = torch.rand(1, 3, 320, 320)
    y = [{"boxes": torch.tensor([[5.0, 5.0, 305.0, 305.0]]), "labels": torch.tensor([1])}]
    with torch.autocast("cpu", dtype=torch.float16):
        _, losses = engine.local_step(model, x, y)
    assert torch.isfinite(losses[0]) and losses[0].dtype == torch.float32


# ----------------------------------------------------------------- the CUDA peak, accounted


class FakeAllocator:
    """The caching allocator's counters, driven by hand: ``resident`` bytes sit there before the step."""

    def __init__(self, resident: int) -> None:
        self.now, self.top = resident, resident

    def synchronize(self) -> None:
        pass

    def allocated(self) -> int:
        return self.now

    def reset_peak(self) -> None:
        self.top = self.now

    def peak(self) -> int:
        return self.top

    def alloc(self, n: int) -> None:
        self.now += n
        self.top = max(self.top, self.now)

    def free(self, n: int) -> None:
        self.now -= n


def test_the_cuda_peak_counts_training_not_the_data_set_or_workspaces():
    model, x, y = torch.nn.Linear(256, 256), torch.rand(64, 256), torch.randint(0, 2, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = memory.held_bytes(model, opt, x, y)
    peaks = []
    for resident in (0, 293 * 2**20):  # nothing else, or CIFAR-10 twice plus two 32 MiB workspaces
        allocator = FakeAllocator(resident + state)

        def step(allocator=allocator):
            allocator.alloc(1000)  # the step's activations ...
            allocator.free(1000)   # ... freed by its backward
            return "out"

        peak, out = memory.measure_step(model, opt, step, x, y, allocator=allocator)
        peaks.append(peak)
        assert out == "out"
    assert peaks[0] == peaks[1] == state + 1000


def test_the_cpu_counter_and_the_cuda_accounting_agree_on_a_real_step():
    """The same training state + step excess definition: on the CPU, LiveBytes; through the CUDA path with
    an allocator that counts the same live storages, the same number."""
    d = design("classification", {"family": "dgl", "depth": 1, "width": 8})
    torch.manual_seed(0)
    model = engine.build(d)
    opt, _ = engine.make_optimizer(model, engine.TrainConfig(), 10)
    x, y = get_task("classification").example_batch(d, 8, "cpu")
    engine.train_step(model, opt, x, y)  # the optimizer state exists, as in the second measured step
    cpu, _ = memory.measure_step(model, opt, lambda: engine.train_step(model, opt, x, y), x, y)
    live = memory.LiveBytes()
    live.track_all(model, opt, x, y)

    class Counted(FakeAllocator):
        def allocated(self):
            return live.current + 10**9  # a data set held beside training

        def peak(self):
            return live.peak + 10**9

        def reset_peak(self):
            live.peak = live.current

    with live:
        cuda, _ = memory.measure_step(model, opt, lambda: engine.train_step(model, opt, x, y), x, y,
                                      allocator=Counted(0))
    assert cuda == cpu


def test_every_loader_of_a_tensor_set_shares_one_device_copy():
    from auxsearch.tasks.tensor_data import DeviceBatches, TensorImages

    images, labels = torch.randint(0, 255, (20, 1, 8, 8), dtype=torch.uint8), torch.arange(20) % 4
    train, plain = TensorImages(images, labels, augment=True), TensorImages(images, labels)
    fit = torch.utils.data.Subset(train, list(range(15)))
    val = torch.utils.data.Subset(plain, list(range(15, 20)))
    loaders = [DeviceBatches(fit, 4, shuffle=True, device="meta"), DeviceBatches(fit, 4, shuffle=True, device="meta"),
               DeviceBatches(val, 4, shuffle=False, device="meta")]
    assert all(b.images is loaders[0].images for b in loaders)  # one copy of the 20 images, not three
    assert [len(b) for b in loaders] == [4, 4, 2]


# ----------------------------------------------------------------- where and how a trial runs


@pytest.mark.parametrize("raw, expect", [(None, None), ("", []), ("4,5", ["4", "5"]), (" 2 , 3 ", ["2", "3"]),
                                         ("GPU-1a2b,GPU-3c4d", ["GPU-1a2b", "GPU-3c4d"]), ("-1", []),
                                         ("MIG-9f8e/1/0", ["MIG-9f8e/1/0"])])
def test_visible_devices_read_the_list_a_scheduler_gave(raw, expect):
    env = {} if raw is None else {"CUDA_VISIBLE_DEVICES": raw}
    assert devices.visible_devices(env) == expect


def test_workers_take_the_inherited_gpus_round_robin_and_share_them():
    pick = [devices.worker_devices(i, 2, ["4", "5"], 8) for i in range(2)]
    assert pick == [("4", 1.0), ("5", 1.0)]  # the scheduler's GPUs, not 0 and 1
    three = [devices.worker_devices(i, 3, ["GPU-a", "GPU-b"], 0) for i in range(3)]
    assert three == [("GPU-a", 0.5), ("GPU-b", 1.0), ("GPU-a", 0.5)]  # GPU-a holds two workers
    assert devices.worker_devices(0, 4, None, 1) == ("0", 0.25)  # nothing set: the machine's GPUs
    assert devices.worker_devices(1, 2, None, 0) == (None, 1.0)  # no GPU


def test_worker_env_sets_the_share_and_keeps_the_schedulers_list():
    from auxsearch.search.workers import worker_env

    env, threads = worker_env(1, 3, 2, base={"CUDA_VISIBLE_DEVICES": "4,5"})
    assert env["CUDA_VISIBLE_DEVICES"] == "5" and devices.SHARE_ENV not in env and threads >= 1
    env, _ = worker_env(2, 3, 2, base={"CUDA_VISIBLE_DEVICES": "4,5"})
    assert env["CUDA_VISIBLE_DEVICES"] == "4" and env[devices.SHARE_ENV] == "0.5"


def test_the_share_is_applied_in_the_process_that_trains():
    calls = []
    assert devices.apply_share(torch.device("cuda:0"), {devices.SHARE_ENV: "0.5"},
                               lambda f, d: calls.append((f, d))) == 0.5
    assert calls == [(0.5, torch.device("cuda:0"))]
    assert devices.apply_share(torch.device("cpu"), {devices.SHARE_ENV: "0.5"}, calls.append) is None
    assert devices.apply_share(torch.device("cuda:0"), {}, calls.append) is None and len(calls) == 1


@pytest.mark.parametrize("message, oom", [
    ("CUDA out of memory. Tried to allocate 2.00 GiB", True),
    ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", True),
    ("cuDNN error: CUDNN_STATUS_ALLOC_FAILED", True),
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes", True),
    ("CUDA error: device-side assert triggered", False), ("shape mismatch", False)])
def test_out_of_memory_names_the_libraries_allocation_failures(message, oom):
    assert devices.is_out_of_memory(RuntimeError(message)) is oom


def test_an_oom_is_the_designs_only_when_it_reached_its_share():
    gib = 2**30
    assert devices.oom_verdict(int(0.95 * 40 * gib), 40 * gib) == "infeasible"  # it needed its whole share
    assert devices.oom_verdict(3 * gib, 40 * gib) == "retry"  # the neighbours took the rest
    assert devices.oom_verdict(None, 40 * gib) == devices.oom_verdict(3 * gib, None) == "infeasible"


def test_bf16_is_refused_on_a_gpu_without_native_bf16():
    with pytest.raises(ConfigError, match="bf16 is not native on this GPU"):
        devices.check_precision("bf16", torch.device("cuda:0"), bf16_native=lambda: False)
    devices.check_precision("bf16", torch.device("cuda:0"), bf16_native=lambda: True)
    devices.check_precision("fp16", torch.device("cuda:0"), bf16_native=lambda: False)
    devices.check_precision("bf16", torch.device("cpu"), bf16_native=lambda: False)


def test_the_study_process_never_initialises_cuda(tmp_path, monkeypatch):
    """Reading the GPU count, naming the device and preparing workers go through NVML and the environment."""
    from auxsearch.commands import _visible_gpus
    from auxsearch.search.workers import worker_env

    def boom(*a, **k):
        raise AssertionError("CUDA initialised in the study's process")

    monkeypatch.setattr(torch.cuda, "_lazy_init", boom)
    monkeypatch.setattr(torch.cuda, "get_device_name", boom)
    monkeypatch.setattr(torch.cuda, "device_count", boom)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert _visible_gpus() == 2
    assert worker_env(0, 4, 2)[0]["CUDA_VISIBLE_DEVICES"] == "4"
    assert isinstance(devices.device_name(), str)


@pytest.mark.parametrize("fam", ["E2E", *family_names()])
def test_on_the_cpu_a_trials_recorded_peak_is_the_simulated_peak(fam):
    """One definition of peak training memory: the peak ``fit`` records (the path of a search trial, tensor
    data batched on the device) equals ``memory.simulate`` at batch 64, to the byte, for a table design."""
    from auxsearch.config import TrainConfig
    from auxsearch.tasks.data import ImageData
    from auxsearch.tasks.tensor_data import TensorImages
    from auxsearch.train.loop import fit

    g = torch.Generator().manual_seed(0)

    def split(n: int, augment: bool) -> TensorImages:
        return TensorImages(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
                            torch.randint(0, 10, (n,), generator=g), augment)

    data = ImageData(train=split(128, True), val=split(16, False), test=split(16, False), in_chans=3, num_classes=10,
                     image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    splits, aux = ([], []) if fam == "E2E" else ([2, 4], [{"family": fam, "depth": 2, "width": 16}] * 2)
    d = {"backbone": "resnet14", "input_shape": [3, 16, 16], "num_classes": 10, "num_units": 7, "splits": splits,
         "aux": aux}
    cfg = TrainConfig(epochs=1, batch_size=64, device="cpu", bn_recalibration_batches=0, eval_batch_size=16, lr=0.01)
    assert fit(d, train=cfg, data=data).peak_memory_bytes == memory.simulate(d, 64, train=cfg)
