"""Kubernetes and images, offline: KubeSpawner pod manifests rendered from the profile list of
hub_config/k8s/values.yaml (kube client stubbed, no cluster), and the Dockerfiles checked against
requirements.lock (no Docker engine). What a real cluster, registry or GPU would add is not tested."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from mlbd.hub import profiles

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COURSE_IMAGES = ["student-cpu", "student-gpu", "grader"]
NOT_IN_LOCK = {"ngshare-exchange": "0.5.3"}   # installed --no-deps: it pins an old jupyter-core


def _values():
    return profiles.load_values()


def render(slug: str):
    """The pod KubeSpawner would create for a student choosing ``slug``, from Z2JH-style config."""
    import kubespawner.spawner as ks

    v = _values()["singleuser"]
    orig = ks.load_config, ks.shared_client
    ks.load_config = lambda **kw: None
    ks.shared_client = lambda name: None
    try:
        sp = ks.KubeSpawner(
            _mock=True, namespace="mlbd", profile_list=v["profileList"],
            image=f'{v["image"]["name"]}:{v["image"]["tag"]}',
            cpu_limit=float(v["cpu"]["limit"]), cpu_guarantee=float(v["cpu"]["guarantee"]),
            mem_limit=v["memory"]["limit"], mem_guarantee=v["memory"]["guarantee"],
            volumes=v["storage"]["extraVolumes"], volume_mounts=v["storage"]["extraVolumeMounts"],
            environment=dict(v["extraEnv"]))
        sp.user.name = "student1"
        sp.user_options = {"profile": slug}

        async def go():
            await sp.load_user_options()
            return await sp.get_pod_manifest()
        return asyncio.run(go())
    finally:
        ks.load_config, ks.shared_client = orig


def test_profiles_are_the_ones_the_local_spawner_offers():
    names = [p["display_name"] for p in profiles.profile_list()]
    assert names == ["CPU (standard)", "GPU (deep learning)"]
    assert profiles.default_profile(profiles.profile_list())["slug"] == "cpu"
    assert [profiles.wants_gpu(p) for p in profiles.profile_list()] == [False, True]


def test_gpu_pod_manifest():
    pod = render("gpu")
    c = pod.spec.containers[0]
    assert c.image == "ghcr.io/mlbd-course/mlbd-student-gpu:0.1.0"
    assert c.resources.limits["nvidia.com/gpu"] == "1"
    assert c.resources.limits["memory"] == 16 * 2**30 and c.resources.requests["memory"] == 8 * 2**30
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    tol = [t for t in pod.spec.tolerations if t.key == "nvidia.com/gpu"]
    assert tol and tol[0].operator == "Exists" and tol[0].effect == "NoSchedule"
    env = {e.name: e.value for e in c.env}
    assert env["MLBD_FULL_RUN"] == "1"
    mounts = {m.mount_path: m for m in c.volume_mounts}
    assert mounts["/srv/data"].read_only


def test_cpu_pod_manifest_has_no_gpu():
    pod = render("cpu")
    c = pod.spec.containers[0]
    assert c.image == "ghcr.io/mlbd-course/mlbd-student-cpu:0.1.0"
    assert "nvidia.com/gpu" not in (c.resources.limits or {})
    assert c.resources.limits["memory"] == 4 * 2**30
    assert not pod.spec.node_selector
    assert not [t for t in (pod.spec.tolerations or []) if t.key == "nvidia.com/gpu"]


def test_values_have_services_culler_and_roles():
    v = _values()
    assert set(v["hub"]["services"]) >= {"formgrader", "ngshare"}
    assert not v["hub"]["services"]["ngshare"]["url"].endswith("/")
    assert v["cull"]["enabled"] is True
    role = v["hub"]["loadRoles"]["formgrader-access"]
    assert role["scopes"] == ["access:services!service=formgrader"] and set(role["groups"]) == {"instructors", "tas"}
    vol = v["singleuser"]["storage"]["extraVolumes"][0]
    assert vol["persistentVolumeClaim"]["readOnly"] is True


# -- images ----------------------------------------------------------------------------------------
def lock() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def instructions(path: Path) -> list[tuple[str, str]]:
    """Dockerfile instructions (keyword, arguments) with continuations joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            kw, _, args = buf.strip().partition(" ")
            out.append((kw.upper(), args.strip()))
            buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    return out


