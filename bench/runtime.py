"""A stand-in for Lambda's runtime API that gives each invocation a real deadline, and the function process polling it.

`cargo lambda watch` (processes.Function) tells every invocation it has 600 s left, whatever its `--timeout` (that
flag is only how long the invoker waits for an answer). A cleanup plans around its deadline: no new locate or verify
call after it, claims and sweep leases never past it, a throttled group read again only while it allows. So a
benchmark of the template's 110 s function needs what Lambda sends: `Lambda-Runtime-Deadline-Ms`, the epoch
milliseconds at which the invocation ends, here counted from the moment the event is handed over. As on Lambda, an
invocation still running at its deadline is ended: the process is killed and the caller gets a `Sandbox.Timedout`
error.

`LambdaProcess` has the same face as processes.Function (invoke, log_lines, close), plus `wait_ready`, which returns
once the function has made its first poll: init is over, so it is not counted in the first invocation.
"""
import http.server
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid

from cold_init import vm_hwm_kib
from processes import ROOT, QuietHandler, free_port, json_lines, stop

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:spot-cleanup"


class RuntimeApi(http.server.ThreadingHTTPServer):
    """One execution environment's runtime API: hands over one event at a time and collects the answers."""

    daemon_threads = True

    def __init__(self, timeout_s):
        super().__init__(("127.0.0.1", free_port()), RuntimeHandler)
        self.timeout_s = timeout_s
        self.pending = queue.Queue()  # (request id, payload) not yet handed over
        self.polled = threading.Event()  # the function's first GET .../next
        self.lock = threading.Lock()
        self.handed = {}  # request id -> time.monotonic() when handed over
        self.answers = {}  # request id -> (HTTP status, body)
        self.answered = threading.Condition(self.lock)
        self.init_error = None
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        """A function that was stopped drops its connection mid-answer: not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RuntimeHandler(QuietHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if not self.path.endswith("/runtime/invocation/next"):
            return self.reply(404, b"{}")
        self.server.polled.set()
        handover = self.server.pending.get()
        if handover is None:  # closing
            return self.reply(410, b"{}")
        request_id, payload = handover
        with self.server.lock:
            self.server.handed[request_id] = time.monotonic()
        deadline_ms = int((time.time() + self.server.timeout_s) * 1000)
        body = json.dumps(payload).encode()
        self.send_response(200)
        for name, value in [("Lambda-Runtime-Aws-Request-Id", request_id),
                            ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                            ("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN),
                            ("Lambda-Runtime-Trace-Id", f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"),
                            ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = self.path.rstrip("/").split("/")
        if self.path.endswith("/init/error"):
            self.server.init_error = body.decode("utf-8", "replace")
        elif "invocation" in parts and parts[-1] in ("response", "error"):
            status = 200 if parts[-1] == "response" else 500
            with self.server.answered:
                self.server.answers[parts[-2]] = (status, body)
                self.server.answered.notify_all()
        self.reply(202, b"{}")



class LambdaProcess:
    """One execution environment: the binary polling its own stand-in runtime API, with the function's timeout."""

    def __init__(self, binary, env, log_dir, name, timeout_s, memory_mb=512):
        self.timeout_s = timeout_s
        self.api = RuntimeApi(timeout_s)
        self.function_log_path = log_dir / f"{name}.function.log"
        self.function_log = open(self.function_log_path, "wb")
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "AWS_LAMBDA_FUNCTION_NAME": "spot-cleanup",
            "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.process = subprocess.Popen(
            [str(binary)], env={**base, **env}, cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=self.function_log, stderr=subprocess.STDOUT,
        )
        self.timed_out = False

    def wait_ready(self, seconds=30):
        """Block until the function's first poll of the runtime API (its init is done)."""
        deadline = time.monotonic() + seconds
        while not self.api.polled.wait(0.05):
            if self.process.poll() is not None or self.api.init_error:
                raise SystemExit(f"the function did not start ({self.process.poll()}, {self.api.init_error}); "
                                 f"see {self.function_log_path}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the function did not poll within {seconds} s; see {self.function_log_path}")

    def invoke(self, payload):
        """Hand `payload` over and wait for the answer, at most the timeout after the hand-over. Returns (HTTP status,
        parsed answer); a timed-out invocation ends the process and answers as Lambda does."""
        request_id = str(uuid.uuid4())
        self.api.pending.put((request_id, payload))
        with self.api.answered:
            while request_id not in self.api.answers:
                handed = self.api.handed.get(request_id)
                if handed is not None and time.monotonic() > handed + self.timeout_s:
                    break
                if self.process.poll() is not None:
                    break
                self.api.answered.wait(0.1)
            answer = self.api.answers.get(request_id)
        if answer is None:
            if self.process.poll() is None:
                self.timed_out = True
                stop(self.process)
                return 500, {"errorType": "Sandbox.Timedout",
                             "errorMessage": f"Task timed out after {self.timeout_s:.2f} seconds"}
            return 500, {"errorType": "Runtime.ExitError",
                         "errorMessage": f"the process exited ({self.process.returncode})"}
        status, body = answer
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"unparsed": body.decode("utf-8", "replace")}

    def log_lines(self):
        """The function's JSON log lines so far."""
        if not self.function_log.closed:
            self.function_log.flush()
        return json_lines(self.function_log_path)

    def close(self):
        """Stop the process and the runtime API; returns the function's peak RSS in KiB, read just before."""
        rss = vm_hwm_kib(self.process.pid) if self.process.poll() is None else None
        stop(self.process)
        self.api.pending.put(None)
        self.api.shutdown()
        self.api.server_close()
        self.function_log.close()
        return rss
