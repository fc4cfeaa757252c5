"""Search quality with a ground truth: a tabular benchmark of the quickstart space, replayed by every sampler.

1. **The table** (cached in ``benchmarks/cache/search_quality_table.json``; ``--retrain`` rebuilds it):
   every design of a finite version of the quickstart space with ``splits: memory`` (K 2-6, three
   skews, four families, two widths) and the E2E reference, trained once with the quickstart
   recipe on digits at their native 8 x 8 (the quickstart uses 16 x 16). Per design: the validation curve (every epoch, scored twice: with the BN statistics
   as training left them, and after precise-BN recalibration; the training path is the same for
   both, the BN buffers are restored after the second score), the final test score and the
   measured peak of the first step.
2. **The replay**: each sampler (random, tpe, nsga2, gp, ehvi) with full-budget trials and with
   multi-objective successive halving, plus ``default`` (what a study that names nothing gets:
   sampler ``auto``, here ehvi, and the default pruning rule), over ``--seeds`` sampler seeds; the E2E
   reference is trial 0 as in a study. A trial costs the epochs it trained. Measures:
   **epochs to reach 95% of the true front's hypervolume**, the hypervolume after fixed epoch
   budgets, and **epochs until a design under 0.5x E2E's peak within 0.5 point of the table's best
   such design has completed**.

Hypervolume here is on normalised objectives: validation score mapped to [0, 1] between the
table's worst and best final validation score, memory to [0, 1] between its lightest design
and the E2E peak; the reference point is (-0.01, 1.01), just beyond the worst corner, so a
design needing more memory than E2E adds nothing. Section ``search-quality`` of docs/results.md.

Run: ``python benchmarks/search_quality.py`` (``--json``: print the JSON summary only, nothing
written but the table's cache; ``--retrain``: rebuild the table, about 15 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import yaml
from _common import ROOT, markdown_table, provenance, write_section

from auxsearch.config import PruningConfig, SamplerConfig, TrainConfig, from_mapping, to_mapping
from auxsearch.design.graph import design_hash, normalize
from auxsearch.design.space import grid, suggest_design
from auxsearch.errors import ConfigError
from auxsearch.model import engine
from auxsearch.pareto import Normalised, halving_keeps, pareto_front, rungs
from auxsearch.search.prepare import prepare
from auxsearch.search.samplers import SAMPLERS, sampler_name

CACHE = ROOT / "benchmarks" / "cache" / "search_quality_table.json"
SPACE = {"splits": "memory", "modules": {"low": 2, "high": 6}, "skew": [-0.5, 0.0, 0.5],
         "families": ["dgl", "infopro", "augment", "momentum"], "depth": 1, "width": [8, 32], "momentum": 0.99,
         "learnable_scale": True, "head": "dgl", "tau": 0.5, "pool": 4}
NAMES = ("random", "tpe", "nsga2", "gp", "ehvi")
MAX_TRIALS, MAX_EPOCHS, TARGET, LEAN, NEAR = 400, 160, 0.95, 0.5, 0.005  # epochs bind; the trial cap is a guard
# A replay also ends when the sampler has proposed only designs already completed for STALL trials in a row:
# such a trial trains nothing, so it spends no epochs, and a sampler that stopped exploring (Optuna's GP on this
# finite space, proposing its incumbents again) would otherwise run to MAX_TRIALS for no change in any measure.
STALL = 20
HALVING = PruningConfig(mode="halving", min_epochs=1, reduction_factor=3)


def make_run(tmp: Path):
    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    raw.pop("sampler")
    # digits at their native 8 x 8 (the quickstart trains at 16 x 16): a quarter of the compute per design,
    # so >= 100 designs train in minutes on 2 CPU cores; same space, recipe and epochs otherwise.
    # precise BN on 8 batches (the quickstart now uses 4, set after the table was trained; the table keeps its own)
    raw.update(name="search-quality", search_space=SPACE, output=str(tmp / "run"), enqueue=[],
               data={**raw["data"], "image_size": 8}, train={**raw["train"], "bn_recalibration_batches": 8})
    (tmp / "study.yaml").write_text(yaml.safe_dump(raw))
    return prepare(tmp / "study.yaml")


# ----------------------------------------------------------------- the table

def _train(design: dict, run) -> dict:
    """The quickstart recipe by hand, so each epoch is scored with and without precise BN on one path."""
    cfg, data = run.cfg.train, run.data
    torch.manual_seed(cfg.seed)
    model = engine.build(design)
    model.set_normalization(data.mean, data.std)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         generator=gen)
    recal = torch.utils.data.DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                        generator=torch.Generator().manual_seed(cfg.seed + 7919))
    val = torch.utils.data.DataLoader(data.val, batch_size=512)
    opt, sched = engine.make_optimizer(model, cfg, cfg.epochs * len(loader))
    from auxsearch.train.memory import STEPS_MEASURED, measure_step

    raw_curve, bn_curve, peak, steps, start = [], [], 0, 0, time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        for x, y in loader:
            if steps < STEPS_MEASURED:  # as a trial measures: the first steps
                steps += 1
                peak = max(peak, measure_step(model, opt, lambda x=x, y=y: engine.train_step(model, opt, x, y), x, y)[0])
            else:
                engine.train_step(model, opt, x, y)
            sched.step()
        raw_curve.append(engine.evaluate(model, val, torch.device("cpu"))[run.metric])
        bns = engine.inference_batchnorms(model)
        saved = [(b.running_mean.clone(), b.running_var.clone(), b.num_batches_tracked.clone()) for b in bns]
        engine.recalibrate_bn(model, (b for _, b in zip(range(cfg.bn_recalibration_batches), recal, strict=False)), "cpu")
        bn_curve.append(engine.evaluate(model, val, torch.device("cpu"))[run.metric])
        with torch.no_grad():  # back to the statistics training left: the next epoch is as without precise BN
            for b, (m, v, n) in zip(bns, saved, strict=True):
                b.running_mean.copy_(m), b.running_var.copy_(v), b.num_batches_tracked.copy_(n)
    test = torch.utils.data.DataLoader(data.test, batch_size=512)
    return {"curve": bn_curve, "curve_raw": raw_curve, "test": engine.evaluate(model, test, torch.device("cpu"))[run.metric],
            "peak": int(peak), "seconds": round(time.perf_counter() - start, 2)}


def designs(run) -> dict[str, tuple[dict, dict]]:
    """design hash -> (params, design) over the space's grid, E2E first."""
    params = grid(run.space, run.base)
    names = list(params)
    out = {design_hash(engine.end_to_end(run.base)): ({}, normalize(engine.end_to_end(run.base)))}
    for values in itertools.product(*params.values()):
        p = dict(zip(names, values, strict=True))
        d = normalize(suggest_design(optuna.trial.FixedTrial(p), run.space, run.base, run.unit_costs))
        out.setdefault(design_hash(d), (p, d))
    return out


