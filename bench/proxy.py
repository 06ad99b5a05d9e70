"""A throttling, latency-adding HTTP proxy between the function and moto, so a benchmark on loopback feels like AWS.

The function reaches it through AWS_ENDPOINT_URL. For every request it works out the service (from the SigV4
credential scope in the Authorization header) and the action (the query protocol's form-encoded `Action=`, or the
JSON protocol's X-Amz-Target), sleeps the configured latency, and then either forwards the request to moto or answers
with the service's own throttling error, as a token bucket decides:

- ELB, as the ELB user guide's "Request throttling for the ELB API" documents it: every ELB call draws on the
  account-level bucket that all ELB actions share (40 tokens, 10 per second) and on its category's bucket:
  RegisterTargets and DeregisterTargets 20 tokens, 4 per second; Describe* 40, 10 per second; every other action
  20, 3 per second. A call goes through only if both buckets have a token. Throttled calls get HTTP 400 with ELB's
  `Throttling` error body. `model="describe"` keeps the older, looser model for comparison: one Describe* bucket
  (40, 10 per second) and nothing else limited.
- EC2: request-rate buckets. EC2 evaluates each API action on its own bucket, sized by the action's category, so
  here every action gets its own: Describe* ("non-mutating") 100 tokens, 20 per second; CreateTags 100, 10 per
  second; ModifyNetworkInterfaceAttribute 100, 5 per second; everything else ("mutating", e.g. DeleteTags) 50 tokens,
  5 per second (EC2 API reference, "Request throttling"). Throttled calls get HTTP 503 with `RequestLimitExceeded`.
- Other services (SNS; Auto Scaling and DynamoDB if the function calls them): latency only. SNS Publish allows
  thousands per second.

Faults, set per run with `set_faults` (bench/faults.py), come on top:
- `spurious` p: any ELB or EC2 call is answered, with probability p and whatever the buckets say, with that service's
  throttling error above (what a mass Spot reclaim brings: the account's other callers draw on the same limits). The
  draw is seeded: the n-th call of an action gets the same answer in every run with the same seed.
- `down`: services (dynamodb, kms, sns, ...) answered with HTTP 503 and that service's "service unavailable" error
  (DOWN_BODIES; the SDK models none of them as an error type: its retry classifier goes by the 503).
- `slow`: extra seconds per call for (service, action prefix) pairs, e.g. ("dynamodb", "") 5 s or
  ("elasticloadbalancing", "Describe") 2 s, slept before the call is answered, whatever the answer.

It counts forwarded and throttled calls per (service, action) (injected throttles and 503s apart), and notes when each DeregisterTargets came back from
moto (time.monotonic), and for which group, so a caller in the same process can compare with its own clock and know
where to look. Each DescribeTargetHealth is also noted with its time, whether it was throttled, and whether it read
a whole group (a sweep's read) or named targets (`Targets.member.N`: a check of particular targets).
"""
import http.client
import http.server
import random
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


# "Service unavailable" as each service says it: the code of the AWS common errors (ServiceUnavailable, HTTP 503),
# in the service's protocol: JSON 1.0 (DynamoDB, with the message its developer guide gives for a 503), JSON 1.1
# (KMS), the query protocol's XML (SNS, ELB, Auto Scaling), EC2's own XML (`Unavailable`, its 503 code).
DOWN_BODIES = {
    "dynamodb": ("application/x-amz-json-1.0",
                 '{{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailable",'
                 '"message":"DynamoDB is currently unavailable. (This should be a temporary state.)"}}'),
    "kms": ("application/x-amz-json-1.1",
            '{{"__type":"ServiceUnavailable","message":"The service is unavailable. Try again later."}}'),
    "sns": ("text/xml",
            '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Receiver</Type>'
            "<Code>ServiceUnavailable</Code><Message>Service is unavailable</Message></Error>"
            "<RequestId>{id}</RequestId></ErrorResponse>"),
    "elasticloadbalancing": ("text/xml",
                             '<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">'
                             "<Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>Service is "
                             "unavailable</Message></Error><RequestId>{id}</RequestId></ErrorResponse>"),
    "autoscaling": ("text/xml",
                    '<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Receiver'
                    "</Type><Code>ServiceUnavailable</Code><Message>Service is unavailable</Message></Error>"
                    "<RequestId>{id}</RequestId></ErrorResponse>"),
    "ec2": ("text/xml",
            "<Response><Errors><Error><Code>Unavailable</Code><Message>The server is overloaded and can't handle "
            "the request.</Message></Error></Errors><RequestID>{id}</RequestID></Response>"),
}
# Services whose calls `spurious` throttles, and how.
SPURIOUS = {
    "elasticloadbalancing": (400, ELB_THROTTLED),
    "ec2": (503, EC2_THROTTLED),
}


