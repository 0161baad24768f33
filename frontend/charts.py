"""Plotly figures: a run's training curves and success rates with 95% intervals."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Series: {metric name: {"steps": [...], "values": [...], "times": [...]}} as the page accumulates them.
Series = dict[str, dict[str, list]]
COLORS = ("#1a73e8", "#e8710a", "#188038", "#c5221f", "#9334e6", "#12b5cb", "#e52592", "#7cb342")
POLICY_COLORS = ("#9aa0a6", "#1a73e8", "#e8710a", "#188038")


def _leaf(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _prefix(name: str) -> str:
    return name.rsplit("/", 1)[0] + "/" if "/" in name else ""


def panels(series: Series) -> dict[str, list[str]]:
    """Which metrics go in which panel; losses get one panel per stage (a pipeline's world_model/, policy/,
    rft/ prefixes) since their steps and scales differ, in the order the stages wrote them; panels without
    data are left out."""
    names = list(series)
    # RL in the world model measures its held-out success twice on the same starts: in the simulator and in
    # imagination. The two curves share a panel (how far imagination is from the real world).
    paired: list[str] = []
    for n in names:
        if _leaf(n) == "heldout_imagined_success":
            real = _prefix(n) + "heldout_success"
            paired += [real, n] if real in series else [n]
    losses: dict[str, list[str]] = {}
    for n in names:
        if "loss" in _leaf(n) and "heldout" not in n:
            stage = n.split("/", 1)[0] if "/" in n else ""
            losses.setdefault(f"{stage} losses".strip(), []).append(n)
    out = {
        **losses,
        "reward (mean ± std)": [n for n in names if _leaf(n) == "reward_mean"],
        "KL": [n for n in names if "kl" in _leaf(n).lower()],
        "σ": [n for n in names if "sigma" in _leaf(n)],
        "success": [n for n in names if "success" in _leaf(n) and n not in paired],
        IMAGINED_PANEL: paired,
        "mixed groups (GRPO signal)": [n for n in names if _leaf(n) == "mixed_fraction"],
    }
    return {k: v for k, v in out.items() if v}


IMAGINED_PANEL = "held-out success: real vs imagined"


def _clean(steps: list, values: list) -> tuple[list, list]:
    keep = [(s, v) for s, v in zip(steps, values, strict=False) if v is not None and math.isfinite(v)]
    return [s for s, _ in keep], [v for _, v in keep]


def _panel_layout(fig: go.Figure, k: int, row: int, col: int, max_step: float, log_y: bool = False) -> str:
    """Axes of panel k in human numbers (1e-10, not "100p"; whole steps only) and the panel's own legend,
    in its top-right corner; returns the legend's name for its traces."""
    fig.update_yaxes(exponentformat="e", tickformat="~g", type="log" if log_y else None, row=row, col=col)
    fig.update_xaxes(tickformat="d", dtick=1 if max_step <= 10 else None, row=row, col=col)
    legend = "legend" if k == 0 else f"legend{k + 1}"
    sub = fig.get_subplot(row, col)
    x1, y1 = sub.xaxis.domain[1], sub.yaxis.domain[1]
    fig.update_layout({legend: {"x": x1, "y": y1, "xanchor": "right", "yanchor": "top", "font": {"size": 10},
                                "bgcolor": "rgba(255,255,255,0.7)", "bordercolor": "#dadce0", "borderwidth": 1}})
    return legend


