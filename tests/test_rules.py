"""Core rules pinned so that breaking one fails a test.

Each test here states one rule of the engine, the pruner, the memory counter, the
schedule, the report or the export, and checks it against numbers worked out by hand
(a closed form, bytes counted on paper, the brute-force front), never against the code's
own output. ``benchmarks/mutation.py`` measures how many deliberate breakages these and
the other fast tests catch.
"""

from __future__ import annotations

import copy
import math
import re

import optuna
import pytest
import torch
from conftest import tiny_design
from test_report import e2e, record, sample_records
from torch import nn

from auxsearch.aux.base import StepState
from auxsearch.config import MemoryConfig, PruningConfig, TrainConfig
from auxsearch.errors import ConfigError
from auxsearch.model.engine import build, make_optimizer, train_step
from auxsearch.outputs.export import choose
from auxsearch.outputs.report import write_report
from auxsearch.outputs.tables import confirmed_table, search_table
from auxsearch.pareto import confirmed_front, knee, pareto_front
from auxsearch.search.objective import Objective
from auxsearch.store.storage import RunStudies
from auxsearch.train.memory import LiveBytes, tracked_peak
from auxsearch.train.result import TrainResult

MIB = 2**20

# ----------------------------------------------------------------- EMA timing


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("m", [0.9, 0.5])
def test_ema_follows_the_pre_step_weights_over_three_real_optimizer_steps(batch, m):
    """MAN: after module k's backward, p_ema <- m p_ema + (1 - m) p_next, with p_next as it was *before* the step.

    Over three SGD steps the copy must be m^3 E0 + (1 - m)(m^2 W0 + m W1 + W2), W_t the
    next module's first unit after t steps; using the stepped weights (W1, W2, W3) fails.
    The loss of module k at step t is computed with the copy of step t - 1 (E_{t-1}).
    """
    torch.manual_seed(0)
    model = build(tiny_design(splits=[2], aux=[{"family": "momentum", "depth": 1, "width": 8, "momentum": m}]))
    aux = model.aux[0]
    source = model.unit(aux.ema_source)
    names = dict(source.named_parameters())
    with torch.no_grad():  # let the copy start away from the unit it follows
        for n, t in aux.ema.named_buffers():
            if n in names:
                t.add_(0.5)
    opt, _ = make_optimizer(model, TrainConfig(lr=0.5, momentum=0.0, weight_decay=0.0), total_steps=3)
    x, y = batch
    ema0 = {n: t.clone() for n, t in aux.ema.named_buffers() if n in names}
    assert ema0
    weights = [_params(source)]
    for _ in range(3):
        before = copy.deepcopy(model)  # holds E_{t-1} and the weights before this step
        h = before.stages[0]((x - before.mean) / before.std)
        expected_loss = before.aux[0](h, x, y, StepState({}, before.head))
        _, losses = train_step(model, opt, x, y)
        torch.testing.assert_close(losses[0], expected_loss.detach(), rtol=1e-5, atol=1e-6)
        weights.append(_params(source))
    assert all(not torch.equal(weights[t][n], weights[t + 1][n]) for t in range(3) for n in ema0)  # it did move
    got = dict(aux.ema.named_buffers())
    for n, e0 in ema0.items():
        closed = m**3 * e0 + (1 - m) * (m**2 * weights[0][n] + m * weights[1][n] + weights[2][n])
        torch.testing.assert_close(got[n], closed, rtol=1e-5, atol=1e-6, msg=n)
        stepped = m**3 * e0 + (1 - m) * (m**2 * weights[1][n] + m * weights[2][n] + weights[3][n])
        if not torch.allclose(closed, stepped, rtol=1e-5, atol=1e-6):
            assert not torch.allclose(got[n], stepped, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- memory counter


def test_live_bytes_counts_a_linear_sgd_momentum_step_to_the_byte():
    """Linear(256 -> 256) + SGD momentum, batch 4, fp32: bytes worked out by hand.

    Weight 256*256*4 = 262,144 B, bias 1,024 B (P = 263,168), input 4*256*4 = 4,096 B.
    First step: the peak is at the optimizer step: weights + grads + the momentum buffers
    it creates (3 P) + the input + the 4-byte loss; the backward's activations (a few
    4 KiB tensors next to weights + input + loss + grads) stay below it.
    """
    torch.manual_seed(0)
    lin = nn.Linear(256, 256)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, foreach=False)
    x = torch.randn(4, 256)
    p_bytes = 256 * 256 * 4 + 256 * 4
    assert p_bytes == 263_168

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lin(x).square().sum()
        loss.backward()
        opt.step()

    counter = LiveBytes()
    counter.track_all(lin, opt, x)
    assert counter.current == p_bytes + 4096  # before: weights and input, no grads, no optimizer state
    with counter:
        step()
    assert counter.peak == 3 * p_bytes + 4096 + 4
    assert counter.current == 3 * p_bytes + 4096  # the loss is gone; grads and momentum buffers stay
    # second step: the momentum buffers now exist during the backward, so its peak is the step's: when the
    # last weight gradient is written, weights + buffers + grads (3 P), input, loss, dL/dy (4 x 256 x 4 B)
    # and the 4-byte seed gradient are alive; the buffers are then updated in place (nothing new)
    assert tracked_peak(step, lin, opt, x) == 3 * p_bytes + 4096 + 4 + 4096 + 4
    # what exists before a step is counted too: weights, their gradients, the optimizer's buffers, the batch
    again = LiveBytes()
    again.track_all(lin, opt, x)
    assert again.current == again.peak == 3 * p_bytes + 4096
    assert tracked_peak(lambda: None) == 0


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_scored_peak_is_the_steady_state_of_training(optimizer):
    """Memory counts the first two steps: the optimizer state the first creates is live through the second,
    which peaks higher; a third peaks no higher again. measure and simulate both give the second's."""
    from auxsearch.design.graph import as_design
    from auxsearch.train import memory

    design, cfg = as_design(tiny_design(splits=[2], aux=[{"family": "dgl"}])), TrainConfig(optimizer=optimizer)
    model, opt, x, y, _ = memory._setup(design, cfg, 16)
    peaks = [tracked_peak(lambda: train_step(model, opt, x, y), model, opt, x, y) for _ in range(3)]
    assert peaks[0] < peaks[1] == peaks[2]
    assert memory.measure(design, 16, train=cfg) == memory.simulate(design, 16, train=cfg) == peaks[1]


