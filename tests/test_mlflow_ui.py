"""The comparison as a user sees it: MLflow's own UI over a real sweep's store, in Chromium.

Starts ``mlflow server`` on 127.0.0.1 over the store of the shared 3-rule sweep
(``tests/conftest.py``), drives Debian's Chromium with Playwright for Python, and checks
the parent run page shows the summary table and figure and the experiment page shows the
three children under the parent; then counts a user's clicks from the experiment's run list:
to the per-rule table with every row above the fold (at most 2), to angle against depth in
MLflow's own chart view and in the report (at most 3), reads every rule's final accuracy
from the report, and checks that searching ``val_acc`` in the chart view finds the
children's chart only. Screenshots go to the test's folder, or to ``BIOPROP_SCREENSHOTS``
when set (how ``docs/mlflow-*.png`` are made).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIGURE_WIDTH = 1500  # sweep_summary.png: 15 in at 100 dpi


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(rule_sweep, tmp_path):
    """``mlflow server`` over the sweep's sqlite store on a free 127.0.0.1 port; its URL."""
    result, root = rule_sweep
    port = _free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", "1", "--backend-store-uri", result["tracking_uri"]],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "mlflow-server.log").read_text()[-3000:])
            time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, 15)  # the server and the uvicorn worker it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(timeout=30)
        log.close()


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    try:
        pw = sync_playwright().start()
    except Exception as exc:  # e.g. an asyncio loop left running in this thread by a test
        pytest.skip(f"Playwright could not start here: {exc}")
    try:
        try:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Exception as exc:
            pytest.skip(f"{CHROMIUM} could not be launched: {exc}")
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(120_000)  # the UI's first load is slow on a busy machine
            yield page
        finally:
            browser.close()
    finally:
        pw.stop()