def metrics_figure(series: Series, title: str = "") -> go.Figure:
    groups = panels(series)
    if not groups:
        fig = go.Figure()
        fig.add_annotation(text="No curves yet: this run has not logged losses, rewards, KL, σ or success.",
                           showarrow=False, font={"size": 14, "color": "#5f6368"})
        fig.update_layout(height=220, xaxis={"visible": False}, yaxis={"visible": False}, template="plotly_white",
                          margin={"l": 20, "r": 20, "t": 30, "b": 20})
        return fig
    cols = 2 if len(groups) > 1 else 1
    rows = math.ceil(len(groups) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(groups), horizontal_spacing=0.08,
                        vertical_spacing=0.16 if rows > 1 else 0.1)
    for k, (panel, names) in enumerate(groups.items()):
        r, c = k // cols + 1, k % cols + 1
        max_step = max((max(series[n]["steps"], default=0) for n in names), default=0)
        legend = _panel_layout(fig, k, r, c, max_step)
        for j, name in enumerate(names):
            color = COLORS[j % len(COLORS)]
            x, y = _clean(series[name]["steps"], series[name]["values"])
            if panel.startswith("reward"):
                std = series.get(_prefix(name) + "reward_std")
                if std is not None:
                    sd = dict(zip(*_clean(std["steps"], std["values"]), strict=False))
                    band_x = [s for s in x if s in sd]
                    mean = dict(zip(x, y, strict=False))
                    upper = [mean[s] + sd[s] for s in band_x]
                    lower = [mean[s] - sd[s] for s in band_x]
                    fig.add_trace(go.Scatter(x=band_x + band_x[::-1], y=upper + lower[::-1], fill="toself",
                                             mode="lines", fillcolor="rgba(26,115,232,0.18)", line={"width": 0},
                                             name=f"{_prefix(name)}± std", hoverinfo="skip", showlegend=True,
                                             legend=legend), row=r, col=c)
            dash = "dash" if _leaf(name) == "heldout_imagined_success" else None
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers" if len(x) < 30 else "lines", name=name,
                                     line={"color": color, "width": 2, "dash": dash}, marker={"size": 4},
                                     legend=legend, hovertemplate="step %{x}: %{y:.4~g}<extra>%{fullData.name}"
                                     "</extra>"), row=r, col=c)
        fig.update_xaxes(title_text="step", row=r, col=c)
    fig.update_layout(height=300 * rows + 40, template="plotly_white", title={"text": title, "x": 0.01},
                      margin={"l": 50, "r": 20, "t": 60, "b": 40})
    return fig


# Metrics explorer ---------------------------------------------------------------------------------

