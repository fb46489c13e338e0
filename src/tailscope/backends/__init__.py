"""Execution backends beyond the built-in local and process runners (see :mod:`tailscope.runner`)."""
