"""The studio behind its token, attacked over HTTP: `vlarft api` (API + UI) on the embedded stack with
VLARFT_API_TOKEN. Every UI route needs the sign-in cookie or the token, a stolen Gradio session hash
authorizes nothing, the UI's files live in the studio's own folder and go with their run, and bodies are
refused before they are read: no token → 401, too big → 413, with the server's memory flat."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from backend_helpers import ApiServer, stack_fixture

from backend import worker_store
from backend.api import deps
from backend.files import run_folder

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_LIMIT = 4 << 20
MiB = 1 << 20


@pytest.fixture(scope="module")
def stack():
    yield from stack_fixture("embedded", VLARFT_API_TOKEN=TOKEN, VLARFT_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT))


@pytest.fixture(scope="module")
def server(stack):
    srv = ApiServer(stack)
    yield srv
    srv.stop()


def signed_in(server: ApiServer) -> httpx.Client:
    http = httpx.Client(base_url=server.url, timeout=60)
    r = http.post("/login", data={"token": TOKEN})
    assert r.status_code == 303 and r.headers["location"] == "/ui/", r.text
    return http


def fn_index(http: httpx.Client, name: str) -> int:
    config = http.get("/ui/config").json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == name)


def runs_total(server: ApiServer) -> int:
    return httpx.get(f"{server.url}/api/v1/runs", headers=AUTH, params={"limit": 1, "count": True}).json()["total"]


def leaks(server: ApiServer, stack, text: str) -> list[str]:
    """What an anonymous answer must not reveal: the API URL, the database, the broker, the home folder."""
    secrets = [server.url, f"127.0.0.1:{server.port}", "sqlite", "redis", str(stack.home), TOKEN]
    return [s for s in secrets if s in text]


# Anonymous --------------------------------------------------------------------------------------

def test_every_ui_route_needs_the_sign_in(server, stack):
    cached = stack.settings().ui_cache_dir / "runs" / "999" / "t" / "report.md"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text("secret results\n")
    anon = httpx.Client(base_url=server.url, timeout=30)
    page = anon.get("/ui/")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert anon.get("/ui", follow_redirects=False).status_code == 303
    login = anon.get("/login")
    assert login.status_code == 200 and 'id="token-input"' in login.text and not leaks(server, stack, login.text)
    refused = [
        anon.get("/ui/config"), anon.get("/ui/gradio_api/info"), anon.get("/ui/theme.css"),
        anon.get(f"/ui/gradio_api/file={cached}"), anon.head(f"/ui/gradio_api/file={cached}"),
        anon.post("/ui/gradio_api/upload", files={"files": ("x.h5", b"\x89HDF" + b"\0" * 1000)}),
        anon.post("/ui/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "abc"}),
        anon.get("/ui/gradio_api/queue/data", params={"session_hash": "abc"}),
        anon.get("/ui/gradio_api/heartbeat/abc"),
        anon.get("/ui/config", headers={"Authorization": "Bearer wrong"}),
        httpx.get(f"{server.url}/ui/config", headers={"Cookie": f"{deps.SESSION_COOKIE}=1.2.3"}),
    ]
    for r in refused:
        assert r.status_code == 401, (r.request.method, r.request.url, r.status_code, r.text[:200])
        assert not leaks(server, stack, r.text), r.text
        assert "secret results" not in r.text
    assert anon.get("/api/v1/runs").status_code == 401
    assert anon.get("/api/v1/health").status_code == 200  # still open, as documented


def test_a_run_link_survives_signing_in_and_nothing_else_does(server, stack):
    anon = httpx.Client(base_url=server.url, timeout=30)
    page = anon.get("/ui/", params={"run": "12"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?run=12"
    assert 'action="/login?run=12"' in anon.get("/login", params={"run": "12"}).text
    ok = anon.post("/login?run=12", data={"token": TOKEN}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/?run=12"
    # only digits are carried: no other address can be smuggled through the sign-in
    anon = httpx.Client(base_url=server.url, timeout=30)
    for evil in ("//evil.example", "12&next=http://evil.example", "1e3", "-1"):
        r = anon.get("/ui/", params={"run": evil}, follow_redirects=False)
        assert r.headers["location"] == "/login", evil
    crowded = "&".join(f"f{i}=1" for i in range(20)) + "&run=3"
    assert anon.get(f"/ui/?{crowded}", follow_redirects=False).headers["location"] == "/login"


def test_sign_in_sets_a_strict_httponly_cookie_that_does_not_carry_the_token(server, stack):
    anon = httpx.Client(base_url=server.url, timeout=30)
    bad = anon.post("/login", data={"token": "wrong"})
    assert bad.status_code == 401 and "wrong bearer token" in bad.text and "set-cookie" not in bad.headers
    ok = anon.post("/login", data={"token": TOKEN})
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    value = anon.cookies[deps.SESSION_COOKIE]
    assert TOKEN not in value and TOKEN.encode().hex() not in value
    page = anon.get("/ui/")
    assert page.status_code == 200 and "gradio" in page.text.lower()
    assert anon.get("/ui/config").status_code == 200
    # a tampered, an expired and another studio's cookie are refused
    issued, nonce, mac = value.split(".")
    cfg = stack.settings()
    for forged in (f"{issued}.{nonce}x.{mac}", deps.new_session(cfg, now=time.time() - cfg.session_ttl_s - 10),
                   deps.new_session(stack.settings(api_token="another-token"))):
        r = httpx.get(f"{server.url}/ui/config", headers={"Cookie": f"{deps.SESSION_COOKIE}={forged}"})
        assert r.status_code == 401, forged
    fresh = deps.new_session(cfg)  # signed with the studio's key (its home's session.key) and token
    assert httpx.get(f"{server.url}/ui/config", headers={"Cookie": f"{deps.SESSION_COOKIE}={fresh}"}).status_code == 200
    # the cookie opens the UI only: the API still wants the bearer token
    assert anon.get("/api/v1/runs").status_code == 401
    out = anon.get("/logout")
    assert out.status_code == 303 and 'vlarft_session=""' in out.headers["set-cookie"]


# Session-hash replay ---------------------------------------------------------------------------

def test_a_stolen_session_hash_authorizes_nothing(server):
    from gradio_client import Client

    user = Client(f"{server.url}/ui/", headers=AUTH, verbose=False, download_files=False)
    params = json.dumps({"tasks": "reach-v3", "episodes": 1})
    before = runs_total(server)
    out = user.predict("collect", params, "by the signed-in user", "all", api_name="/on_launch")
    assert "queued" in out[0], out[0]
    assert runs_total(server) == before + 1  # the positive control: the signed-in session can launch
    stolen = user.session_hash
    http = signed_in(server)
    index = fn_index(http, "on_launch")

    # the original attack: a gradio_client with the victim's session hash and no token
    with pytest.raises(Exception) as err:
        Client(f"{server.url}/ui/", verbose=False, download_files=False)
    assert type(err.value).__name__ == "AuthenticationError", err.value  # its config request got the 401
    body = {"data": ["collect", params, "by the attacker", "all"], "fn_index": index, "session_hash": stolen,
            "event_data": None, "trigger_id": None}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{deps.SESSION_COOKIE}=forged"}):
        r = httpx.post(f"{server.url}/ui/gradio_api/queue/join", json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        r = httpx.get(f"{server.url}/ui/gradio_api/queue/data", params={"session_hash": stolen}, headers=headers)
        assert r.status_code == 401
    time.sleep(1.0)
    assert runs_total(server) == before + 1


def test_ui_handlers_take_the_token_from_their_request_only():
    """Defence in depth: the token a handler uses is its request's Authorization header, never state."""
    from frontend.api import token_of

    class Req:
        def __init__(self, headers: dict) -> None:
            self.headers = headers
            self.session_hash = "victim"

    assert token_of(Req({"authorization": f"Bearer {TOKEN}"})) == TOKEN
    assert token_of(Req({})) == "" and token_of(Req({"authorization": "Basic eDp5"})) == ""
    assert token_of(None) == ""


