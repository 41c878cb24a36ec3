"""The plan: pure functions from (topology, snapshot) to ordered actions, their command lines, and
status rows. Imports nothing that touches the host (import-linter enforces it)."""
