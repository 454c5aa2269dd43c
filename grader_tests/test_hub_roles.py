"""The hub's trust boundaries, tried by the people they keep out: one live hub (accounts ``hv_*``,
free ports, throw-away state dir), real Unix accounts, PAM logins and real HTTP requests.

- each account logs in with its own password only (no shared or default one);
- a student reaches their own server and nothing else: not another student's server, not the
  formgrader, not the admin page or API;
- a TA grades in the formgrader (pages, manual scores, comments) but gets no kernel, terminal,
  file or release/autograde action of the course account there; an instructor gets all of it;
- `mlbd hub grade` (root) never executes the course copy's nbgrader_config.py;
- hidden tests, solutions, the gradebook and git's history are unreadable by a student account,
  in the repository and in the course copy; a repository that stays readable stops the start.

Needs root and configurable-http-proxy.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from mlbd import variant
from mlbd.course import CourseError
from mlbd.grading.instructor_run import Cache
from mlbd.hub import accounts, launcher
from mlbd.hub.client import HubError, HubUser
from mlbd.variant import Variants

from hub_support import login, password_for, run_as, running_hub

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hub"),
              pytest.mark.skipif(os.geteuid() != 0, reason="creates Unix accounts: run as root"),
              pytest.mark.skipif(not shutil.which("configurable-http-proxy"), reason="needs configurable-http-proxy (make hub installs it)")]

ASSIGNMENT = "lecture01"
NB = "L01_quickcheck"
SOURCE_NB = f"source/{ASSIGNMENT}/{NB}.ipynb"
FG = "/services/formgrader"


@pytest.fixture(scope="module")
def hub():
    with running_hub("hv", students=2) as s:
        yield s


def refused_login(s, user: str, password: str) -> bool:
    try:
        HubUser(s.url, user, timeout=60).login(password)
    except HubError:
        return True
    return False


def service(u: HubUser, method: str, path: str, **kw):
    """A request to the formgrader service with the browser's cookies (and its XSRF token)."""
    xsrf = u.http.cookies.get("_xsrf", path=f"{FG}/") or ""
    return u.http.request(method, f"{u.base}{FG}{path}", headers={"X-XSRFToken": xsrf},
                          allow_redirects=False, timeout=120, **kw)


def open_formgrader(u: HubUser):
    r = u.http.get(f"{u.base}{FG}/formgrader", timeout=120)  # follows the hub's OAuth
    return r


def test_each_account_has_its_own_password(hub):
    record = hub.passwords
    st = record.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    passwords = accounts.read_passwords(record)
    members = [m.username for m in accounts.read_roster(hub.roster)]
    assert sorted(passwords) == sorted(members)
    assert len(set(passwords.values())) == len(members)  # no two accounts share one
    # the system keeps a hash, not the clear text
    shadow = {line.split(":")[0]: line.split(":")[1] for line in Path("/etc/shadow").read_text().splitlines()}
    assert all(shadow[m].startswith("$") and passwords[m] not in shadow[m] for m in members)
    assert shadow[accounts.course_account(hub.course_id)][:1] in ("!", "*")  # the course account logs in nowhere

    login(hub, "hv_s1")  # her own password works
    assert refused_login(hub, "hv_s2", password_for(hub, "hv_s1"))  # not for another account
    assert refused_login(hub, "hv_instructor", password_for(hub, "hv_s1"))
    assert refused_login(hub, "hv_s1", "mlbd-demo")  # the old shared demo password
    assert refused_login(hub, "hv_s1", "")

    # a later start keeps every password
    assert accounts.ensure_passwords(members, record) == []
    assert accounts.read_passwords(record) == passwords


