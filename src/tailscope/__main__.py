from tailscope.cli import app

app(prog_name="tailscope")
