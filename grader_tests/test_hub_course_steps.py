"""The hub's course steps without a hub: the course copy's source/ is never overwritten, and
`mlbd hub release|grade|feedback` say what they need. Files only, no accounts, no processes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlbd import cli
from mlbd.course import CourseError
from mlbd.hub import launcher
from mlbd.hub.settings import HubSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def hub(tmp_path) -> HubSettings:
    repo = tmp_path / "repo"
    for a in ("lecture01", "lecture02"):
        (repo / "source" / a).mkdir(parents=True)
        (repo / "source" / a / f"{a}.ipynb").write_text(f"{a} v1")
    (repo / "nbgrader_config.py").write_text("c = get_config()\n")
    s = HubSettings(repo=str(repo), state_dir=str(tmp_path / "state"), roster="")
    s.hub_dir.mkdir(parents=True)
    s.course_dir.mkdir()
    return s


def nb(root: Path, a: str) -> Path:
    return root / "source" / a / f"{a}.ipynb"


def test_instructor_edits_in_the_course_copy_are_never_overwritten(hub):
    repo = Path(hub.repo)
    launcher.sync_source(hub)
    assert nb(hub.course_dir, "lecture01").read_text() == "lecture01 v1"

    # the repository changes: the next start brings it in
    nb(repo, "lecture01").write_text("lecture01 v2")
    launcher.sync_source(hub)
    assert nb(hub.course_dir, "lecture01").read_text() == "lecture01 v2"

    # an instructor edits the course copy (formgrader / course account's server), and the repository
    # changes too: the start refuses, names the file, and both versions stay as they are
    nb(hub.course_dir, "lecture01").write_text("lecture01 edited on the hub")
    (hub.course_dir / "source" / "lecture02" / "extra.ipynb").write_text("new on the hub")
    nb(repo, "lecture01").write_text("lecture01 v3")
    with pytest.raises(CourseError, match=r"(?s)lecture01/lecture01.ipynb\n.*lecture02/extra.ipynb\n.*source of truth"):
        launcher.sync_source(hub)
    assert nb(hub.course_dir, "lecture01").read_text() == "lecture01 edited on the hub"
    assert (hub.course_dir / "source" / "lecture02" / "extra.ipynb").is_file()

    # the instructor carries the edit into the repository and removes the new file: the start goes on
    nb(repo, "lecture01").write_text("lecture01 edited on the hub")
    (hub.course_dir / "source" / "lecture02" / "extra.ipynb").unlink()
    launcher.sync_source(hub)
    assert launcher.source_edits(hub) == []

    # deleted in the course copy: the repository's comes back; deleted in the repository: it goes
    nb(hub.course_dir, "lecture02").unlink()
    launcher.sync_source(hub)
    assert nb(hub.course_dir, "lecture02").read_text() == "lecture02 v1"
    nb(repo, "lecture02").unlink()
    launcher.sync_source(hub)
    assert not nb(hub.course_dir, "lecture02").exists()


def test_a_link_in_the_course_copy_is_refused_not_written_through(hub, tmp_path):
    launcher.sync_source(hub)
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = hub.course_dir / "source" / "lecture01"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    folder.symlink_to(outside)
    nb(Path(hub.repo), "lecture01").write_text("lecture01 v2")
    with pytest.raises(CourseError, match="lecture01"):
        launcher.sync_source(hub)
    assert os.listdir(outside) == []


def run_hub_cli(capsys, *args) -> tuple[int, str]:
    code = cli.main(["hub", *args])
    return code, capsys.readouterr().err


def test_course_steps_need_a_known_assignment(hub, capsys):
    for action in ("grade", "release", "feedback"):
        code, err = run_hub_cli(capsys, action, "--state-dir", hub.state_dir, "--course-dir", hub.repo)
        assert code != 0 and f"usage: mlbd hub {action} ASSIGNMENT" in err and "lecture01, lecture02" in err, err
    code, err = run_hub_cli(capsys, "grade", "lectur01", "--state-dir", hub.state_dir, "--course-dir", hub.repo)
    assert code != 0 and "did you mean lecture01" in err and "generate_assignment" not in err, err
