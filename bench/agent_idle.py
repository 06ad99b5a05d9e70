#!/usr/bin/env python3
"""What spot-agent costs while nothing happens: run it against a local IMDSv2 stand-in with no notice for a while,
then read its memory (VmRSS now, VmHWM the peak) and the CPU time it used (utime + stime from /proc/<pid>/stat).

    bench/agent_idle.py [BINARY] [--seconds 60] [--interval 2] [--listen]

The stand-in answers the token PUT, the identity document and signature, and 404 on every notice path, exactly as
an instance that is not being interrupted does; the agent is never told to invoke anything. With --listen, the agent
serves its probes and metrics (SPOT_AGENT_LISTEN_ADDRESS, SPOT_AGENT_METRICS=true) and is asked what the chart's
probes and a Prometheus scrape ask: /healthz every 10 s, /readyz every 5 s, /metrics every 15 s; each must answer 200.
"""
import argparse
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request

DOCUMENT = json.dumps(
    {"accountId": "123456789012", "instanceId": "i-0123456789abcdef0", "region": "us-east-1"}, indent=2
)
PATHS = {
    "/latest/dynamic/instance-identity/document": DOCUMENT,
    "/latest/dynamic/instance-identity/signature": "c2lnbmF0dXJl",
}


class Metadata(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):  # noqa: N802 (http.server's naming)
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        self.server.reads += 1
        self.reply(200, b"token", [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])

    def do_GET(self):  # noqa: N802
        self.server.reads += 1
        if self.headers.get("X-aws-ec2-metadata-token") != "token":
            return self.reply(401)
        body = PATHS.get(self.path)
        self.reply(200, body.encode()) if body is not None else self.reply(404)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5), counted after the command name: utime and stime, in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default="target/release/spot-agent")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--listen", action="store_true", help="serve probes and metrics, and ask them as the chart does")
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Metadata)
    server.reads = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "SPOT_CLEANUP_FUNCTION": "spot-cleanup",
        "SPOT_AGENT_POLL_INTERVAL": str(args.interval),
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "PATH": os.environ.get("PATH", ""),
    }
    probe_port = free_port()
    if args.listen:
        env["SPOT_AGENT_LISTEN_ADDRESS"] = f"127.0.0.1:{probe_port}"
        env["SPOT_AGENT_METRICS"] = "true"
    agent = subprocess.Popen([args.binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    asked = {}
    try:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.seconds:
            second = int(elapsed)
            for path, every in (("/healthz", 10), ("/readyz", 5), ("/metrics", 15)):
                if args.listen and second % every == 0 and (path, second) not in asked and second >= 2:
                    with urllib.request.urlopen(f"http://127.0.0.1:{probe_port}{path}", timeout=5) as answer:
                        asked[(path, second)] = answer.status
            time.sleep(0.1)
        failed = {k: v for k, v in asked.items() if v != 200}
        if failed:
            raise SystemExit(f"probes that did not answer 200: {failed}")
        result = {
            "binary": args.binary,
            "binary_mib": round(os.path.getsize(args.binary) / 2**20, 1),
            "seconds": args.seconds,
            "poll_interval_s": args.interval,
            "requests_served": server.reads,
            "listener": args.listen,
            "probe_and_metric_requests": len(asked),
            "vm_rss_kib": status_kib(agent.pid, "VmRSS"),
            "vm_hwm_kib": status_kib(agent.pid, "VmHWM"),
            "cpu_seconds": round(cpu_seconds(agent.pid), 3),
        }
        result["cpu_percent"] = round(100 * result["cpu_seconds"] / args.seconds, 3)
        print(json.dumps(result, indent=2))
    finally:
        agent.terminate()
        agent.wait(timeout=20)
        server.shutdown()


if __name__ == "__main__":
    main()
