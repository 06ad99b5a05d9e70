"""The benchmark's child processes: moto_server, and the function binary under `cargo lambda watch`'s runtime loop.

Every child is started by this module and stopped by it, by its own pid. The function gets a clean environment (no
AWS_PROFILE or endpoint from the caller's shell can leak in), and its peak RSS (VmHWM) is read just before it is
stopped.
"""
import http.client
import http.server
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from cold_init import vm_hwm_kib

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
INVOKE_TIMEOUT_SECS = 300


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, what, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start listening on port {port}")
            time.sleep(0.05)


def stop(process):
    """Terminate one child we started, then kill it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()





def json_lines(path):
    """The JSON lines of a log file; other lines are skipped."""
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler for the stand-in servers: answers with a body, logs nothing."""

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Moto:
    """moto_server on a free loopback port."""

    def __init__(self, log_dir):
        self.port = free_port()
        self.log = open(log_dir / "moto.log", "wb")
        self.process = subprocess.Popen(
            [VENV_BIN / "moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, "moto_server")

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def reset(self):
        """Forget every resource, as a fresh moto would."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request).close()

    def close(self):
        stop(self.process)
        self.log.close()


class Function:
    """`cargo lambda watch --only-lambda-apis` plus one process of the release binary polling it."""

    def __init__(self, binary, env, log_dir, name):
        self.port = free_port()
        self.emulator_log = open(log_dir / f"{name}.emulator.log", "wb")
        self.function_log_path = log_dir / f"{name}.function.log"
        self.function_log = open(self.function_log_path, "wb")
        self.emulator = subprocess.Popen(
            [VENV_BIN / "cargo-lambda", "lambda", "watch", "--only-lambda-apis", "--color", "never",
             "--invoke-address", "127.0.0.1", "--invoke-port", str(self.port),
             "--timeout", str(INVOKE_TIMEOUT_SECS)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.emulator_log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, "cargo lambda watch")
        self.process = subprocess.Popen(
            [binary], env=self.environment(env), cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=self.function_log, stderr=subprocess.STDOUT,
        )

    def environment(self, extra):
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{self.port}/.rt",
            "AWS_LAMBDA_FUNCTION_NAME": "_",
            "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        return {**base, **extra}

    def invoke(self, payload):
        """POST a payload to the Invoke API, as Lambda's Invoke does. Returns (HTTP status, parsed JSON answer)."""
        if self.process.poll() is not None:
            raise SystemExit(f"the function exited ({self.process.returncode}); see {self.function_log_path}")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=INVOKE_TIMEOUT_SECS + 30)
        try:
            connection.request("POST", "/2015-03-31/functions/_/invocations", body=json.dumps(payload),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, {"unparsed": body.decode("utf-8", "replace")}

    def log_lines(self):
        """The function's JSON log lines so far."""
        self.function_log.flush()
        return json_lines(self.function_log_path)

    def close(self):
        """Stop both processes; returns the function's peak RSS in KiB, read just before it is stopped."""
        rss = vm_hwm_kib(self.process.pid) if self.process.poll() is None else None
        stop(self.process)
        stop(self.emulator)
        self.function_log.close()
        self.emulator_log.close()
        return rss
