#!/usr/bin/env python3
"""What spot-agent costs while nothing happens: run it against a local IMDSv2 stand-in with no notice for a while,
then read its memory (VmRSS now, VmHWM the peak) and the CPU time it used (utime + stime from /proc/<pid>/stat).

    bench/agent_idle.py [BINARY] [--seconds 60] [--interval 2] [--kubernetes]

The stand-in answers the token PUT, the identity document and signature, and 404 on every notice path, exactly as
an instance that is not being interrupted does; the agent is never told to invoke anything.

With --kubernetes the agent runs as the DaemonSet does (NODE_NAME set), its Kubernetes client pointed by a kubeconfig
at a stand-in API server over TLS (a throwaway certificate made with the openssl CLI), which answers the one read of
the node the agent makes at start. That is the agent's idle state on EKS: the client built, one TLS connection made.
"""
import argparse
import base64
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

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


class KubeApi(http.server.BaseHTTPRequestHandler):
    """The agent's own Node, unlabelled: what the agent reads once at start."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        self.server.reads += 1
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE, "resourceVersion": "1", "labels": {"kubernetes.io/os": "linux"}}}
        body = json.dumps(node).encode()
        self.send_response(200 if self.path.split("?")[0] == f"/api/v1/nodes/{NODE}" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


NODE = "ip-10-0-1-10.us-east-1.compute.internal"


def kube_api(workdir):
    """A TLS stand-in for the API server, and a kubeconfig that trusts its certificate; returns (server, path)."""
    cert, key = os.path.join(workdir, "api.crt"), os.path.join(workdir, "api.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), KubeApi)
    server.reads = 0
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(cert, "rb") as f:
        ca = base64.b64encode(f.read()).decode()
    config = os.path.join(workdir, "kubeconfig")
    with open(config, "w") as f:
        f.write(f"""apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster:
    server: https://127.0.0.1:{server.server_address[1]}
    certificate-authority-data: {ca}
contexts:
- name: bench
  context: {{cluster: bench, user: spot-agent}}
current-context: bench
users:
- name: spot-agent
  user: {{token: bench-token}}
""")
    return server, config


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
    parser.add_argument("--kubernetes", action="store_true", help="run as the DaemonSet does, with a Kubernetes client")
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
    workdir = tempfile.mkdtemp(prefix="agent-idle-")
    api = None
    if args.kubernetes:
        api, env["KUBECONFIG"] = kube_api(workdir)
        env["NODE_NAME"] = NODE
    agent = subprocess.Popen([args.binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(args.seconds)
        result = {
            "binary": args.binary,
            "binary_mib": round(os.path.getsize(args.binary) / 2**20, 1),
            "seconds": args.seconds,
            "poll_interval_s": args.interval,
            "kubernetes": args.kubernetes,
            "requests_served": server.reads,
            "kubernetes_requests": api.reads if api else 0,
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
        if api:
            api.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
