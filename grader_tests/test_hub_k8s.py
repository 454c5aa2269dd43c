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


# -- who gets in, on Kubernetes ---------------------------------------------------------------------
def roster_users() -> set[str]:
    import csv

    with open(ROOT / "hub_config" / "roster.csv", newline="") as fh:
        return {r["username"] for r in csv.DictReader(fh)}


def hub_config_from_values():
    """The hub's traitlets config as Z2JH builds it: hub.config, then each hub.extraConfig snippet,
    with the roster file of hub.extraFiles holding hub_config/roster.csv (--set-file at install)."""
    import builtins

    from traitlets.config import Config

    v = _values()["hub"]
    roster_path = v["extraFiles"]["roster"]["mountPath"]
    c = Config(v["config"])

    def open_(path, *a, **kw):
        return builtins.open(ROOT / "hub_config" / "roster.csv" if path == roster_path else path, *a, **kw)

    for code in v["extraConfig"].values():
        exec(code, {"c": c, "open": open_})
    c.RosterLTI13Authenticator.roster = str(ROOT / "hub_config" / "roster.csv")
    return c


def test_values_admit_exactly_the_roster_with_per_person_logins():
    from tornado import web

    from mlbd.hub import lti

    text = (ROOT / "hub_config" / "k8s" / "values.yaml").read_text()
    assert "SharedPassword" not in text and "shared-password" not in text.split("#")[0]
    c = hub_config_from_values()
    assert c.JupyterHub.authenticator_class == "mlbd.hub.lti.RosterLTI13Authenticator"
    assert c.Authenticator.allow_all is False
    assert c.Authenticator.allowed_users == roster_users()
    # manage_groups: true, as its comment says: groups come from the LTI roles claim
    assert c.Authenticator.manage_groups is True and "LTI roles claim" in text
    assert "load_groups" not in text

    auth = lti.RosterLTI13Authenticator(config=c)
    assert auth.course_contexts == {"REPLACE_WITH_THE_LMS_COURSE_CONTEXT_ID"}
    ctx = {lti.CONTEXT_CLAIM: {"id": "REPLACE_WITH_THE_LMS_COURSE_CONTEXT_ID"}}
    learner = {lti.ROLES_CLAIM: ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]}
    user = asyncio.run(auth.get_authenticated_user(None, {"email": "student2@example.org", **ctx, **learner}))
    assert user["name"] == "student2" and user["groups"] == ["students"]
    for claims in ({"email": "stranger@example.org", **ctx, **learner},               # not on the roster
                   {"email": "student2@example.org", lti.CONTEXT_CLAIM: {"id": "other"}, **learner}):  # other course
        with pytest.raises(web.HTTPError) as exc:
            asyncio.run(auth.get_authenticated_user(None, claims))
        assert exc.value.status_code == 403


# The JupyterHub each Zero to JupyterHub chart release ships (images/hub/requirements.txt at the
# chart's tag in jupyterhub/zero-to-jupyterhub-k8s; read from that repository's source, offline).
CHART_JUPYTERHUB = {"4.2.0": "5.3.0", "4.3.5": "5.4.6", "4.4.0": "5.5.0"}


