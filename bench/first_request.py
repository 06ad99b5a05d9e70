#!/usr/bin/env python3
"""The first request: a cold start's first invocation next to warm ones, over real TLS, at Lambda memory sizes.

On Lambda the first call to each AWS endpoint pays a TLS handshake, and the first of all also loads the system's root
certificates. Both are CPU work, and Lambda gives a function CPU in proportion to its memory (one vCPU at 1,769 MB).
This harness reproduces that on loopback:

- moto serves the AWS APIs; bench/proxy.py in front of it, serving HTTPS with keep-alive, presents a leaf + intermediate chain (RSA 2048, like AWS's)
  for `localhost`, and the function trusts it through SSL_CERT_FILE = the system bundle plus our test root, so the
  root store it parses is the real size;
- the function runs in a cgroup whose CPU quota is memory / 1769 of one core (CFS period 20 ms), as Lambda does;
- a stand-in Lambda runtime API hands over three invocations, each for another instance of a fresh fleet of 12
  target groups.

For each memory size it runs the function with the warm-up off and on (`WARM_UP`), once with the first event waiting
(an on-demand cold start) and once with it arriving a few seconds after init (an environment Lambda started ahead of
its first event), and reports init (exec to first poll), the first invocation and the warm ones, each from the moment
the runtime API handed the event over to the moment the answer came back.

    bench/first_request.py [--memory 128,256,512,1024,1769] [--rtt-ms 2] [--repeat 3] [--event-after-s 3] [BINARY]

Needs root for the cgroup (cgroup v1 cpu controller at /sys/fs/cgroup/cpu, or v2 at /sys/fs/cgroup).
"""
import argparse
import http.server
import json
import os
import queue
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet as fleet_mod  # noqa: E402
from processes import Moto, QuietHandler, free_port, stop  # noqa: E402
from proxy import ThrottlingProxy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "first-request"
SYSTEM_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
FULL_VCPU_MB = 1769
CFS_PERIOD_US = 20000
INVOCATIONS = 3


# --- TLS material -----------------------------------------------------------------------------------------------

def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(directory):
    """A root, an intermediate and a leaf for localhost, all RSA 2048 as AWS's chain is. Returns (chain, key, bundle)."""
    directory.mkdir(parents=True, exist_ok=True)
    d = lambda name: str(directory / name)  # noqa: E731
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=spot-cleanup bench root",
            "-keyout", d("root.key"), "-out", d("root.pem"),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (directory / "ca.ext").write_text("basicConstraints=critical,CA:TRUE,pathlen:0\n"
                                      "keyUsage=critical,keyCertSign,cRLSign\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=spot-cleanup bench intermediate",
            "-keyout", d("intermediate.key"), "-out", d("intermediate.csr"))
    openssl("x509", "-req", "-in", d("intermediate.csr"), "-CA", d("root.pem"), "-CAkey", d("root.key"),
            "-CAcreateserial", "-days", "2", "-extfile", d("ca.ext"), "-out", d("intermediate.pem"))
    (directory / "leaf.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,"
                                        "keyEncipherment\nextendedKeyUsage=serverAuth\n"
                                        "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", d("leaf.key"), "-out", d("leaf.csr"))
    openssl("x509", "-req", "-in", d("leaf.csr"), "-CA", d("intermediate.pem"), "-CAkey", d("intermediate.key"),
            "-CAcreateserial", "-days", "2", "-extfile", d("leaf.ext"), "-out", d("leaf.pem"))
    chain = directory / "chain.pem"
    chain.write_text((directory / "leaf.pem").read_text() + (directory / "intermediate.pem").read_text())
    system = next((Path(p) for p in SYSTEM_BUNDLES if Path(p).exists()), None)
    if system is None:
        raise SystemExit("no system CA bundle found; the root store would be unrealistically small")
    bundle = directory / "bundle.pem"
    bundle.write_text(system.read_text() + (directory / "root.pem").read_text())
    return chain, directory / "leaf.key", bundle


# --- Stand-in Lambda runtime API --------------------------------------------------------------------------------