def _same_recipe(cached: dict | None, run) -> bool:
    """The cached table was trained with this space and recipe; keys added to TrainConfig later take their
    defaults (which train as before), so a new option does not throw away two hours of training."""
    if not cached or cached.get("space") != SPACE:
        return False
    try:
        return from_mapping(TrainConfig, cached.get("train"), "train") == run.cfg.train
    except ConfigError:
        return False


def build_table(run, retrain: bool) -> dict:
    recipe = {"space": SPACE, "train": to_mapping(run.cfg.train)}
    cached = json.loads(CACHE.read_text()) if CACHE.is_file() and not retrain else {}
    table = cached.get("designs", {}) if _same_recipe(cached.get("recipe"), run) else {}
    todo = designs(run)
    for i, (h, (params, d)) in enumerate(todo.items()):
        if h not in table:
            table[h] = {"params": params, "K": len(d["splits"]) + 1, "family": d["aux"][0]["family"] if d["aux"] else "e2e",
                        "splits": d["splits"], **_train(d, run)}
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            CACHE.write_text(json.dumps({"recipe": recipe, "designs": table}))
            print(f"table {i + 1}/{len(todo)}: K={table[h]['K']} {table[h]['family']} val {table[h]['curve'][-1]:.3f} "
                  f"peak {table[h]['peak'] / 2**20:.1f} MiB", flush=True)
    return {"recipe": recipe, "designs": table, "e2e": next(iter(todo))}


