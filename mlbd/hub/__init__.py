"""The embedded JupyterHub: roster → Unix accounts, the course copy the hub serves, the exchange
that keeps submissions private, spawner profiles, and the launcher behind `mlbd hub` / `make hub`."""

from pathlib import Path

TEMPLATES = str(Path(__file__).parent / "templates")   # c.JupyterHub.template_paths: the admin page