def test_live_bytes_counts_views_once_and_forgets_freed_storage():
    counter = LiveBytes()
    with counter:
        t = torch.empty(1000)  # 4,000 B
        v = t.view(10, 100)
        v.add_(1)  # in place on a view: same storage
        w = t[::2]  # a strided view: same storage
        assert counter.current == 4000
        u = t * 2  # a new storage
        assert counter.current == 8000
        del u
        assert counter.current == 4000
        z = torch.zeros(10, dtype=torch.float64)  # keyword arguments reach the operator: 80 B, not 40
        assert counter.current == 4080 and z.dtype == torch.float64
    assert counter.peak == 8000 and w.numel() == 500


def test_train_step_frees_gradients_before_the_step_and_keeps_the_precision(batch):
    """zero_grad(set_to_none=True): module 1's old gradients are gone while module 0 runs, so the step's
    peak equals a hand-written loop's; the precision reaches the local step (bf16 logits under autocast)."""
    from auxsearch.model.engine import local_step
    from auxsearch.model.precision import Precision

    torch.manual_seed(0)
    model = build(tiny_design(splits=[1], aux=[{"family": "dgl", "width": 8}]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batch
    train_step(model, opt, x, y)  # gradients now exist

    def by_hand():
        opt.zero_grad(set_to_none=True)
        local_step(model, x, y)
        opt.step()

    train_step(model, opt, x, y)
    ours = tracked_peak(lambda: train_step(model, opt, x, y), model, opt, x, y)
    assert ours == tracked_peak(by_hand, model, opt, x, y)
    raw, _ = train_step(model, opt, x, y, precision=Precision("bf16"))
    assert raw.dtype == torch.bfloat16 and not raw.requires_grad
    assert train_step(model, opt, x, y)[0].dtype == torch.float32


def test_the_step_normalises_its_input_with_the_data_statistics(batch):
    """K = 1 local step == plain backprop through the network's own forward, with a non-trivial mean / std."""
    torch.manual_seed(0)
    model = build(tiny_design())
    model.set_normalization([0.3], [0.2])
    ref = copy.deepcopy(model)
    from auxsearch.model.engine import local_step

    local_step(model, *batch)
    x, y = batch
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


# ----------------------------------------------------------------- learning-rate schedule


def _lrs(cfg: TrainConfig, total: int) -> list[float]:
    model = nn.Linear(2, 2)
    opt, sched = make_optimizer(model, cfg, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out.append(opt.param_groups[0]["lr"])
    return out


def test_cosine_schedule_with_linear_warm_up():
    """10 epochs of 10 steps, 2 warm-up epochs: lr (s+1)/20 for s < 20, then 0.5 (1 + cos(pi (s-20)/80))."""
    lrs = _lrs(TrainConfig(lr=1.0, epochs=10, warmup_epochs=2, schedule="cosine"), 100)
    for s in range(20):
        assert lrs[s] == pytest.approx((s + 1) / 20)
    for s in range(20, 101):
        assert lrs[s] == pytest.approx(0.5 * (1 + math.cos(math.pi * min((s - 20) / 80, 1.0))), abs=1e-12)
    assert lrs[20] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.5) and lrs[100] == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule_and_no_warm_up():
    lrs = _lrs(TrainConfig(lr=0.3, epochs=4, warmup_epochs=1, schedule="constant"), 8)
    assert lrs[:2] == pytest.approx([0.15, 0.3]) and lrs[2:] == pytest.approx([0.3] * 7)
    cos = _lrs(TrainConfig(lr=0.3, epochs=4, warmup_epochs=0), 8)
    assert cos[0] == pytest.approx(0.3)  # no warm-up: the schedule starts at the peak
    assert cos[4] == pytest.approx(0.15) and cos[8] == pytest.approx(0.0, abs=1e-12)


def test_warm_up_never_swallows_the_whole_run():
    """A warm-up as long as the run stops one step short of the end: the last step runs at the peak lr."""
    lrs = _lrs(TrainConfig(lr=1.0, epochs=2, warmup_epochs=5), 4)
    assert lrs[:4] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0]) and lrs[4] == pytest.approx(0.0, abs=1e-12)
    one = _lrs(TrainConfig(lr=1.0, epochs=1, warmup_epochs=1), 10)  # one epoch of warm-up in a one-epoch run
    assert one[:9] == pytest.approx([(s + 1) / 9 for s in range(9)])