def repeak(run, table: dict) -> None:
    """Every row's peak measured again as a trial of the study measures it (same batch, recipe and counter;
    on the CPU the data's values do not change the bytes), its cached simulation dropped; the cache rewritten."""
    from auxsearch.train.memory import measure

    todo = designs(run)
    for i, (h, row) in enumerate(table["designs"].items()):
        row["peak"] = measure(todo[h][1], run.cfg.train.batch_size, None, run.cfg.train, "cpu")
        row.pop("simulated", None)
        print(f"repeak {i + 1}/{len(todo)}: {row['peak'] / 2**20:.2f} MiB", file=sys.stderr, flush=True)
    CACHE.write_text(json.dumps({"recipe": table["recipe"], "designs": table["designs"]}))


# ----------------------------------------------------------------- the replay

def table_normaliser(table: dict) -> Normalised:
    """The report's normalisation on the table: score from its worst to best final validation, memory from its
    lightest design to E2E's peak."""
    rows = table["designs"].values()
    return Normalised(min(r["curve"][-1] for r in rows), max(r["curve"][-1] for r in rows),
                      min(r["peak"] for r in rows), table["designs"][table["e2e"]]["peak"])


def table_hv(norm: Normalised, rows) -> float:
    return norm.hypervolume((r["curve"][-1], r["peak"]) for r in rows)


def _stops(row: dict, peers: list[dict], epoch: int, rule: PruningConfig, epochs: int) -> bool:
    """The study's pruning rules on the table: may a trial with curve ``row`` go past ``epoch``?"""
    if rule.mode == "halving":
        if epoch not in rungs(rule.min_epochs, rule.reduction_factor, epochs):
            return False
        others = [(p["curve"][epoch - 1], p["peak"]) for p in peers if len(p["seen"]) >= epoch]
        return not halving_keeps((row["curve"][epoch - 1], row["peak"]), others, rule.reduction_factor)
    if epoch <= rule.warmup_epochs:
        return False
    return any(p["done"] and p["peak"] <= row["peak"] and p["curve"][epoch - 1] >= row["curve"][epoch - 1] + rule.margin
               for p in peers)


SIMULATED: dict[str, float] = {}  # ehvi's memory oracle, shared by every replay: design hash -> simulated peak