# The UI's files ----------------------------------------------------------------------------------

def test_ui_files_live_in_the_studio_need_the_sign_in_and_go_with_their_run(server, stack):
    from gradio_client import Client

    user = Client(f"{server.url}/ui/", headers=AUTH, verbose=False, download_files=False)
    out = user.predict("collect", json.dumps({"tasks": "reach-v3", "episodes": 1}), "files", "all",
                       api_name="/on_launch")
    run_id = int(out[0].split("Run #")[1].split()[0])
    cfg = stack.settings()
    report = run_folder(cfg.artifacts, run_id) / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("| policy | success |\n")
    worker_store.register_artifact(cfg.db_url, cfg.artifacts, run_id, "table", report)
    assert httpx.post(f"{server.url}/api/v1/runs/{run_id}/cancel", headers=AUTH).status_code == 200
    user.predict("all", api_name="/on_tick")  # the run page (this session's run) lists the new artifact
    got, notice = user.predict("report.md", api_name="/on_fetch")
    assert notice == "" and got, (got, notice)
    served = Path(got["path"])
    assert served.is_relative_to(cfg.ui_cache_dir / "runs" / str(run_id)), served
    assert served.is_relative_to(stack.home)  # this studio's own folder, not the system temp directory
    url = f"{server.url}/ui/gradio_api/file={served}"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=AUTH).text == "| policy | success |\n"
    assert httpx.delete(f"{server.url}/api/v1/runs/{run_id}", headers=AUTH).status_code == 204
    assert not (cfg.ui_cache_dir / "runs" / str(run_id)).exists()
    assert httpx.get(url, headers=AUTH).status_code in (403, 404)


