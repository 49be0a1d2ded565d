"""The demo page (/demo) on the real stack (milvus-lite server, Feast SQLite, Kafka, the 2,000
fashion-products images), served by uvicorn on a free port and driven by headless Chromium.

Uploads go to a small KServe-v2 embedder that computes the catalogue's own feature (16x16 RGB
pixels, see conftest), so an uploaded catalogue image finds itself first. The browser is
Debian's chromium through Debian's chromedriver (Selenium's W3C client); chromedriver runs in
its own session and every process under it is killed by PID when the test ends, pass or fail.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from services.common.embedder_client import EmbedderClientConfig
from services.common.events import Topics
from services.common.kafka_client import ensure_topics
from services.common.milvus_store import ListingVector
from services.experiments.assignment import Assigner
from services.experiments.config import load_experiments
from services.ingest.settings import DATA_DIR
from services.localstack.ports import free_port, port_open
from services.localstack.process import ManagedProcess
from services.recommender.app import build_app

from .conftest import pixels

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[3]
EXPERIMENTS = REPO / "configs" / "experiments" / "demo.yaml"
DASHBOARD = "http://127.0.0.1:18010/experiments/shop-diversity"
SCREENSHOT = REPO / "out" / "demo" / "demo-page.png"
CHROMIUM = os.environ.get("ADREC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ADREC_CHROMEDRIVER", "/usr/bin/chromedriver")
EMBEDDER_NAME = "pixels16"


# --- servers in this process: uvicorn on free loopback ports --------------------------------

@contextmanager
def serve(app, name: str) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail(f"{name} did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def pixel_embedder() -> FastAPI:
    """The KServe v2 REST shape the recommender's EmbedderClient speaks, computing `pixels()`."""
    app = FastAPI()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request):
        body = await request.json()
        inp = body["inputs"][0]
        vectors = []
        for b64 in inp["data"]:
            try:
                vectors.append(pixels(io.BytesIO(base64.b64decode(b64))))
            except Exception as exc:  # noqa: BLE001 - the client's input is bad: 400, like the real server
                return JSONResponse({"error": f"cannot decode image: {type(exc).__name__}"}, status_code=400)
        arr = np.stack(vectors).astype(np.float32)
        return {"model_name": name, "id": "x", "outputs": [{"name": "embedding", "datatype": "FP32",
                                                              "shape": list(arr.shape), "data": arr.ravel().tolist()}]}

    return app


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory, catalogue) -> Path:
    """A second allowed image root holding a PNG, a non-image and a symlink that points outside."""
    root = tmp_path_factory.mktemp("demo-images")
    with Image.open(catalogue[0]["image_uri"]) as im:
        im.convert("RGB").save(root / "copy.png")
    (root / "notes.txt").write_text("not an image\n")
    (root / "link.jpg").symlink_to("/etc/hostname")
    return root


@pytest.fixture(scope="module")
def demo(stack, image_root) -> Iterator[str]:
    """The recommender (with the demo page) on a free port; yields its base URL."""
    s = stack["settings"]
    ensure_topics(s.kafka, [Topics.USER_EVENTS])  # impressions and clicks
    with serve(pixel_embedder(), "embedder") as embedder_url:
        settings = s.model_copy(update={
            "embedder_client": EmbedderClientConfig(url=embedder_url, model_name=EMBEDDER_NAME, timeout_s=10),
            "recommend": s.recommend.model_copy(update={
                "experiments_file": str(EXPERIMENTS), "dashboard_url": DASHBOARD,
                "image_roots": [str(DATA_DIR), str(image_root)], "embedder_timeout_s": 10.0})})
        with serve(build_app(settings), "recommender") as url:
            yield url


def raw_get(base: str, path: str) -> tuple[int, bytes]:
    url = httpx.URL(base)
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def http(demo) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo, timeout=30, trust_env=False) as c:
        yield c


# --- plain HTTP ----------------------------------------------------------------------------

