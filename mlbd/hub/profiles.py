"""Spawner profiles: one definition for the embedded hub and for Kubernetes.

The profiles are ``singleuser.profileList`` in ``hub_config/k8s/values.yaml`` (Zero to JupyterHub);
KubeSpawner uses them as they are. On one machine the local spawner offers the same choices and,
for a profile that asks for a GPU, checks that the machine has one before it starts the server.
"""
from __future__ import annotations

import functools
import glob
import shutil
import subprocess
from pathlib import Path

import yaml

VALUES = Path(__file__).resolve().parents[2] / "hub_config" / "k8s" / "values.yaml"
GPU_RESOURCE = "nvidia.com/gpu"


def load_values(path: Path | str = VALUES) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def profile_list(path: Path | str = VALUES) -> list[dict]:
    return list(load_values(path)["singleuser"]["profileList"])


def wants_gpu(profile: dict) -> bool:
    limits = profile.get("kubespawner_override", {}).get("extra_resource_limits", {}) or {}
    return int(limits.get(GPU_RESOURCE, 0) or 0) > 0


def default_profile(profiles: list[dict]) -> dict:
    return next((p for p in profiles if p.get("default")), profiles[0])


def find(profiles: list[dict], slug: str | None) -> dict:
    if not slug:
        return default_profile(profiles)
    for p in profiles:
        if p.get("slug") == slug:
            return p
    raise ValueError(f"unknown profile {slug!r}; choose one of {', '.join(p['slug'] for p in profiles)}")


# The profile keys the local spawner applies as its own traits, as KubeSpawner applies them all.
LIMIT_KEYS = ("cpu_limit", "cpu_guarantee", "mem_limit", "mem_guarantee")


def limit_overrides(profile: dict) -> dict:
    """The CPU and memory limits and guarantees a profile sets (``kubespawner_override``)."""
    override = profile.get("kubespawner_override", {}) or {}
    return {k: override[k] for k in LIMIT_KEYS if k in override}


@functools.lru_cache(maxsize=1)
def gpu_present() -> tuple[bool, str]:
    """Whether this machine has a usable NVIDIA GPU, and how we know."""
    if not glob.glob("/dev/nvidia[0-9]*"):
        return False, "no /dev/nvidia* device"
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False, "an NVIDIA device node exists but nvidia-smi (the driver) is missing"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nvidia-smi failed: {exc}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return False, f"nvidia-smi lists no GPU ({(out.stderr or out.stdout).strip()[:200]})"
    return True, out.stdout.strip().splitlines()[0]


def unavailable(profile: dict) -> str | None:
    """Why ``profile`` cannot start on this machine, or None when it can."""
    if wants_gpu(profile):
        ok, why = gpu_present()
        if not ok:
            return NO_GPU_MESSAGE.format(why=why)
    return None


NO_GPU_MESSAGE = ("The \"GPU (deep learning)\" profile needs a GPU, and this hub's machine has none ({why}). "
                  "Go back and choose \"CPU (standard)\": every exercise runs on CPU; deep-learning "
                  "notebooks train their small CPU configuration there.")
