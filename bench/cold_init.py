#!/usr/bin/env python3
"""Cold init of the bootstrap: time from exec to its first poll of the Lambda runtime API, and its RSS then.

A stand-in runtime API on loopback notes when GET /runtime/invocation/next first arrives; the process is then
killed. That interval is what Lambda bills as init for a custom runtime, minus the sandbox's own start-up.

    bench/cold_init.py [BINARY] [--runs N]
"""
import argparse
import http.server
import os
import socket
import statistics
import subprocess
import threading
import time

NEXT = "/2018-06-01/runtime/invocation/next"


class FirstPoll(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == NEXT and self.server.polled_at is None:
            self.server.polled_at = time.perf_counter()
            self.server.polled.set()
        # Never answer: the function waits for an invocation until it is killed.
        time.sleep(5)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def one_run(binary):
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), FirstPoll)
    server.daemon_threads = True
    server.polled_at, server.polled = None, threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": "spot-cleanup",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",
        "SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:spot-cleanup",
        "QUARANTINE_SECURITY_GROUP_ID": "sg-0123456789abcdef0",
    }
    started = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not server.polled.wait(10):
            raise SystemExit(f"{binary} never polled the runtime API")
        rss = vm_hwm_kib(process.pid)
        return (server.polled_at - started) * 1000, rss
    finally:
        process.kill()
        process.wait()
        server.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", nargs="?", default="target/release/spot-cleanup")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    one_run(args.binary)  # warm the page cache, as a warm Lambda host would have it
    samples = [one_run(args.binary) for _ in range(args.runs)]
    times = sorted(t for t, _ in samples)
    rss = max(r for _, r in samples)
    print(f"binary        {args.binary} ({os.path.getsize(args.binary) / 1e6:.1f} MB)")
    print(f"cold init     median {statistics.median(times):.1f} ms, p90 {times[int(len(times) * 0.9) - 1]:.1f} ms, "
          f"min {times[0]:.1f} ms over {len(times)} runs (exec to first runtime poll)")
    print(f"RSS at poll   {rss / 1024:.1f} MiB (VmHWM)")


if __name__ == "__main__":
    main()
