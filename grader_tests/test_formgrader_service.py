"""The hub's formgrader service loads mlbd.formgrader next to nbgrader's formgrader: the service
environment of hub_config/jupyterhub_config.py, given to a real Jupyter ServerApp (initialized,
not started), enables both; without it a student's .xht/.html would be served as a page again."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlbd.course import tool_env

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json
from jupyter_server.serverapp import ServerApp
app = ServerApp()
app.initialize(["--allow-root", "--no-browser", "--port=0", "--ServerApp.root_dir=."], find_extensions=True)
print(json.dumps(sorted(k for k, v in app.extension_manager.extensions.items() if v.enabled)))
"""


def test_formgrader_service_enables_mlbd_formgrader(tmp_path, monkeypatch):
    from traitlets.config import PyFileConfigLoader

    from mlbd.hub.settings import HubSettings

    s = HubSettings(repo=str(ROOT), state_dir=str(tmp_path / "state"), roster=str(ROOT / "hub_config" / "roster.csv"))
    monkeypatch.setenv("MLBD_HUB_SETTINGS", str(s.save()))
    cfg = PyFileConfigLoader("jupyterhub_config.py", path=str(ROOT / "hub_config")).load_config()
    service = next(x for x in cfg.JupyterHub.services if x["name"] == "formgrader")
    grader_etc = s.etc / "grader"            # what the launcher writes there: nbgrader's formgrader on
    grader_etc.mkdir(parents=True)
    (grader_etc / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"nbgrader.server_extensions.formgrader": True}}}))
    env = tool_env({"JUPYTER_CONFIG_PATH": service["environment"]["JUPYTER_CONFIG_PATH"], "HOME": str(tmp_path),
                    "JUPYTERHUB_DISABLE_USER_CONFIG": "1"})
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    enabled = json.loads(out.stdout.strip().splitlines()[-1])
    assert "mlbd.formgrader" in enabled and "nbgrader.server_extensions.formgrader" in enabled, enabled
