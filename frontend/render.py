"""Small HTML pieces of the page: notices, status badges, progress bars and the tables of runs,
artifacts, datasets and episodes. Every value from the API is escaped."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape

from backend.client import ArtifactOut, DatasetOut, EpisodeOut, RunOut


def notice(message: str, kind: str = "error") -> str:
    """A message box; kind: error | warn | ok | info."""
    if not message:
        return ""
    icon = {"error": "⚠", "warn": "⚠", "ok": "✓", "info": "ℹ"}.get(kind, "")
    return f'<div class="vr-notice vr-{kind}" role="{"alert" if kind == "error" else "status"}">' \
           f'{icon} {escape(message)}</div>'


def instruction_check(result: dict, titles: dict[str, str] | None = None) -> str:
    """The instruction an imagine run used, on which scene, and a ⚠ warning for each policy that does not
    understand it (the run's `instruction_match`, models/policy/language.py); one warning for both when equal."""
    text, task = result.get("instruction"), result.get("task")
    if not text:
        return ""
    facts = (f'<div class="vr-facts"><span>instruction used: <b>“{escape(str(text))}”</b></span>'
             f'<span>scene: <b>{escape(str(task or "?"))}</b></span></div>')
    warnings: dict[str, list[str]] = {}
    fine: list[str] = []
    for label, m in (result.get("instruction_match") or {}).items():
        if not isinstance(m, dict):
            continue
        who = (titles or {}).get(label, label)
        if m.get("understood"):
            fine.append(f"{who} (similarity {m.get('similarity', 0):.2f} to {m.get('nearest_task')})")
        else:
            warnings.setdefault(str(m.get("warning") or "this instruction is not understood"), []).append(who)
    parts = [notice(f"{w} — {', '.join(whos)}", "warn") for w, whos in warnings.items()]
    if fine:
        parts.append(f'<div class="vr-cell">understood by {escape(", ".join(fine))} ✓</div>')
    return f'<div class="vr-lang">{facts}{"".join(parts)}</div>'


def badge(status: str) -> str:
    return f'<span class="vr-badge vr-{escape(status)}">{escape(status)}</span>'


def progress_bar(frac: float, label: str = "") -> str:
    pct = max(0.0, min(1.0, frac or 0.0)) * 100
    return (f'<div class="vr-progress" title="{escape(label)}"><div class="vr-bar" style="width:{pct:.1f}%"></div>'
            f'<span class="vr-pct">{pct:.0f}%</span></div>')


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def duration(run: RunOut, now: datetime | None = None) -> float | None:
    if run.started_at is None:
        return None
    end = run.finished_at or now or datetime.now(UTC)
    start = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    return max(0.0, (end - start).total_seconds())


def run_title(run: RunOut) -> str:
    return f"#{run.id} {run.kind}" + (f" · {run.name}" if run.name else "")


def runs_table(runs: Iterable[RunOut], selected: int | None = None) -> str:
    rows = []
    for r in runs:
        sel = ' class="vr-selected"' if r.id == selected else ""
        parent = f"#{r.parent_id}" if r.parent_id else "–"
        msg = escape((r.error if r.status == "failed" else r.message) or "")
        rows.append(
            f'<tr data-run="{r.id}"{sel}><td>#{r.id}</td><td>{escape(r.name or "")}</td><td>{escape(r.kind)}</td>'
            f"<td>{badge(r.status)}</td><td class='vr-progress-cell'>{progress_bar(r.progress, msg)}"
            f"<div class='vr-msg'>{msg}</div></td><td>{human_seconds(duration(r))}</td><td>{parent}</td>"
            f"<td>{r.created_at:%Y-%m-%d %H:%M:%S}</td></tr>")
    if not rows:
        rows.append('<tr><td colspan="8" class="vr-empty">No runs yet: launch one above.</td></tr>')
    head = "".join(f"<th>{h}</th>" for h in ("id", "name", "kind", "status", "progress", "duration", "parent",
                                             "created (UTC)"))
    return f'<table class="vr-table vr-runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def run_header(run: RunOut, left: str = "") -> str:
    """The run page's head: title, status, progress, time left, and the run's own URL (/ui/?run=<id>)."""
    parts = [
        f'<div class="vr-run-head"><h3>Run {escape(run_title(run))}</h3>{badge(run.status)}'
        f'<a class="vr-permalink" href="?run={run.id}" title="this run\'s own address: bookmark or share it">'
        f'link: ?run={run.id}</a></div>',
        progress_bar(run.progress, run.message or ""),
        f'<div class="vr-msg">{escape(run.message or "")}</div>',
        '<div class="vr-facts">'
        f"<span>duration <b>{human_seconds(duration(run))}</b></span>"
        + (f"<span><b>{escape(left)}</b></span>" if left else "") +
        f"<span>parent <b>{'#' + str(run.parent_id) if run.parent_id else '–'}</b></span>"
        f"<span>queue <b>{escape(run.queue)}</b></span>"
        f"<span>attempt <b>{run.attempt}</b></span>"
        f"<span>worker <b>{escape(run.worker or '–')}</b></span></div>",
    ]
    if run.error:
        parts.append(notice(run.error, "error"))
    return "".join(parts)


def artifacts_table(arts: list[ArtifactOut]) -> str:
    if not arts:
        return '<div class="vr-empty">No artifacts yet.</div>'
    rows = []
    for a in arts:
        files = f" ({len(a.files)} files)" if a.is_dir else ""
        rows.append(f"<tr><td>{escape(a.kind)}</td><td>{escape(a.name)}{files}</td><td>{human_bytes(a.size)}</td>"
                    f"<td><code>{escape(a.sha256[:12])}</code></td></tr>")
    head = "<tr><th>kind</th><th>name</th><th>size</th><th>sha256</th></tr>"
    return f'<table class="vr-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def datasets_table(items: list[DatasetOut], selected: int | None = None) -> str:
    if not items:
        return '<div class="vr-empty">No datasets yet: collect or upload one.</div>'
    rows = []
    for d in items:
        sel = ' class="vr-selected"' if d.id == selected else ""
        tasks = ", ".join(f"{escape(t)} ×{n}" for t, n in d.tasks.items())
        made_by = f'<a href="?run={d.run_id}" class="vr-run-link">run #{d.run_id}</a>' if d.run_id else "–"
        rows.append(f'<tr data-dataset="{d.id}"{sel}><td>#{d.id}</td><td>{escape(d.name)}</td><td>{escape(d.source)}'
                    f"</td><td>{made_by}</td><td>{d.episodes}</td><td>{d.steps}</td><td>{tasks}</td>"
                    f"<td>{d.image_size}px {escape(d.camera)}</td><td>{100 * d.success_rate:.0f}%</td>"
                    f"<td>{human_bytes(d.size)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("id", "name", "source", "made by", "episodes", "steps", "tasks",
                                             "frames", "success", "size"))
    return f'<table class="vr-table vr-datasets"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def episodes_table(items: list[EpisodeOut], selected: int | None = None) -> str:
    if not items:
        return '<div class="vr-empty">This dataset has no episodes.</div>'
    rows = []
    for e in items:
        sel = ' class="vr-selected"' if e.index == selected else ""
        ok = "✓" if e.success else "✗"
        noise = f"{e.action_noise:g}" if e.action_noise else "–"
        rows.append(f'<tr data-episode="{e.index}"{sel}><td>{e.index}</td><td>{escape(e.task)}</td>'
                    f"<td>{escape(e.instruction)}</td><td>{e.length}</td><td>{ok}</td><td>{noise}</td></tr>")
    head = "<tr><th>#</th><th>task</th><th>instruction</th><th>steps</th><th>success</th><th>action noise</th></tr>"
    return f'<table class="vr-table vr-episodes"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


