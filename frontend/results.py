"""Results you can read: an evaluation's episodes as a filterable table (one row per start, each policy's
outcome and steps, ▶ where a video exists) and the difference between two runs' resolved parameters."""

from __future__ import annotations

import json
from html import escape
from typing import Any

OUTCOMES = ("all", "any failure", "all failed", "policies disagree", "all succeeded")


def episode_rows(report: dict, result: dict) -> list[dict]:
    """report.json of an evaluate run → one row per start: task, perturbation, start index, seed, and
    {policy ref: {"success", "steps"}}; `video` names the side-by-side artifact when one was recorded."""
    videos = {(v.get("task"), v.get("perturbation"), v.get("index")): v.get("artifact")
              for v in result.get("videos", [])}
    rows: dict[tuple, dict] = {}
    for ref, summary in (report.get("reports") or {}).items():
        for ep in summary.get("episodes", []):
            key = (ep.get("task"), ep.get("perturbation"), ep.get("index"))
            row = rows.setdefault(key, {"task": key[0], "perturbation": key[1], "index": key[2],
                                        "seed": result.get("seed"), "by_policy": {}, "video": videos.get(key)})
            row["by_policy"][ref] = {"success": bool(ep.get("success")), "steps": ep.get("steps")}
    return list(rows.values())


def keep(row: dict, task: str, perturbation: str, outcome: str) -> bool:
    wins = [p["success"] for p in row["by_policy"].values()]
    if task not in (None, "", "all") and row["task"] != task:
        return False
    if perturbation not in (None, "", "all") and row["perturbation"] != perturbation:
        return False
    return {"any failure": not all(wins), "all failed": not any(wins),
            "policies disagree": any(wins) and not all(wins), "all succeeded": all(wins)}.get(outcome, True)


def episode_table(rows: list[dict], names: dict[str, str], task: str = "all", perturbation: str = "all",
                  outcome: str = "all") -> str:
    shown = [(k, r) for k, r in enumerate(rows) if keep(r, task, perturbation, outcome)]
    refs = list(dict.fromkeys(ref for r in rows for ref in r["by_policy"]))
    head = "".join(f"<th>{h}</th>" for h in ("task", "perturbation", "start", "seed")) + "".join(
        f"<th>{escape(names.get(ref, ref))}</th>" for ref in refs) + "<th>video</th>"
    body = []
    for k, r in shown:
        cells = []
        for ref in refs:
            p = r["by_policy"].get(ref)
            cells.append("<td>–</td>" if p is None else
                         f"<td class='{'vr-win' if p['success'] else 'vr-loss'}'>{'✓' if p['success'] else '✗'} "
                         f"{p['steps']} steps</td>")
        play = "▶ play" if r["video"] else ""
        attr = f' data-episode="{k}"' if r["video"] else ""
        body.append(f"<tr{attr}><td>{escape(str(r['task']))}</td><td>{escape(str(r['perturbation']))}</td>"
                    f"<td>#{r['index']}</td><td>{r['seed']}</td>{''.join(cells)}<td>{play}</td></tr>")
    if not body:
        body.append(f'<tr><td colspan="{5 + len(refs)}" class="vr-empty">No episode matches the filters.</td></tr>')
    count = f"<div class='vr-msg'>{len(shown)} of {len(rows)} episodes</div>"
    return (f'{count}<table class="vr-table vr-episodes-eval"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "(value)": value}


def params_diff(a: dict, b: dict, a_label: str, b_label: str) -> str:
    """An HTML table of the parameters that differ between two runs (dotted names), or a line saying none do."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k, _MISSING) != fb.get(k, _MISSING))
    if not keys:
        return "<div class='vr-msg'>The two runs ran with the same parameters.</div>"

    def show(v: Any) -> str:
        return "<i>absent</i>" if v is _MISSING else escape(json.dumps(v, default=str))

    rows = "".join(f"<tr><td><code>{escape(k)}</code></td><td>{show(fa.get(k, _MISSING))}</td>"
                   f"<td>{show(fb.get(k, _MISSING))}</td></tr>" for k in keys)
    return (f'<table class="vr-table vr-diff"><thead><tr><th>parameter</th><th>{escape(a_label)}</th>'
            f'<th>{escape(b_label)}</th></tr></thead><tbody>{rows}</tbody></table>')


_MISSING = object()