def replay(run, table: dict, sampler: str, pruning: PruningConfig | None, seed: int) -> list[tuple[int, dict | None]]:
    """One seeded study on the table: [(cumulative epochs, completed row or None), ...] per trial.

    As a run keeps them: the E2E reference is a trial of a reference study, trained first; the sampler's
    study holds the searched designs only (ehvi reads the reference as a point of its front).
    """
    cfg = SamplerConfig(name=sampler, seed=seed)
    made = SAMPLERS[sampler](cfg, seed, run)
    references = optuna.create_study(directions=["maximize", "minimize"])
    if sampler == "ehvi":
        made.memory = SIMULATED
        made.references = lambda: references.get_trials(deepcopy=False)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=made)
    epochs = run.cfg.train.epochs
    e2e = table["designs"][table["e2e"]]
    references.add_trial(optuna.trial.create_trial(
        values=[e2e["curve"][-1], float(e2e["peak"])],
        user_attrs={"is_e2e": True, "design": normalize(engine.end_to_end(run.base)), "design_hash": table["e2e"]}))
    spent, out, peers, completed, reused = epochs, [(epochs, e2e)], [{**e2e, "seen": e2e["curve"], "done": True}], \
        {table["e2e"]}, 0
    while len(out) < MAX_TRIALS and spent < MAX_EPOCHS and reused < STALL:
        trial = study.ask()
        design = normalize(suggest_design(trial, run.space, run.base, run.unit_costs))
        h = design_hash(design)
        trial.set_user_attr("design", design)  # as the objective records them (ehvi reads both)
        trial.set_user_attr("design_hash", h)
        row = table["designs"][h]
        if h in completed:  # a study reuses a completed twin's result: no training, no epochs
            study.tell(trial, [row["curve"][-1], float(row["peak"])])
            out.append((spent, row))
            reused += 1
            continue
        reused = 0
        e = epochs
        if pruning is not None and pruning.enabled:
            e = next((k for k in range(1, epochs) if _stops(row, peers, k, pruning, epochs)), epochs)
        spent += e
        if e == epochs:
            completed.add(h)
        peers.append({**row, "seen": row["curve"][:e], "done": e == epochs})
        if e == epochs:
            study.tell(trial, [row["curve"][-1], float(row["peak"])])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        out.append((spent, row if e == epochs else None))
    return out


def measures(seq, norm: Normalised, true_hv: float, lean_target: float) -> dict:
    done, hv_at, to95, to_lean = [], {}, math.inf, math.inf
    budgets = (40, 80, 120, 160)
    for spent, row in seq:
        if row is not None:
            done.append(row)
            hv = table_hv(norm, done) / true_hv
            if hv >= TARGET and to95 == math.inf:
                to95 = spent
            if row["peak"] < LEAN * norm.m_hi and row["curve"][-1] >= lean_target - NEAR and to_lean == math.inf:
                to_lean = spent
        for b in budgets:
            if spent <= b:
                hv_at[b] = table_hv(norm, done) / true_hv
    return {"epochs_to_95": to95, "epochs_to_lean": to_lean, "hv_at": hv_at}


def quartiles(xs: list[float]) -> dict:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": q[1], "q1": q[0], "q3": q[2]}


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):  # average ranks of ties
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


_JOB: tuple = ()


def _replay_job(job: tuple[str, int]) -> tuple[tuple[str, int], dict]:
    run, table, variants, norm, true_hv, lean_target = _JOB
    sampler, rule = variants[job[0]]
    start = time.perf_counter()
    torch.manual_seed(job[1])  # Optuna's GP draws from torch's global generator: each replay starts it the same way
    seq = replay(run, table, sampler, rule, job[1])
    return job, {**measures(seq, norm, true_hv, lean_target), "seconds": time.perf_counter() - start, "trials": len(seq)}


def simulate_all(run, table: dict) -> None:
    """ehvi's oracle for every design of the table, once, before the replays fork (they share the result).
    A design's simulated peak is a property of the design: it is cached in the table beside the measured one."""
    oracle = SAMPLERS["ehvi"](SamplerConfig(name="ehvi"), 0, run)
    oracle.memory = SIMULATED
    missing = False
    for h, row in table["designs"].items():
        if "simulated" in row:
            SIMULATED[h] = float(row["simulated"])
            continue
        missing = True
        design = normalize(engine.end_to_end(run.base)) if row["K"] == 1 else normalize(
            suggest_design(optuna.trial.FixedTrial(row["params"]), run.space, run.base, run.unit_costs))
        assert design_hash(design) == h, (h, row["params"])
        row["simulated"] = int(oracle.peak(h, design))
    if missing:
        CACHE.write_text(json.dumps({"recipe": table["recipe"], "designs": table["designs"]}))