def test_chart_version_and_hub_image_match_the_pinned_jupyterhub():
    text = (ROOT / "hub_config" / "k8s" / "values.yaml").read_text()
    chart = re.search(r"jupyterhub/jupyterhub --version (\S+)", text).group(1)
    chart_hub = CHART_JUPYTERHUB[chart]
    assert f"chart {chart}" in text and f"JupyterHub {chart_hub}" in text, "say the chart's JupyterHub"
    pinned = lock()["jupyterhub"]
    assert re.search(r'"jupyterhub==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1) == pinned == "6.1.1"
    hub = _values()["hub"]["image"]
    dockerfile = instructions(DOCKER / "hub.Dockerfile")
    assert dockerfile[0] == ("FROM", f"quay.io/jupyterhub/k8s-hub:{chart}"), "the hub image builds on the chart's own"
    if chart_hub != pinned:   # the chart's JupyterHub differs: the hub image must bring the lock's
        assert hub["name"].endswith("/mlbd-hub")
        assert "jupyterhub" in installed(" ".join(a for kw, a in dockerfile if kw == "RUN"), "requirements.lock")
    assert f"jupyterhub {pinned}" in text


def test_formgrader_manifest_serves_the_service_in_values():
    import yaml

    svc = _values()["hub"]["services"]["formgrader"]
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "hub_config" / "k8s" / "formgrader.yaml").read_text())}
    assert set(docs) == {"Secret", "PersistentVolumeClaim", "Deployment", "Service"}
    host, port = re.match(r"http://([^.]+)\.mlbd\.svc\.cluster\.local:(\d+)$", svc["url"]).groups()
    service, deploy = docs["Service"], docs["Deployment"]
    assert service["metadata"]["name"] == host and service["spec"]["ports"][0]["port"] == int(port)
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (ctr,) = deploy["spec"]["template"]["spec"]["containers"]
    assert ctr["image"] == "ghcr.io/mlbd-course/mlbd-grader:0.1.0" and ctr["command"][0] == "jupyterhub-singleuser"
    assert f"--ServerApp.port={port}" in ctr["command"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in ctr["env"]}
    assert env["JUPYTERHUB_SERVICE_NAME"] == "formgrader"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/services/formgrader/"
    secret = env["JUPYTERHUB_API_TOKEN"]["secretKeyRef"]
    assert secret["name"] == docs["Secret"]["metadata"]["name"]
    assert docs["Secret"]["stringData"][secret["key"]] == svc["apiToken"], "the hub and the pod share one token"
    assert deploy["spec"]["template"]["spec"]["securityContext"]["runAsUser"] != 0


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


@pytest.mark.parametrize("name", COURSE_IMAGES + ["ngshare", "hub"])
def test_dockerfile_parses_and_base_is_pinned(name):
    ins = instructions(DOCKER / f"{name}.Dockerfile")
    assert {kw for kw, _ in ins} <= KNOWN
    base = ins[0]
    assert base[0] == "FROM"
    image, _, tag = base[1].rpartition(":")
    assert image and tag and tag != "latest" and re.search(r"\d", tag), f"base image not pinned: {base[1]}"


STUDENT_PACKAGES = {"jupyterhub", "jupyterlab", "notebook", "nbgrader", "ipykernel", "numpy", "pandas",
                    "scikit-learn", "matplotlib", "tensorflow-cpu", "keras", "tensorboard", "pooch"}
NOT_FOR_STUDENTS = ("playwright", "pytest", "kubespawner", "otter", "oauthenticator", "ltiauthenticator",
                    "idle-culler", "dask", "copydetect")


def installed(text: str, lock_file: str) -> set[str]:
    """The package names of ``pip install -c LOCK name ...`` commands."""
    names = set()
    for args in re.findall(rf"pip install -c \S*{lock_file} ((?:[^&]|&(?!&))*)", text):
        for word in args.split():
            word = word.strip("\"'")
            if word and not word.startswith("-"):
                names.add(re.split(r"[\[=<>]", word)[0].lower())
    return names


@pytest.mark.parametrize("name", COURSE_IMAGES + ["hub"])
def test_image_installs_the_lock_and_pins_nothing_else(name):
    ins = instructions(DOCKER / f"{name}.Dockerfile")
    text = " ".join(args for kw, args in ins if kw == "RUN")
    assert re.search(r"pip install -[rc] \S*requirements(-gpu)?\.lock", text)
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
    cpu = installed(" ".join(a for kw, a in instructions(DOCKER / "student-cpu.Dockerfile") if kw == "RUN"),
                    "requirements.lock")
    assert installed(text, "requirements-gpu.lock") == cpu - {"tensorflow-cpu"} | {"tensorflow"}


