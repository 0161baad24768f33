"""The studio UI in a real browser (Debian chromium driven by Playwright): launch a smoke pipeline from the
page and watch it move, open the run and see its curves, watch side-by-side videos play, compare two
policies, collect and browse a dataset, read error messages, sign in with a token. Every request the
page makes stays on this machine. Screenshots of each tab go to test-artifacts/ui/."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from backend_helpers import FAST, ROOT, wait_for

from backend.client import StudioClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SHOTS = ROOT / "test-artifacts" / "ui"
PIPELINE_TIMEOUT_S = 1200

if not Path(CHROMIUM).exists():
    if os.environ.get("VLARFT_REQUIRE_SERVICES") == "1":  # CI: `make test` installs it, so this is a bug
        raise RuntimeError(f"{CHROMIUM} is missing although `make system` should have installed it")
    pytest.skip(f"{CHROMIUM} is missing: `make system` (or apt-get install chromium) installs it",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vlarft studio` (or `vlarft api`) in its own process group, with its own home folder."""

    def __init__(self, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="vru-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLARFT_")}
        # the UI's files and Gradio's live in the studio's own folder ($VLARFT_HOME/artifacts/ui-cache)
        env.update({"VLARFT_HOME": str(self.home), **FAST, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False",
                    **(extra_env or {})})
        self.log = self.home / "server.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args, "--port", str(self.port)], env=env,
                                     cwd=ROOT, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for(self._up, 180, f"the server on port {self.port}:\n{self.output()}", poll=0.3)

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.output()
        import httpx

        try:
            # 303: a studio with a token sends the page to its sign-in
            return httpx.get(f"{self.url}/ui/", timeout=2).status_code in (200, 303)
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def studio():
    s = Server(["studio", "--stop-timeout", "30"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A page on the studio that remembers every URL it requested."""

    def __init__(self, browser, base_url: str) -> None:
        self.base = base_url
        self.requests: list[str] = []
        self.ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(60_000)
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, tab: str | None = None):
        self.page.goto(f"{self.base}/ui/")
        self.page.wait_for_selector("#main-tabs", state="visible")
        if tab:
            self.tab(tab)
        return self.page

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"ui_{name}.png"), full_page=True)

    def assert_offline(self) -> None:
        origin = re.compile(r"^(https?://(127\.0\.0\.1|localhost)(:\d+)?/|data:|blob:)")
        away = sorted({u for u in self.requests if not origin.match(u)})
        assert not away, f"the page requested URLs off this machine: {away}"
        assert any(u.startswith(self.base) for u in self.requests)

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def ui(browser, studio):
    page = Page(browser, studio.url)
    yield page
    page.close()


def video_plays(page, selector: str) -> tuple[float, float]:
    """Start the video (muted, as a user would) and return currentTime before and after a while."""
    page.wait_for_selector(f"{selector} video", state="attached")
    handle = page.locator(f"{selector} video").first
    handle.scroll_into_view_if_needed()
    page.wait_for_function("(v) => v.readyState >= 2 && v.duration > 0", arg=handle.element_handle())
    t0 = handle.evaluate("(v) => { v.muted = true; v.play(); return v.currentTime; }")
    # half a second, or half of what is left of a short clip (a 60-step episode lasts about a second)
    page.wait_for_function("([v, t]) => v.currentTime > t + Math.min(0.5, (v.duration - t) / 2)",
                           arg=[handle.element_handle(), t0], timeout=60_000)
    return t0, handle.evaluate("(v) => v.currentTime")


def plot_traces(page, selector: str) -> list[str]:
    page.wait_for_selector(f"{selector} .js-plotly-plot", state="attached")
    return page.locator(f"{selector} .js-plotly-plot").first.evaluate(
        "(gd) => (gd.data || []).map(t => t.name || '')")


def pick(page, elem_id: str, option: str) -> None:
    """Choose an option of a Gradio dropdown."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def type_code(page, elem_id: str, text: str) -> None:
    editor = page.locator(f"#{elem_id} .cm-content").first
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


@pytest.fixture(scope="module")
def pipeline(browser, studio):
    """A smoke pipeline launched from the Runs tab; samples of its progress in the table while it ran."""
    ui = Page(browser, studio.url)
    page = ui.open("Runs")
    page.locator("#launch-btn").click()
    # Gradio's own status overlay ("queue: 1/1") sits in the notice while the click is processed
    found = page.wait_for_function(
        "() => ((document.querySelector('#runs-notice') || {}).innerText || '').match(/Run #(\\d+) \\(\\w+\\) queued/)")
    run_id = int(found.json_value()[1])
    samples: list[tuple[float, str, int]] = []
    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    row = page.locator(f'#runs-table tr[data-run="{run_id}"]')
    while time.monotonic() < deadline:
        status = row.locator(".vr-badge").inner_text()
        pct = int(row.locator(".vr-pct").inner_text().rstrip("%"))
        samples.append((time.monotonic(), status, pct))
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1.0)
    yield {"id": run_id, "samples": samples, "ui": ui}
    ui.close()


def test_pipeline_launched_from_the_page_moves_and_its_run_page_shows_curves_and_videos(pipeline, studio):
    ui, page, run_id = pipeline["ui"], pipeline["ui"].page, pipeline["id"]
    samples = pipeline["samples"]
    assert samples[-1][1] == "succeeded", (samples[-1], StudioClient(studio.url).run(run_id).error, studio.output())
    seen = [pct for _, status, pct in samples if status == "running"]
    assert len(set(seen)) >= 3, f"progress did not move in the table: {seen}"
    assert seen == sorted(seen) and samples[-1][2] == 100

    # the run page opened on launch: header, live curves of every stage
    page.locator("#run-header").get_by_text("succeeded").wait_for()
    names = plot_traces(page, "#run-curves")
    assert any(n.endswith("loss") for n in names) and "rft/reward_mean" in names, names
    assert {"rl/train_success", "rl/heldout_success", "rl/mixed_fraction"} <= set(names), names
    titles = page.locator("#run-curves .js-plotly-plot").first.evaluate(
        "(gd) => (gd.layout.annotations || []).map(a => a.text)")
    assert {"world_model losses", "policy losses", "rft losses", "reward (mean ± std)", "KL", "σ"} <= set(titles)
    # RL in the world model: its held-out success in the simulator and in imagination, in one panel
    assert {"wm_rl/heldout_success", "wm_rl/heldout_imagined_success"} <= set(names), names
    assert "held-out success: real vs imagined" in titles, titles
    assert page.locator("#run-cancel").is_disabled()
    ui.shot("runs")

    # results: base vs RFT success chart and the side-by-side videos (base | RFT) play
    page.get_by_role("tab", name="Results & videos").click()
    assert set(plot_traces(page, "#run-success")) == {"base", "rft", "rl", "wm_rl"}
    assert "Table 1" in page.locator("#run-results").inner_text()
    t0, t1 = video_plays(page, "#run-video")
    assert t1 > t0
    ui.shot("run_results")

    # logs and artifacts of the run, downloadable
    page.get_by_role("tab", name="Logs").click()
    assert "artifact checkpoint" in page.locator("#run-logs textarea").input_value()
    page.get_by_role("tab", name="Artifacts").click()
    assert "results.md" in page.locator("#run-artifacts").inner_text()
    page.locator("#run-artifact-pick input").first.click()
    page.get_by_role("option").filter(has_text="results.md (table").first.click()
    page.locator("#run-artifact-fetch").click()
    link = page.locator('#run-artifact-file a[download="results.md"]')
    link.wait_for()
    assert "Table 1" in page.request.get(link.get_attribute("href")).text()
    ui.assert_offline()


def test_pickers_and_datasets_follow_the_pipeline_without_a_refresh(pipeline, studio):
    """The page that launched the pipeline (opened before any checkpoint existed) offers its checkpoints in the
    Playground and Compare as soon as those tabs open, and lists the datasets it collected with their run."""
    ui, page, run_id = pipeline["ui"], pipeline["ui"].page, pipeline["id"]
    ui.tab("Playground")
    base = page.locator("#play-base input").first
    page.wait_for_function("(el) => el.value.startsWith('policy/base #')", arg=base.element_handle())
    assert f"· run {run_id}" in base.input_value()
    assert page.locator("#play-tuned input").first.input_value().startswith("rft #")
    assert page.locator("#play-wm input").first.input_value().startswith(("align #", "world_model #"))
    ui.tab("Compare")
    b = page.locator("#cmp-b input").first
    page.wait_for_function("(el) => el.value.startsWith('rft #')", arg=b.element_handle())
    assert page.locator("#cmp-a input").first.input_value().startswith("policy/base #")
    ui.tab("Datasets")
    row = page.locator("#ds-table tr[data-dataset]", has_text=f"run{run_id}-collect-clean")
    row.wait_for()
    assert f"run #{run_id}" in row.inner_text() and "pipeline" in row.inner_text()
    listed = {d.name for d in StudioClient(studio.url).datasets(limit=100).items}
    assert {f"run{run_id}-collect-clean", f"run{run_id}-collect-noisy"} <= listed, listed
    ui.shot("datasets_lineage")
    ui.tab("Runs")
    ui.assert_offline()


def test_docs_render_the_operations_offline(ui):
    page = ui.page
    page.goto(f"{ui.base}/docs")
    page.locator(".opblock").first.wait_for()
    text = page.locator("#swagger-ui").inner_text()
    assert "/api/v1/runs" in text and "/api/v1/datasets" in text
    assert page.locator(".opblock").count() >= 20
    page.goto(f"{ui.base}/redoc")
    page.get_by_text("/api/v1/runs").first.wait_for()
    ui.assert_offline()


def test_out_of_range_values_are_refused_and_nothing_is_queued(ui, studio):
    api = StudioClient(studio.url)
    before = api.runs(kind="collect", limit=1, count=True).total
    page = ui.open("Datasets")
    page.locator("#ds-episodes input[type=number]").first.fill("-5")
    page.locator("#ds-episodes input[type=number]").first.press("Tab")
    page.locator("#ds-collect").click()
    err = page.locator("#ds-notice .vr-error")
    err.wait_for()
    assert "Successful episodes per task must be between 1 and 1000; got -5" in err.inner_text()
    assert "Nothing was launched" in err.inner_text()
    page.wait_for_timeout(1500)
    assert api.runs(kind="collect", limit=1, count=True).total == before == 0
    assert page.locator(".toast-body").count() == 0  # no Gradio error pills
    ui.shot("refused")
    ui.assert_offline()


def test_a_fresh_page_lists_the_run_and_opens_it_by_click(pipeline, ui):
    page = ui.open("Runs")
    row = page.locator(f'#runs-table tr[data-run="{pipeline["id"]}"]')
    assert "pipeline" in row.inner_text() and "100%" in row.inner_text()
    row.click()
    page.locator("#run-page").wait_for(state="visible")
    assert f"Run #{pipeline['id']} pipeline" in page.locator("#run-header").inner_text()
    assert len(plot_traces(page, "#run-curves")) >= 4
    # the explorer: any logged series, found by typing part of its name, one panel (and legend) each
    page.get_by_role("tab", name="Explore metrics").click()
    box = page.locator("#run-explore-series input").first
    box.click()
    assert page.get_by_role("option").count() >= 25  # every series the pipeline logged is offered
    box.fill("rft/grad_norm")
    page.get_by_role("option", name="rft/grad_norm", exact=True).click()
    page.keyboard.press("Escape")
    page.wait_for_function("() => { const gd = document.querySelector('#run-explore .js-plotly-plot'); "
                           "return gd && (gd.layout.annotations || []).some(a => a.text === 'rft/grad_norm'); }")
    traces = plot_traces(page, "#run-explore")
    assert traces == [f"#{pipeline['id']} (this run)"], traces
    ui.shot("explore")
    ui.assert_offline()


def test_compare_two_policies_chart_and_videos_failures_first(pipeline, ui, studio):
    page = ui.open("Compare")
    # the newest base and RFT checkpoints (the pipeline's) are picked by default
    assert page.locator("#cmp-a input").first.input_value().startswith("policy/base #")
    assert page.locator("#cmp-b input").first.input_value().startswith("rft #")
    for name in ("object:major", "goal:minor", "goal:major", "robot:minor", "robot:major", "combined:minor",
                 "combined:major"):
        page.locator("#cmp-perts").get_by_label(name, exact=True).uncheck()
    set_number(page, "cmp-episodes", 2)
    set_number(page, "cmp-steps", 60)
    set_number(page, "cmp-videos", 2)
    # the estimate before launching: 2 policies × 2 tasks × 2 perturbations × 2 episodes
    page.locator("#cmp-estimate").get_by_text("= 16 episodes").wait_for()
    page.locator("#cmp-go").click()
    page.locator("#cmp-status").get_by_text("running").or_(page.locator("#cmp-status").get_by_text("queued")) \
        .first.wait_for()
    page.locator("#cmp-chart .js-plotly-plot").or_(page.locator("#cmp-notice .vr-error")).first.wait_for(
        timeout=900_000)
    runs = [(r.id, r.status, r.progress, r.error) for r in StudioClient(studio.url).runs(kind="evaluate").items]
    assert "error" not in (page.locator("#cmp-notice").inner_text() or "").lower(), runs
    table = page.locator("#cmp-table").inner_text()
    assert "same seeded start states" in table and "none" in table and "object:minor" in table
    assert f"· run {pipeline['id']}" in table and "policy/base #" in table and "rft #" in table
    traces = plot_traces(page, "#cmp-chart")
    assert len(traces) == 2
    bars = page.locator("#cmp-chart .js-plotly-plot").first.evaluate(
        "(gd) => gd.data.map(t => [t.x, t.error_y.array, t.error_y.arrayminus])")
    for x, hi, lo in bars:
        assert x == ["none", "object:minor"] and all(v >= 0 for v in hi + lo)
    captions = [page.locator(f"#cmp-caption-{k}").inner_text() for k in range(6)]
    shown = [c for c in captions if c.strip()]
    assert len(shown) == 6, captions  # 2 tasks × 2 perturbations × 2 videos, capped at 6
    failures = [c.count("✗") for c in shown]
    assert failures == sorted(failures, reverse=True), shown
    t0, t1 = video_plays(page, "#cmp-video-0")
    assert t1 > t0
    ui.shot("compare")
    ui.assert_offline()


def test_the_run_url_opens_an_evaluation_with_its_episode_table(pipeline, ui, studio):
    """/ui/?run=<id> opens that run's page; an evaluation's episodes are a table that filters and plays."""
    run = StudioClient(studio.url).runs(kind="evaluate", status="succeeded", limit=1).items[0]
    page = ui.page
    page.goto(f"{ui.base}/ui/?run={run.id}")
    page.locator("#run-page").wait_for(state="visible")
    assert f"Run #{run.id} evaluate" in page.locator("#run-header").inner_text()
    assert page.locator("#run-header a.vr-permalink").get_attribute("href") == f"?run={run.id}"
    page.get_by_role("tab", name="Results & videos").click()
    legend = plot_traces(page, "#run-success")  # the one name of each policy, as the pickers show it
    assert len(legend) == 2 and all(re.match(r"^(policy/base|rft) #\d+ · run \d+$", n) for n in legend), legend
    table = page.locator("#run-episodes")
    table.get_by_text("8 of 8 episodes").wait_for()  # 2 tasks × 2 perturbations × 2 starts
    assert table.locator("tbody tr").count() == 8
    pick(page, "run-ep-pert", "object:minor")
    table.get_by_text("4 of 8 episodes").wait_for()
    assert all("object:minor" in t for t in table.locator("tbody tr").all_inner_texts())
    pick(page, "run-ep-pert", "all")
    table.get_by_text("8 of 8 episodes").wait_for()
    page.locator("#run-episodes tr[data-episode]").first.click()
    t0, t1 = video_plays(page, "#run-video")
    assert t1 > t0
    ui.shot("run_episodes")
    page.get_by_role("tab", name="Parameters").click()
    page.locator("#run-params").get_by_text("videos_per_cell").first.wait_for()
    ui.shot("run_params")
    ui.assert_offline()


def test_datasets_collect_browse_preview_and_bad_upload(ui, tmp_path):
    page = ui.open("Datasets")
    set_number(page, "ds-episodes", 1)
    page.locator("#ds-name input, #ds-name textarea").first.fill("ui-collected")
    page.locator("#ds-collect").click()
    page.locator("#ds-notice .vr-ok").wait_for(timeout=300_000)
    assert "ui-collected" in page.locator("#ds-notice").inner_text()
    page.locator("#ds-table tr[data-dataset]", has_text="ui-collected").click()
    page.locator("#ds-browser").wait_for(state="visible")
    rows = page.locator("#ds-episodes-table tr[data-episode]")
    assert rows.count() == 2  # smoke: two tasks × one episode
    rows.nth(1).click()
    page.locator("#ds-instruction").get_by_text("Episode 1").wait_for()
    instruction = page.locator("#ds-instruction blockquote").inner_text()
    assert instruction.strip("“” ") in rows.nth(1).inner_text()
    t0, t1 = video_plays(page, "#ds-preview")
    assert t1 > t0
    ui.shot("datasets")

    bad = tmp_path / "notes.h5"
    bad.write_text("these are notes, not HDF5")
    page.locator("#ds-upload-file input[type=file]").set_input_files(str(bad))
    page.locator("#ds-upload-name input, #ds-upload-name textarea").first.fill("bad-upload")
    page.locator("#ds-upload").click()
    err = page.locator("#ds-notice .vr-error")
    err.wait_for()
    assert "not an HDF5 file" in err.inner_text() and "HTTP 422" in err.inner_text()
    assert "Traceback" not in page.content()
    ui.assert_offline()


def test_a_run_finishing_refreshes_the_open_tab_without_a_click(ui, studio):
    """A page left open on the Datasets tab lists a dataset that a run (started elsewhere) wrote, once the run
    finishes: the page watches for finished runs and refreshes every tab's lists and pickers."""
    page = ui.open("Datasets")
    c = StudioClient(studio.url)
    run = c.collect(dataset_name="made-while-watching", tasks="reach-v3", episodes=1, max_steps=60)
    assert c.wait(run.id, timeout=300).status == "succeeded"
    row = page.locator("#ds-table tr[data-dataset]", has_text="made-while-watching")
    row.wait_for(timeout=30_000)  # a few of the page's 5 s polls, no click
    assert f"run #{run.id}" in row.inner_text()
    ui.assert_offline()


def test_launch_errors_are_readable_messages(ui):
    page = ui.open("Runs")
    pick(page, "launch-kind", "Collect expert episodes (a dataset)")
    page.locator("#launch-help").get_by_text("Successful episodes per task").wait_for()
    type_code(page, "launch-params", '{"tasks": "smoke", "episodes": 0}')
    page.locator("#launch-btn").click()
    err = page.locator("#runs-notice .vr-error")
    err.wait_for()
    assert "params.episodes: Input should be greater than or equal to 1" in err.inner_text()
    type_code(page, "launch-params", '{"tasks": "no-such-task", "episodes": 1}')
    page.locator("#launch-btn").click()
    page.locator("#runs-notice .vr-error", has_text="unknown task 'no-such-task'").wait_for()
    type_code(page, "launch-params", '{"tasks": "smoke", ')
    page.locator("#launch-btn").click()
    page.locator("#runs-notice .vr-error", has_text="Parameters are not valid JSON").wait_for()
    assert "Traceback" not in page.content()
    ui.assert_offline()


def test_cancel_and_resume_from_the_run_page(ui, studio):
    page = ui.open("Runs")
    pick(page, "launch-kind", "Collect expert episodes (a dataset)")
    page.locator("#launch-help").get_by_text("Successful episodes per task").wait_for()
    type_code(page, "launch-params", '{"tasks": "smoke", "episodes": 500}')
    page.locator("#launch-btn").click()
    # Gradio's own status overlay ("queue: 1/1") sits in the notice while the click is processed
    found = page.wait_for_function(
        "() => ((document.querySelector('#runs-notice') || {}).innerText || '').match(/Run #(\\d+) \\(\\w+\\) queued/)")
    run_id = int(found.json_value()[1])
    note = page.locator("#runs-notice")
    header = page.locator("#run-header")
    header.locator(".vr-badge", has_text="running").wait_for(timeout=120_000)
    page.locator("#run-cancel").click()
    note.get_by_text("cancel requested").wait_for()
    header.locator(".vr-badge", has_text="cancelled").wait_for(timeout=120_000)
    assert page.locator("#run-resume").is_enabled() and page.locator("#run-cancel").is_disabled()
    page.locator("#run-resume").click()
    note.get_by_text("queued again").wait_for()
    header.locator(".vr-badge", has_text="running").wait_for(timeout=120_000)
    assert "attempt 2" in header.inner_text()
    StudioClient(studio.url).cancel(run_id)  # leave the studio idle for the next tests
    header.locator(".vr-badge", has_text="cancelled").wait_for(timeout=120_000)
    ui.assert_offline()


def test_playground_grid_of_imagined_and_real_rollouts(pipeline, ui):
    page = ui.open("Playground")
    # the newest world model: the pipeline's aligned one (its world-model RL path), else its first
    assert page.locator("#play-wm input").first.input_value().startswith(("align #", "world_model #"))
    assert page.locator("#play-base input").first.input_value().startswith("policy/base #")
    assert page.locator("#play-tuned input").first.input_value().startswith("rft #")
    page.locator("#play-instruction textarea").fill("open the drawer, slowly")
    set_number(page, "play-ox", 2)
    set_number(page, "play-rz", -3)
    set_number(page, "play-horizon", 30)
    page.locator("#play-go").click()
    page.locator("#play-status .vr-progress").wait_for()
    page.locator("#play-status .vr-badge", has_text="succeeded").wait_for(timeout=600_000)
    assert not page.locator("#play-notice .vr-error").count(), page.locator("#play-notice").inner_text()
    for pol in ("base", "rft"):  # the captions arrive with the videos, a moment after the status badge
        page.locator(f"#play-{pol}-world_model-caption").get_by_text("verified reward").wait_for(timeout=60_000)
        page.locator(f"#play-{pol}-simulator-caption").get_by_text("simulator:").wait_for(timeout=60_000)
    # one player for the four clips: the scrubber puts every clip at the same step (a shorter clip holds its
    # last frame), and playing keeps them on one clock
    page.locator("#player-scrub").wait_for()
    for sel in ("#play-base-world_model", "#play-base-simulator", "#play-rft-world_model", "#play-rft-simulator"):
        page.wait_for_function("(v) => v && v.readyState >= 1 && v.duration > 0",
                               arg=page.locator(f"{sel} video").first.element_handle())
    longest = int(page.locator("#player-scrub").get_attribute("max"))
    assert longest >= 30  # the simulator's clip: more steps than the 30 imagined ones
    page.locator("#player-scrub").evaluate("(r) => { r.value = '24'; r.dispatchEvent(new Event('input', "
                                           "{bubbles: true})); }")
    page.locator("#player-step").get_by_text(f"step 24 / {longest}").wait_for()
    page.wait_for_timeout(400)
    clips = page.evaluate("() => [...document.querySelectorAll('#play-cells video')].map(v => "
                          "[v.currentTime, v.duration])")
    assert len(clips) == 4
    for t, dur in clips:
        assert t == pytest.approx(min(24 / 20, dur - 0.02), abs=0.06), clips
    page.locator("#player-play").click()
    page.wait_for_timeout(1200)
    clips = page.evaluate("() => [...document.querySelectorAll('#play-cells video')].map(v => "
                          "[v.currentTime, v.duration, v.paused])")
    now = page.evaluate("() => window.vrPlayer.time()")
    page.locator("#player-play").click()  # pause
    assert now > 24 / 20 + 0.5, now
    for t, dur, _ in clips:  # every clip at the player's time, or at its end
        assert abs(t - min(now, dur - 0.02)) < 0.35, (now, clips)
    ui.shot("playground")
    ui.assert_offline()


def test_every_tab_loads_offline(ui):
    page = ui.open()
    for tab in ("Playground", "Compare", "Datasets", "Runs"):
        ui.tab(tab)
        page.wait_for_timeout(500)
        ui.shot(f"tab_{tab.lower()}")
    assert page.locator("#runs-table table").count() == 1
    ui.assert_offline()


def test_first_paint_under_a_second_and_the_page_is_gzipped(ui, studio):
    """First paint of /ui (median of 3 fresh pages) and the bytes on the wire with and without gzip; the
    figures go to test-artifacts/ui/paint.json (docs/results.md)."""
    import json

    import httpx

    paints, wire, decoded = [], [], []
    for _ in range(3):
        ctx = ui.ctx.browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.goto(f"{ui.base}/ui/")
        page.wait_for_selector("#main-tabs", state="visible")
        paints.append(page.evaluate("() => performance.getEntriesByName('first-contentful-paint')[0].startTime"))
        sizes = page.evaluate("() => [performance.getEntriesByType('navigation')[0], "
                              "...performance.getEntriesByType('resource')].map(e => [e.transferSize, "
                              "e.decodedBodySize])")
        wire.append(sum(t for t, _ in sizes))
        decoded.append(sum(d for _, d in sizes))
        ctx.close()
    html_plain = len(httpx.get(f"{ui.base}/ui/", headers={"Accept-Encoding": "identity"}).content)
    zipped = httpx.get(f"{ui.base}/ui/", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers.get("content-encoding") == "gzip"
    html_gzip = int(zipped.headers["content-length"])
    paints.sort()
    out = {"first_contentful_paint_ms": paints, "median_ms": paints[1], "html_bytes": html_plain,
           "html_gzip_bytes": html_gzip, "page_decoded_bytes": decoded[-1], "page_transfer_bytes": wire[-1]}
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "paint.json").write_text(json.dumps(out, indent=1))
    assert paints[1] < 1000, out
    assert html_gzip < html_plain / 3, out


def test_the_page_asks_for_the_token_when_the_api_has_one(browser):
    api = Server(["api"], {"VLARFT_API_TOKEN": "s3cret-token", "VLARFT_BROKER_URL": "redis://127.0.0.1:1/0"})
    page = Page(browser, api.url)
    try:
        p = page.page
        p.goto(f"{api.url}/ui/")  # the gate sends it to the sign-in page
        p.locator("#login").wait_for(state="visible")
        assert p.url == f"{api.url}/login" and not p.locator("#main-tabs").count()
        p.locator("#token-input input").fill("wrong")
        p.locator("#token-submit").click()
        p.locator("#login-notice .vr-error", has_text="wrong bearer token").wait_for()
        p.locator("#token-input input").fill("s3cret-token")
        p.locator("#token-submit").click()
        p.locator("#main-tabs").wait_for(state="visible")
        p.locator("#runs-table").get_by_text("No runs yet").wait_for()
        assert not p.locator("#login").is_visible()
        cookie = next(c for c in page.ctx.cookies() if c["name"] == "vlarft_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and "s3cret" not in cookie["value"]
        assert p.evaluate("() => document.cookie") == ""  # out of the page's scripts' reach
        p.locator("#sign-out").click()
        p.locator("#login").wait_for(state="visible")
        p.goto(f"{api.url}/ui/")
        p.locator("#login").wait_for(state="visible")  # signed out: the page is closed again
        page.assert_offline()
    finally:
        page.close()
        api.stop()
