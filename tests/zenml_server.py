"""A real ZenML OSS server for the tests and the benchmark: started once, on a free loopback port, in temp folders.

The server runs from its own virtual environment (zenml[server] is never a dependency of the project):
$ACCESS_LEDGER_TEST_ZENML names that environment's folder (.ci/run creates .venv-zenml and exports it).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

ZENML_VERSION = "0.98.0"
ENV = "ACCESS_LEDGER_TEST_ZENML"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ZenMLServer:
    """`uvicorn zenml.zen_server.zen_server_api:app` with an admin whose password only this object knows."""

    def __init__(self, venv: str, folder: Path):
        self.venv, self.folder = Path(venv), folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = "pw-" + secrets.token_hex(12)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600.0) -> ZenMLServer:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),
            "ZENML_SERVER": "true",
            "ZENML_STORE_URL": f"sqlite:///{self.folder}/zenml.db",
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_SERVER_DEPLOYMENT_TYPE": "other",
            "ZENML_SERVER_AUTH_SCHEME": "OAUTH2_PASSWORD_BEARER",
            "ZENML_SERVER_JWT_SECRET_KEY": secrets.token_hex(32),
            "ZENML_SERVER_AUTO_ACTIVATE": "true",
            "ZENML_DEFAULT_USER_NAME": "admin",
            "ZENML_DEFAULT_USER_PASSWORD": self.password,
            "ZENML_CONFIG_PATH": str(self.folder / "config"),
            "ZENML_LOCAL_STORES_PATH": str(self.folder / "stores"),
        }
        log = open(self.folder / "server.log", "wb")  # noqa: SIM115 (the server writes it until stopped)
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "uvicorn"), "zenml.zen_server.zen_server_api:app"]
            + ["--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the ZenML server exited; its log ends:\n{tail}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the ZenML server did not start in {timeout:.0f} s; its log ends:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def admin(self) -> Rest:
        return Rest(self.url, "admin", self.password)


class Rest:
    """The ZenML REST API as a logged-in user uses it (what the tests change on the server)."""

    def __init__(self, url: str, username: str, password: str):
        self.http = httpx.Client(base_url=url + "/api/v1", timeout=60)
        answer = self.http.post("/login", data={"username": username, "password": password})
        answer.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def _ok(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise AssertionError(
                f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}"
            )
        return response.json() if response.content else None

    def create_user(self, name: str, password: str, *, admin: bool = False) -> str:
        body = {"name": name, "password": password, "active": True, "is_admin": admin}
        return self._ok(self.http.post("/users", json=body))["id"]

    def set_admin(self, user_id: str, admin: bool) -> None:
        self._ok(self.http.put(f"/users/{user_id}", json={"is_admin": admin}))

    def deactivate_user(self, user_id: str) -> None:
        self._ok(self.http.put(f"/users/{user_id}/deactivate"))

    def activate_user(self, user_id: str) -> None:
        self._ok(self.http.put(f"/users/{user_id}", json={"active": True}))

    def delete_user(self, user_id: str) -> None:
        self._ok(self.http.delete(f"/users/{user_id}"))

    def create_service_account(self, name: str) -> str:
        return self._ok(self.http.post("/service_accounts", json={"name": name, "description": "", "active": True}))[
            "id"
        ]

    def set_service_account_active(self, sa_id: str, active: bool) -> None:
        self._ok(self.http.put(f"/service_accounts/{sa_id}", json={"active": active}))

    def create_api_key(self, sa_id: str, name: str) -> str:
        answer = self._ok(self.http.post(f"/service_accounts/{sa_id}/api_keys", json={"name": name, "description": ""}))
        return answer["body"]["key"]

    def rotate_api_key(self, sa_id: str, name: str) -> str:
        answer = self._ok(
            self.http.put(f"/service_accounts/{sa_id}/api_keys/{name}/rotate", json={"retain_period_minutes": 0})
        )
        return answer["body"]["key"]

    def set_api_key_active(self, sa_id: str, name: str, active: bool) -> None:
        self._ok(self.http.put(f"/service_accounts/{sa_id}/api_keys/{name}", json={"active": active}))

    def create_connector(self, name: str, labels: dict[str, str] | None = None) -> str:
        body = {
            "name": name,
            "connector_type": "docker",
            "auth_method": "password",
            "resource_types": ["docker-registry"],
            "configuration": {"username": "robot", "password": "s3cr3t-" + name},
            "labels": labels or {},
        }
        return self._ok(self.http.post("/service_connectors", json=body))["id"]

    def delete_connector(self, connector_id: str) -> None:
        self._ok(self.http.delete(f"/service_connectors/{connector_id}"))

    def create_project(self, name: str) -> str:
        return self._ok(self.http.post("/projects", json={"name": name, "display_name": name}))["id"]

    def list(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return self._ok(self.http.get(path, params={"size": 10000, **params}))["items"]
