# Student image, CPU profile ("CPU (standard)" in hub_config/k8s/values.yaml).
#   docker build -f docker/student-cpu.Dockerfile -t ghcr.io/mlbd-course/mlbd-student-cpu:0.1.0 .
# Base: jupyter/docker-stacks minimal-notebook, pinned by date tag (Python 3.11.8, Ubuntu 22.04).
FROM quay.io/jupyter/minimal-notebook:2024-03-31

USER root
ENV USER=jovyan \
    MLBD_OFFLINE=1 \
    MPLBACKEND=Agg \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# What students use, at the lock's versions (-c: the lock constrains, it installs nothing by itself):
# the Jupyter stack and nbgrader's Assignments panel, the libraries the notebooks import, and the
# mlbd package (data helpers and checks the notebooks import) without its staff dependencies.
# Not here: the grader's, the tests' and the hub's packages (pytest, Playwright, KubeSpawner,
# otter-grader, Dask, copydetect, the authenticators).
COPY requirements.lock /tmp/mlbd/requirements.lock
COPY pyproject.toml README.md /tmp/mlbd/
COPY mlbd /tmp/mlbd/mlbd
RUN pip install -c /tmp/mlbd/requirements.lock \
      jupyterhub jupyterlab notebook nbgrader ipykernel \
      numpy pandas scikit-learn matplotlib tensorflow-cpu keras tensorboard pooch \
 && pip install --no-deps /tmp/mlbd \
 # The exchange across pods (ngshare); it pins an old jupyter-core, hence --no-deps.
 && pip install --no-deps ngshare-exchange==0.5.3 \
 # Students get the Assignments panel, not the instructor extensions.
 && jupyter labextension disable --level=sys_prefix @jupyter/nbgrader:create-assignment \
 && jupyter labextension disable --level=sys_prefix @jupyter/nbgrader:formgrader \
 && jupyter labextension disable --level=sys_prefix @jupyter/nbgrader:course-list \
 && jupyter server extension disable --sys-prefix nbgrader.server_extensions.formgrader \
 && jupyter server extension disable --sys-prefix nbgrader.server_extensions.course_list \
 && rm -rf /tmp/mlbd \
 && fix-permissions "${CONDA_DIR}" && fix-permissions "/home/${NB_USER}"

USER ${NB_UID}
