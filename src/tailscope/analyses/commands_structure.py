"""CLI subcommands of `tailscope analyze` (filled in by the analyses in this group)."""

from tailscope.analyses.cli import analyze_app  # noqa: F401
