#!/usr/bin/env python3
"""What spot-agent costs while nothing happens: run it against a local IMDSv2 stand-in with no notice for a while,
then read its memory (VmRSS now, VmHWM the peak) and the CPU time it used (utime + stime from /proc/<pid>/stat).

    bench/agent_idle.py [BINARY] [--seconds 60] [--interval 2] [--kubernetes [--kubeconfig]] [--listen]

The stand-in answers the token PUT, the identity document and signature, and 404 on every notice path, exactly as
an instance that is not being interrupted does; the agent is never told to invoke anything.

With --kubernetes the agent runs as the DaemonSet does (NODE_NAME set) against a stand-in API server over TLS (a
throwaway cluster CA and serving certificate made with the openssl CLI), which answers the one read of the node the
agent makes at start: the agent's idle state on EKS, the client built and one TLS connection made. As root, the agent
finds the API server the way it does in a pod (in-cluster: KUBERNETES_SERVICE_HOST and _PORT, and the service account's
token and CA under /var/run/secrets/kubernetes.io/serviceaccount, mounted for it alone in a private mount namespace
with unshare); otherwise, or with --kubeconfig, through a kubeconfig file (KUBECONFIG), which also runs its YAML parser.

With --listen, the agent serves its probes and metrics (SPOT_AGENT_LISTEN_ADDRESS, SPOT_AGENT_METRICS=true) and is
asked what the chart's probes and a Prometheus scrape ask: /healthz every 10 s, /readyz every 5 s, /metrics every
15 s; each must answer 200.
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
    path = lambda name: os.path.join(workdir, name)  # noqa: E731
    cert, key, ca_cert, ca_key = path("api.crt"), path("api.key"), path("ca.crt"), path("ca.key")
    # A cluster CA and a serving certificate it signs, as a cluster has: a self-signed CA certificate cannot also be
    # the server's (rustls refuses a CA used as an end entity).
    openssl = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_cert, "-days", "1",
            "-subj", "/CN=bench-cluster-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", path("api.csr"), "-subj", "/CN=kube-apiserver")
    with open(path("api.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", path("api.csr"), "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
            "-days", "1", "-extfile", path("api.ext"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), KubeApi)
    server.reads = 0
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(ca_cert, "rb") as f:
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


def in_cluster(workdir, server):
    """The command prefix that runs the agent with the service account files at their in-cluster paths, and the
    environment that names the API server, as the kubelet gives a pod."""
    account = "/run/secrets/kubernetes.io/serviceaccount"
    with open(os.path.join(workdir, "token"), "w") as f:
        f.write("bench-token")
    with open(os.path.join(workdir, "namespace"), "w") as f:
        f.write("spot-cleanup")
    # /var/run is /run: a tmpfs over /run, for the agent alone, holds the three files where a pod has them.
    setup = (f"mount -t tmpfs tmpfs /run && mkdir -p {account} && cp {workdir}/token {workdir}/namespace {account}/ "
             f"&& cp {workdir}/ca.crt {account}/ca.crt && exec \"$0\"")
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup]
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.server_address[1])}
    return prefix, env


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
    parser.add_argument("--kubeconfig", action="store_true", help="with --kubernetes: a kubeconfig, not in-cluster")
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
    asked = {}
    workdir = tempfile.mkdtemp(prefix="agent-idle-")
    api, prefix, how = None, [], None
    if args.kubernetes:
        api, kubeconfig = kube_api(workdir)
        env["NODE_NAME"] = NODE
        if not args.kubeconfig and os.geteuid() == 0 and shutil.which("unshare"):
            prefix, cluster_env = in_cluster(workdir, api)
            env.update(cluster_env)
            how = "in-cluster"
        else:
            env["KUBECONFIG"] = kubeconfig
            how = "kubeconfig"
    agent = subprocess.Popen([*prefix, os.path.abspath(args.binary)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            "kubernetes": how,
            "requests_served": server.reads,
            "kubernetes_requests": api.reads if api else 0,
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
        if api:
            api.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
