"""What a user sees: a finished sweep's experiment page in the MLflow UI, in headless Chromium.

A quickstart smoke sweep logs to an `mlflow server` started here; the test opens the experiment
page, expands the sweep's parent run, checks that the sweep and every trial run show the
training data in the Dataset column (name and digest, the digest being the content hash), shows
the `val_de00_mean` column (MLflow 3 hides metric columns by default) and checks that every
trial run is listed with the value MLflow's REST API holds for it; then it opens the parent
run's artifacts and previews the parameter-importance plot. The MLflow UI is a React app, so
Selenium drives Chromium and waits for the rows. Screenshots are kept in tests/artifacts/ (and
the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.servers import get_json, mlflow_server, post_json

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
SWEEP = "ui-sweep"


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless Chromium missing: apt-get install -y chromium chromium-driver "
                    "(.ci/run installs them)")
    pytest.importorskip("selenium", reason="pip install selenium (test dependency)")
    root = tmp_path_factory.mktemp("ui")
    with mlflow_server(root) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
        env["MLFLOW_TRACKING_URI"] = url
        out = subprocess.run(
            [sys.executable, "-m", "raysweep.search", "--space", "quickstart", "--smoke-test",
             "--name", SWEEP, "--storage", str(root / "storage")],
            cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
        exp = get_json(f"{url}/api/2.0/mlflow/experiments/get-by-name?"
                       "experiment_name=quickstart")["experiment"]
        runs = post_json(f"{url}/api/2.0/mlflow/runs/search",
                         {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]
        yield url, exp["experiment_id"], runs, root


def tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def dataset_of(run: dict) -> tuple[str, str]:
    """(name, digest) of the run's one dataset input, as MLflow's REST API holds it."""
    inputs = run.get("inputs", {}).get("dataset_inputs", [])
    assert len(inputs) == 1, run["info"]["run_name"]
    return inputs[0]["dataset"]["name"], inputs[0]["dataset"]["digest"]


def row(run: dict) -> str:
    return f"//div[@role='row'][@row-id='{run['info']['run_id']}']"


def latest(run: dict, key: str) -> float | None:
    return next((m["value"] for m in run["data"].get("metrics", []) if m["key"] == key), None)


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1800,1000"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def test_experiment_page_shows_trials_and_their_val_de00_mean(finished_sweep):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, experiment_id, runs, root = finished_sweep
    parent = next(r for r in runs if tags(r).get("raysweep.sweep_name") == SWEEP
                  and "mlflow.parentRunId" not in tags(r))
    children = [r for r in runs if tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(children) >= 2 and all(latest(c, "val_de00_mean") is not None for c in children)

    driver = browser(root / "chromium-profile")
    try:
        wait = WebDriverWait(driver, 90)
        driver.get(f"{url}/#/experiments/{experiment_id}/runs")
        parent_row = f"//div[@role='row'][@row-id='{parent['info']['run_id']}']"
        wait.until(ec.presence_of_element_located(
            (By.XPATH, f"{parent_row}//a[normalize-space()='{SWEEP}']")))
        # The trials are nested under the sweep's parent run: expand it.
        driver.find_element(
            By.XPATH, f"{parent_row}//button[contains(@data-component-id,'runnamecell')]").click()
        for child in children:
            wait.until(ec.visibility_of_element_located((By.XPATH, (
                f"//div[@role='row'][@row-id='{child['info']['run_id']}']"
                f"//a[normalize-space()='{child['info']['run_name']}']"))))
        # The Dataset column: the sweep and every trial trained on the one dataset, named by
        # its card and digested by its content hash (what "runs on this dataset" filters on).
        name, digest = dataset_of(parent)
        assert digest == tags(parent)["raysweep.dataset_hash"]
        assert all(dataset_of(child) == (name, digest) for child in children)
        for run in (parent, *children):
            cell = f"{row(run)}//div[@role='gridcell'][@col-id='attributes.`Dataset`']"
            wait.until(lambda d, cell=cell: f"{name} ({digest})" in d.find_element(
                By.XPATH, cell).text)
        # Metric columns are hidden until chosen in the Columns menu.
        driver.find_element(By.XPATH, "//button[normalize-space()='Columns']").click()
        wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//*[normalize-space(text())='val_de00_mean']"))).click()
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        for child in children:
            cell = (f"//div[@role='row'][@row-id='{child['info']['run_id']}']"
                    "//div[@role='gridcell'][@col-id='metrics.`val_de00_mean`']")
            wait.until(lambda d, cell=cell: d.find_element(By.XPATH, cell).text.strip() != "")
            shown = float(driver.find_element(By.XPATH, cell).text.strip())
            expected = latest(child, "val_de00_mean")
            assert shown == pytest.approx(expected, rel=1e-3, abs=1e-3), child["info"]["run_name"]
        # For the person reading the screenshot: the metric column in view, the side panel shut.
        driver.execute_script("arguments[0].scrollIntoView({block: 'nearest', inline: 'center'})",
                              driver.find_element(By.XPATH, cell))
        for close in driver.find_elements(By.XPATH, (
                "//*[normalize-space(text())='MLflow Assistant']/ancestor::*[.//button][1]"
                "//button[last()]")):
            close.click()
        shot = root / "mlflow_experiment_page.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)


def test_parent_run_shows_the_parameter_importance_plot(finished_sweep):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, experiment_id, runs, root = finished_sweep
    parent = next(r for r in runs if tags(r).get("raysweep.sweep_name") == SWEEP
                  and "mlflow.parentRunId" not in tags(r))
    files = get_json(f"{url}/api/2.0/mlflow/artifacts/list?run_id={parent['info']['run_id']}"
                     "&path=importance")["files"]
    assert {f["path"] for f in files} >= {"importance/importance.csv", "importance/importance.png",
                                          "importance/parallel_coordinates.png"}
    driver = browser(root / "chromium-profile-artifacts")
    try:
        wait = WebDriverWait(driver, 90)
        driver.get(f"{url}/#/experiments/{experiment_id}/runs/{parent['info']['run_id']}"
                   "/artifacts")
        node = "//div[@data-testid='artifact-tree-node'][@artifact-name='{}']"
        wait.until(ec.element_to_be_clickable((By.XPATH, node.format("importance")))).click()
        wait.until(ec.element_to_be_clickable((By.XPATH, node.format("importance.png")))).click()
        wait.until(ec.presence_of_element_located(
            (By.XPATH, "//*[normalize-space(text())='importance/importance.png']")))
        # the preview is an <img> whose picture has loaded (a blob of the PNG)
        wait.until(lambda d: d.execute_script(
            "return [...document.images].some(i => i.src.startsWith('blob:') && i.complete "
            "&& i.naturalWidth > 200)"))
        shot = root / "mlflow_parameter_importance.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
