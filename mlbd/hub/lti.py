"""LTI 1.3 logins for the course: the LMS user becomes their roster account, the LMS role their group.

``RosterLTI13Authenticator`` is ltiauthenticator's ``LTI13Authenticator`` (which validates the
platform's signed launch) with three checks after it:

- the launch comes from the course's LMS context(s), when ``course_contexts`` is set;
- one claim of the launch (``username_key``: ``email`` by default, ``sub`` for the LMS's user id,
  ``custom_<name>`` for a custom parameter) matches a value of one roster column
  (``roster_column``: ``email``, or e.g. ``lms_id``): that row's ``username`` is the hub user;
- the LTI roles claim gives the group: TeachingAssistant -> ``tas``, Instructor -> ``instructors``,
  Learner -> ``students`` (a TA sub-role wins over the Instructor principal role it comes with).

Anyone else gets a page that says why and whom to ask (``contact``: by default the roster's
instructors). The module imports only JupyterHub, ltiauthenticator and the standard library, so a
stock Zero to JupyterHub hub image can load it as a file too.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ltiauthenticator.lti13.auth import LTI13Authenticator
from tornado import web
from traitlets import Bool, Set, Unicode, default

ROLES_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/roles"
CONTEXT_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/context"
LIS = "http://purl.imsglobal.org/vocab/lis/v2/membership"
# (role URI, or its LTI 1.1 short name) -> group, least privileged first: the first match wins
ROLE_GROUPS = (
    ((f"{LIS}/Instructor#TeachingAssistant", "TeachingAssistant"), "tas"),
    ((f"{LIS}#Instructor", "Instructor"), "instructors"),
    ((f"{LIS}#Learner", "Learner"), "students"),
)


def group_for(roles: list[str]) -> str | None:
    """The course group for an LTI roles claim, or None when it holds none of the course's roles."""
    held = set(roles or [])
    for names, group in ROLE_GROUPS:
        if held & set(names):
            return group
    return None


def roster_index(path: Path | str, column: str) -> dict[str, str]:
    """``column`` value (case-folded) -> username, for every roster row that has one."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no column {column!r} to match LTI users with")
        return {row[column].strip().casefold(): row["username"].strip()
                for row in reader if (row.get(column) or "").strip() and (row.get("username") or "").strip()}


def instructors(path: Path | str) -> str:
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if (r.get("role") or "").strip().lower() == "instructor"]
    names = [" ".join(filter(None, (r.get("first_name", "").strip(), r.get("last_name", "").strip())))
             + (f" <{r['email'].strip()}>" if (r.get("email") or "").strip() else "") for r in rows]
    return ", ".join(n.strip() for n in names if n.strip())


def refuse(message: str) -> web.HTTPError:
    err = web.HTTPError(403, message)
    err.jupyterhub_message = message  # shown as it is on the hub's error page
    return err


class RosterLTI13Authenticator(LTI13Authenticator):
    roster = Unicode(help="the course roster (CSV with username, role and roster_column)").tag(config=True)
    roster_column = Unicode("email", help="roster column matched against the launch's username_key claim "
                                          "(email, or an LMS id column such as lms_id)").tag(config=True)
    course_contexts = Set(Unicode(), help="LMS context (course) ids whose launches are admitted; "
                                          "empty: any context of this tool's client id").tag(config=True)
    contact = Unicode(help="whom a refused user should ask (default: the roster's instructors)").tag(config=True)
    manage_groups = Bool(True, help="groups come from the LTI roles claim").tag(config=True)

    @default("contact")
    def _contact_default(self):
        who = instructors(self.roster) if self.roster else ""
        return f"your instructor ({who})" if who else "your instructor"

    @default("username_key")
    def _username_key_default(self):
        return "email"

    async def authenticate(self, handler, data=None):
        claims = data or {}
        context = (claims.get(CONTEXT_CLAIM) or {}).get("id", "")
        if self.course_contexts and context not in self.course_contexts:
            raise refuse(f"This hub serves another course than the one you launched it from (context {context!r}). "
                         f"Use the link in your course's LMS page, or ask {self.contact}.")
        value = str(self.get_username(claims)).strip()
        username = roster_index(self.roster, self.roster_column).get(value.casefold())
        if not username:
            raise refuse(f"Your LMS account ({self.username_key}: {value}) is not on this course's roster, so the "
                         f"hub has no account for you. Ask {self.contact} to add you to the roster.")
        group = group_for(claims.get(ROLES_CLAIM, []))
        if not group:
            raise refuse(f"Your role in the LMS course ({', '.join(claims.get(ROLES_CLAIM, [])) or 'none'}) is not "
                         f"Learner, TeachingAssistant or Instructor. Ask {self.contact}.")
        self.log.info("LTI launch: %s %s -> %s (%s)", self.username_key, value, username, group)
        return {"name": username, "auth_state": claims, "groups": [group]}