def test_page_and_assets_are_served_from_this_server_only(http) -> None:
    r = http.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/demo"
    page = http.get("/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'id="grid"' in page.text and "/demo/static/demo.js" in page.text
    for name, ctype in [("demo.js", "text/javascript"), ("demo.css", "text/css")]:
        asset = http.get(f"/demo/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(ctype)
    for bad in ["/demo/static/demo.html", "/demo/static/..%2Fdemo.py", "/demo/static/../demo.py"]:
        assert http.get(bad).status_code == 404, bad
    cfg = http.get("/demo/api/config").json()
    assert cfg["dashboard_url"] == DASHBOARD
    assert cfg["experiments"] == [{"id": "shop-diversity", "variants": ["control", "one-per-shop"]}]


def test_listings_endpoint_samples_indexed_listings(http, catalogue) -> None:
    by_id = {c["listing_id"]: c for c in catalogue}
    body = http.get("/demo/api/listings", params={"limit": 24}).json()
    assert len(body["items"]) == 24 and body["total"] == len(catalogue)
    for item in body["items"]:
        c = by_id[item["listing_id"]]
        assert item["title"] == c["title"] and item["category"] == c["category"]
        assert item["image_url"] == f"/demo/images/{item['listing_id']}"
    assert sum(c["count"] for c in body["categories"]) == len(catalogue)
    again = http.get("/demo/api/listings", params={"limit": 24}).json()["items"]
    other = http.get("/demo/api/listings", params={"limit": 24, "seed": 7}).json()["items"]
    assert [i["listing_id"] for i in again] == [i["listing_id"] for i in body["items"]]  # stable per seed
    assert {i["listing_id"] for i in other} != {i["listing_id"] for i in again}  # shuffle
    watches = http.get("/demo/api/listings", params={"limit": 200, "category": "Watches"}).json()
    n_watches = sum(c["category"] == "Watches" for c in catalogue)
    assert watches["total"] == n_watches and len(watches["items"]) == min(200, n_watches)
    assert all(i["category"] == "Watches" for i in watches["items"])
    for bad in [{"limit": 0}, {"limit": 201}, {"seed": -1}]:
        r = http.get("/demo/api/listings", params=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", bad


@pytest.fixture
def odd_listings(stack, catalogue, image_root) -> Iterator[dict[str, str]]:
    """Inactive listings (never recommended or listed) whose image URIs the image endpoint must judge."""
    uris = {"zz-outside": "/etc/hostname",
            "zz-traversal": f"{DATA_DIR}/fashion-products/images/../../../../../../etc/passwd",
            "zz-file-uri": "file:///etc/passwd",
            "zz-symlink": str(image_root / "link.jpg"),
            "zz-http": "https://images.example.com/a.jpg",
            "zz-missing": f"{DATA_DIR}/fashion-products/images/no-such-image.jpg",
            "zz-not-image": str(image_root / "notes.txt"),
            "zz-png": f"file://{image_root / 'copy.png'}"}
    vec = catalogue[0]["vector"].tolist()
    store = stack["vectors"]
    store.upsert([ListingVector(lid, vec, "shop-x", "zz-test", 1.0, False, 1, "pixels16", lid, uri)
                  for lid, uri in uris.items()])
    try:
        yield uris
    finally:
        store.delete(list(uris))


def test_image_endpoint_serves_only_files_inside_the_image_roots(http, catalogue, odd_listings) -> None:
    c = catalogue[0]
    r = http.get(f"/demo/images/{c['listing_id']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == Path(c["image_uri"]).read_bytes()
    assert "max-age=" in r.headers["cache-control"] and r.headers["etag"]
    assert http.get(f"/demo/images/{c['listing_id']}", headers={"if-none-match": r.headers["etag"]}).status_code == 304
    png = http.get("/demo/images/zz-png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    for lid in ["zz-outside", "zz-traversal", "zz-file-uri", "zz-symlink"]:
        r = http.get(f"/demo/images/{lid}")
        assert r.status_code == 403, (lid, r.text)
        assert "outside the allowed image roots" in r.json()["error"]["message"]
        assert b"root:" not in r.content
    for lid in ["zz-http", "zz-missing", "zz-not-image", "no-such-listing"]:
        assert http.get(f"/demo/images/{lid}").status_code == 404, lid
    for path in ["/demo/images/..", "/demo/images/%2E%2E", "/demo/images/..%2F..%2Fetc%2Fpasswd",
                 "/demo/images/%2Fetc%2Fpasswd", "/demo/images/x%00y", "/demo/images/../../../../etc/passwd"]:
        status, body = raw_get(str(http.base_url), path)  # as sent: no client-side dot-segment cleanup
        assert status == 404 and b"root:" not in body, (path, status)


# --- the browser ---------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                  "--disable-extensions", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                  "--mute-audio", "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1280,1000",
                  "--password-store=basic",
                  # nothing but this machine: the page must not need the internet (no CDN)
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@contextmanager
def chromium(tmp: Path) -> Iterator:
    """Headless Chromium under chromedriver; on exit every process of it is gone (killed by PID)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(p))]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: run scripts/bootstrap.sh "
                    "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.common.proxy import Proxy, ProxyType
    from selenium.webdriver.remote.client_config import ClientConfig
    from selenium.webdriver.remote.file_detector import UselessFileDetector

    port = free_port()
    driver_proc = ManagedProcess("chromedriver", [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
                                 log_path=tmp / "chromedriver.log")  # its own session: one process group
    driver_proc.start()
    driver = None
    try:
        driver_proc.wait_ready(lambda: port_open(port), timeout=30)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}"]:
            opts.add_argument(flag)
        url = f"http://127.0.0.1:{port}"
        driver = webdriver.Remote(command_executor=url, options=opts, client_config=ClientConfig(
            url, timeout=60, proxy=Proxy({"proxyType": ProxyType.DIRECT})),
            file_detector=UselessFileDetector())  # a local driver reads uploads from the disk itself
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        yield driver
    finally:
        pids = _tree(driver_proc.pid)
        if driver is not None:
            try:
                driver.quit()  # bounded by the client timeout
            except Exception:  # noqa: BLE001 - the kill below is what counts
                pass
        driver_proc.stop(timeout=10)
        for pid in pids:  # anything that left the process group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, alive = psutil.wait_procs([p for p in map(_proc, pids) if p], timeout=10)
        assert not alive, f"browser processes left behind: {alive}"


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _tree(pid: int | None) -> list[int]:
    root = _proc(pid) if pid else None
    if root is None:
        return []
    try:
        return [root.pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return [root.pid]


def _user_for(variant: str) -> str:
    assigner = Assigner(load_experiments(EXPERIMENTS))
    for i in range(1000):
        uid = f"demo-user-{i}"
        if [a.variant for a in assigner.assign(uid).assignments] == [variant]:
            return uid
    raise AssertionError(f"no user in variant {variant}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_page_shows_similar_ads_for_a_listing_and_an_upload(demo, catalogue, tmp_path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    by_id = {c["listing_id"]: c for c in catalogue}
    variants = {v.name for e in load_experiments(EXPERIMENTS).all_experiments()
                for v in e.variants}
    k = 8

    def wait(driver, condition, what: str, timeout: float = 30):
        try:
            return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
        except TimeoutException:
            pytest.fail(f"no {what} after {timeout:.0f}s; page error box: {error_text(driver)!r}, status: "
                        f"{driver.find_element(By.ID, 'status').text!r}")

    def error_text(driver) -> str:
        box = driver.find_element(By.ID, "error")
        return box.text if box.is_displayed() else ""

    def request_id(driver) -> str | None:
        return driver.find_element(By.ID, "results").get_attribute("data-request-id")

    def grid(driver) -> list[dict]:
        return driver.execute_script("""
            return [...document.querySelectorAll('#grid .ad')].map(a => ({
              id: a.dataset.listingId, shop: a.dataset.shopId, score: a.querySelector('.score').dataset.score,
              scoreText: a.querySelector('.score').textContent, title: a.querySelector('.title').textContent,
              price: a.querySelector('.price').textContent,
              img: a.querySelector('img').complete && a.querySelector('img').naturalWidth > 0}));""")

    def search(driver, action, what: str) -> tuple[list[dict], str]:
        before = request_id(driver)
        action()
        wait(driver, lambda d: request_id(d) not in (None, before) and len(grid(d)) == k, what)
        return grid(driver), driver.find_element(By.CSS_SELECTOR, "#variants .variant").get_attribute("data-variant")

    def check_cards(cards: list[dict]) -> None:
        assert len(cards) == k
        for card in cards:
            c = by_id[card["id"]]
            assert card["title"] == c["title"] and card["title"].strip()
            assert card["scoreText"] == f"score {float(card['score']):.3f}"
            assert card["price"] == f"{c['price']:.2f} USD"
        scores = [float(card["score"]) for card in cards]
        assert all(-1.0 <= s <= 1.0001 for s in scores) and scores == sorted(scores, reverse=True)

    started = time.monotonic()
    with chromium(tmp_path) as driver:
        driver.get(f"{demo}/demo")
        wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
             "page initialised")
        listings = driver.find_elements(By.CSS_SELECTOR, "#listings .listing")
        assert len(listings) == 24, error_text(driver)
        assert driver.find_element(By.ID, "dashboard-link").get_attribute("href") == DASHBOARD
        Select(driver.find_element(By.ID, "k")).select_by_value(str(k))

        # 1. pick a listing as a user of the one-per-shop variant
        user_input = driver.find_element(By.ID, "user-id")
        user_input.clear()
        user_input.send_keys(_user_for("one-per-shop"))
        seed = listings[0].get_attribute("data-listing-id")
        cards, variant = search(driver, listings[0].click, "grid for the first listing")
        check_cards(cards)
        assert variant == "one-per-shop" and variant in variants
        assert seed not in {c["id"] for c in cards}
        assert len({c["shop"] for c in cards}) == k  # the variant's rule: one ad per shop
        assert by_id[seed]["title"] in driver.find_element(By.ID, "query-label").text
        assert driver.find_element(By.ID, "request-id").text == request_id(driver)

        # 2. an upload the embedder refuses: a clear error in the page, the grid kept
        bad = tmp_path / "not-an-image.jpg"
        bad.write_bytes(b"this is text, not a JPEG\n" * 10)
        kept = request_id(driver)
        driver.find_element(By.ID, "upload-file").send_keys(str(bad))
        driver.find_element(By.ID, "upload-submit").click()
        wait(driver, lambda d: error_text(d), "an error message for a bad upload")
        message = error_text(driver)
        assert "HTTP 422" in message and "embedder refused the input" in message and "request id" in message
        assert request_id(driver) == kept and len(grid(driver)) == k

        # 3. upload a catalogue image: the listing itself comes first
        target = catalogue[123]
        driver.find_element(By.ID, "upload-file").send_keys(target["image_uri"])
        cards, variant = search(driver, driver.find_element(By.ID, "upload-submit").click, "grid for the upload")
        check_cards(cards)
        assert not error_text(driver)
        assert cards[0]["id"] == target["listing_id"] and float(cards[0]["score"]) > 0.999
        assert variant == "one-per-shop" and len({c["shop"] for c in cards}) == k
        assert Path(target["image_uri"]).name in driver.find_element(By.ID, "query-label").text

        # 4. another user, another variant: similar ads for another listing
        user_input.clear()
        user_input.send_keys(_user_for("control"))
        pick = listings[4]
        cards, variant = search(driver, pick.click, "grid for the fifth listing")
        check_cards(cards)
        assert variant == "control"
        assert "selected" in pick.get_attribute("class").split()
        assert driver.find_element(By.ID, "query-label").text == \
            f"Similar to: {by_id[pick.get_attribute('data-listing-id')]['title']}"

        # 5. click an ad: the click event is accepted and the page says so
        ad = driver.find_elements(By.CSS_SELECTOR, "#grid .ad")[2]
        clicked = ad.get_attribute("data-listing-id")
        ad.click()
        status = driver.find_element(By.ID, "click-status")
        wait(driver, lambda d: status.get_attribute("data-listing-id") == clicked, "click confirmation")
        assert status.text.startswith(f"Click recorded: {clicked} at position 3")
        assert "clicked" in ad.get_attribute("class").split()
        wait(driver, lambda d: all(c["img"] for c in grid(d)), "all ad images loaded")
        assert driver.execute_script("return window.__demoErrors") == []

        # 6. a screenshot of the whole page
        page_h, frame_h = driver.execute_script(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
        driver.set_window_size(1280, min(page_h + frame_h + 16, 3000))  # the viewport holds the whole page
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT))
    print(f"\nbrowser session {time.monotonic() - started:.1f}s; screenshot {SCREENSHOT}")

    data = SCREENSHOT.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 50_000
    with Image.open(SCREENSHOT) as shot:
        assert shot.width == 1280 and shot.height >= 900
        colours = shot.convert("RGB").resize((128, 128)).getcolors(maxcolors=128 * 128)
        assert colours is None or len(colours) > 500, "screenshot looks blank"
