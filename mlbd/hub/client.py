"""A student (or TA) driving the hub over HTTP as a browser would: log in with the login form,
start a server, and use nbgrader's Assignments endpoints in it. Used by `mlbd bench hub` and the
hub tests; the browser test drives the real pages with Playwright."""
from __future__ import annotations

import json
import time

import requests


class HubError(RuntimeError):
    pass


class HubUser:
    def __init__(self, base_url: str, name: str, timeout: float = 60):
        self.base = base_url.rstrip("/")
        self.name = name
        self.timeout = timeout
        self.http = requests.Session()
        self.token: str | None = None

    # -- hub -----------------------------------------------------------------------------------
    def _xsrf(self) -> str:
        return self.http.cookies.get("_xsrf", path="/hub/") or self.http.cookies.get("_xsrf") or ""

    def login(self, password: str) -> None:
        self.http.get(f"{self.base}/hub/login", timeout=self.timeout)
        r = self.http.post(f"{self.base}/hub/login?next=", allow_redirects=False, timeout=self.timeout,
                           data={"username": self.name, "password": password, "_xsrf": self._xsrf()})
        if r.status_code != 302 or "jupyterhub-session-id" not in self.http.cookies:
            raise HubError(f"{self.name}: login failed ({r.status_code})")

    def hub_api(self, method: str, path: str, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        headers["X-XSRFToken"] = self._xsrf()
        return self.http.request(method, f"{self.base}/hub/api{path}", headers=headers, timeout=self.timeout, **kw)

    def spawn(self, profile: str = "cpu", timeout: float = 300) -> float:
        """Start the user's server and wait until it answers; returns seconds."""
        t0 = time.monotonic()
        r = self.hub_api("POST", f"/users/{self.name}/server", json={"profile": profile})
        if r.status_code not in (201, 202, 400):
            raise HubError(f"{self.name}: spawn request failed {r.status_code} {r.text[:200]}")
        while time.monotonic() - t0 < timeout:
            info = self.hub_api("GET", f"/users/{self.name}").json()
            server = (info.get("servers") or {}).get("", {})
            if server.get("ready"):
                return time.monotonic() - t0
            if not info.get("pending") and not server:
                raise HubError(f"{self.name}: spawn failed (see the hub log)")
            time.sleep(0.5)
        raise HubError(f"{self.name}: server not ready after {timeout:.0f} s")

    def stop_server(self) -> None:
        self.hub_api("DELETE", f"/users/{self.name}/server")

    def make_token(self) -> str:
        r = self.hub_api("POST", f"/users/{self.name}/tokens", json={"note": "mlbd client", "expires_in": 3600})
        if r.status_code != 201:
            raise HubError(f"{self.name}: token request failed {r.status_code} {r.text[:200]}")
        self.token = r.json()["token"]
        return self.token

    # -- the user's server ---------------------------------------------------------------------
    def server(self, method: str, path: str, **kw) -> requests.Response:
        if not self.token:
            self.make_token()
        headers = kw.pop("headers", {})
        headers["Authorization"] = f"token {self.token}"
        return requests.request(method, f"{self.base}/user/{self.name}{path}", headers=headers,
                                timeout=kw.pop("timeout", self.timeout), **kw)

    def assignment_action(self, action: str, assignment: str, course: str = "mlbd") -> list | dict:
        r = self.server("POST", f"/assignments/{action}", data={"course_id": course, "assignment_id": assignment},
                        timeout=max(self.timeout, 120))
        if r.status_code != 200:
            raise HubError(f"{self.name}: {action} {assignment}: HTTP {r.status_code} {r.text[:300]}")
        out = r.json()
        if isinstance(out, dict) and out.get("success") is False:
            raise HubError(f"{self.name}: {action} {assignment}: {out.get('value') or out}")
        return out.get("value", out) if isinstance(out, dict) else out

    def list_assignments(self, course: str = "mlbd") -> list:
        r = self.server("GET", "/assignments", params={"course_id": course})
        r.raise_for_status()
        out = r.json()
        return out.get("value", out) if isinstance(out, dict) else out

    def read_notebook(self, path: str) -> dict:
        r = self.server("GET", f"/api/contents/{path}", params={"content": 1, "type": "notebook"})
        r.raise_for_status()
        return r.json()["content"]

    def write_notebook(self, path: str, nb: dict) -> None:
        r = self.server("PUT", f"/api/contents/{path}", data=json.dumps({"type": "notebook", "format": "json", "content": nb}))
        if r.status_code not in (200, 201):
            raise HubError(f"{self.name}: saving {path}: HTTP {r.status_code}")

    def memory_rss(self) -> int | None:
        """Resident memory of the user's server process (bytes), read from /proc by the caller's
        machine (same machine as the hub)."""
        return None