def summarise(run, table: dict, seeds: int, only: list[str] | None = None, workers: int = 2) -> dict:
    norm = table_normaliser(table)
    rows = list(table["designs"].values())
    front = pareto_front([{"number": i, "state": "COMPLETE", "score": r["curve"][-1], "peak_memory_bytes": r["peak"]}
                          for i, r in enumerate(rows)])
    true_hv = table_hv(norm, [rows[f["number"]] for f in front])
    lean = [r["curve"][-1] for r in rows if r["peak"] < LEAN * norm.m_hi]
    lean_target = max(lean) if lean else math.inf
    variants = {**{n: (n, None) for n in NAMES}, **{f"{n}+halving": (n, HALVING) for n in NAMES},
                "default": (sampler_name(run), PruningConfig())}
    # ehvi + halving (measured with the cold-started GP: 95% on 2 of 10 seeds) only when asked for: with
    # halving's one-epoch trials it fits its model about three times as often as ehvi, the longest replay
    variants = {k: v for k, v in variants.items() if (k in only if only else k != "ehvi+halving")}
    if any(sampler == "ehvi" for sampler, _ in variants.values()):
        simulate_all(run, table)
    jobs = [(name, seed) for name in variants for seed in range(seeds)]
    global _JOB  # the forked workers read it instead of pickling the run
    _JOB = (run, table, variants, norm, true_hv, lean_target)
    # one torch thread per worker: a forked child that enters an OpenMP region the parent had started
    # (Optuna's GP fits with torch) waits forever on the parent's thread team
    with multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        # one job at a time, the model-based samplers first: their replays are the long ones
        jobs.sort(key=lambda j: variants[j[0]][0] not in ("gp", "ehvi"))
        done = dict(pool.imap_unordered(_replay_job, jobs, chunksize=1))
    out = {}
    for name in variants:
        ms = [done[(name, seed)] for seed in range(seeds)]
        out[name] = {"epochs_to_95": quartiles([m["epochs_to_95"] for m in ms]),
                     "epochs_to_lean": quartiles([m["epochs_to_lean"] for m in ms]),
                     "hv_at": {b: statistics.median(m["hv_at"].get(b, 0.0) for m in ms) for b in (40, 80, 120, 160)},
                     "reached_95": sum(m["epochs_to_95"] < math.inf for m in ms), "seeds": seeds,
                     "replay_seconds": round(sum(m["seconds"] for m in ms), 1),
                     "trials": quartiles([m["trials"] for m in ms])}
        print(f"{name}: {out[name]['epochs_to_95']}, {out[name]['replay_seconds']} s", file=sys.stderr, flush=True)
    final = [r["curve"][-1] for r in rows]
    sim_gap = max((abs(SIMULATED[h] - r["peak"]) / r["peak"] for h, r in table["designs"].items() if h in SIMULATED),
                  default=None)
    corr = {"with_precise_bn": spearman([r["curve"][0] for r in rows], final),
            "without_precise_bn": spearman([r["curve_raw"][0] for r in rows], [r["curve_raw"][-1] for r in rows])}
    return {"samplers": out, "rung1_rank_correlation": corr, "n_designs": len(rows),
            "true_front": [{"K": rows[f["number"]]["K"], "family": rows[f["number"]]["family"],
                            "val": rows[f["number"]]["curve"][-1], "test": rows[f["number"]]["test"],
                            "peak_ratio": rows[f["number"]]["peak"] / norm.m_hi} for f in front],
            "lean_target": lean_target, "simulated_vs_measured_max_gap": sim_gap, "simulated_designs": len(SIMULATED),
            "default_sampler": sampler_name(run)}


def _epochs(x: float) -> str:
    return "never" if x == math.inf else f"{x:.0f}"


def _q(d: dict) -> str:
    return f"{_epochs(d['median'])} ({_epochs(d['q1'])}-{_epochs(d['q3'])})"