def _shot(page, tmp_path: Path, name: str, *, close: bool = True) -> None:
    out = Path(os.environ.get("BIOPROP_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    button = page.get_by_role("button", name="Close")  # MLflow's assistant panel
    if close and button.count():
        button.first.click()
    page.screenshot(path=str(out / f"mlflow-{name}.png"))


def test_parent_page_shows_summary_and_experiment_page_the_children(
    page, rule_sweep, mlflow_server, tmp_path
):  # page first: without a browser it skips before the MLflow server is started
    result, _ = rule_sweep
    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["parent_run_id"])
    experiment = parent.info.experiment_id
    run_url = f"{mlflow_server}/#/experiments/{experiment}/runs/{parent.info.run_id}"
    children = {c["rule"]: c["run_id"] for c in result["children"]}

    # the parent's overview: the note renders as a table, one row per setting
    page.goto(run_url, wait_until="domcontentloaded")
    page.get_by_text("3 settings compared").first.wait_for()
    show_more = page.get_by_text("Show more", exact=True)
    if show_more.count():
        show_more.first.click()
    description = page.locator("table", has_text="final val_acc").first
    description.wait_for()
    text = description.inner_text()
    for rule in ("bp", "fa", "ss"):
        final = client.get_run(children[rule]).data.metrics["val_acc"]
        assert rule in text and f"{final:.3f}" in text, text
    _shot(page, tmp_path, "parent-overview")

    # the parent's artifacts: the summary figure, loaded at its full width
    page.goto(f"{run_url}/artifacts", wait_until="domcontentloaded")
    page.get_by_text("sweep_summary.png", exact=True).first.click()
    page.wait_for_function(
        f"[...document.images].some(i => i.complete && i.naturalWidth === {FIGURE_WIDTH})"
    )
    _shot(page, tmp_path, "sweep-summary")

    # the experiment page in "Model training" mode: the children under the expanded parent
    page.get_by_text("Model training", exact=True).first.click()
    page.goto(f"{mlflow_server}/#/experiments/{experiment}/runs", wait_until="domcontentloaded")
    row = page.locator("[role=row]", has_text=parent.info.run_name).first
    row.wait_for()
    names = [f"{parent.info.run_name} {rule}" for rule in ("bp", "fa", "ss")]
    assert page.get_by_text(names[0], exact=True).count() == 0  # collapsed at first
    row.locator("button").first.click()  # the expander left of the run name
    for name in names:
        page.get_by_text(name, exact=True).first.wait_for()
    _shot(page, tmp_path, "experiment-runs")


class Clicks:
    """A user's clicks, counted (typing is not a click; focusing a search box is)."""

    def __init__(self) -> None:
        self.count = 0

    def click(self, locator) -> None:
        locator.click()
        self.count += 1


def _runs_page(page, server: str, experiment: str) -> None:
    """The experiment's run list in "Model training" mode (README step 1), assistant closed."""
    page.goto(f"{server}/#/experiments/{experiment}/runs", wait_until="domcontentloaded")
    mode = page.get_by_text("Model training", exact=True)
    mode.first.wait_for()
    mode.first.click()
    page.goto(f"{server}/#/experiments/{experiment}/runs", wait_until="domcontentloaded")
    page.locator("[role=row]", has_text="tiny").first.wait_for()
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def _chart_titles(page) -> list[str]:
    return page.evaluate(
        "[...document.querySelectorAll('[role=heading], h1, h2, h3, h4')]"
        ".map(e => e.textContent.trim())"
        ".filter(t => t && t !== 'Runs' && !t.startsWith('No charts'))"
    )


def test_the_comparison_in_few_clicks(page, rule_sweep, mlflow_server, tmp_path):
    result, _ = rule_sweep
    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["parent_run_id"])
    experiment = parent.info.experiment_id
    finals = {
        c["rule"]: client.get_run(c["run_id"]).data.metrics["val_acc"] for c in result["children"]
    }

    # run list -> the per-rule table, every row above MLflow's fold ("Show more" unneeded)
    _runs_page(page, mlflow_server, experiment)
    clicks = Clicks()
    clicks.click(page.get_by_role("link", name=parent.info.run_name, exact=True).first)
    table = page.locator("table", has_text="final val_acc").first
    table.wait_for()
    rows = page.evaluate(
        """t => {
            let box = t; while (box && getComputedStyle(box).maxHeight === 'none') box = box.parentElement;
            const fold = box ? box.getBoundingClientRect().bottom : Infinity;
            return [...t.querySelectorAll('tr')].slice(1).map(r => ({
                cells: [...r.cells].map(c => c.textContent.trim()),
                visible: r.getBoundingClientRect().bottom <= fold + 0.5,
            }));
        }""",
        table.element_handle(),
    )
    assert clicks.count <= 2
    assert sorted(r["cells"][0] for r in rows) == sorted(finals) and all(r["visible"] for r in rows)
    for row in rows:  # setting, final val_acc, best val_acc, final angle, epochs, status
        rule, final, _, _, epochs, status = row["cells"]
        assert (final, epochs, status) == (f"{finals[rule]:.3f}", "3", "FINISHED"), row
    _shot(page, tmp_path, "parent-overview")

    # ... one more click: the report (a new tab), angle against depth, every final accuracy
    with page.context.expect_page() as opened:
        clicks.click(page.get_by_role("link", name="report", exact=True).first)
    report = opened.value
    report.set_default_timeout(120_000)
    report.set_viewport_size({"width": 1500, "height": 1000})
    frame = report.frame_locator("iframe").first
    frame.locator("svg#depth circle").first.wait_for()
    assert clicks.count <= 3
    for rule, final in finals.items():
        cell = frame.locator(f'tr[data-setting="{rule}"] td[data-key="final_val_acc"]')
        assert float(cell.get_attribute("data-value")) == final  # as measured
        assert cell.inner_text() == f"{final:.4g}"
    settings = frame.locator("#settings tbody tr")
    header = frame.locator('#settings th[data-key="final_val_acc"]')
    header.click()  # sortable: ascending, then descending
    order = "rs => rs.map(r => r.dataset.setting)"
    assert [finals[r] for r in settings.evaluate_all(order)] == sorted(finals.values())
    header.click()
    descending = sorted(finals.values(), reverse=True)
    assert [finals[r] for r in settings.evaluate_all(order)] == descending
    depth = frame.locator("svg#depth g.series")
    assert sorted(depth.evaluate_all("gs => gs.map(g => g.dataset.setting)")) == sorted(finals)
    _shot(report, tmp_path, "report")
    report.close()

    # run list -> chart view -> the children -> angle_by_depth: MLflow's own angle vs depth
    _runs_page(page, mlflow_server, experiment)
    clicks = Clicks()
    clicks.click(page.locator("label:has(input[value=CHART])"))
    clicks.click(
        page.locator("[role=row]", has_text=parent.info.run_name).first.locator("button").first
    )
    search = page.get_by_placeholder("Search metric charts")
    clicks.click(search)
    search.fill("angle_by_depth")
    page.get_by_text("tiny ss (angle_by_depth)").first.wait_for()
    assert clicks.count <= 3 and _chart_titles(page) == ["angle_by_depth"]
    for rule in finals:
        page.get_by_text(f"tiny {rule} (angle_by_depth)").first.wait_for()
    page.wait_for_timeout(1000)  # the lines are drawn after the legend
    _shot(page, tmp_path, "angle-by-depth", close=False)  # "Close" would clear the search

    # searching val_acc: the children's val_acc chart only, no chart of the parent's numbers
    search.fill("val_acc")
    page.get_by_text("tiny ss (val_acc)").first.wait_for()
    assert _chart_titles(page) == ["val_acc"]
    assert client.get_run(parent.info.run_id).data.metrics == {}