def test_warm_up_is_whole_steps_and_the_schedule_stays_at_zero_past_the_end():
    lrs = _lrs(TrainConfig(lr=1.0, epochs=3, warmup_epochs=1), 10)  # 10 // 3 = 3 warm-up steps
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    model = nn.Linear(2, 2)
    opt, sched = make_optimizer(model, TrainConfig(lr=1.0, epochs=2), 4)
    for _ in range(9):  # a resumed run may step past the planned end: the rate stays at 0, it does not rise
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kw, kind, group", [
    ({"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, torch.optim.SGD,
     {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    ({"optimizer": "sgd", "momentum": 0.0, "nesterov": True}, torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
    ({"optimizer": "adamw", "weight_decay": 0.05}, torch.optim.AdamW, {"weight_decay": 0.05}),
])
def test_optimizer_follows_the_recipe(kw, kind, group):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)
    opt, _ = make_optimizer(model, TrainConfig(lr=0.05, **kw), 10)
    assert type(opt) is kind and opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert {k: opt.param_groups[0][k] for k in group} == group
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == 2 + 6  # frozen weight left out


# ----------------------------------------------------------------- the dominated-curve pruner


def _epoch_end(trial, cfg, history: list[float], peak: float) -> bool:
    """The study's pruner called once at the end of an epoch, for ``trial`` of a stub run with config ``cfg``."""
    res = TrainResult("accuracy", 0, peak, "measured", 0, 0, "h", "cpu")
    res.history = list(history)
    studies = RunStudies("", None, trial.study, None, None)
    return Objective(type("P", (), {"cfg": cfg})(), studies)._pruner(trial)(res)


def _judge(rivals: list[dict], history: list[float], peak: float, *, simulated=None, e2e_trial=False,
           mode: str = "measured", **pruning) -> tuple[bool, str | None]:
    """Run the study's pruner once for a trial with ``history`` at ``peak`` against completed ``rivals``."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for r in rivals:
        study.add_trial(optuna.trial.create_trial(
            state=r.get("state", optuna.trial.TrialState.COMPLETE), values=r.get("values"),
            user_attrs={"history": r["history"]}, constraints=r.get("constraints")))
    cfg = type("C", (), {"pruning": PruningConfig(**{"warmup_epochs": 1, "margin": 0.05, **pruning}),
                         "memory": MemoryConfig(mode=mode)})()
    trial = study.ask()
    if e2e_trial:
        trial.set_user_attr("is_e2e", True)
    if simulated is not None:
        trial.set_user_attr("simulated_peak_bytes", simulated)
    return _epoch_end(trial, cfg, history, peak), trial.user_attrs.get("reason")


RIVAL = {"values": [0.9, 1000.0], "history": [0.5, 0.8, 0.9]}


@pytest.mark.parametrize("mine, stop", [(0.75, True), (0.7501, False), (0.74, True)])
def test_margin_boundary_at_the_same_epoch(mine, stop):
    """Stopped when the rival's epoch-2 score >= mine + margin: 0.8 >= 0.75 + 0.05 holds, 0.7501 + 0.05 does not."""
    assert _judge([RIVAL], [0.1, mine], 1000)[0] is stop


@pytest.mark.parametrize("peak, tolerance, stop", [(1000, 0.0, True), (999, 0.0, False), (1001, 0.0, True),
                                                   (953, 0.05, True), (953, 0.0, False), (952, 0.05, False)])
def test_memory_boundary(peak, tolerance, stop):
    """A rival at 1000 B may stop a trial needing >= 1000 B; with tolerance t one needing >= 1000 / (1 + t) B."""
    assert _judge([RIVAL], [0.1, 0.4], peak, memory_tolerance=tolerance)[0] is stop


def test_infeasible_pruned_and_running_rivals_stop_nothing():
    infeasible = {**RIVAL, "constraints": {"memory_budget": 5.0}}
    pruned = {**RIVAL, "state": optuna.trial.TrialState.PRUNED, "values": None}
    assert _judge([infeasible], [0.1, 0.4], 1000) == (False, None)
    assert _judge([pruned], [0.1, 0.4], 1000) == (False, None)
    feasible = {**RIVAL, "constraints": {"memory_budget": 0.0}}
    assert _judge([feasible], [0.1, 0.4], 1000)[0]


def test_min_rivals_counts_dominating_trials():
    weak = {"values": [0.5, 10.0], "history": [0.5, 0.42, 0.5]}  # 0.42 < 0.4 + 0.05: does not dominate
    assert not _judge([RIVAL, weak], [0.1, 0.4], 1000, min_rivals=2)[0]
    stop, reason = _judge([RIVAL, {**RIVAL, "values": [0.95, 500.0]}], [0.1, 0.4], 1000, min_rivals=2)
    assert stop and "trials 0, 1 (" in reason


def test_warm_up_same_epoch_short_rivals_and_the_reference():
    assert not _judge([RIVAL], [0.1], 1000)[0]  # epoch 1 <= warmup_epochs 1
    assert _judge([RIVAL], [0.1], 1000, warmup_epochs=0)[0]  # 0.5 >= 0.1 + 0.05 at epoch 1
    assert not _judge([RIVAL], [0.1, 0.4, 0.86], 1000)[0]  # epoch 3: 0.9 < 0.86 + 0.05 (final score not used)
    short = {"values": [0.9, 1000.0], "history": [0.9]}  # stopped before epoch 2: no curve to compare there
    assert not _judge([short], [0.1, 0.4], 1000)[0]
    assert not _judge([RIVAL], [0.1, 0.4], 1000, e2e_trial=True)[0]  # the E2E reference is never stopped
    assert not _judge([RIVAL], [0.1, 0.4], 1000, enabled=False)[0]
    stop, reason = _judge([RIVAL], [0.1, 0.4], 1000)
    assert stop and reason.startswith("epoch 2: validation 0.4000 dominated by trials 0 (")


def test_simulated_mode_compares_simulated_bytes():
    assert _judge([RIVAL], [0.1, 0.4], 10, simulated=1000, mode="simulated")[0]
    assert not _judge([RIVAL], [0.1, 0.4], 10**9, simulated=999, mode="simulated")[0]


# ----------------------------------------------------------------- report tables == fronts


def _first_column(table: str) -> list[int]:
    return [int(line.split()[0]) for line in table.splitlines()[2:]]


@pytest.mark.parametrize("seed", range(4))
def test_search_table_rows_are_the_front_plus_e2e(seed):
    recs = sample_records(30, seed=seed)
    rows = _first_column(search_table(recs))
    front = [r["number"] for r in pareto_front(recs)]
    assert sorted(rows) == sorted({*front, 0})
    mem = {r["number"]: r["peak_memory_bytes"] for r in recs}
    assert [mem[n] for n in rows] == sorted(mem[n] for n in rows)  # by memory


def _confirm(r: dict, vals: list[float], mib: float) -> dict:
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    stat = {"values": vals, "mean": mean, "std": std}
    return {**r, "confirmed": {"seeds": list(range(len(vals))), "val": stat, "test": stat,
                               "peak_memory_bytes": int(mib * MIB)}}


def confirmed_records() -> list[dict]:
    """Confirmed (seeds) values that disagree with the search's single-seed ones, so a rule that reads the
    wrong one picks another record. Confirmed: E2E 0.90 +- 0.01 at 80 MiB; #1 0.88 +- 0.03 at 20 MiB (within
    the spread of E2E); #2 0.70 +- 0.01 at 30 MiB (clearly beaten by #1); #3 0.95 +- 0.005 at 40 MiB. Search:
    #1 0.97 at 35 MiB, #3 0.90 at 15 MiB. #4 (0.99 at 10 MiB) was never confirmed."""
    return [_confirm(e2e(0, 0.91, 80.0), [0.89, 0.90, 0.91], 80.0),
            _confirm(record(1, 0.97, 35, splits=(1,)), [0.85, 0.88, 0.91], 20.0),
            _confirm(record(2, 0.7, 30, splits=(2,)), [0.69, 0.70, 0.71], 30.0),
            _confirm(record(3, 0.90, 15, splits=(3,)), [0.945, 0.95, 0.955], 40.0),
            record(4, 0.99, 10, splits=(1, 2))]


def test_confirmed_table_and_front_follow_the_spread_rule():
    recs = confirmed_records()
    assert [r["number"] for r in confirmed_front(recs)] == [1, 3]  # E2E: 0.95-0.005 > 0.90+0.01 with less memory
    lines = confirmed_table(recs).splitlines()[2:]
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 0]
    note = {int(line.split()[0]): line for line in lines}
    assert "dominated by #1" in note[2] and "dominated by #3" in note[0] and "front" in note[1]


