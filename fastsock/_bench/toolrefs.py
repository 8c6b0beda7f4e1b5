"""W6's C references: redis-server and nginx with minimal configurations in a temp directory.

Both bind to 127.0.0.1 only, keep every file they write (logs, pid, temp paths) in that
directory, run in the foreground as one process (redis-server --daemonize no; nginx with
`daemon off; master_process off;`, so the process the runner measures is the one that
serves) and are stopped by the runner when the run ends.
"""

from __future__ import annotations

import os
from pathlib import Path

from .tools import SERVER, find

BODY = "Hello, World!"  # the 13-byte body of every W6 HTTP server

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        default_type text/plain;
        location / {{ return 200 "{body}"; }}
    }}
}}
"""


def argv(variant: str, port: int, tmp: str) -> list[str]:
    """The reference server's command line, its configuration written into `tmp`."""
    binary = find(SERVER[variant])
    assert binary is not None
    if variant == "resp":
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", tmp, "--logfile", os.path.join(tmp, "redis.log")]
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, body=BODY), encoding="utf-8")
    # -e: the error log before the configuration is read (else the compiled-in path is opened)
    return [binary, "-p", tmp, "-c", str(conf), "-e", os.path.join(tmp, "error.log")]


def log_tail(variant: str, tmp: str, limit: int = 400) -> str:
    """The end of the reference server's log (why it did not start)."""
    path = Path(tmp) / ("redis.log" if variant == "resp" else "error.log")
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()[-limit:]
    except OSError:
        return ""
