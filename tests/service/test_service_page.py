"""The live job page (GET /jobs) in headless Chromium, driven by playwright with the apt
``chromium`` (no playwright browser download). Skipped without them, except under CI, which
installs both (``scripts/setup-system.sh``, the test extra)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil

import pytest

from .test_service_api import create
from .test_service_compile import _create

pytestmark = pytest.mark.service


def _missing(what: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the page test: {what} is missing")
    pytest.skip(f"needs {what} for the page test (CI installs it)")


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip, in the test extra)")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _missing("chromium (apt)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def _cell(page, name: str, column: int) -> str:
    return page.inner_text(f"tr[data-name='{name}'] td:nth-child({column})")


def test_jobs_page_lists_jobs_live(queue_server, keys, browser):
    client = queue_server.client(keys["b"])
    create(client, "page-first")
    page = browser.new_page()
    page.goto(f"{queue_server.url}/jobs#token={keys['b'].bearer_token}")
    row = page.wait_for_selector("tr[data-name='page-first']", timeout=15000)
    cells = [c.inner_text() for c in row.query_selector_all("td")]
    assert cells[:3] == ["page-first", "STARTING", "ml_c5"]
    assert cells[4:] == ["", ""]  # no duration before it runs, no artifact link
    assert "#token" not in page.url  # the token leaves the address bar
    create(client, "page-second", platform={"Os": "LINUX", "Arch": "ARM64"})
    row = page.wait_for_selector("tr[data-name='page-second']", timeout=10000)
    assert row.query_selector_all("td")[2].inner_text() == "LINUX/ARM64"
    client.stop_compilation_job(CompilationJobName="page-first")
    page.wait_for_function("document.querySelector(\"tr[data-name='page-first'] "
                           "td:nth-child(2)\").textContent === 'STOPPED'", timeout=10000)
    names = page.eval_on_selector_all("tr[data-name]", "rs => rs.map(r => r.dataset.name)")
    assert "secret-job" not in names  # only the caller's tenant
    page.goto(f"{queue_server.url}/jobs")  # the token is remembered
    page.wait_for_selector("tr[data-name='page-second']", timeout=15000)


def test_jobs_page_follows_a_compile_to_its_artifact(server, keys, models, tmp_path, browser):
    """One page load: a real compile's row goes to COMPLETED by itself, then shows its
    duration (as DescribeCompilationJob's times give it) and a link that downloads the artifact."""
    client = server.client(keys["b"])
    page = browser.new_page(accept_downloads=True)
    page.goto(f"{server.url}/jobs#token={keys['b'].bearer_token}")
    page.wait_for_function("document.getElementById('meta').textContent.includes('updated')",
                           timeout=15000)
    page.evaluate("window.kilnSameDocument = true")  # gone if the page were reloaded
    _create(client, "page-mlp", f"file://{models}/mlp.onnx", f"file://{tmp_path}/out",
            platform={"Os": "LINUX", "Arch": "X86_64"})
    page.wait_for_selector("tr[data-name='page-mlp']", timeout=10000)
    first = _cell(page, "page-mlp", 2)
    assert first in ("STARTING", "INPROGRESS")
    page.wait_for_function("['COMPLETED', 'FAILED'].includes(document.querySelector("
                           "\"tr[data-name='page-mlp'] td:nth-child(2)\").textContent)",
                           timeout=240000)
    assert page.evaluate("window.kilnSameDocument") is True
    job = client.describe_compilation_job(CompilationJobName="page-mlp")
    assert job["CompilationJobStatus"] == "COMPLETED", job.get("FailureReason")
    assert _cell(page, "page-mlp", 2) == "COMPLETED"  # changed from `first` without a reload
    assert _cell(page, "page-mlp", 3) == "LINUX/X86_64"
    shown = _cell(page, "page-mlp", 5)
    assert re.fullmatch(r"\d+\.\d s", shown), shown
    took = (job["CompilationEndTime"] - job["CompilationStartTime"]).total_seconds()
    assert abs(float(shown[:-2]) - took) <= 0.1, (shown, took)
    link = page.query_selector("tr[data-name='page-mlp'] td:nth-child(6) a.artifact")
    assert link is not None and link.inner_text() == "download"
    with page.expect_download(timeout=30000) as info:
        link.click()
    download = info.value
    assert download.suggested_filename == "mlp-LINUX_X86_64.tar.gz"
    data = open(download.path(), "rb").read()
    assert hashlib.blake2b(data).hexdigest() == job["ModelDigests"]["ArtifactDigest"]
