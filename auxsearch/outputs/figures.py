"""The report's plotly figures: the front against peak memory, the hypervolume history, the parameters.

Each reads one :class:`~auxsearch.outputs.rows.FrontView`. When designs were confirmed the
confirmed front leads: its designs at their validation mean +- std over seeds joined by the main
line, the E2E reference at its confirmed mean, the single-seed search trials faint behind them.
The memory axis starts at 0 and a second axis above reads it in multiples of E2E's peak.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from auxsearch.outputs.rows import FrontView, families, modules
from auxsearch.outputs.tables import MIB, metric_label, num, pm
from auxsearch.pareto import TrialRecord, hypervolume_history, memory_of, normaliser, scored
from auxsearch.pareto import finite as _finite

MAX_PARCOORDS = 24  # more axes than this are unreadable
FRONT_COLOR, E2E_COLOR, CONFIRMED_COLOR = "#4C78A8", "#F58518", "#54A24B"


def esc(x: Any) -> str:
    return html.escape(str(x), quote=False)


def _y(r: TrialRecord) -> float | None:
    """Where a search trial sits vertically: its score, else (pruned) its last reported score."""
    if _finite(r.get("score")):
        return float(r["score"])
    hist = [h for h in (r.get("history") or []) if _finite(h)]
    return float(hist[-1]) if hist else None


def hover(r: TrialRecord, metric: str) -> str:
    c = r.get("confirmed")
    lines = [f"<b>trial {esc(r['trial'])}</b> ({esc(r.get('state'))})", f"K = {modules(r) or '?'}",
             f"aux: {esc(families(r.get('design')))}", f"{esc(metric)} (one seed): {num(_y(r))}",
             f"peak memory: {num(r.get('peak_memory_bytes'), '.1f', MIB)} MiB",
             f"design: {esc(r.get('design_hash') or '-')}"]
    if c:
        lines.insert(4, f"confirmed over {len(c['seeds'])} seeds: val {pm(c['val'])}, test {pm(c['test'])}")
    if r.get("reused_from") is not None:
        lines.append(f"result reused from trial {esc(r['reused_from'])}")
    if r.get("reason"):
        lines.append(f"reason: {esc(r['reason'])}")
    return "<br>".join(lines)


def _scatter(rs: Sequence[TrialRecord], y, metric: str, **style) -> go.Scatter:
    return go.Scatter(x=[memory_of(r) / MIB for r in rs], y=[y(r) for r in rs], hoverinfo="text",
                      hovertext=[hover(r, metric) for r in rs], **style)


def _search_layers(view: FrontView, metric: str, bottom: float, faint: bool) -> list[go.Scatter]:
    located = [r for r in view.records if _finite(r.get("peak_memory_bytes")) and not r.get("confirmed")]
    done = [r for r in scored(located)]
    pruned = [r for r in located if r.get("state") == "PRUNED"]
    infeasible = [r for r in located if r.get("state") == "INFEASIBLE"]
    y = lambda r: bottom if _y(r) is None else _y(r)  # noqa: E731
    alpha = 0.3 if faint else 0.45
    return [
        _scatter(done, y, metric, mode="markers", name="search trial (one seed)",
                 marker={"color": "#9a9a9a", "size": 7, "opacity": alpha}),
        _scatter(pruned, y, metric, mode="markers", name="pruned (last score)",
                 marker={"symbol": "x-thin", "size": 7, "opacity": 0.6, "line": {"width": 1.5, "color": "#E45756"}}),
        _scatter(infeasible, y, metric, mode="markers", name="infeasible (simulated peak)",
                 marker={"symbol": "circle-open", "size": 9, "color": "#B279A2"}),
    ]


def _front_layers(view: FrontView, metric: str) -> list[go.Scatter]:
    """The front a user chooses from: confirmed means +- std with bars, or the single-seed search front."""
    if view.kind == "confirmed":
        val = lambda r: r["confirmed"]["val"]["mean"]  # noqa: E731
        others = [r for r in view.confirmed if not view.on_front(r) and not r["is_e2e"]]
        bars = lambda rs: {"type": "data", "array": [r["confirmed"]["val"]["std"] for r in rs],  # noqa: E731
                           "visible": True, "thickness": 1.5, "width": 5}
        return [
            _scatter([r for r in view.front if not r["is_e2e"]], val, metric, mode="lines+markers",
                     name="confirmed front: val mean +- std", error_y={**bars(view.front), "color": FRONT_COLOR},
                     line={"shape": "hv", "color": FRONT_COLOR, "width": 2.5},
                     marker={"symbol": "diamond", "size": 12, "color": FRONT_COLOR, "line": {"width": 1, "color": "#222"}}),
            _scatter(others, val, metric, mode="markers", name="confirmed, dominated beyond the spread",
                     error_y={**bars(others), "color": CONFIRMED_COLOR},
                     marker={"symbol": "diamond-open", "size": 10, "color": CONFIRMED_COLOR}),
        ]
    return [_scatter([r for r in view.front if not r["is_e2e"]], lambda r: r["score"], metric,
                     mode="lines+markers", name="search front (one seed, unconfirmed)",
                     line={"shape": "hv", "color": FRONT_COLOR, "width": 2, "dash": "dot"},
                     marker={"size": 11, "color": FRONT_COLOR, "line": {"width": 1, "color": "white"}})]


def _e2e_y(view: FrontView) -> float | None:
    e = view.e2e
    if e is None:
        return None
    return e["confirmed"]["val"]["mean"] if e.get("confirmed") else e["score"]


def pareto_figure(view: FrontView, meta: Mapping[str, Any]) -> go.Figure:
    """Score against peak memory: the front (confirmed when it exists), E2E, the search trials behind."""
    metric = metric_label(meta.get("metric", "score"))
    ys = [y for y in [*map(_y, view.records), *(r["confirmed"]["val"]["mean"] for r in view.confirmed)]
          if y is not None] or [0.0, 1.0]
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    bottom = lo - 0.08 * span  # where trials without a score sit
    fig = go.Figure()
    for trace in [*_search_layers(view, metric, bottom, view.kind == "confirmed"), *_front_layers(view, metric)]:
        fig.add_trace(trace)
    e2e_y = _e2e_y(view)
    if view.e2e is not None:
        c = view.e2e.get("confirmed")
        fig.add_trace(go.Scatter(
            x=[view.e2e_peak / MIB], y=[e2e_y], mode="markers", hoverinfo="text",
            name="E2E reference (K = 1)" + (": val mean +- std" if c else ""),
            hovertext=[hover(view.e2e, metric)],
            error_y={"type": "data", "array": [c["val"]["std"]], "visible": True, "color": E2E_COLOR} if c else None,
            marker={"symbol": "star", "size": 18, "color": E2E_COLOR, "line": {"width": 1, "color": "#222"}}))
    if view.knee is not None:
        k = view.knee
        y = k["confirmed"]["val"]["mean"] if view.kind == "confirmed" else k["score"]
        fig.add_annotation(x=memory_of(k) / MIB, y=y, text=f"knee: trial {esc(k['trial'])}", ax=40, ay=40,
                           font={"color": FRONT_COLOR})
    budget = meta.get("memory_budget_bytes")
    if _finite(budget):
        fig.add_vline(x=budget / MIB, line={"dash": "dash", "color": "#E45756"},
                      annotation_text=f"budget {budget / MIB:.1f} MiB", annotation_position="top left")
    _memory_axes(fig, view, meta)
    fig.update_layout(title=("Confirmed front: validation mean +- std over seeds against peak training memory"
                             if view.kind == "confirmed" else
                             "Search front (unconfirmed, one seed) against peak training memory"),
                      yaxis_title=esc(metric) + (" (validation)"), yaxis_range=[bottom - 0.05 * span, hi + 0.08 * span],
                      height=580, template="plotly_white", legend={"orientation": "h", "y": -0.18})
    return fig


def _memory_axes(fig: go.Figure, view: FrontView, meta: Mapping[str, Any]) -> None:
    """Memory from 0 (below, MiB) and in multiples of E2E's peak (above), on the same scale."""
    peaks = [memory_of(r) for r in view.records if _finite(r.get("peak_memory_bytes"))]
    top = 1.08 * max(peaks or [1.0]) / MIB
    fig.update_layout(xaxis={"title": f"peak training memory (MiB, {esc(meta.get('memory_mode', '?'))})",
                             "range": [0, top]})
    base = view.e2e_peak
    if base:
        step = 0.25 if top * MIB / base <= 2 else 0.5
        ticks = [i * step for i in range(int(top * MIB / base / step) + 1)]
        fig.add_trace(go.Scatter(x=[0, top], y=[None, None], xaxis="x2", showlegend=False, hoverinfo="skip"))
        fig.update_layout(xaxis2={"title": "x E2E peak memory", "overlaying": "x", "side": "top",
                                  "range": [0, top], "tickvals": [t * base / MIB for t in ticks],
                                  "ticktext": [f"{t:g}x" for t in ticks], "showgrid": False})