def test_student_reaches_only_her_own_server(hub):
    s2 = login(hub, "hv_s2")
    s2.spawn("cpu", timeout=240)
    try:
        s1 = login(hub, "hv_s1")
        # another student's running server: through the browser's cookie (the hub's OAuth) and the API
        r = s1.http.get(f"{hub.url}/user/hv_s2/lab", timeout=120)
        assert r.status_code == 403, (r.status_code, r.url)
        r = s1.http.get(f"{hub.url}/user/hv_s2/api/contents", timeout=120, allow_redirects=False,
                        headers={"Authorization": f"token {s1.make_token()}"})
        assert r.status_code == 403, r.status_code
        assert s1.hub_api("POST", "/users/hv_s2/server").status_code in (403, 404)
        assert s1.hub_api("DELETE", "/users/hv_s2/server").status_code in (403, 404)
        # the formgrader, the admin page, the users API, making herself admin
        assert open_formgrader(s1).status_code == 403
        assert s1.http.get(f"{hub.url}/hub/admin", timeout=60).status_code == 403
        assert s1.hub_api("GET", "/users").status_code == 403
        assert s1.hub_api("PATCH", "/users/hv_s1", json={"admin": True}).status_code in (403, 404)
        assert s1.hub_api("GET", "/users/hv_s1").json()["admin"] is False
        # her own server: yes (the control for the refusals above)
        assert s2.server("GET", "/api/contents").status_code == 200
        # and it carries her own variant key (mlbd.variant), derived from a secret she cannot read
        secret_file = Variants().secret_path(hub.course_dir)
        key = variant.student_key(secret_file.read_bytes().strip(), hub.course_id, "hv_s2")
        envs = [p.environ() for p in psutil.process_iter(["username", "cmdline"])
                if p.info["username"] == "hv_s2" and "mlbd.hub.singleuser" in " ".join(p.info["cmdline"] or [])]
        assert envs and all(e.get(variant.KEY_ENV) == key for e in envs), "hv_s2's server lacks her variant key"
        assert key != variant.student_key(secret_file.read_bytes().strip(), hub.course_id, "hv_s1")
        assert "secret" not in run_as("hv_s2", "import sys\ntry:\n    open(sys.argv[1]).read(); print('secret')\n"
                                      "except OSError:\n    print('refused')", hub, str(secret_file)).stdout
    finally:
        s2.stop_server()


def _grade_ids(s) -> dict:
    """A gradebook submission of hv_s1 (as the course account, which owns the gradebook); its
    manual answer's grade and comment ids."""
    code = ("import json, sys\nfrom nbgrader.api import Gradebook\n"
            "with Gradebook(sys.argv[1]) as gb:\n"
            "    try:\n        gb.find_submission(sys.argv[2], 'hv_s1')\n"
            "    except Exception:\n        gb.add_submission(sys.argv[2], 'hv_s1')\n"
            "    nb = gb.find_submission_notebook(sys.argv[3], sys.argv[2], 'hv_s1')\n"
            "    print(json.dumps({g.name: [g.id, c.id] for g in nb.grades for c in nb.comments if g.name == c.name}))\n")
    out = launcher.as_user(accounts.course_account(s.course_id),
                           [sys.executable, "-c", code, s.gradebook_url, ASSIGNMENT, NB],
                           cwd=s.course_dir, env=launcher.grader_env(s))
    return json.loads(out.stdout)


def test_ta_grades_but_cannot_climb(hub):
    grade_id, comment_id = _grade_ids(hub)["why_not_test"]
    ta = login(hub, "hv_ta")
    r = open_formgrader(ta)
    assert r.status_code == 200 and "Manage Assignments" in r.text
    assert service(ta, "GET", f"/formgrader/api/submitted_notebooks/{ASSIGNMENT}/{NB}").status_code == 200
    assert service(ta, "GET", f"/formgrader/gradebook/{ASSIGNMENT}/{NB}").status_code == 200
    r = service(ta, "PUT", f"/formgrader/api/grade/{grade_id}", data=json.dumps({"manual_score": 1}))
    assert r.status_code == 200 and r.json()["manual_score"] == 1, (r.status_code, r.text[:300])
    r = service(ta, "PUT", f"/formgrader/api/comment/{comment_id}", data=json.dumps({"manual_comment": "ok (TA)"}))
    assert r.status_code == 200 and r.json()["manual_comment"] == "ok (TA)"

    planted = hub.course_dir / "planted-by-ta.txt"
    refused = {
        "kernel": service(ta, "POST", "/api/kernels", json={"name": "python3"}),
        "terminal": service(ta, "POST", "/api/terminals"),
        "write a file": service(ta, "PUT", f"/api/contents/{planted.name}",
                                data=json.dumps({"type": "file", "format": "text", "content": "x"})),
        "write the config": service(ta, "PUT", "/api/contents/nbgrader_config.py",
                                    data=json.dumps({"type": "file", "format": "text", "content": "import os"})),
        "read source/": service(ta, "GET", f"/api/contents/{SOURCE_NB}"),
        "download source/": service(ta, "GET", f"/files/{SOURCE_NB}"),
        "JupyterLab": service(ta, "GET", "/lab"),
        "autograde": service(ta, "POST", f"/formgrader/api/submission/{ASSIGNMENT}/hv_s1/autograde"),
        "release": service(ta, "POST", f"/formgrader/api/assignment/{ASSIGNMENT}/release"),
        "edit a student": service(ta, "PUT", "/formgrader/api/student/hv_s1", data=json.dumps({"first_name": "x"})),
    }
    assert {k: r.status_code for k, r in refused.items()} == {k: 403 for k in refused}
    assert not planted.exists()

    # an instructor gets the course account's whole server (the same requests succeed)
    ins = login(hub, "hv_instructor")
    assert open_formgrader(ins).status_code == 200
    r = service(ins, "POST", "/api/kernels", json={"name": "python3"})
    assert r.status_code == 201, (r.status_code, r.text[:300])
    assert service(ins, "DELETE", f"/api/kernels/{r.json()['id']}").status_code == 204
    assert service(ins, "GET", f"/api/contents/{SOURCE_NB}").status_code == 200