KNOWN = {"FROM", "RUN", "COPY", "ENV", "USER", "WORKDIR", "CMD", "EXPOSE", "ARG", "LABEL", "ENTRYPOINT"}


@pytest.mark.parametrize("name", COURSE_IMAGES + ["ngshare"])
def test_dockerfile_parses_and_base_is_pinned(name):
    ins = instructions(DOCKER / f"{name}.Dockerfile")
    assert {kw for kw, _ in ins} <= KNOWN
    base = ins[0]
    assert base[0] == "FROM"
    image, _, tag = base[1].rpartition(":")
    assert image and tag and tag != "latest" and re.search(r"\d", tag), f"base image not pinned: {base[1]}"


@pytest.mark.parametrize("name", COURSE_IMAGES)
def test_image_installs_the_lock_and_pins_nothing_else(name):
    ins = instructions(DOCKER / f"{name}.Dockerfile")
    text = " ".join(args for kw, args in ins if kw == "RUN")
    assert re.search(r"pip install -r \S*requirements(-gpu)?\.lock", text)
    assert any(kw == "COPY" and "requirements.lock" in args for kw, args in ins)
    pinned = lock()
    for pkg, ver in re.findall(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([0-9][^\s\"']*)", text):
        key = pkg.lower().replace("_", "-")
        if key in NOT_IN_LOCK:
            assert ver == NOT_IN_LOCK[key]
            continue
        if name == "student-gpu" and key == "tensorflow":
            assert ver == pinned["tensorflow-cpu"], "GPU TensorFlow must be the lock's TensorFlow version"
            continue
        assert pinned.get(key) == ver, f"{name}: {pkg}=={ver} but the lock has {pinned.get(key)}"


def test_gpu_image_swaps_only_tensorflow():
    text = " ".join(a for kw, a in instructions(DOCKER / "student-gpu.Dockerfile") if kw == "RUN")
    assert "grep -v '^tensorflow-cpu=='" in text and "tensorflow[and-cuda]==" in text


# -- the embedded hub's config file, offline -------------------------------------------------------
@pytest.mark.parametrize("auth,expected", [
    ("shared-password", "shared-password"),
    ("lti13", "ltiauthenticator.lti13.auth.LTI13Authenticator"),
    ("oauth", "generic-oauth"),
])
def test_hub_config_login_is_one_setting_away(auth, expected, tmp_path, monkeypatch):
    from traitlets.config import PyFileConfigLoader
    from jupyterhub.auth import Authenticator
    from jupyterhub.app import JupyterHub

    from mlbd.hub.settings import HubSettings

    s = HubSettings(repo=str(ROOT), state_dir=str(tmp_path), roster=str(ROOT / "hub_config" / "roster.csv"))
    monkeypatch.setenv("MLBD_HUB_SETTINGS", str(s.save()))
    monkeypatch.setenv("MLBD_HUB_AUTH", auth)
    for k in ("MLBD_LTI_ISSUER", "MLBD_LTI_CLIENT_ID", "MLBD_LTI_AUTHORIZE_URL", "MLBD_LTI_JWKS_URL",
              "MLBD_OAUTH_CLIENT_ID", "MLBD_OAUTH_CLIENT_SECRET", "MLBD_OAUTH_AUTHORIZE_URL",
              "MLBD_OAUTH_TOKEN_URL", "MLBD_OAUTH_USERDATA_URL"):
        monkeypatch.setenv(k, "https://idp.example/x")
    cfg = PyFileConfigLoader("jupyterhub_config.py", path=str(ROOT / "hub_config")).load_config()
    assert cfg.JupyterHub.authenticator_class == expected
    cls = JupyterHub(config=cfg).authenticator_class  # resolves the entry point / import string
    assert issubclass(cls, Authenticator)
    assert cfg.Authenticator.allowed_users == {"instructor", "ta", "student1", "student2", "student3"}
    assert cfg.JupyterHub.load_groups["tas"] == {"users": ["ta"]}
    names = [svc["name"] for svc in cfg.JupyterHub.services]
    assert names == ["formgrader", "idle-culler"]
    assert cfg.JupyterHub.services[0]["user"] == "grader-mlbd"