def hypervolume_figure(view: FrontView, metric: str) -> go.Figure:
    hist = hypervolume_history(view.records)
    norm = normaliser(view.records)
    fig = go.Figure(go.Scatter(x=list(range(len(hist))), y=[v for _, v in hist], mode="lines+markers",
                               text=[f"trial {t}" for t, _ in hist], hoverinfo="text+y",
                               line={"shape": "hv", "color": CONFIRMED_COLOR}, marker={"size": 5}, name="hypervolume"))
    bounds = "" if norm is None else (f"<br>{esc(metric)} {norm.s_lo:.4g} to {norm.s_hi:.4g}, memory "
                                      f"{norm.m_lo / MIB:.1f} to {norm.m_hi / MIB:.1f} MiB")
    fig.update_layout(title="Hypervolume of the search front after each trial (normalised: the unit square is 1)",
                      height=380, template="plotly_white", xaxis_title="trials so far (references first)",
                      yaxis_range=[0, 1.05], yaxis_title=f"normalised hypervolume{bounds}")
    return fig


def _dimension(name: str, values: list[Any]) -> dict[str, Any]:
    """One parallel-coordinates axis: numeric as is (log10 when wide), categories as codes."""
    present = [v for v in values if v is not None]
    if present and all(_finite(v) for v in present):
        vals = [None if v is None else float(v) for v in values]
        if min(present) > 0 and max(present) >= 100 * min(present):
            vals, name = [None if v is None else math.log10(v) for v in vals], f"log10({name})"
        if None not in vals:
            return {"label": esc(name), "values": vals}
        lo, hi = min(v for v in vals if v is not None), max(v for v in vals if v is not None)
        gap = 0.15 * (hi - lo) or 1.0
        ticks = sorted({lo, (lo + hi) / 2, hi})
        return {"label": esc(name), "values": [lo - gap if v is None else v for v in vals],
                "tickvals": [lo - gap, *ticks], "ticktext": ["n/a", *(f"{t:.3g}" for t in ticks)]}
    text = ["n/a" if v is None else str(v) for v in values]
    cats = sorted(set(text))
    return {"label": esc(name), "values": [cats.index(t) for t in text], "tickvals": list(range(len(cats))),
            "ticktext": [esc(c) for c in cats], "range": [-0.3, len(cats) - 0.7]}


def params_figure(view: FrontView, metric: str) -> go.Figure:
    """Parallel coordinates of the searched trials' parameters, coloured by score (references have none)."""
    done = [r for r in scored(view.records) if r.get("params")]
    names = sorted({k for r in done for k in (r.get("params") or {})})[:MAX_PARCOORDS]
    dims = [_dimension(n, [(r.get("params") or {}).get(n) for r in done]) for n in names]
    dims.append({"label": "peak MiB", "values": [round(r["peak_memory_bytes"] / MIB, 2) for r in done]})
    scores = [float(r["score"]) for r in done]
    dims.append({"label": esc(metric), "values": scores})
    fig = go.Figure(go.Parcoords(dimensions=dims, labelangle=-15, labelfont={"size": 13},
                                 line={"color": scores, "colorscale": "Viridis", "showscale": True,
                                       "colorbar": {"title": {"text": esc(metric)}, "x": 1.04}}))
    fig.update_layout(title="Parameters of the searched trials (drag along an axis to filter)", height=520,
                      margin={"t": 130, "l": 70, "r": 40})
    return fig
