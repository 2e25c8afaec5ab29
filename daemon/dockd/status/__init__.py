"""Operator-facing status: `dockctl` (and, later, the control socket and metrics)."""