def write(summary: dict, minutes: float) -> None:
    s = summary["samplers"]
    rows = [[n, _q(v["epochs_to_95"]), f"{v['reached_95']}/{v['seeds']}", _q(v["epochs_to_lean"]),
             *(f"{v['hv_at'][b]:.3f}" for b in (40, 80, 120, 160))] for n, v in s.items()]
    corr = summary["rung1_rank_correlation"]
    body = "\n".join([
        "## Search quality (tabular benchmark with a ground truth)", "",
        f"Every design of a finite quickstart space with `splits: memory` ({summary['n_designs']} designs: K 2-6, "
        "skew -0.5/0/0.5, four families, widths 8/32, plus E2E) trained once with the quickstart recipe "
        "(4 epochs, seed 0) on digits at their native 8 x 8; the table (validation curves with and without precise BN, final test, measured peak) is "
        "cached in `benchmarks/cache/search_quality_table.json`. Each sampler then searched it from "
        f"{next(iter(s.values()))['seeds']} seeds, E2E first, until {MAX_EPOCHS} training epochs were spent; "
        "a trial costs the epochs it trained (a pruned one fewer; a design already completed is reused for free, "
        f"as a study does; {STALL} such reuses in a row end the replay: the sampler has stopped exploring). Hypervolume on normalised objectives (score between the table's worst "
        "and best validation, memory between its lightest design and E2E, reference (-0.01, 1.01)); 'lean': a design "
        f"under {LEAN}x E2E's peak within {NEAR * 100:.1f} point of the table's best such design "
        f"({summary['lean_target']:.4f}). Medians (quartiles) over seeds; 'never' = not within the budget.", "",
        markdown_table(["sampler", "epochs to 95% HV", "seeds reaching 95%", "epochs to lean",
                        "HV @40 ep", "HV @80", "HV @120", "HV @160"], rows), "",
        f"Rung-1 ranking against the final ranking (Spearman over the table's designs): "
        f"{corr['with_precise_bn']:.3f} with precise BN, {corr['without_precise_bn']:.3f} without "
        "(the same training path, the BN statistics recomputed or not before scoring).", "",
        (f"ehvi's memory oracle is the simulator (`auxsearch.train.memory.simulate`, the study's batch and recipe), "
         f"called for {summary['simulated_designs']} designs; largest relative gap to the table's measured peak: "
         f"{summary['simulated_vs_measured_max_gap']:.2%}. 'default' is what a study that names nothing gets: "
         f"sampler `auto` (here `{summary['default_sampler']}`) with the default pruning rule. "
         "`ehvi+halving` is replayed only when named (`--only ehvi+halving`): it is the longest replay."
         if summary.get("simulated_designs") else ""), "",
        "True front: " + "; ".join(f"K={f['K']} {f['family']} val {f['val']:.4f} at {f['peak_ratio']:.2f}x"
                                   for f in summary["true_front"]) + f". Replay time {minutes:.1f} min.", "",
        provenance()])
    print(body)
    write_section("search-quality", body)


def _finite_json(x):
    """JSON has no infinity: a measure never reached within the budget is null."""
    if isinstance(x, dict):
        return {str(k): _finite_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_json(v) for v in x]
    return None if isinstance(x, float) and math.isinf(x) else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retrain", action="store_true", help="rebuild the table (train every design again)")
    ap.add_argument("--repeak", action="store_true", help="recompute every cached peak with auxsearch.train.memory.measure "
                    "(after a change of what a peak counts; the training curves stay)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="replays run in this many processes (default 2)")
    ap.add_argument("--json", action="store_true", help="print the JSON summary; write nothing")
    ap.add_argument("--only", nargs="*", metavar="NAME", help="replay only these variants (e.g. ehvi tpe+halving); "
                    "implies --json")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp))
        table = build_table(run, args.retrain)
        if args.repeak:
            repeak(run, table)
        start = time.perf_counter()
        summary = summarise(run, table, args.seeds, args.only, args.workers)
    minutes = (time.perf_counter() - start) / 60
    if args.json or args.only:
        print(json.dumps(_finite_json(summary)))
    else:
        write(summary, minutes)


if __name__ == "__main__":
    main()
