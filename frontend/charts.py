"""Plotly figures: a run's training curves and success rates with 95% intervals."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Series: {metric name: {"steps": [...], "values": [...]}} as the page accumulates them.
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
                                             name=f"{_prefix(name)}± std", hoverinfo="skip", showlegend=True),
                                  row=r, col=c)
            dash = "dash" if _leaf(name) == "heldout_imagined_success" else None
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers" if len(x) < 30 else "lines", name=name,
                                     line={"color": color, "width": 2, "dash": dash}, marker={"size": 4}),
                          row=r, col=c)
        fig.update_xaxes(title_text="step", row=r, col=c)
    fig.update_layout(height=300 * rows + 40, template="plotly_white", title={"text": title, "x": 0.01},
                      legend={"orientation": "h", "y": -0.12 if rows == 1 else -0.06},
                      margin={"l": 50, "r": 20, "t": 60, "b": 40})
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
