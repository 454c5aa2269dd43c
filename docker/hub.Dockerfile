# Hub image for Kubernetes (hub.image in hub_config/k8s/values.yaml): the Zero to JupyterHub chart's
# own hub image, on the JupyterHub the course pins, with the mlbd package for the LTI 1.3 roster
# authenticator (mlbd.hub.lti needs only JupyterHub and ltiauthenticator, both in this image).
#   docker build -f docker/hub.Dockerfile -t ghcr.io/mlbd-course/mlbd-hub:0.1.0 .
# Chart 4.4.0's image ships jupyterhub 5.5.0; the lock (and the student images' singleuser) has 6.1.1.
FROM quay.io/jupyterhub/k8s-hub:4.4.0

USER root
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/mlbd/requirements.lock
COPY pyproject.toml README.md /tmp/mlbd/
COPY mlbd /tmp/mlbd/mlbd
RUN pip install -c /tmp/mlbd/requirements.lock jupyterhub \
 && pip install --no-deps /tmp/mlbd \
 && rm -rf /tmp/mlbd
USER ${NB_USER}
