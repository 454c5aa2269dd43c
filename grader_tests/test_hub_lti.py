"""LTI 1.3 logins, offline: the authenticator the hub config builds with MLBD_HUB_AUTH=lti13, fed the
claims of validated launches (no LMS here: the platform's signature check is ltiauthenticator's and
not exercised). Roster users map through the configured claim and column, their group comes from the
LTI roles claim, and everyone else is refused with a page that says whom to ask."""
from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
from tornado import web

from mlbd.hub import lti

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
LIS = "http://purl.imsglobal.org/vocab/lis/v2/membership"
LEARNER, INSTRUCTOR = [f"{LIS}#Learner"], [f"{LIS}#Instructor"]
TA = [f"{LIS}#Instructor", f"{LIS}/Instructor#TeachingAssistant"]   # as Canvas sends a TA


def hub_authenticator(tmp_path, monkeypatch, roster: Path, **env):
    """The authenticator class and config exactly as hub_config/jupyterhub_config.py sets them."""
    from jupyterhub.app import JupyterHub
    from traitlets.config import PyFileConfigLoader

    from mlbd.hub.settings import HubSettings

    s = HubSettings(repo=str(ROOT), state_dir=str(tmp_path / "state"), roster=str(roster))
    monkeypatch.setenv("MLBD_HUB_SETTINGS", str(s.save()))
    monkeypatch.setenv("MLBD_HUB_AUTH", "lti13")
    for k in ("MLBD_LTI_ISSUER", "MLBD_LTI_CLIENT_ID", "MLBD_LTI_AUTHORIZE_URL", "MLBD_LTI_JWKS_URL"):
        monkeypatch.setenv(k, "https://lms.example/x")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = PyFileConfigLoader("jupyterhub_config.py", path=str(ROOT / "hub_config")).load_config()
    assert cfg.JupyterHub.load_groups == {}, "with LTI the groups come from the launch, not the roster"
    cls = JupyterHub(config=cfg).authenticator_class
    return cls(config=cfg)


def launch(auth, **claims):
    """What JupyterHub does with a validated launch: authenticate, allowed-users check, groups."""
    return asyncio.run(auth.get_authenticated_user(None, claims))


def refusal(auth, **claims) -> str:
    with pytest.raises(web.HTTPError) as exc:
        launch(auth, **claims)
    assert exc.value.status_code == 403
    return exc.value.jupyterhub_message


def test_email_claim_maps_to_the_roster_and_roles_to_groups(tmp_path, monkeypatch):
    auth = hub_authenticator(tmp_path, monkeypatch, ROOT / "hub_config" / "roster.csv")
    assert isinstance(auth, lti.RosterLTI13Authenticator) and auth.manage_groups
    assert auth.username_key == "email" and auth.roster_column == "email"
    user = launch(auth, sub="lms-42", email="Student1@Example.org", **{lti.ROLES_CLAIM: LEARNER})
    assert user["name"] == "student1" and user["groups"] == ["students"]
    assert launch(auth, email="ta@example.org", **{lti.ROLES_CLAIM: TA})["groups"] == ["tas"]
    assert launch(auth, email="instructor@example.org", **{lti.ROLES_CLAIM: INSTRUCTOR})["groups"] == ["instructors"]
    # the LMS role decides, not the roster's: a roster TA launched as a Learner is a student
    assert launch(auth, email="ta@example.org", **{lti.ROLES_CLAIM: LEARNER})["groups"] == ["students"]

    msg = refusal(auth, sub="lms-99", email="stranger@example.org", **{lti.ROLES_CLAIM: LEARNER})
    assert "stranger@example.org" in msg and "not on this course's roster" in msg
    assert "Ada Instructor <instructor@example.org>" in msg, "the page must say whom to ask"
    msg = refusal(auth, email="student1@example.org", **{lti.ROLES_CLAIM: [f"{LIS}#Mentor"]})
    assert "Mentor" in msg and "Ask your instructor" in msg


def test_lms_id_column_and_course_context(tmp_path, monkeypatch):
    roster = tmp_path / "roster.csv"
    with open(roster, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["username", "role", "first_name", "last_name", "email", "lms_id"])
        w.writerow(["instructor", "instructor", "Ada", "I", "", "u-1"])
        w.writerow(["student1", "student", "Sam", "One", "", "u-7"])
    auth = hub_authenticator(tmp_path, monkeypatch, roster, MLBD_LTI_USERNAME_KEY="sub",
                             MLBD_LTI_ROSTER_COLUMN="lms_id", MLBD_LTI_COURSE_CONTEXTS="course-mlbd")
    ctx = {lti.CONTEXT_CLAIM: {"id": "course-mlbd"}}
    user = launch(auth, sub="u-7", email="whatever@example.org", **ctx, **{lti.ROLES_CLAIM: LEARNER})
    assert user["name"] == "student1" and user["groups"] == ["students"]
    # an email that is on no roster row does not matter: the LMS id does
    assert "not on this course's roster" in refusal(auth, sub="u-8", email="student1@example.org", **ctx,
                                                    **{lti.ROLES_CLAIM: LEARNER})
    # the right person launched from another course of the same LMS
    msg = refusal(auth, sub="u-7", **{lti.CONTEXT_CLAIM: {"id": "course-other"}, lti.ROLES_CLAIM: LEARNER})
    assert "another course" in msg and "course-other" in msg


def test_group_for_roles():
    assert lti.group_for(TA) == "tas"
    assert lti.group_for(INSTRUCTOR + LEARNER) == "instructors"
    assert lti.group_for(["Learner"]) == "students"
    assert lti.group_for([]) is None and lti.group_for([f"{LIS}#Administrator"]) is None
