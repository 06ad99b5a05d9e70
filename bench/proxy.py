"""A throttling, latency-adding HTTP proxy between the function and moto, so a benchmark on loopback feels like AWS.

The function reaches it through AWS_ENDPOINT_URL. For every request it works out the service (from the SigV4
credential scope in the Authorization header) and the action (the query protocol's form-encoded `Action=`, or the
JSON protocol's X-Amz-Target), sleeps the configured latency, and then either forwards the request to moto or answers
with the service's own throttling error, as a token bucket decides:

- ELB: every Describe* action draws on one shared bucket of 40 tokens refilled at 10 per second (ELB's documented
  per-account, per-region limit for Describe* calls); other ELB actions are not limited here. Throttled calls get
  HTTP 400 with ELB's `Throttling` error body.
- EC2: request-rate buckets. EC2 evaluates each API action on its own bucket, sized by the action's category, so
  here every action gets its own: Describe* ("non-mutating") 100 tokens, 20 per second; everything else ("mutating",
  e.g. CreateTags, ModifyNetworkInterfaceAttribute) 50 tokens, 5 per second. Throttled calls get HTTP 503 with
  `RequestLimitExceeded`.
- Other services (SNS; Auto Scaling and DynamoDB if the function calls them): latency only. SNS Publish allows
  thousands per second.

It counts forwarded and throttled calls per (service, action), and notes when each DeregisterTargets came back from
moto (time.monotonic), and for which group, so a caller in the same process can compare with its own clock and know
where to look. Each DescribeTargetHealth is also noted with its time, whether it was throttled, and whether it read
a whole group (a sweep's read) or named targets (`Targets.member.N`: a check of particular targets).
"""
import http.client
import http.server
import re
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass

CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
# Hop-by-hop headers, and the framing we recompute ourselves.
NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}

ELB_THROTTLED = (
    '<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type>'
    "<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>{id}</RequestId></ErrorResponse>"
)
EC2_THROTTLED = (
    "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error>"
    "</Errors><RequestID>{id}</RequestID></Response>"
)


class TokenBucket:
    """`capacity` tokens, refilled continuously at `rate` per second; a call takes one or is refused."""

    def __init__(self, capacity, rate):
        self.capacity, self.rate = capacity, rate
        self.tokens, self.updated = float(capacity), time.monotonic()
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


@dataclass(frozen=True)
class Limit:
    """Which bucket a call draws on, its size, and how a refusal looks on the wire."""

    bucket: str
    size: str
    status: int
    body: str


# (capacity, refill per second) of each kind of bucket.
SIZES = {"elb-describe": (40, 10), "ec2-describe": (100, 20), "ec2-mutating": (50, 5)}
BUCKETS_DOC = {
    "elb-describe": "ELB Describe* (one bucket shared by all of them): 40 burst, 10/s",
    "ec2-describe": "EC2 Describe* (a bucket per action): 100 burst, 20/s",
    "ec2-mutating": "EC2 other actions (a bucket per action): 50 burst, 5/s",
}


def limit_for(service, action):
    """The limit a call falls under, or None for an unlimited one."""
    describe = action.startswith("Describe")
    if service == "elasticloadbalancing" and describe:
        return Limit("elb-describe", "elb-describe", 400, ELB_THROTTLED)
    if service == "ec2":
        return Limit(f"ec2:{action}", "ec2-describe" if describe else "ec2-mutating", 503, EC2_THROTTLED)
    return None


class Buckets:
    """Token buckets by key, each created full on first use."""

    def __init__(self):
        self.lock = threading.Lock()
        self.buckets = {}

    def take(self, limit):
        with self.lock:
            bucket = self.buckets.get(limit.bucket)
            if bucket is None:
                bucket = self.buckets[limit.bucket] = TokenBucket(*SIZES[limit.size])
        return bucket.take()