@dataclass
class Faults:
    """What a run injects: see the module's docstring."""

    spurious: float = 0.0
    seed: int = 0
    down: frozenset = frozenset()
    slow: tuple = ()  # ((service, action prefix, seconds), ...)

    def extra_delay(self, service, action):
        return sum(s for svc, prefix, s in self.slow if svc == service and action.startswith(prefix))

    def throttles(self, service, action, n):
        """Whether the n-th call (from 0) of (service, action) gets a spurious throttling error: a draw of its own,
        seeded by the run's seed, so it does not depend on the order in which threads reach the proxy."""
        if self.spurious <= 0 or service not in SPURIOUS:
            return False
        return random.Random(f"{self.seed}:{service}:{action}:{n}").random() < self.spurious

    def describe(self):
        parts = []
        if self.spurious:
            parts.append(f"spurious {self.spurious:.0%} (seed {self.seed})")
        parts += [f"{service} down" for service in sorted(self.down)]
        parts += [f"{service}:{prefix or ''}* +{seconds:g} s" for service, prefix, seconds in self.slow]
        return ", ".join(parts) or "none"


class TokenBucket:
    """`capacity` tokens, refilled continuously at `rate` per second; a call takes one or is refused."""

    def __init__(self, capacity, rate):
        self.capacity, self.rate = capacity, rate
        self.tokens, self.updated = float(capacity), time.monotonic()
        self.lock = threading.Lock()

    def refill(self):
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def has_token(self):
        with self.lock:
            self.refill()
            return self.tokens >= 1

    def take(self):
        with self.lock:
            self.refill()
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
SIZES = {
    "elb-account": (40, 10), "elb-registration": (20, 4), "elb-describe": (40, 10), "elb-mutating": (20, 3),
    "ec2-describe": (100, 20), "ec2-mutating": (50, 5), "ec2-create-tags": (100, 10),
    "ec2-modify-network-interface": (100, 5),
}
BUCKETS_DOC = {
    "elb-account": "ELB, every action (one bucket per account and region): 40 burst, 10/s",
    "elb-registration": "ELB RegisterTargets and DeregisterTargets (one bucket): 20 burst, 4/s",
    "elb-describe": "ELB Describe* (one bucket shared by all of them): 40 burst, 10/s",
    "elb-mutating": "ELB other actions (one bucket): 20 burst, 3/s",
    "ec2-describe": "EC2 Describe* (a bucket per action): 100 burst, 20/s",
    "ec2-create-tags": "EC2 CreateTags: 100 burst, 10/s",
    "ec2-modify-network-interface": "EC2 ModifyNetworkInterfaceAttribute: 100 burst, 5/s",
    "ec2-mutating": "EC2 other actions (a bucket per action): 50 burst, 5/s",
}
# The ELB models: AWS's documented buckets, or the older Describe*-only one.
MODELS = ("aws", "describe")
EC2_ACTION_SIZES = {"CreateTags": "ec2-create-tags", "ModifyNetworkInterfaceAttribute": "ec2-modify-network-interface"}


def limits_for(service, action, model="aws"):
    """The limits a call falls under: it goes through only if every one has a token. Empty for an unlimited call."""
    describe = action.startswith("Describe")
    if service == "elasticloadbalancing":
        if model == "describe":
            return [Limit("elb-describe", "elb-describe", 400, ELB_THROTTLED)] if describe else []
        if action in ("RegisterTargets", "DeregisterTargets"):
            category = "elb-registration"
        else:
            category = "elb-describe" if describe else "elb-mutating"
        return [Limit("elb-account", "elb-account", 400, ELB_THROTTLED), Limit(category, category, 400, ELB_THROTTLED)]
    if service == "ec2":
        size = "ec2-describe" if describe else EC2_ACTION_SIZES.get(action, "ec2-mutating")
        return [Limit(f"ec2:{action}", size, 503, EC2_THROTTLED)]
    return []