def test_report_html_tables_hold_exactly_the_fronts(tmp_path):
    recs = confirmed_records()
    text = write_report(recs, {"name": "t", "metric": "accuracy"}, tmp_path / "r.html").read_text()
    tables = re.findall(r"<table>(.*?)</table>", text, flags=re.S)
    assert len(tables) == 2  # confirmed designs, then the search front
    numbers = [[int(n) for n in re.findall(r"<tr class='[a-z0-9]*'><td class='t?'>(\d+)</td>", t)] for t in tables]
    assert numbers[0] == [1, 2, 3, 0]
    search = [r["number"] for r in pareto_front(recs)]
    assert sorted(numbers[1]) == sorted({*search, 0}) and 4 in numbers[1]
    empty = write_report([], {"name": "t"}, tmp_path / "e.html").read_text()
    assert "<table>" not in empty and "No trial has completed yet" in empty


# ----------------------------------------------------------------- export's choice rules


def _refused(key: str, **rule) -> str:
    with pytest.raises(ConfigError) as err:
        choose(RULE_RECORDS, **rule)
    assert err.value.key == key
    return err.value.message


RULE_RECORDS = [e2e(0, 0.90, 80.0), record(1, 0.50, 10, splits=(1,)), record(2, 0.89, 20, splits=(2,)),
                record(3, 0.90, 30, splits=(3,)), record(4, 0.91, 100, splits=(1, 2)),
                record(5, 0.80, 50, splits=(1, 3)), record(6, None, 5, splits=(2, 3), state="INFEASIBLE")]


