# Grader image: `mlbd grade` (bubblewrap sandbox), Dask workers, and the formgrader service.
#   docker build -f docker/grader.Dockerfile -t ghcr.io/mlbd-course/mlbd-grader:0.1.0 .
# The sandbox needs root (or CAP_SYS_ADMIN) in the container: run grading pods privileged or with
# the capabilities bubblewrap and cgroups need; the formgrader runs as the course account.
FROM python:3.11.9-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap util-linux git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --shell /bin/bash grader-mlbd
ENV MLBD_OFFLINE=1 \
    MPLBACKEND=Agg \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements.lock /opt/mlbd/requirements.lock
COPY pyproject.toml README.md nbgrader_config.py /opt/mlbd/
COPY mlbd /opt/mlbd/mlbd
# pip cannot leave out a dependency as uv does (pyproject.toml's [tool.uv] exclude-dependencies):
# rfc3987-syntax (jsonschema's optional IRI checker, ~1 s to import in every grading process) comes
# in through jupyter-events' extra and goes again.
RUN pip install -r /opt/mlbd/requirements.lock \
 && pip install --no-deps /opt/mlbd \
 && pip install --no-deps ngshare-exchange==0.5.3 \
 && pip uninstall -y rfc3987-syntax lark

WORKDIR /srv/course
CMD ["mlbd", "grade", "--help"]
