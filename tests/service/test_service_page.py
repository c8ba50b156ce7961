"""The live job page (GET /jobs) in headless Chromium (skipped without playwright + chromium)."""

from __future__ import annotations

import shutil

import pytest

from .test_service_api import create

pytestmark = pytest.mark.service


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("needs chromium (apt) for the page test")
    return exe


def test_jobs_page_lists_jobs_live(queue_server, keys):
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = _chromium()
    client = queue_server.client(keys["b"])
    create(client, "page-first")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{queue_server.url}/jobs#token={keys['b'].bearer_token}")
            row = page.wait_for_selector("tr[data-name='page-first']", timeout=15000)
            cells = [c.inner_text() for c in row.query_selector_all("td")]
            assert cells[:3] == ["page-first", "STARTING", "ml_c5"]
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
        finally:
            browser.close()
