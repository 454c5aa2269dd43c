# The exchange service for Kubernetes (hub.services.ngshare in hub_config/k8s/values.yaml).
# ngshare 0.6.0 stores nothing under SQLAlchemy 2, so it has its own image and its own pins,
# outside the course's lock.
#   docker build -f docker/ngshare.Dockerfile -t ghcr.io/mlbd-course/ngshare:0.6.0 .
FROM python:3.11.9-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "ngshare==0.6.0" "sqlalchemy==1.4.54"
EXPOSE 8080
CMD ["python", "-m", "ngshare", "--admins", "grader-mlbd"]
