# Student image, GPU profile ("GPU (deep learning)" in hub_config/k8s/values.yaml): CUDA TensorFlow.
#   docker build -f docker/student-gpu.Dockerfile -t ghcr.io/mlbd-course/mlbd-student-gpu:0.1.0 .
# Same pinned base and stack as the CPU image; tensorflow-cpu is swapped for the CUDA build of the
# same TensorFlow version (tensorflow[and-cuda] brings the CUDA and cuDNN libraries as wheels;
# the node needs only the NVIDIA driver and the device plugin).
FROM quay.io/jupyter/minimal-notebook:2024-03-31

USER root
ENV USER=jovyan \
    MLBD_OFFLINE=1 \
    MPLBACKEND=Agg \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

COPY requirements.lock /tmp/mlbd/requirements.lock
COPY pyproject.toml README.md /tmp/mlbd/
COPY mlbd /tmp/mlbd/mlbd
# The same student packages as the CPU image (see there), with the CUDA build of the lock's TensorFlow.
RUN grep -v '^tensorflow-cpu==' /tmp/mlbd/requirements.lock > /tmp/mlbd/requirements-gpu.lock \
 && pip install -c /tmp/mlbd/requirements-gpu.lock \
      jupyterhub jupyterlab notebook nbgrader ipykernel \
      numpy pandas scikit-learn matplotlib "tensorflow[and-cuda]==2.21.0" keras tensorboard pooch \
 && pip install --no-deps /tmp/mlbd \
 && pip install --no-deps ngshare-exchange==0.5.3 \
 && jupyter labextension disable --level=sys_prefix @jupyter/nbgrader:create-assignment \
 && jupyter labextension disable --level=sys_prefix @jupyter/nbgrader:formgrader \
 && jupyter labextension disable --level=sys_prefix @jupyter/nbgrader:course-list \
 && jupyter server extension disable --sys-prefix nbgrader.server_extensions.formgrader \
 && jupyter server extension disable --sys-prefix nbgrader.server_extensions.course_list \
 && rm -rf /tmp/mlbd \
 && fix-permissions "${CONDA_DIR}" && fix-permissions "/home/${NB_USER}"

USER ${NB_UID}