# A click on a table row sends its data-* id to the server (gr.HTML's js_on_load; event delegation
# survives the table being re-rendered).
def row_click_js(attr: str) -> str:
    return ("element.addEventListener('click', (e) => { const tr = e.target.closest('tr[data-" + attr + "]'); "
            "if (tr) trigger('click', {row: tr.dataset." + attr + "}); });")


CSS = """
.vr-notice { padding: 8px 12px; border-radius: 6px; margin: 4px 0; font-size: 14px; }
.vr-error { background: #fdecea; color: #8a1c12; border: 1px solid #f5c2bd; }
.vr-warn { background: #fff4e5; color: #7a4100; border: 1px solid #f6c680; font-weight: 600; }
.vr-ok { background: #e8f5e9; color: #1b5e20; border: 1px solid #b9dfbb; }
.vr-info { background: #e8f0fe; color: #174ea6; border: 1px solid #c3d5fb; }
.vr-badge { padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; }
.vr-queued { background: #8d8d8d; } .vr-running { background: #1a73e8; } .vr-succeeded { background: #188038; }
.vr-failed { background: #c5221f; } .vr-cancelled { background: #b06000; }
.vr-progress { position: relative; height: 14px; background: #eceff1; border-radius: 7px; min-width: 120px;
  overflow: hidden; }
.vr-bar { height: 100%; background: linear-gradient(90deg, #4f8df5, #1a73e8); transition: width .6s; }
.vr-pct { position: absolute; top: -1px; left: 6px; font-size: 11px; color: #102a43; }
.vr-msg { font-size: 12px; color: #5f6368; max-width: 420px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.vr-table { width: 100%; border-collapse: collapse; font-size: 13px; }
.vr-table th { text-align: left; border-bottom: 2px solid #dadce0; padding: 4px 6px; }
.vr-table td { border-bottom: 1px solid #eceff1; padding: 4px 6px; vertical-align: middle; }
.vr-table tr[data-run], .vr-table tr[data-dataset], .vr-table tr[data-episode] { cursor: pointer; }
.vr-table tbody tr:hover { background: #f1f6fe; }
.vr-table tr.vr-selected { background: #e3edfd; }
.vr-progress-cell { min-width: 200px; }
.vr-empty { color: #80868b; padding: 8px; }
.vr-run-head { display: flex; gap: 10px; align-items: center; }
.vr-run-head h3 { margin: 0; }
.vr-facts { display: flex; gap: 18px; font-size: 13px; color: #3c4043; margin: 4px 0 8px; flex-wrap: wrap; }
.vr-cell { font-size: 13px; padding: 2px 4px; }
.vr-permalink { font-size: 13px; margin-left: auto; }
.vr-win { color: #188038; } .vr-loss { color: #c5221f; }
.vr-table tr[data-episode] td:last-child { color: #1a73e8; font-weight: 600; }
.vr-player { display: flex; gap: 12px; align-items: center; padding: 6px 0; flex-wrap: wrap; }
.vr-player input[type=range] { flex: 1; min-width: 240px; }
.vr-play { padding: 4px 12px; border-radius: 6px; border: 1px solid #1a73e8; background: #e8f0fe; cursor: pointer; }
.vr-step { font-variant-numeric: tabular-nums; font-weight: 600; min-width: 110px; }
"""