def test_root_never_executes_the_course_copy_config(hub):
    """The course account (or a TA who got its shell) edits the course copy's nbgrader_config.py;
    `mlbd hub grade` runs as root and must not run that code."""
    grader = accounts.course_account(hub.course_id)
    marks = Path(tempfile.mkdtemp(dir=hub.state_dir))
    os.chmod(marks, 0o1777)
    config = hub.course_dir / "nbgrader_config.py"
    original = config.read_text()
    line = f"\nimport os as _os; open(f'{marks}/ran-as-{{_os.getuid()}}', 'w').close()\n"
    launcher.as_user(grader, ["/bin/sh", "-c", f"printf '%s' \"$1\" >> {config}", "sh", line], cwd=hub.course_dir)
    try:
        launcher.collect_and_grade(hub, ASSIGNMENT)
    finally:
        launcher.as_user(grader, [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                                  str(config), original], cwd=hub.course_dir)
    ran = sorted(p.name for p in marks.iterdir())
    assert f"ran-as-{pwd.getpwnam(grader).pw_uid}" in ran  # the course account's own steps read it (collect)
    assert "ran-as-0" not in ran, ran


def _student_reads(user: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *cmd], capture_output=True, text=True, timeout=60)


def test_course_files_closed_to_students(hub):
    repo, course = Path(hub.repo), hub.course_dir
    # the instructor's reference values (hidden tests' expected values), as `mlbd grade` writes them in a
    # course directory every user can traverse, after the hub closed the course files: the cache's own
    # modes close them
    open_course = Path(tempfile.mkdtemp(dir=hub.state_dir))
    os.chmod(open_course, 0o755)
    cache = Cache(open_course, ASSIGNMENT)
    cache.save("digest", {NB: {"t1": {"1:0:_ref(X)": "[('f', 0.5)]"}}})
    secret = [repo / SOURCE_NB, course / SOURCE_NB, course / "gradebook.db", repo / ".git" / "HEAD", cache.path]
    for path in secret:
        assert path.is_file(), path
        r = _student_reads("hv_s1", "cat", str(path))
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.returncode, r.stderr)
    assert _student_reads("hv_s1", "ls", str(repo / ".git" / "objects")).returncode != 0
    # what students are meant to read stays readable (the refusals above are the modes, not runuser)
    assert _student_reads("hv_s1", "cat", str(repo / "release" / ASSIGNMENT / f"{NB}.ipynb")).returncode == 0
    assert _student_reads("hv_s1", "ls", str(repo / ".venv" / "bin")).returncode == 0


def test_start_refused_while_a_student_can_read_source(hub):
    """A source/ whose group holds a student stays readable after chmod o-rwx: the hub refuses."""
    repo = Path(tempfile.mkdtemp(dir=hub.state_dir))
    (repo / "source").mkdir()
    (repo / "source" / "solution.ipynb").write_text("{}")
    os.chmod(repo, 0o755)
    shutil.chown(repo / "source", group="hv_s1")
    os.chmod(repo / "source", 0o750)
    members = accounts.read_roster(hub.roster)
    with pytest.raises(CourseError, match=r"hv_s1 can read course files.*\n.*source"):
        launcher.check_private(replace(hub, repo=str(repo)), members)
