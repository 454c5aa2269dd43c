"""The grading engine behind `mlbd grade`: sandbox, execution pipeline, executors, integrity checks.

Modules, one job each:
    sandbox      limits (traitlets ``c.Sandbox.*``) and the bubblewrap command line
    cgroups      per-kernel memory/pids cgroups (v1 and v2)
    kernel       ``SandboxedKernelManager`` (jupyter_client) and ``SandboxedExecute`` (nbgrader)
    execute      run one prepared notebook in the sandbox (untrusted step; any worker)
    integrity    canary cells, the hook probe and the static scan
    prepare      trusted: nbgrader's sanitize steps, integrity checks inserted
    score        trusted, the only gradebook writer: nbgrader's scoring steps, flags, result records
    executors    local process pool, Dask LocalCluster, remote Dask scheduler
    pipeline     `mlbd grade`
    feedback     nbgrader generate_feedback preprocessor: hidden tests hidden, size bounded
"""