def test_each_rule_picks_its_record_on_the_search_front():
    recs = RULE_RECORDS
    front = pareto_front(recs)
    assert [r["number"] for r in front] == [1, 2, 3, 4]
    assert choose(recs)["number"] == 4  # best validation score
    assert choose(recs, best_score=True)["number"] == 4
    assert choose(recs, max_memory=30 * MIB)["number"] == 3  # the limit itself fits
    assert choose(recs, max_memory=30 * MIB - 1)["number"] == 2
    assert choose(recs, knee_point=True)["number"] == knee(front)["number"] == 2
    assert choose(recs, trial=3)["number"] == 3
    assert choose(recs, trial=5, allow_dominated=True)["number"] == 5
    assert _refused("--trial", trial=5) == ("trial 5 is dominated by trials 2, 3; the search front holds trials "
                                            "1, 2, 3, 4. Add --allow-dominated to export it anyway")
    assert _refused("--trial", trial=9) == "no trial 9 in this run (search trials 0..6; references: none)"
    assert _refused("--trial", trial=6, allow_dominated=True) == "trial 6 is infeasible, not a completed design"
    assert _refused("--max-memory", max_memory=10 * MIB - 1) == ("no front design fits in 10.0 MiB; "
                                                                  "the lightest needs 10.0 MiB")
    with pytest.raises(ConfigError) as err:
        choose([record(1, None, 5, state="INFEASIBLE")])
    assert err.value.key == "" and err.value.message == "the run has no completed trial yet: nothing to export"


def test_rules_choose_on_confirmed_means_and_memory_when_confirmed():
    recs = confirmed_records()  # #4 has the best single-seed score but was never confirmed
    assert choose(recs)["number"] == 3  # confirmed mean 0.95 (its search score 0.90 < #1's 0.97)
    assert choose(recs, max_memory=20 * MIB)["number"] == 1  # confirmed 20 MiB (its search peak: 35 MiB)
    with pytest.raises(ConfigError, match="the lightest needs 20.0 MiB"):
        choose(recs, max_memory=20 * MIB - 1)
    with pytest.raises(ConfigError, match="trial 2 is dominated by trial 1; the confirmed front holds trials 1, 3"):
        choose(recs, trial=2)
    with pytest.raises(ConfigError, match="trial 4 is unconfirmed: it is on the search front .* `auxsearch confirm "
                       "RUN --trial 4` confirms it"):
        choose(recs, trial=4)
    # equal confirmed means, both on the confirmed front (the seeds cannot tell them apart): the lighter one
    tie = [_confirm(record(1, 0.9, 20, splits=(1,)), [0.8, 0.9, 1.0], 20.0),
           _confirm(record(2, 0.9, 10, splits=(2,)), [0.85, 0.9, 0.95], 10.0)]
    assert choose(tie)["number"] == 2


# ----------------------------------------------------------------- successive halving


