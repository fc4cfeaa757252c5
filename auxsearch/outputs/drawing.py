"""Pictures of a design's block graph (plotly, no graphviz needed).

Units sit on a line, coloured by module; a red dashed line marks each
gradient cut (``detach``); aux nets hang below the last unit of their
module; dashed purple arrows are EMA links (unit -> aux that averages it);
orange arrows join the real head to the aux nets that end with it (a global end), labelled
with how they reach it: 1x1 adapters to the head's taps, or copies of the later units.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import plotly.graph_objects as go

from auxsearch.design.graph import as_design, to_graph

# Edge colours by kind: forward data flow, EMA copy, global end (the real head or a copy, reading the bank).
EDGE_COLORS = {"data": "#888", "ema": "#8E44AD", "global": "#D35400"}
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#EECA3B", "#9D755D")


def _node_xy(g: nx.DiGraph) -> dict[str, tuple[float, float]]:
    xy = {"input": (-1.5, 0.0)}
    last = 0
    for n, d in g.nodes(data=True):
        if d["kind"] == "unit":
            xy[n] = (float(d["index"]), 0.0)
            last = max(last, d["index"])
    xy["head"] = (last + 1.5, 0.0)
    for n, d in g.nodes(data=True):
        if d["kind"] == "aux":
            src = next(u for u, _, e in g.in_edges(n, data=True) if e["kind"] == "data")
            xy[n] = (xy[src][0], -1.2)
    return xy


def _label(d: dict) -> str:
    skip = {"kind", "module"}
    return "<br>".join(f"{k}: {v}" for k, v in d.items() if k not in skip)


def design_figure(design: Any, title: str | None = None) -> go.Figure:
    """A plotly figure of a design (compact mapping or block graph)."""
    g = design if isinstance(design, nx.DiGraph) else to_graph(design)
    d = as_design(g)
    xy = _node_xy(g)
    fig = go.Figure()
    for u, v, e in g.edges(data=True):
        (x0, y0), (x1, y1) = xy[u], xy[v]
        wiring = e["kind"] != "data"
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, arrowwidth=1.5 if wiring else 1,
                           arrowcolor=EDGE_COLORS.get(e["kind"], "#888"), standoff=8, startstandoff=8,
                           hovertext=f"{e['kind']} edge {u} -> {v}")
        if e["kind"] == "global":  # say how the aux net reaches the real head (docs/concepts.md)
            how = "1x1 adapters" if e.get("through") == "adapter" else f"{e.get('through')} copies of later units"
            local = f", w {e['weight']:g} + local head" if e.get("weight", 1.0) < 1 else ""  # global-local
            kept = f", bank of {e['keep']} samples" if e.get("keep") else ""  # the long-term bank
            fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, xref="x", yref="y", showarrow=False,
                               text=f"{e.get('end')} via {how}{local}{kept}", font={"size": 9, "color": EDGE_COLORS["global"]},
                               bgcolor="rgba(255,255,255,0.8)")
        if e.get("detach") and e["kind"] == "data":
            fig.add_shape(type="line", x0=(x0 + x1) / 2, x1=(x0 + x1) / 2, y0=-0.5, y1=0.5,
                          line={"color": "#E45756", "dash": "dash", "width": 2})
    for kind, symbol, size in (("input", "diamond", 16), ("unit", "square", 14), ("aux", "circle", 20),
                               ("head", "star", 20)):
        nodes = [(n, a) for n, a in g.nodes(data=True) if a["kind"] == kind]
        if not nodes:
            continue
        colors = [PALETTE[a.get("module", 0) % len(PALETTE)] if kind in ("unit", "aux", "head") else "#333"
                  for _, a in nodes]
        fig.add_trace(go.Scatter(
            x=[xy[n][0] for n, _ in nodes], y=[xy[n][1] for n, _ in nodes], mode="markers+text",
            marker={"symbol": symbol, "size": size, "color": colors, "line": {"width": 1, "color": "#222"}},
            text=[a.get("family", n.split(":")[-1] if kind == "unit" else n) for n, a in nodes],
            textposition="bottom center" if kind == "aux" else "top center",
            hovertext=[f"<b>{n}</b><br>{_label(a)}" for n, a in nodes], hoverinfo="text", name=kind))
    k = len(d["splits"]) + 1
    fig.add_annotation(text="red dashes: gradient cut · purple: EMA copy · orange: global end",
                       xref="paper", yref="paper", x=0, y=0, showarrow=False, font={"size": 10, "color": "#555"},
                       xanchor="left", yanchor="bottom")
    fig.update_layout(
        title=title or f"{d['task']['name']}: {d['backbone']['name']}, K = {k} modules",
        showlegend=False, height=300, margin={"l": 20, "r": 20, "t": 50, "b": 20},
        xaxis={"visible": False}, yaxis={"visible": False, "range": [-2.0, 0.9]},
        plot_bgcolor="white")
    return fig
