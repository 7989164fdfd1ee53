"""A stand-in model server for supervision tests: a real process serving `GET /v1/models` as
llama.cpp's server does, with knobs for the ways servers misbehave. Run as a script:

    python tests/support/fake_model_server.py --port P [--ready-after S] [--crash-after S]
        [--ignore-sigterm] [--child]

The real model server (llama.cpp serving SmolLM2) is what the end-to-end tests use; this one
makes crashes, slow starts and stubborn stops happen on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--crash-after", type=float, default=0.0)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--child", action="store_true", help="spawn a child process that must die with it")
    args = parser.parse_args()
    started = time.monotonic()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        print(f"child pid {child.pid}", flush=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/v1/models" or time.monotonic() - started < args.ready_after:
                self.send_error(503 if self.path == "/v1/models" else 404)
                return
            body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *values: object) -> None:
            print(f"request {format % values}", flush=True)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"fake model server pid {os.getpid()} on port {args.port}", flush=True)
    if args.crash_after:
        threading.Timer(args.crash_after, lambda: os._exit(3)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
