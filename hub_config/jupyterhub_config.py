"""JupyterHub configuration of the embedded default (one machine). Start it with `make hub` or
`mlbd hub start`, which prepare accounts, the course copy and the exchange, and point
``MLBD_HUB_SETTINGS`` at the settings this file reads (mlbd/hub/settings.py).

SQLite, configurable-http-proxy, one Unix account per user (LocalProcessSpawner), PAM logins with
each account's own password (generated at first start), groups from the roster, the formgrader as a service run by the
course account (instructors and TAs only), and the idle culler. For a real institution, replace
the authenticator (see README, "Logging in for real"); everything else stays.
"""
import os
import sys

from mlbd.formgrader import CONFIG_DIR as FORMGRADER_CONFIG
from mlbd.hub import TEMPLATES, accounts, formgrader_service, profiles
from mlbd.hub.runas import grader_env
from mlbd.hub.settings import HubSettings
from mlbd.variant import Variants

c = get_config()  # noqa: F821

s = HubSettings.from_env()
roster = accounts.read_roster(s.roster)
groups = accounts.groups(roster)
bin_dir = s.venv_bin
python = os.path.join(bin_dir, "python")
grader = accounts.course_account(s.course_id)

# -- network, state -------------------------------------------------------------------------------
c.JupyterHub.bind_url = s.url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{s.hub_port}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s.proxy_api_port}"
# The launcher runs the proxy (mlbd.hub.launcher.start_proxy) and the hub leaves it and the user
# servers running when it exits: `mlbd hub restart` replaces the hub alone, students carry on.
# `mlbd hub stop` / Ctrl-C / `make hub-stop` stop servers, services, hub and proxy together.
c.ConfigurableHTTPProxy.should_start = False
_token = s.hub_dir / "proxy_auth_token"
if _token.is_file():
    c.ConfigurableHTTPProxy.auth_token = _token.read_text().strip()
c.JupyterHub.db_url = f"sqlite:///{s.hub_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(s.hub_dir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(s.pid_file)
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = False
c.JupyterHub.concurrent_spawn_limit = 100
c.JupyterHub.active_server_limit = 0

# -- who logs in ------------------------------------------------------------------------------------
# MLBD_HUB_AUTH picks the login: "pam" (default: the roster's Unix accounts, each with its own password;
# `mlbd hub start` gives accounts without one a random password, listed once in the root-only
# .hub/hub/initial-passwords.csv), "lti13" (an LMS such as Canvas or Moodle launches the hub) or
# "oauth" (the institution's OpenID Connect / OAuth2 provider).
# Either way only roster users get in (each needs a Unix account: list their LMS/IdP user names in
# hub_config/roster.csv), and the groups come from the roster's roles (lti13: from the LMS's roles claim).
AUTH = os.environ.get("MLBD_HUB_AUTH", "pam")
if AUTH == "lti13":
    # mlbd.hub.lti: the launch's claim MLBD_LTI_USERNAME_KEY (email; sub = the LMS user id) must match
    # the roster column MLBD_LTI_ROSTER_COLUMN (email; or e.g. lms_id); groups from the LTI roles claim
    c.JupyterHub.authenticator_class = "mlbd.hub.lti.RosterLTI13Authenticator"
    c.RosterLTI13Authenticator.roster = str(s.roster)
    c.RosterLTI13Authenticator.roster_column = os.environ.get("MLBD_LTI_ROSTER_COLUMN", "email")
    c.RosterLTI13Authenticator.course_contexts = set(filter(None, os.environ.get("MLBD_LTI_COURSE_CONTEXTS", "").split(",")))
    c.LTI13Authenticator.issuer = os.environ["MLBD_LTI_ISSUER"]                # e.g. https://canvas.instructure.com
    c.LTI13Authenticator.client_id = {os.environ["MLBD_LTI_CLIENT_ID"]}
    c.LTI13Authenticator.authorize_url = os.environ["MLBD_LTI_AUTHORIZE_URL"]  # the platform's OIDC auth endpoint
    c.LTI13Authenticator.jwks_endpoint = os.environ["MLBD_LTI_JWKS_URL"]
    c.LTI13Authenticator.username_key = os.environ.get("MLBD_LTI_USERNAME_KEY", "email")
elif AUTH == "oauth":
    c.JupyterHub.authenticator_class = "generic-oauth"
    c.GenericOAuthenticator.client_id = os.environ["MLBD_OAUTH_CLIENT_ID"]
    c.GenericOAuthenticator.client_secret = os.environ["MLBD_OAUTH_CLIENT_SECRET"]
    c.GenericOAuthenticator.oauth_callback_url = f"{os.environ.get('MLBD_PUBLIC_URL', s.url)}/hub/oauth_callback"
    c.GenericOAuthenticator.authorize_url = os.environ["MLBD_OAUTH_AUTHORIZE_URL"]
    c.GenericOAuthenticator.token_url = os.environ["MLBD_OAUTH_TOKEN_URL"]
    c.GenericOAuthenticator.userdata_url = os.environ["MLBD_OAUTH_USERDATA_URL"]
    c.GenericOAuthenticator.username_claim = os.environ.get("MLBD_OAUTH_USERNAME_CLAIM", "preferred_username")
    c.GenericOAuthenticator.scope = ["openid", "profile", "email"]