def _halve(peers: list[dict], history: list[float], peak: int, *, epochs: int = 9, **pruning) -> tuple[bool, str | None]:
    """The halving rule once, for a trial at ``peak`` with ``history``, against ``peers`` (any state)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for p in peers:
        study.add_trial(optuna.trial.create_trial(
            state=p.get("state", optuna.trial.TrialState.COMPLETE),
            values=[(p["history"] or [0.0])[-1], p.get("peak", 1)] if p.get("state") is None else None,
            user_attrs={"history": p["history"], **({"peak_memory_bytes": p["peak"]} if "peak" in p else {}),
                        **({"reused_from": 0} if p.get("reused") else {})},
            constraints=p.get("constraints")))
    cfg = type("C", (), {"pruning": PruningConfig(**{"mode": "halving", "min_epochs": 1, "reduction_factor": 3,
                                                     **pruning}),
                         "memory": MemoryConfig(), "train": TrainConfig(epochs=epochs)})()
    trial = study.ask()
    return _epoch_end(trial, cfg, history, peak), trial.user_attrs.get("reason")


BETTER = [{"history": [0.9, 0.9, 0.9], "peak": 100}, {"history": [0.8, 0.8, 0.8], "peak": 100}]


def test_halving_stops_outside_the_top_third_only_at_a_rung():
    """Rungs at epochs 1 and 3 (min 1, eta 3, 9 epochs): at a rung of 3 trials only the top 1 goes on."""
    stop, reason = _halve(BETTER, [0.5], 200)
    assert stop and reason.startswith("halving rung at epoch 1: validation 0.5000 at 200 B not in the top 1/3 of 3")
    assert not _halve(BETTER, [0.5, 0.5], 200)[0]  # epoch 2 is no rung
    assert _halve(BETTER, [0.5, 0.5, 0.5], 200)[0]  # epoch 3 is
    assert not _halve(BETTER, [0.95], 200)[0]  # the best score goes on
    assert _halve(BETTER, [0.5], 50)[0]  # on the first non-dominated rank, but second by score: not the top 1
    assert not _halve(BETTER, [0.5], 50, reduction_factor=2)[0]  # ... in the top 2 of 3 (eta 2)
    assert not _halve(BETTER[:1], [0.5], 200)[0]  # 2 < eta trials reached the rung: nobody is stopped yet
    assert _halve(BETTER, [0.5], 200, reduction_factor=2)[0]  # 0.5 at 200 B is last of 3: outside the top 2


def test_halving_compares_scores_at_the_rung_epoch_and_skips_unfit_peers():
    late = [{"history": [0.1, 0.9, 0.9], "peak": 100}, {"history": [0.1, 0.8, 0.8], "peak": 100}]
    assert not _halve(late, [0.5], 200)[0]  # at epoch 1 the peers scored 0.1: 0.5 leads
    for odd in ({"reused": True}, {"constraints": {"memory_budget": 1.0}}, {"history": []}, {"no_peak": True}):
        peer = {**BETTER[1], **odd}
        if odd.get("no_peak"):
            peer.pop("peak")
        assert not _halve([BETTER[0], peer], [0.5], 200)[0], odd  # only 2 valid trials at the rung
    # reused_from 0 is a reuse too (of trial 0): it must not count as a trial of its own
    running = {**BETTER[1], "state": optuna.trial.TrialState.RUNNING}
    assert _halve([BETTER[0], running], [0.5], 200)[0]  # asynchronous: a running trial that reached it counts


def test_halving_ranks_ties_and_equal_scores():
    from auxsearch.pareto import halving_keeps, nondominated_ranks

    assert nondominated_ranks([(0.8, 100), (0.8, 50), (0.9, 50), (0.7, 200)]) == [2, 1, 0, 3]
    assert nondominated_ranks([(0.8, 100), (0.8, 100)]) == [0, 0] and nondominated_ranks([]) == []
    # an exact tie with an earlier arrival at the boundary of the top share: the earlier one goes on
    assert not halving_keeps((0.8, 100), [(0.9, 50), (0.8, 100)], eta=2)
    assert not halving_keeps((0.8, 100), [(0.8, 100), (0.9, 50)], eta=2)
    assert halving_keeps((0.85, 100), [(0.8, 100), (0.9, 50)], eta=2)


# ----------------------------------------------------------------- statistics and config ranges


def test_stat_is_the_mean_and_sample_std():
    from auxsearch.pareto import stat

    s = stat([0.5, 0.7, 0.9])
    assert s["values"] == [0.5, 0.7, 0.9] and s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(0.2)
    assert stat([3]) == {"values": [3.0], "mean": 3.0, "std": 0.0}
    assert stat([1, 3])["std"] == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("cls, data, key, words", [
    (TrainConfig, {"epochs": 0}, "train.epochs", "must be >= 1, got 0"),
    (TrainConfig, {"epochs": True}, "train.epochs", "must be an integer, got True"),
    (TrainConfig, {"epochs": 2.5}, "train.epochs", "must be of type int, got 2.5"),
    (TrainConfig, {"lr": 0}, "train.lr", "must be > 0, got 0"),
    (TrainConfig, {"momentum": 1.0}, "train.momentum", "must be in [0, 1), got 1.0"),
    (TrainConfig, {"weight_decay": -1e-9}, "train.weight_decay", "must be >= 0"),
    (TrainConfig, {"optimizer": "lion"}, "train.optimizer", "must be one of sgd, adamw, got 'lion'"),
    (TrainConfig, {"epoch": 3}, "train.epoch", "unknown key; allowed:"),
    (TrainConfig, [1], "train", "must be a mapping"),
    (MemoryConfig, {"input_size": [32]}, "memory.input_size", "must be [height, width]"),
    (MemoryConfig, {"input_size": 32}, "memory.input_size", "must be a list, got 32"),
    (MemoryConfig, {"input_size": [32, "x"]}, "memory.input_size.1", "must be of type int"),
    (PruningConfig, {"reduction_factor": 1}, "pruning.reduction_factor", "must be >= 2, got 1"),
    (PruningConfig, {"margin": -0.1}, "pruning.margin", "must be >= 0"),
])
def test_config_ranges_name_the_key(cls, data, key, words):
    from auxsearch.config import from_mapping

    with pytest.raises(ConfigError) as err:
        from_mapping(cls, data, key.split(".")[0])
    assert err.value.key == key and words in str(err.value)


def test_config_keys_nest_and_mappings_are_checked():
    from auxsearch.config import StudyConfig, from_mapping

    for data, key, message in [({"epochs": 0}, "epochs", "must be >= 1, got 0"),
                               ({"train": {"epochs": 0}}, "train.epochs", "must be >= 1, got 0"),
                               ({"data": [1]}, "data", "must be a mapping, got [1]"),
                               ({"objectives": ["score", 3]}, "objectives.1", "must be of type str, got 3")]:
        cls = TrainConfig if key == "epochs" else StudyConfig
        with pytest.raises(ConfigError) as err:
            from_mapping(cls, data)
        assert (err.value.key, err.value.message) == (key, message)
    s = from_mapping(StudyConfig, {"data": {"name": "digits"}, "backbone": {"name": "resnet8"}})
    assert s.data == {"name": "digits"} and type(s.data) is dict


def test_config_accepts_the_boundaries_and_coerces():
    from auxsearch.config import StudyConfig, from_mapping

    t = from_mapping(TrainConfig, {"epochs": 1, "lr": 1, "momentum": 0, "weight_decay": 0, "warmup_epochs": 0,
                                   "loader_workers": None, "threads": 0}, "train")
    assert t.epochs == 1 and t.lr == 1.0 and isinstance(t.lr, float) and t.momentum == 0.0 and t.loader_workers is None
    m = from_mapping(MemoryConfig, {"input_size": [1, 1], "batch_size": 1}, "memory")
    assert m.input_size == [1, 1] and from_mapping(MemoryConfig, None) == MemoryConfig()
    s = from_mapping(StudyConfig, {"train": {"epochs": 2}, "pruning": {"reduction_factor": 2}, "n_trials": 1})
    assert s.train.epochs == 2 and s.train.lr == TrainConfig().lr and s.pruning.reduction_factor == 2


@pytest.mark.parametrize("value, expected", [(1, 1), ("2MiB", 2 * 2**20), ("1.5GB", 1_500_000_000), ("512kib", 512 * 1024),
                                             (" 3 kb ", 3000), ("7b", 7), ("12GiB", 12 * 2**30), (".5mb", 500_000)])
def test_parse_bytes(value, expected):
    from auxsearch.config import parse_bytes

    assert parse_bytes("memory.budget", value) == expected


@pytest.mark.parametrize("value, words", [(0, "must be > 0"), (-5, "must be > 0"), ("0MiB", "must be > 0"),
                                          ("lots", "must be a size like 2MiB"), ("2 MiBs", "must be a size"),
                                          (True, "must be a size"), ("1e3x", "must be a size")])
def test_parse_bytes_refuses(value, words):
    from auxsearch.config import parse_bytes

    with pytest.raises(ConfigError) as err:
        parse_bytes("memory.budget", value)
    assert err.value.key == "memory.budget" and words in str(err.value)


# ----------------------------------------------------------------- knee, normalisation, spread rule


def _knee_by_hand(points: list[tuple[float, float]]) -> int:
    """Index of the knee by the definition: sort by memory (higher score first), min-max normalise both axes,
    take the largest signed distance above-left of the line from the first to the last point (ties: higher score)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    mem = [points[i][1] for i in order]
    sco = [points[i][0] for i in order]

    def unit(v):
        span = max(v) - min(v)
        return [(a - min(v)) / span if span else 0.0 for a in v]

    x, y = unit(mem), unit(sco)
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    dist = [(dx * (y[i] - y[0]) - dy * (x[i] - x[0])) / math.hypot(dx, dy) for i in range(len(order))]
    best = max(range(len(order)), key=lambda i: (dist[i], y[i]))
    return order[best]