class Buckets:
    """Token buckets by key, each created full on first use."""

    def __init__(self):
        self.lock = threading.Lock()
        self.buckets = {}

    def take_all(self, limits):
        """A token from every limit's bucket, or from none: the first limit without one, or None when taken."""
        with self.lock:
            buckets = []
            for limit in limits:
                bucket = self.buckets.get(limit.bucket)
                if bucket is None:
                    bucket = self.buckets[limit.bucket] = TokenBucket(*SIZES[limit.size])
                buckets.append(bucket)
            for limit, bucket in zip(limits, buckets):
                if not bucket.has_token():
                    return limit
            for bucket in buckets:
                bucket.take()
            return None


class Stats:
    """What the proxy saw since the last reset."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = Counter()  # (service, action) -> requests received
        self.throttled = Counter()  # (service, action) -> answered with a throttling error by a bucket
        self.spurious = Counter()  # (service, action) -> answered with a throttling error by `Faults.spurious`
        self.unavailable = Counter()  # (service, action) -> answered with 503 "service unavailable" (`Faults.down`)
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
                "spurious": dict(self.spurious),
                "unavailable": dict(self.unavailable),
                "deregistered_at": list(self.deregistered_at),
                "errors": dict(self.errors),
                "connections": self.connections,
                "target_health": list(self.target_health),
                "deregistered_groups": list(self.deregistered_groups),
                "dropped": list(self.dropped),
            }


class Server(http.server.ThreadingHTTPServer):
    """socketserver listens with a backlog of 5: a client opening more connections at once than that (a sweep of 30
    groups in flight) has the rest of its SYNs dropped and resent a second later, which no AWS endpoint does."""

    request_queue_size = 256


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
        faults = proxy.faults
        with proxy.stats.lock:
            nth = proxy.stats.calls[(service, action)]
            proxy.stats.calls[(service, action)] += 1
        # Which error, if any, answers this call instead of moto: (status, content type, body).
        refusal = None
        if service in faults.down:
            kind = "unavailable"
            content_type, text = DOWN_BODIES.get(service, DOWN_BODIES["sns"])
            refusal = (503, content_type, text)
        elif faults.throttles(service, action, nth):
            kind = "spurious"
            status, text = SPURIOUS[service]
            refusal = (status, "text/xml", text)
        else:
            limits = limits_for(service, action, proxy.model) if proxy.throttle else []
            limit = proxy.buckets.take_all(limits)
            if limit is not None:
                kind = "throttled"
                refusal = (limit.status, "text/xml", limit.body)
        with proxy.stats.lock:
            if refusal is not None:
                getattr(proxy.stats, kind)[(service, action)] += 1
            if action == "DescribeTargetHealth":
                proxy.stats.target_health.append((time.monotonic(), b"Targets.member" in body,
                                                  refusal is not None and kind != "unavailable"))
        time.sleep(proxy.latency + faults.extra_delay(service, action))
        if refusal is not None:
            status, content_type, text = refusal
            self.answer(status, [("Content-Type", content_type)], text.format(id=uuid.uuid4()).encode(),
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

    def __init__(self, upstream_port, latency_ms, tls=None, throttle=True, model="aws"):
        """`tls`, a (certificate chain, key) pair of files, makes it an HTTPS endpoint; the handshake then happens in
        each connection's own thread, so a slow client never holds up the others. `model`: which ELB buckets it
        meters (MODELS)."""
        assert model in MODELS, model
        self.upstream_port = upstream_port
        self.throttle = throttle
        self.model = model
        self.latency = latency_ms / 1000
        self.local = threading.local()
        self.reset()
        self.server = Server(("127.0.0.1", 0), Handler)
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
        """Full buckets, empty counters and no faults: each scenario starts from the same state."""
        self.buckets = Buckets()
        self.stats = Stats()
        self.faults = Faults()

    def set_faults(self, faults):
        """Inject `faults` (a Faults) into every call from now on, until the next reset."""
        self.faults = faults

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