@pytest.mark.parametrize("name", ["student-cpu", "student-gpu"])
def test_student_images_hold_what_students_use(name):
    """Only the student packages, constrained by the lock; nothing of the tests, the grader or the hub."""
    text = " ".join(a for kw, a in instructions(DOCKER / f"{name}.Dockerfile") if kw == "RUN")
    assert not re.search(r"pip install -r", text), "the whole lock holds Playwright, pytest, KubeSpawner…"
    names = installed(text, r"requirements(?:-gpu)?\.lock")
    assert names - {"tensorflow"} <= STUDENT_PACKAGES and len(names) >= 10, names
    pinned = lock()
    assert all(n in pinned for n in names - {"tensorflow"}), names - set(pinned)
    assert "pip install --no-deps /tmp/mlbd" in text, "mlbd itself without its staff dependencies"
    for bad in NOT_FOR_STUDENTS:
        assert bad not in " ".join(names), bad
    # what the notebooks import is installed
    imports = set()
    for nb in (ROOT / "source").glob("*/*.ipynb"):
        imports |= set(re.findall(r"(?:^|\\n|\")\s*(?:import|from) (sklearn|numpy|pandas|matplotlib|tensorflow|keras|scipy)\b",
                                  nb.read_text()))
    module_of = {"sklearn": "scikit-learn", "tensorflow": "tensorflow-cpu", "scipy": "scikit-learn"}
    for mod in imports:
        pkg = module_of.get(mod, mod)
        assert pkg in names or (pkg == "tensorflow-cpu" and "tensorflow" in names), f"{name}: notebooks import {mod}"


# -- the embedded hub's config file, offline -------------------------------------------------------
@pytest.mark.parametrize("auth,expected", [
    ("pam", "pam"),
    ("lti13", "mlbd.hub.lti.RosterLTI13Authenticator"),
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
    if auth == "lti13":   # groups from the LMS's roles claim (test_hub_lti.py)
        assert cfg.Authenticator.manage_groups and cfg.JupyterHub.load_groups == {}
    else:
        assert cfg.JupyterHub.load_groups["tas"] == {"users": ["ta"]}
    names = [svc["name"] for svc in cfg.JupyterHub.services]
    assert names == ["formgrader", "idle-culler"]
    assert cfg.JupyterHub.services[0]["user"] == "grader-mlbd"


def test_values_give_each_server_its_variant_key_and_the_admin_page_template(tmp_path):
    """On Kubernetes too: the hub's extraConfig gives each server its user's own variant key from
    the mounted course secret (never the secret itself), and serves mlbd's admin page template."""
    from types import SimpleNamespace

    from mlbd import variant
    from mlbd.hub import TEMPLATES

    c = hub_config_from_values()
    assert c.JupyterHub.template_paths == [TEMPLATES]
    env = c.KubeSpawner.environment.get_value({"MLBD_OFFLINE": "1"}) if hasattr(c.KubeSpawner.environment, "get_value") \
        else c.KubeSpawner.environment
    secret = tmp_path / "variant_secret"
    secret.write_text("cd" * 32 + "\n")
    spawner = SimpleNamespace(user=SimpleNamespace(name="student2"))
    assert env[variant.KEY_ENV](spawner, secret_file=str(secret)) == variant.student_key(("cd" * 32).encode(), "mlbd", "student2")
    assert env[variant.STUDENT_ENV](spawner) == "student2"
    assert env.get("MLBD_OFFLINE") == "1", "the singleuser extraEnv is kept, not replaced"
    text = (ROOT / "hub_config" / "k8s" / "values.yaml").read_text() + (ROOT / "hub_config" / "k8s" / "formgrader.yaml").read_text()
    assert text.count("secretName: mlbd-variant") == 2, "the hub and the grader pod mount the same course secret"