@pytest.mark.parametrize("seed", range(6))
def test_knee_matches_its_definition_on_fronts_that_are_not_monotone(seed):
    """Confirmed fronts keep designs the seeds cannot separate, so a lighter design may score higher."""
    import random

    rng = random.Random(seed)
    n = rng.randint(3, 7)
    pts = [(round(rng.uniform(0.3, 0.95), 3), rng.choice([10, 20, 30, 40, 50, 60, 70]) + i) for i in range(n)]
    if seed == 0:  # the lightest scores highest, the heaviest in the middle
        pts = [(0.90, 10), (0.50, 20), (0.95, 30), (0.70, 40)]
    recs = [record(i + 1, s, m) for i, (s, m) in enumerate(pts)]
    got = knee(recs, score=lambda r: r["score"], memory=lambda r: r["peak_memory_bytes"])
    assert got["number"] == _knee_by_hand(pts) + 1, pts


def test_knee_with_three_points_and_none():
    three = [record(1, 0.50, 10), record(2, 0.89, 20), record(3, 0.90, 30)]
    assert knee(three)["number"] == 2  # three points: the geometric knee, not the best score
    with pytest.raises(Exception) as err:
        knee([])
    assert str(err.value) == "the Pareto front is empty (no COMPLETE trial yet), so it has no knee"


