"""nbgrader configuration for the course: the one place for ids, paths, time limits and sandbox settings.

`nbgrader autograde` and friends read this file as instructors know them; `mlbd` reads it too.
"""
import os
from pathlib import Path

c = get_config()  # noqa: F821  (injected by traitlets)

HERE = Path(__file__).resolve().parent

c.CourseDirectory.course_id = os.environ.get("MLBD_COURSE_ID", "mlbd")
c.CourseDirectory.root = str(HERE)
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = os.environ.get("MLBD_DB_URL", f"sqlite:///{HERE / 'gradebook.db'}")
# Only notebooks are assignment content; stray editor or cache files never reach students.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]

# Per-cell time limits (curriculum 0.2): 120 s for exercises; coursework 2 trains CNNs on CPU and
# gets longer ones from c.Sandbox.per_assignment below (read alike by mlbd grade, nbgrader autograde
# and the formgrader's Autograde button).
c.ExecutePreprocessor.timeout = 120
c.ExecutePreprocessor.interrupt_on_timeout = True

# Never let a runaway output flood the gradebook or feedback.
c.LimitOutput.max_lines = 1000
c.LimitOutput.max_traceback = 100

# Exchange: local filesystem (the embedded default); the hub overrides the root.
c.Exchange.root = os.environ.get("MLBD_EXCHANGE", str(HERE / ".exchange"))
c.Exchange.path_includes_course = True

# Per-student variants (mlbd.variant): the course secret every student's key derives from (made
# 0600 on first use; on Kubernetes the Secret mlbd-variant mounted in the hub and grader pods).
c.Variants.secret_file = os.environ.get("MLBD_VARIANT_SECRET_FILE", ".mlbd/variant_secret")

# Grading sandbox (mlbd grade, and plain `nbgrader autograde` through SandboxedExecute below):
# bubblewrap, uid 65534, no network, only the kernel's own work dir writable; cgroup memory/pids.
c.Sandbox.mode = os.environ.get("MLBD_SANDBOX", "bwrap")  # "none": development only, never for real submissions
c.Sandbox.memory_mb = 2048
c.Sandbox.pids_max = 128
c.Sandbox.file_size_mb = 64
c.Sandbox.cpu_seconds = 1800
c.Sandbox.wall_seconds = 900
c.Sandbox.disk_mb = 512          # the work dir is a tmpfs of this size (counted in memory_mb too)
c.Sandbox.per_assignment = {"coursework2": {"memory_mb": 3072, "disk_mb": 1024, "wall_seconds": 3600,
                                            "cell_timeout": 300}}
c.Sandbox.max_output_bytes_cell = 1_000_000
c.Sandbox.max_output_bytes_notebook = 8_000_000
# RepairMetadata: submitted cells lose the grader's own `mlbd` key; a bad tag or id costs only its cell.
c.Autograde.autograde_preprocessors = [
    "mlbd.grading.prepare.RepairMetadata",
    "mlbd.grading.kernel.SandboxedExecute", "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor", "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades", "mlbd.deadlines.ApplyDeadlines",
    "nbgrader.preprocessors.CheckCellMetadata"]
# Due dates, extensions and the late policy (mlbd/deadlines.py): the one place. Release writes the
# due date into the gradebook and a DEADLINE.md into the assignment students fetch; autograding
# (ApplyDeadlines, above, in place of nbgrader's AssignLatePenalties) adds the student's extension
# and charges lateness by the time the exchange received the submission, never the student's clock.
# Set the term's dates here, e.g. {"lecture01": "2027-01-22 17:00", "coursework1": "2027-02-19 17:00"}
# (hours for extensions: {"coursework1": {"s123": 48}}).
c.Deadlines.timezone = "Europe/London"
c.Deadlines.due = {}
c.Deadlines.extensions = {}
c.AssignLatePenalties.plugin_class = "mlbd.deadlines.LatePenalty"
c.LatePenalty.per_day = 0.10   # of the notebook's score, for each day or part of a day late
c.LatePenalty.cap = 0.5        # at most half, however late
# Student HTML and scripts (outputs, markdown answers) are sanitized wherever nbconvert renders
# them: the formgrader (same origin as the hub: a script there acts as the TA) and feedback.
# sanitize_html alone misses markdown (nbgrader's templates skip it) and image metadata: the filters
# and the preprocessor sanitize every piece with one allowlist (mlbd/render/sanitize.py). The
# formgrader's grading page also shows each manual answer's rubric from source/ (TAs only).
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.filters = {"markdown2html": "mlbd.render.sanitize.markdown2html",
                          "clean_html": "mlbd.render.sanitize.clean_html"}
c.HTMLExporter.preprocessors = ["mlbd.render.sanitize.SanitizeNotebook", "mlbd.render.rubric.Rubrics"]
# `nbgrader export`: quoted CSV with spreadsheet formulas neutralised (nbgrader's own writes names as
# they are); `--exporter=mlbd.export.CanvasExportPlugin` for Canvas' gradebook import.
c.ExportApp.plugin_class = "mlbd.export.SafeCsvExportPlugin"
# Feedback: hidden tests' source hidden, failure messages shown, size bounded.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades", "mlbd.grading.feedback.StudentFeedback",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]
