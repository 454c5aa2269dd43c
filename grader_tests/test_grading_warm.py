"""Warm kernels (forked from the zygote): as isolated as cold ones, and nothing carries over.

Every job here runs in this test process, so consecutive jobs share one zygote — exactly the case
where one submission could try to reach the next.
"""
from __future__ import annotations

import os
import signal

import nbformat
import pytest

from mlbd.grading import zygote
from mlbd.grading.execute import execute_job
from mlbd.grading.protocol import Job, NotebookOutcome
from mlbd.grading.sandbox import Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grading-warm")]

CFG = {"Sandbox": {"memory_mb": 512}}


def run(*sources: str, config: dict | None = None, timeout: int = 60) -> tuple[list[str], NotebookOutcome]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    (out,) = execute_job(Job.one(nbformat.writes(nb), config or CFG, timeout)).notebooks
    cells = nbformat.reads(out.notebook, 4).cells
    texts = ["".join(o.get("text", "") + (f"{o.get('ename')}: {o.get('evalue')}" if o.get("output_type") == "error" else "")
                     for o in c.outputs) for c in cells]
    return texts, out


PLANT = r'''
import os, subprocess, numpy as np, sklearn.metrics
open("/tmp/planted", "w").write("x")
open("/dev/shm/planted", "w").write("x")
os.makedirs(os.environ["IPYTHONDIR"] + "/profile_default/startup", exist_ok=True)
open(os.environ["IPYTHONDIR"] + "/profile_default/startup/00-evil.py", "w").write("import numpy; numpy.allclose = lambda *a, **k: True")
np.allclose = lambda *a, **k: True
sklearn.metrics.accuracy_score = lambda *a, **k: 1.0
os.environ["PLANTED"] = "1"
subprocess.Popen(["sleep", "1000"], start_new_session=True)
print("planted", os.getppid())
'''

PROBE = r'''
import os, glob, numpy as np, sklearn.metrics
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
print("uid", os.getuid(), os.geteuid(), os.getgid())
print("caps", [status[k].strip() for k in ("CapEff", "CapPrm", "CapAmb")], "nnp", status["NoNewPrivs"].strip())
print("tmp", os.path.exists("/tmp/planted"), os.path.exists("/dev/shm/planted"))
print("allclose", np.allclose([0], [1]), "accuracy", sklearn.metrics.accuracy_score([0, 1], [1, 0]))
print("env", "PLANTED" in os.environ)
procs = [open(p).read().replace("\0", " ") for p in glob.glob("/proc/[0-9]*/cmdline")]
print("sleepers", sum("sleep" in p for p in procs))
try:
    print("boxes", os.listdir(os.path.dirname(os.path.dirname(os.getcwd()))) == [os.path.basename(os.path.dirname(os.getcwd()))])
except OSError:
    print("boxes True")
try:
    if os.getppid() == 0:           # the parent is outside the kernel's own pid namespace
        raise ProcessLookupError
    os.kill(os.getppid(), 0)
    print("zygote signalable")
except OSError:
    print("zygote protected", os.getpid())
'''


def test_a_submission_cannot_reach_the_next_one():
    planted, out1 = run(PLANT)
    assert "planted" in planted[0], planted
    probe, out2 = run(PROBE)
    assert out1.warm == [True] and out2.warm == [True], (out1, out2)
    text = probe[0]
    uid, euid, gid = (int(x) for x in text.split("uid ", 1)[1].split()[:3])
    assert uid == euid == gid and uid not in (0, 65534), text     # a uid of its own (c.Sandbox.job_uids)
    assert "caps ['0000000000000000', '0000000000000000', '0000000000000000'] nnp 1" in text, text
    assert "tmp False False" in text, text
    assert "allclose False accuracy 0.0" in text, text          # the zygote's modules, not the last kernel's
    assert "env False" in text and "sleepers 0" in text, text   # other boxes of this zygote: out of sight
    assert "boxes True" in text and "zygote protected 2" in text, text   # pid 2 of its own namespace


def test_same_output_as_a_cold_kernel():
    src = ("import sys, numpy as np, sklearn\nfrom sklearn.linear_model import LogisticRegression\n"
           "X = np.arange(20.).reshape(10, 2); y = np.arange(10) % 2\n"
           "print(LogisticRegression().fit(X, y).coef_.round(6).tolist(), [p for p in sys.path if 'mlbd-' not in p])")
    warm, w_out = run(src)
    cold, c_out = run(src, config={"Sandbox": dict(CFG["Sandbox"], warm_kernels=False)})
    assert w_out.warm == [True] and c_out.warm == [False]
    assert warm == cold and "''" in warm[0], (warm, cold)


def test_unseeded_randomness_differs_between_kernels():
    """Each kernel seeds numpy from the OS as a fresh interpreter would, not from the zygote's state."""
    a, _ = run("import numpy as np\nprint(np.random.rand())")
    b, _ = run("import numpy as np\nprint(np.random.rand())")
    assert a != b


def test_cpu_limit_is_named_and_the_zygote_survives():
    texts, out = run("x = 1", "while True:\n    pass", "print('after', x)",
                     config={"Sandbox": dict(CFG["Sandbox"], cpu_seconds=2)}, timeout=60)
    assert out.warm[0] is True
    assert any("CPU time limit of 2 s" in n for n in out.notes), out.notes
    assert "after 1" in texts[2], texts                       # replayed in a fresh warm kernel
    ok, again = run("print('still warm')", config={"Sandbox": dict(CFG["Sandbox"], cpu_seconds=2)})
    assert again.warm == [True] and "still warm" in ok[0]


def test_a_dead_zygote_is_replaced():
    run("print(1)")
    z = zygote.for_sandbox(Sandbox(config=_cfg()))
    os.kill(z.host_pid, signal.SIGKILL)
    z.proc.wait(10)
    texts, out = run("print('fresh')")
    assert out.warm == [True] and "fresh" in texts[0]
    assert zygote.for_sandbox(Sandbox(config=_cfg())) is not z


def _cfg():
    from traitlets.config import Config
    return Config(CFG)


@pytest.mark.parametrize("warm", [True, False])
def test_a_launcher_in_the_work_dir_does_not_start_the_kernel(warm):
    """An earlier notebook of the submission can leave files in the work dir for the next one: an
    ``ipykernel_launcher.py`` there must not be what a (cold) kernel starts from."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, builtins\nprint('ran', '' in sys.path, getattr(builtins, 'HIJACKED', False))")])
    hijack = b"import builtins\nbuiltins.HIJACKED = True\nimport ipykernel.kernelapp as a\na.launch_new_instance()\n"
    job = Job.one(nbformat.writes(nb), {"Sandbox": dict(CFG["Sandbox"], warm_kernels=warm)}, 60,
                  files={"ipykernel_launcher.py": hijack})
    (out,) = execute_job(job).notebooks
    assert out.warm == [warm]
    cell = nbformat.reads(out.notebook, 4).cells[0]
    assert "".join(o.get("text", "") for o in cell.outputs) == "ran True False\n", cell.outputs