def test_ui_uploads_obey_the_upload_limit_and_stay_in_the_studio(server, stack):
    http = signed_in(server)
    small = http.post("/ui/gradio_api/upload", files={"files": ("ok.h5", b"\x89HDF" + b"\0" * 1000)})
    assert small.status_code == 200, small.text
    assert Path(small.json()[0]).is_relative_to(stack.settings().ui_cache_dir)
    big = http.post("/ui/gradio_api/upload", files={"files": ("big.h5", b"\0" * (UPLOAD_LIMIT + 2 * MiB))})
    assert big.status_code == 413 and "VLARFT_MAX_UPLOAD_BYTES" in big.text
    just_over = http.post("/ui/gradio_api/upload", files={"files": ("big.h5", b"\0" * (UPLOAD_LIMIT + 1000))})
    assert just_over.status_code == 413, just_over.text  # Gradio's max_file_size: the same limit


# Bounded before trusted --------------------------------------------------------------------------

def _stream(mib: int):
    chunk = b" " * MiB  # one buffer sent again and again: the test holds 1 MiB, not the body
    for _ in range(mib):
        yield chunk


@pytest.mark.parametrize("path", ["/api/v1/runs", "/ui/gradio_api/queue/join", "/api/v1/datasets",
                                  "/ui/gradio_api/upload"])
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_200mb_without_the_token_is_401_before_it_is_read(server, path, framing):
    headers = {"content-type": "application/json"}
    if framing == "content-length":
        headers["content-length"] = str(200 * MiB)
    httpx.post(server.url + path, content=b"{}", headers={"content-type": "application/json"})  # warm up
    before = server.memory()
    t0 = time.monotonic()
    r = httpx.post(server.url + path, content=_stream(200), headers=headers, timeout=120)
    took = time.monotonic() - t0
    after = server.memory()
    assert r.status_code == 401, r.text[:200]
    grew = after["VmHWM"] - before["VmHWM"]
    print(f"{path} {framing}: 401 in {took:.2f} s, peak RSS +{grew / MiB:.1f} MiB")
    assert grew < 50 * MiB, (before, after)


@pytest.mark.parametrize("path", ["/api/v1/runs", "/ui/gradio_api/queue/join"])
def test_json_bodies_over_the_limit_are_413_naming_it(server, path):
    limit = 1 << 20
    body = json.dumps({"kind": "collect", "params": {"tasks": "reach-v3", "pad": "x" * (2 * MiB)}}).encode()
    r = httpx.post(server.url + path, content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and f"limit of {limit} bytes (VLARFT_MAX_JSON_BYTES)" in r.text, r.text
    before = server.memory()
    r = httpx.post(server.url + path, content=_stream(200), headers={**AUTH, "content-type": "application/json"},
                   timeout=120)  # chunked: counted as it streams
    assert r.status_code == 413 and "VLARFT_MAX_JSON_BYTES" in r.text, r.text
    assert server.memory()["VmHWM"] - before["VmHWM"] < 50 * MiB
    ok = httpx.post(f"{server.url}/api/v1/runs", headers=AUTH, json={"kind": "collect", "params": {"episodes": 0}})
    assert ok.status_code == 422  # a small body still reaches the checks


def test_sign_in_is_throttled_and_secure_over_https(stack):
    from fastapi.testclient import TestClient

    with TestClient(stack.app(reaper=False), base_url="https://testserver") as http:
        ok = http.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert ok.status_code == 303 and "Secure" in ok.headers["set-cookie"]
        for _ in range(10):
            assert http.post("/login", data={"token": "guess"}).status_code == 401
        r = http.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert r.status_code == 429 and "too many failed sign-ins" in r.text and "set-cookie" not in r.headers


def test_without_a_token_the_studio_stays_open(stack, monkeypatch):
    from fastapi.testclient import TestClient

    from cli.studio_app import create_app

    for var in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):  # mounting sets them for this process
        monkeypatch.setenv(var, str(stack.home / "gradio-tmp"))

    with TestClient(create_app(stack.settings(api_token=None), reaper=False)) as http:
        assert http.get("/ui/").status_code == 200 and http.get("/ui/config").status_code == 200
        assert http.get("/login", follow_redirects=False).headers["location"] == "/ui/"
        assert http.get("/api/v1/runs").status_code == 200
        r = http.post("/api/v1/runs", content=b" " * (2 * MiB), headers={"content-type": "application/json"})
        assert r.status_code == 413  # the body limit holds with or without a token
