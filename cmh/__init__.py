"""The composition root: the `cmh` command, the process registry and supervisor, and the map of
every database owner to its migrations. The one package that imports the gateway and every
service; `shared/` imports none of them (import-linter, pyproject.toml)."""