elif AUTH == "pam":
    c.JupyterHub.authenticator_class = "pam"  # pam_unix through the "login" service: /etc/shadow's hashes
else:
    raise ValueError(f"MLBD_HUB_AUTH={AUTH!r}: use pam, lti13 or oauth")
c.Authenticator.allowed_users = {m.username for m in roster}
c.Authenticator.manage_groups = AUTH == "lti13"  # LTI 1.3: groups from the LMS's roles claim, at each launch
c.JupyterHub.load_groups = {} if AUTH == "lti13" else {name: {"users": users} for name, users in groups.items()}

# the admin page without the controls the roster and `mlbd hub stop` own (mlbd/hub/templates/admin.html)
c.JupyterHub.template_paths = [TEMPLATES]

# -- roles ---------------------------------------------------------------------------------------------
# TAs reach the formgrader's grading pages only; instructors also hold custom:formgrader:full, the
# course account's whole server (kernels, terminals, files, release/autograde). The service checks
# it on every request (mlbd.hub.formgrader_service).
c.JupyterHub.custom_scopes = {formgrader_service.FULL_ACCESS_SCOPE: {
    "description": "use the formgrader service's whole server (the course account's files, kernels, terminals)"}}
c.JupyterHub.load_roles = [
    {"name": "formgrader-access", "description": "reach the course formgrader",
     "scopes": ["access:services!service=formgrader"], "groups": ["instructors", "tas"]},
    {"name": "formgrader-full", "description": "the formgrader server beyond grading",
     "scopes": [formgrader_service.FULL_ACCESS_SCOPE], "groups": ["instructors"]},
    {"name": "course-instructor", "description": "see users, start and stop students' servers",
     "scopes": ["admin-ui", "list:users", "read:users", "list:groups", "read:groups", "read:servers",
                "admin:servers!group=students"],
     "groups": ["instructors"]},
    {"name": "idle-culler", "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
     "services": ["idle-culler"]},
]

# -- user servers -----------------------------------------------------------------------------------
c.JupyterHub.spawner_class = "mlbd.hub.spawner.CourseSpawner"
c.CourseSpawner.profiles = profiles.profile_list()
c.CourseSpawner.config_dirs = {"staff": str(s.etc / "staff"), "student": str(s.etc / "student")}
c.CourseSpawner.extra_path = bin_dir
c.Spawner.cmd = [python, "-P", "-m", "mlbd.hub.singleuser"]  # jupyterhub-singleuser, lighter; -P: home not on sys.path
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
c.Spawner.environment = {"LANG": "C.UTF-8"}
# per-student variants (mlbd.variant): each server gets its user's key, derived from the course copy's secret
c.CourseSpawner.course_id = s.course_id
c.CourseSpawner.variant_secret_file = str(Variants().secret_path(s.course_dir))
if s.home_base:
    c.Spawner.notebook_dir = "~"

# -- services ---------------------------------------------------------------------------------------
c.JupyterHub.services = [
    {
        "name": "formgrader",
        "display": True,
        "oauth_no_confirm": True,
        "url": f"http://127.0.0.1:{s.formgrader_port}",
        "user": grader,
        "cwd": str(s.course_dir),
        "command": [python, "-P", "-m", "mlbd.hub.formgrader_service", f"--ServerApp.root_dir={s.course_dir}"],
        "oauth_client_allowed_scopes": [formgrader_service.FULL_ACCESS_SCOPE],  # in instructors' tokens only
        "environment": {
            **grader_env(s),  # exchange, course id, gradebook: as the launcher's nbgrader steps (mlbd.hub.runas)
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            # + mlbd.formgrader: submission files by allowlist, active types as downloads in a CSP sandbox
            "JUPYTER_CONFIG_PATH": f"{s.etc / 'grader'}{os.pathsep}{FORMGRADER_CONFIG}",
            "JUPYTERHUB_DEFAULT_URL": "/formgrader",
            "JUPYTERHUB_DISABLE_USER_CONFIG": "1",  # no ~/.jupyter config of the course account
            "HOME": os.path.expanduser(f"~{grader}"),
            "LANG": "C.UTF-8",
        },
    },
    {
        "name": "idle-culler",
        "command": [python, "-m", "jupyterhub_idle_culler", f"--timeout={s.idle_timeout}", "--cull-every=300"],
    },
]

# -- site overrides -----------------------------------------------------------------------------------
# <state dir>/hub/jupyterhub_config_local.py (the root-only hub directory), when present, is read
# last: e.g. smaller limits for a test hub (c.CourseSpawner.profiles, c.CourseSpawner.pids_limit).
_local = s.hub_dir / "jupyterhub_config_local.py"
if _local.is_file():
    load_subconfig(str(_local))  # noqa: F821
