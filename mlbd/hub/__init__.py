"""The embedded JupyterHub: roster → Unix accounts, the course copy the hub serves, the exchange
that keeps submissions private, spawner profiles, and the launcher behind `mlbd hub` / `make hub`."""