class RuntimeApi(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", free_port()), RuntimeHandler)
        self.pending = queue.Queue()
        self.polls = queue.Queue()      # perf_counter of each GET .../next
        self.handed = queue.Queue()     # perf_counter when each invocation was handed over
        self.answers = queue.Queue()    # (perf_counter, request id, status, body)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.server_address[1]}"


class RuntimeHandler(QuietHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        if not self.path.endswith("/runtime/invocation/next"):
            return self.reply(404, b"{}")
        self.server.polls.put(time.perf_counter())
        request_id, payload = self.server.pending.get()
        self.server.handed.put(time.perf_counter())
        body = json.dumps(payload).encode()
        self.send_response(200)
        deadline_ms = int((time.time() + 600) * 1000)
        for name, value in [("Lambda-Runtime-Aws-Request-Id", request_id),
                            ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                            ("Lambda-Runtime-Invoked-Function-Arn",
                             "arn:aws:lambda:us-east-1:123456789012:function:spot-cleanup"),
                            ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000"),
                            ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        parts = self.path.split("/")
        if "invocation" in parts:
            status = "response" if self.path.endswith("/response") else "error"
            self.server.answers.put((time.perf_counter(), parts[-2], status, body))
        self.reply(202, b"{}")



# --- CPU share ----------------------------------------------------------------------------------------------------

class CpuShare:
    """A cgroup with the CPU quota Lambda gives `memory_mb` of memory."""

    def __init__(self, memory_mb):
        quota = max(1000, round(CFS_PERIOD_US * memory_mb / FULL_VCPU_MB))
        name = f"spot-cleanup-bench-{memory_mb}-{os.getpid()}"
        v1 = Path("/sys/fs/cgroup/cpu")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.path = v1 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            self.path = Path("/sys/fs/cgroup") / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        self.procs = str(self.path / "cgroup.procs")

    def enter(self):
        """Run in the child before exec: move it into this cgroup."""
        with open(self.procs, "w") as procs:
            procs.write(str(os.getpid()))

    def close(self):
        try:
            self.path.rmdir()
        except OSError:
            pass


# --- One measurement ----------------------------------------------------------------------------------------------

def spot_event(instance_id):
    return {"instance_id": instance_id, "action": "terminate"}


def one_run(binary, moto, relay, bundle, memory_mb, warm_up, arrives_after, log_path):
    """One function process and three invocations. `arrives_after` None: the first event is already waiting when the
    function first polls (on-demand cold start); else it arrives that many seconds after that poll (an environment
    started ahead of its first event)."""
    moto.reset()
    fleet = fleet_mod.build(moto.endpoint, groups=12, spot_count=INVOCATIONS)
    runtime = RuntimeApi()
    events = [(str(uuid.uuid4()), spot_event(node.id)) for node in fleet.spot]
    first = events.pop(0)
    if arrives_after is None:
        runtime.pending.put(first)
    for event in events:
        runtime.pending.put(event)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": runtime.address,
        "AWS_LAMBDA_FUNCTION_NAME": "spot-cleanup",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_REGION": fleet_mod.REGION,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": relay.endpoint,
        "SSL_CERT_FILE": str(bundle),
        "SNS_TOPIC_ARN": fleet.topic_arn,
        "QUARANTINE_SECURITY_GROUP_ID": fleet.quarantine_group,
        "WARM_UP": "true" if warm_up else "false",
        # This measures connections, not the Describe* budget: no pacing between the three invocations.
        "ELB_DESCRIBE_RATE": "40",
    }
    share = CpuShare(memory_mb)
    relay.reset()
    with open(log_path, "ab") as log:
        started = time.perf_counter()
        process = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=share.enter)
    try:
        polls, handed, answers = [], [], []
        for i in range(INVOCATIONS):
            polls.append(runtime.polls.get(timeout=120))
            if i == 0 and arrives_after is not None:
                time.sleep(arrives_after)
                runtime.pending.put(first)
            handed.append(runtime.handed.get(timeout=120))
            answer = runtime.answers.get(timeout=300)
            if answer[2] != "response":
                raise SystemExit(f"invocation failed: {answer[3][:300]!r}; see {log_path}")
            answers.append(answer[0])
    finally:
        stop(process)
        runtime.shutdown()
        share.close()
    ms = lambda a, b: (b - a) * 1000  # noqa: E731
    return {
        "init_ms": ms(started, polls[0]),
        "first_ms": ms(handed[0], answers[0]),
        "cold_total_ms": ms(started, answers[0]),
        "warm_ms": statistics.median(ms(h, a) for h, a in zip(handed[1:], answers[1:])),
        "handshakes": relay.stats.snapshot()["connections"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", nargs="?", default=str(ROOT / "target" / "release" / "spot-cleanup"))
    parser.add_argument("--memory", default="128,256,512,1024,1769")
    parser.add_argument("--rtt-ms", type=float, default=2.0, help="added to every answer, as a round trip in region")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--event-after-s", type=float, default=3.0,
                        help="for the pre-started case: seconds between the first poll and the first event")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    chain, key, bundle = make_certificates(OUT / "tls")
    moto = Moto(OUT)
    # No rate limits here: this measures connections, not the Describe* budget (bench/run does that).
    relay = ThrottlingProxy(moto.port, args.rtt_ms, tls=(chain, key), throttle=False)
    rows = []
    try:
        for memory_mb in [int(m) for m in args.memory.split(",")]:
            for arrives_after in (None, args.event_after_s):
                for warm_up in (False, True):
                    runs = [one_run(args.binary, moto, relay, bundle, memory_mb, warm_up, arrives_after,
                                    OUT / "function.log") for _ in range(args.repeat)]
                    row = {"memory_mb": memory_mb, "warm_up": warm_up, "event_after_s": arrives_after,
                           **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        relay.close()
        moto.close()
    (OUT / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print("| memory | first event | warm-up | init | first invocation | warm invocation | first / warm | TLS connections |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        arrival = "waiting (on demand)" if r["event_after_s"] is None else f"{r['event_after_s']:g} s after init"
        print(f"| {r['memory_mb']} MB | {arrival} | {'on' if r['warm_up'] else 'off'} | {r['init_ms']:.0f} ms | "
              f"{r['first_ms']:.0f} ms | {r['warm_ms']:.0f} ms | {r['first_ms'] / r['warm_ms']:.1f}x | "
              f"{r['handshakes']:.0f} |")


if __name__ == "__main__":
    main()