class Stats:
    """What the proxy saw since the last reset."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = Counter()  # (service, action) -> requests received
        self.throttled = Counter()  # (service, action) -> answered with a throttling error
        self.deregistered_at = []  # time.monotonic() when each forwarded DeregisterTargets came back
        self.errors = Counter()  # (service, action, status) -> forwarded calls that moto answered with an error
        # (time.monotonic(), named targets?, throttled?) of each DescribeTargetHealth received
        self.target_health = []
        # (time.monotonic(), target group ARN) of each DeregisterTargets moto answered with success
        self.deregistered_groups = []
        # (service, action, seconds since the request arrived) of each answer the caller no longer waited for (it
        # closed the connection first: an attempt timeout, or the process ended)
        self.dropped = []
        self.connections = 0  # connections the function opened (TLS handshakes, when serving HTTPS)

    def snapshot(self):
        with self.lock:
            return {
                "calls": dict(self.calls),
                "throttled": dict(self.throttled),
                "deregistered_at": list(self.deregistered_at),
                "errors": dict(self.errors),
                "connections": self.connections,
                "target_health": list(self.target_health),
                "deregistered_groups": list(self.deregistered_groups),
                "dropped": list(self.dropped),
            }


def identify(headers, body):
    """(service, action) of a signed AWS request."""
    scope = CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
    service = scope.group(1) if scope else "unknown"
    target = headers.get("X-Amz-Target")
    if target:
        return service, target.rsplit(".", 1)[-1]
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return service, form.get("Action", ["unknown"])[0]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()
        with self.server.proxy.stats.lock:
            self.server.proxy.stats.connections += 1

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.relay()

    def do_GET(self):  # noqa: N802
        self.relay()

    def relay(self):
        proxy = self.server.proxy
        arrived = time.monotonic()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        service, action = identify(self.headers, body)
        limit = limit_for(service, action) if proxy.throttle else None
        allowed = limit is None or proxy.buckets.take(limit)
        with proxy.stats.lock:
            proxy.stats.calls[(service, action)] += 1
            if not allowed:
                proxy.stats.throttled[(service, action)] += 1
            if action == "DescribeTargetHealth":
                proxy.stats.target_health.append((time.monotonic(), b"Targets.member" in body, not allowed))
        time.sleep(proxy.latency)
        if not allowed:
            self.answer(limit.status, [("Content-Type", "text/xml")], limit.body.format(id=uuid.uuid4()).encode(),
                        (service, action, arrived))
            return
        status, headers, payload = proxy.forward(self.command, self.path, self.headers, body)
        if status >= 400:
            with proxy.stats.lock:
                proxy.stats.errors[(service, action, status)] += 1
        if action == "DeregisterTargets" and status == 200:
            group = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("TargetGroupArn", [""])[0]
            with proxy.stats.lock:
                proxy.stats.deregistered_at.append(time.monotonic())
                proxy.stats.deregistered_groups.append((time.monotonic(), group))
        self.answer(status, headers, payload, (service, action, arrived))

    def answer(self, status, headers, payload, call):
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in NOT_FORWARDED:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            service, action, arrived = call
            with self.server.proxy.stats.lock:
                self.server.proxy.stats.dropped.append((service, action, round(time.monotonic() - arrived, 3)))
            self.close_connection = True

    def log_message(self, *args):
        pass


class ThrottlingProxy:
    """The proxy server, on a free loopback port, in daemon threads of this process."""

    def __init__(self, upstream_port, latency_ms, tls=None, throttle=True):
        """`tls`, a (certificate chain, key) pair of files, makes it an HTTPS endpoint; the handshake then happens in
        each connection's own thread, so a slow client never holds up the others."""
        self.upstream_port = upstream_port
        self.throttle = throttle
        self.latency = latency_ms / 1000
        self.local = threading.local()
        self.reset()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.proxy = self
        self.port = self.server.server_address[1]
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
            self.scheme = "https"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self):
        host = "localhost" if self.scheme == "https" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"

    def reset(self):
        """Full buckets and empty counters: each scenario starts from the same state."""
        self.buckets = Buckets()
        self.stats = Stats()

    def forward(self, method, path, headers, body):
        """Send the request on to moto over this thread's connection; returns (status, headers, body)."""
        for attempt in range(2):
            connection = getattr(self.local, "connection", None)
            if connection is None:
                connection = self.local.connection = http.client.HTTPConnection("127.0.0.1", self.upstream_port)
            try:
                forwarded = {k: v for k, v in headers.items() if k.lower() not in NOT_FORWARDED}
                connection.request(method, path, body=body, headers=forwarded)
                response = connection.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.HTTPException, OSError):
                # moto closed an idle keep-alive connection: reconnect once.
                connection.close()
                self.local.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        self.server.shutdown()
        self.server.server_close()
