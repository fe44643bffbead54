#!/usr/bin/env python3
"""Init time and peak RSS of a Lambda function binary, under a minimal Lambda Runtime API stub.

Used by scripts/bench.sh (not a test). For each run: start the binary with AWS_LAMBDA_RUNTIME_API pointing at a
local stub, time from spawn to its first `GET /runtime/invocation/next` (what Lambda reports as Init Duration),
hand it one event, wait for its response or error, read the process's peak resident set (VmHWM in
/proc/PID/status), stop it. The events need no AWS call (an invalid request, S3's TestEvent), so no endpoint is
contacted. Prints one line: `init_ms=MEDIAN (min … max) invoke_ms=MEDIAN rss_kib=MAX answered=response|error`.

usage: bench_init.py BINARY EVENT.json [RUNS]
"""

import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time

API = "/2018-06-01/runtime"


class Stub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "runtime-api-stub"

    def log_message(self, *args):
        pass

    def _reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        run = self.server.run
        if self.path != f"{API}/invocation/next":
            return self._reply(404)
        if run["next_at"] is None:
            run["next_at"] = time.perf_counter()
        if run["served"]:
            # Only one invocation per run: hold the runtime here until it is stopped.
            run["done"].wait(30)
            return self._reply(500)
        run["served"] = True
        run["event_at"] = time.perf_counter()
        deadline = int(time.time() * 1000) + 30_000
        self._reply(
            200,
            run["event"],
            [
                ("Content-Type", "application/json"),
                ("Lambda-Runtime-Aws-Request-Id", "bench-request-1"),
                ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench"),
                ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0"),
            ],
        )

    def do_POST(self):
        run = self.server.run
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.endswith("/response"):
            run["answered"] = "response"
        elif self.path.endswith("/error"):
            run["answered"] = "error"
        else:  # /init/error
            run["answered"] = "init-error: " + body.decode(errors="replace")[:200]
        run["answer_at"] = time.perf_counter()
        self._reply(202, b"{}", [("Content-Type", "application/json")])
        run["answered_event"].set()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The runtime is killed while it waits for its next event: a reset connection is expected.
        pass


def environment(port):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # Never contacted (the events need no AWS call), but never a real endpoint either.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "RUST_LOG": "warn",
        "ARTIFACT_BUCKET": "layerforge-artifacts",
        "ARTIFACT_PREFIX": "layers",
        "BUILD_TARGETS": json.dumps({"arm64": {"job_queue": "q", "job_definition": "d"}}),
        "DEFAULT_RUNTIME": "python3.12",
        "DEFAULT_ARCHITECTURE": "arm64",
    }
    return env


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


def one_run(binary, event):
    server = Server(("127.0.0.1", 0), Stub)
    server.run = {
        "event": event,
        "next_at": None,
        "served": False,
        "answered": None,
        "done": threading.Event(),
        "answered_event": threading.Event(),
    }
    threading.Thread(target=server.serve_forever, daemon=True).start()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [binary], env=environment(server.server_address[1]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        if not server.run["answered_event"].wait(30):
            raise RuntimeError(f"{binary}: no answer within 30 s")
        if server.run["next_at"] is None:
            raise RuntimeError(f"{binary}: {server.run['answered']}")
        rss = vm_hwm_kib(proc.pid)
    finally:
        server.run["done"].set()
        proc.kill()
        _, stderr = proc.communicate()
        server.shutdown()
        server.server_close()
    run = server.run
    if run["answered"] not in ("response", "error"):
        raise RuntimeError(f"{binary}: {run['answered']}\n{stderr.decode(errors='replace')[-2000:]}")
    return (run["next_at"] - start) * 1000, (run["answer_at"] - run["event_at"]) * 1000, rss, run["answered"]


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    binary, event_file = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) == 4 else 5
    with open(event_file, "rb") as f:
        event = f.read()
    results = [one_run(binary, event) for _ in range(runs)]
    inits = [r[0] for r in results]
    invokes = [r[1] for r in results]
    print(
        f"init_ms={statistics.median(inits):.1f} (min {min(inits):.1f} max {max(inits):.1f}) "
        f"invoke_ms={statistics.median(invokes):.1f} rss_kib={max(r[2] for r in results)} "
        f"answered={results[-1][3]}"
    )


if __name__ == "__main__":
    main()