def test_unit_and_normalised_points():
    from auxsearch.pareto import Normalised, _unit

    assert _unit([2.0, 4.0, 6.0]) == [0.0, 0.5, 1.0] and _unit([3.0, 3.0]) == [0.0, 0.0]
    assert _unit([5.0, 1.0]) == [1.0, 0.0]
    n = Normalised(s_lo=0.5, s_hi=0.9, m_lo=10.0, m_hi=50.0)
    assert n.point(0.7, 20.0) == pytest.approx((0.5, 0.25)) and n.point(0.9, 50.0) == pytest.approx((1.0, 1.0))


def _c(mean: float, std: float, mib: float) -> dict:
    return {**record(0, mean, mib), "confirmed": {"seeds": [1, 2, 3], "val": {"values": [], "mean": mean, "std": std},
                                                 "test": {"values": [], "mean": mean, "std": std},
                                                 "peak_memory_bytes": int(mib * MIB)}}


def test_clearly_dominates_boundaries():
    from auxsearch.pareto import clearly_dominates

    a = _c(0.5, 0.125, 20)
    assert clearly_dominates(_c(0.875, 0.125, 20), a)  # 0.75 > 0.625 at equal memory
    assert not clearly_dominates(_c(0.75, 0.125, 20), a)  # 0.625 == 0.625: touching intervals are noise
    assert not clearly_dominates(_c(0.70, 0.125, 20), a)  # 0.575 < 0.625 < 0.825: overlapping
    assert not clearly_dominates(_c(0.875, 0.125, 21), a)  # more memory
    assert clearly_dominates(_c(0.875, 0.125, 19), a)
    assert not clearly_dominates(record(1, 0.99, 1), a) and not clearly_dominates(a, record(1, 0.1, 99))


def test_confirmed_front_order_at_equal_memory():
    from auxsearch.pareto import confirmed_front

    recs = [{**_c(0.80, 0.1, 20), "number": 1, "trial": "1", "design_hash": "a"}, {**_c(0.85, 0.1, 20), "number": 2, "trial": "2", "design_hash": "b"},
            {**_c(0.70, 0.1, 10), "number": 3, "trial": "3", "design_hash": "c"}]
    assert [r["number"] for r in confirmed_front(recs)] == [3, 2, 1]


def test_the_pruner_records_the_curve_and_memory_it_judged():
    study = optuna.create_study(directions=["maximize", "minimize"])
    cfg = type("C", (), {"pruning": PruningConfig(), "memory": MemoryConfig()})()
    trial = study.ask()
    _epoch_end(trial, cfg, [0.25, 0.5], 1234)
    assert trial.user_attrs["history"] == [0.25, 0.5] and trial.user_attrs["peak_memory_bytes"] == 1234


def test_dominated_reason_text_and_rival_lists():
    stop, reason = _judge([RIVAL], [0.1, 0.4], 1000)
    assert reason == ("epoch 2: validation 0.4000 dominated by trials 0 (better by >= 0.05 at the same epoch, "
                      "no more memory)")
    stop, reason = _judge([RIVAL], [0.1, 0.4], 980, memory_tolerance=0.05)
    assert stop and reason.endswith("(better by >= 0.05 at the same epoch, at most 1.05x its memory)")
    exact = {"values": [0.9, 1000.0], "history": [0.5, 0.8]}  # stopped at epoch 2 itself: its curve reaches it
    assert _judge([exact], [0.1, 0.4], 1000)[0]
    stop, reason = _judge([RIVAL] * 7, [0.1, 0.4], 1000)
    assert stop and "dominated by trials 0, 1, 2, 3, 4 (" in reason  # the first five named


def test_confirmed_keeps_one_record_per_design_and_e2e_prefers_a_completed_reference():
    from auxsearch.pareto import confirmed, e2e_record, normaliser

    a = _confirm(record(3, 0.8, 20, splits=(1,)), [0.7, 0.8, 0.9], 20.0)
    twin = {**_confirm(record(5, 0.8, 20, splits=(1,)), [0.7, 0.8, 0.9], 20.0), "reused_from": 3}
    other = _confirm(record(4, 0.8, 20, splits=(2,)), [0.7, 0.8, 0.9], 20.0)
    assert [r["number"] for r in confirmed([twin, other, a])] == [3, 4]
    failed = {**e2e(0, None, 70.0), "state": "FAIL"}
    assert e2e_record([failed, e2e(2, 0.9, 80.0), e2e(1, 0.8, 75.0)])["number"] == 1
    assert e2e_record([failed])["number"] == 0 and e2e_record([record(1, 0.5, 10)]) is None
    no_ref = [record(1, 0.5, 10), record(2, 0.9, 40)]
    n = normaliser(no_ref)
    assert (n.m_lo, n.m_hi) == (10 * MIB, 40 * MIB)  # without E2E: the heaviest design


def test_max_memory_rule_breaks_ties_by_memory():
    tie = [_confirm(record(1, 0.9, 20, splits=(1,)), [0.8, 0.9, 1.0], 20.0),
           _confirm(record(2, 0.9, 10, splits=(2,)), [0.85, 0.9, 0.95], 10.0)]
    assert choose(tie, max_memory=20 * MIB)["number"] == 2