def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with the start-up bias removed (TensorBoard's smoothing); weight in [0, 1)."""
    if weight <= 0:
        return list(values)
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(acc / norm)
    return out


def flat_reward_warning(series: Series, last: int = 3) -> str:
    """A warning when a GRPO run's groups stopped carrying a learning signal: the within-group reward spread
    (`reward_group_std`) or the fraction of mixed groups (`mixed_fraction`) is about zero over its last rows."""
    flat = []
    for name, ser in series.items():
        if _leaf(name) not in ("reward_group_std", "mixed_fraction"):
            continue
        _, y = _clean(ser["steps"], ser["values"])
        if len(y) >= min(last, 2) and all(abs(v) < 1e-6 for v in y[-last:]):
            flat.append(name)
    if not flat:
        return ""
    return (f"{', '.join(flat)} ≈ 0 over the last {last} steps: every sample of a group got the same reward, so "
            "the advantages are zero and GRPO has nothing to learn from.")


def explore_figure(runs: dict[str, dict], names: list[str], smoothing: float = 0.0, log_y: bool = False,
                   x_axis: str = "step") -> go.Figure:
    """One panel per chosen series, each with its own legend, and one trace per run (overlay): `runs` maps a
    run's label to its series (with `times` for the wall-time axis). Smoothed curves keep the raw ones faint."""
    names = [n for n in names if any(n in ser for ser in runs.values())]
    if not names:
        fig = go.Figure()
        fig.add_annotation(text="Pick series to plot (type to search their names).", showarrow=False,
                           font={"size": 14, "color": "#5f6368"})
        fig.update_layout(height=200, xaxis={"visible": False}, yaxis={"visible": False}, template="plotly_white")
        return fig
    fig = make_subplots(rows=len(names), cols=1, subplot_titles=names, vertical_spacing=min(0.3 / len(names), 0.08))
    wall = x_axis == "wall time"
    for k, name in enumerate(names):
        row = k + 1
        max_step = 0
        legend = f"legend{k + 1}" if k else "legend"
        for j, (label, ser) in enumerate(runs.items()):
            if name not in ser:
                continue
            color = COLORS[j % len(COLORS)]
            steps, values = ser[name]["steps"], ser[name]["values"]
            if wall:
                times = ser[name].get("times") or []
                t0 = min((min(s.get("times") or [math.inf]) for s in ser.values()), default=0.0)
                xs = [t - t0 for t in times] if len(times) == len(steps) else []
            else:
                xs = list(steps)
            x, y = _clean(xs, values[: len(xs)])
            if log_y:
                x, y = [a for a, b in zip(x, y, strict=False) if b > 0], [b for b in y if b > 0]
            max_step = max([max_step, *x]) if x and not wall else max_step
            if smoothing > 0:
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line={"color": color, "width": 1}, opacity=0.25,
                                         showlegend=False, hoverinfo="skip", legend=legend), row=row, col=1)
            fig.add_trace(go.Scatter(x=x, y=smooth(y, smoothing), mode="lines+markers" if len(x) < 30 else "lines",
                                     name=label, line={"color": color, "width": 2}, marker={"size": 4}, legend=legend,
                                     hovertemplate=("%{x:.1f} s" if wall else "step %{x}") + ": %{y:.4~g}"
                                     "<extra>%{fullData.name}</extra>"), row=row, col=1)
        _panel_layout(fig, k, row, 1, max_step if not wall else 1e9, log_y)
        fig.update_xaxes(title_text="seconds since the run's first row" if wall else "step", row=row, col=1)
    fig.update_layout(height=260 * len(names) + 60, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def success_rows_from_compare(result: dict) -> dict[str, list[dict]]:
    """An evaluate/compare run's result → {policy: [{perturbation, success_rate, ci95, episodes, successes}]}."""
    out: dict[str, list[dict]] = {}
    for fam in result.get("families", []):
        for ref, stats in fam.get("by_policy", {}).items():
            out.setdefault(ref, []).append({"perturbation": fam["perturbation"], **stats})
    return out


def rows_from_wm_eval(result: dict, labels: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """A wm_eval run's result → {"imagined": [...], "real": [...]}, one row per policy (over all its cells),
    in success_figure's shape with the policy as the x value."""
    out: dict[str, list[dict]] = {}
    for rep in result.get("policies", []):
        ref = rep.get("ref") or rep.get("policy", "?")
        for source in ("imagined", "real"):
            part = rep.get(source) or {}
            if not part.get("episodes"):
                continue
            out.setdefault(source, []).append({"x": (labels or {}).get(ref, ref), "successes": part["successes"],
                                               "episodes": part["episodes"], "success_rate": part["success"],
                                               "ci95": part["ci95"]})
    return out


def imagined_vs_real_figure(result: dict, labels: dict[str, str] | None = None) -> go.Figure:
    return success_figure(rows_from_wm_eval(result, labels), {"imagined": "imagined (world model)",
                                                              "real": "real (simulator)"},
                          title="Success in imagination vs in the simulator, same starts (95% Wilson interval)",
                          x_title="policy")


def success_figure(by_policy: dict[str, list[dict]], labels: dict[str, str] | None = None,
                   title: str = "Success rate in the simulator (95% Wilson interval)",
                   x_title: str = "perturbation (family:level)") -> go.Figure:
    fig = go.Figure()
    for k, (policy, rows) in enumerate(by_policy.items()):
        x = [r.get("x", r.get("perturbation")) for r in rows]
        y = [100 * r["success_rate"] for r in rows]
        hi = [100 * (r["ci95"][1] - r["success_rate"]) for r in rows]
        lo = [100 * (r["success_rate"] - r["ci95"][0]) for r in rows]
        text = [f"{r.get('successes', '?')}/{r.get('episodes', '?')}" for r in rows]
        fig.add_trace(go.Bar(x=x, y=y, name=(labels or {}).get(policy, policy), text=text, textposition="outside",
                             marker_color=POLICY_COLORS[(k + 1) % len(POLICY_COLORS)],
                             error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo,
                                      "color": "#3c4043", "thickness": 1.2, "width": 4}))
    fig.update_layout(barmode="group", template="plotly_white", height=380, title={"text": title, "x": 0.01},
                      yaxis={"title": "success %", "range": [0, 112]}, xaxis={"title": x_title},
                      legend={"orientation": "h", "y": 1.08, "x": 1, "xanchor": "right"},
                      margin={"l": 50, "r": 20, "t": 70, "b": 50})
    return fig
