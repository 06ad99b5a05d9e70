"""One benchmark scenario: a fresh function process, one or more invocations through the throttling proxy, and what
came out of it (timings, calls per action, throttles, peak RSS, each instance's summary outcome, and AWS's state
afterwards as moto reports it).

Scenarios:
- `single`: ours, one EventBridge Spot interruption warning.
- `batch`: ours, one SQS batch of K interruption warnings in one invocation.
- `single+index` and `batch+index`: the same, with the registration index (REGISTRATION_INDEX_TABLE) filled by one
  scheduled refresh beforehand, so known registrations leave their groups before the sweep starts.
- `baseline`: the same binary, one EventBridge invocation per instance for the batch's instances, back to back
  (ELB_CONCURRENCY=1, which made its sweep sequential, is deprecated and ignored now). It starts no invocation that
  would, at the mean length so far, end past its time budget; the rest is extrapolated by the report, and labelled so.
"""
import datetime
import json
import os
import time
import uuid

import fleet as fleet_module
from processes import Function

EVENT_TEMPLATE = "events/spot-interruption-terminate.json"
# Give the function's process a moment to reach its first poll, so cold init is not counted in the first invocation.
SETTLE_SECONDS = 1.0


def interruption_event(root, instance_id):
    """The repository's sample EventBridge event for `instance_id`, dated now."""
    event = json.loads((root / EVENT_TEMPLATE).read_text())
    event["id"] = str(uuid.uuid4())
    event["time"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["detail"]["instance-id"] = instance_id
    event["resources"] = [f"arn:aws:ec2:us-east-1b:instance/{instance_id}"]
    return event


def sqs_batch(root, instance_ids):
    """An SQS batch, as Lambda's event source mapping delivers it, of one interruption warning per instance."""
    records = []
    for instance_id in instance_ids:
        records.append({
            "messageId": str(uuid.uuid4()),
            "receiptHandle": "bench",
            "body": json.dumps(interruption_event(root, instance_id)),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:spot-cleanup",
            "awsRegion": "us-east-1",
        })
    return {"Records": records}


class Bench:
    """What every scenario shares: the binary, moto, the proxy, the scratch directory."""

    def __init__(self, root, binary, moto, proxy, log_dir):
        self.root, self.binary, self.moto, self.proxy, self.log_dir = root, binary, moto, proxy, log_dir

    def function_env(self, fleet, index_table=None):
        env = {
            "AWS_ENDPOINT_URL": self.proxy.endpoint,
            "SNS_TOPIC_ARN": fleet.topic_arn,
            "QUARANTINE_SECURITY_GROUP_ID": fleet.quarantine_group,
        }
        if index_table is not None:
            env["REGISTRATION_INDEX_TABLE"] = index_table
        return env

    def refresh_index(self, fleet, table):
        """Fill the index with one scheduled refresh, straight against moto (the refresh is background work that runs
        long before any interruption; its cost is not part of a cleanup). Returns its report and wall seconds."""
        env = self.function_env(fleet, table)
        env["AWS_ENDPOINT_URL"] = self.moto.endpoint
        function = Function(self.binary, env, self.log_dir, f"{fleet.groups}-index-refresh")
        time.sleep(SETTLE_SECONDS)
        event = json.loads((self.root / "events/scheduled-refresh.json").read_text())
        started = time.monotonic()
        try:
            status, answer = function.invoke(event)
        finally:
            function.close()
        return status, answer, time.monotonic() - started

    def run(self, fleet, name, kind, nodes, budget_seconds=None, index_table=None):
        """Run one scenario on `fleet` for `nodes` and return its measurements. The fleet is restored afterwards."""
        self.proxy.reset()
        load_before = os.getloadavg()[0]
        function = Function(self.binary, self.function_env(fleet, index_table), self.log_dir,
                            f"{fleet.groups}-{name}")
        time.sleep(SETTLE_SECONDS)
        try:
            invocations = self.invoke(function, kind, nodes, budget_seconds)
        finally:
            peak_rss_kib = function.close()
        done = nodes[:sum(i["instances"] for i in invocations)]
        stats = self.proxy.stats.snapshot()
        summaries = fleet_module.published_summaries(self.moto.endpoint, fleet.queue_url)
        aws_after = fleet_module.check(self.moto.endpoint, fleet, done)
        fleet_module.restore(self.moto.endpoint, fleet, done)
        result = measure(name, kind, fleet, nodes, done, invocations, stats, summaries, aws_after,
                         peak_rss_kib, load_before)
        result["index"] = index_table is not None
        return result

    def invoke(self, function, kind, nodes, budget_seconds):
        """The scenario's invocations, each with its start and end on this process's monotonic clock."""
        if kind == "batch":
            payloads = [(len(nodes), sqs_batch(self.root, [n.id for n in nodes]))]
        else:
            payloads = [(1, interruption_event(self.root, n.id)) for n in nodes]
        invocations = []
        started = time.monotonic()
        for count, payload in payloads:
            if invocations and over_budget(invocations, started, budget_seconds):
                break
            begin = time.monotonic()
            status, answer = function.invoke(payload)
            invocations.append({"instances": count, "start": begin, "end": time.monotonic(),
                                "status": status, "answer": answer})
        return invocations


def over_budget(invocations, started, budget_seconds):
    """Whether one more invocation, as long as the mean so far, would end past the budget."""
    if budget_seconds is None:
        return False
    mean = sum(i["end"] - i["start"] for i in invocations) / len(invocations)
    return time.monotonic() - started + mean > budget_seconds


def measure(name, kind, fleet, nodes, done, invocations, stats, summaries, aws_after, peak_rss_kib, load_before):
    """Turn raw observations into the figures the report shows."""
    start = invocations[0]["start"]
    deregs = sorted(t - start for t in stats["deregistered_at"])
    by_instance = {s["instance"]["id"]: s for s in summaries}
    outcomes = {n.id: by_instance.get(n.id, {}).get("outcome", "no summary") for n in done}
    return {
        "scenario": name,
        "kind": kind,
        "groups": fleet.groups,
        "instances_planned": len(nodes),
        "instances_run": len(done),
        "first_dereg_s": deregs[0] if deregs else None,
        "last_dereg_s": deregs[-1] if deregs else None,
        "total_s": invocations[-1]["end"] - start,
        "invocation_s": [i["end"] - i["start"] for i in invocations],
        "invocation_last_dereg_s": last_dereg_per_invocation(invocations, stats["deregistered_at"]),
        "calls": flatten(stats["calls"]),
        "throttled": flatten(stats["throttled"]),
        "upstream_errors": {f"{s}:{a}:{code}": n for (s, a, code), n in stats["errors"].items()},
        "peak_rss_mib": peak_rss_kib / 1024 if peak_rss_kib else None,
        "outcomes": outcomes,
        "all_cleaned": all(o == "cleaned" for o in outcomes.values()),
        "removed": {n.id: len(by_instance.get(n.id, {}).get("removed", [])) for n in done},
        "expected_registrations": {n.id: fleet.registrations_of(n) for n in done},
        "summary_errors": [f"{e['step']}: {e['message'][:200]}" for s in summaries for e in s.get("errors", [])],
        "timings_ms": [s.get("timings_ms") for s in summaries],
        "answers": [answer_digest(i) for i in invocations],
        "aws_after": aws_after,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def last_dereg_per_invocation(invocations, deregistered_at):
    """For each invocation, its last DeregisterTargets relative to its own start (None if it sent none)."""
    out = []
    for invocation in invocations:
        inside = [t for t in deregistered_at if invocation["start"] <= t <= invocation["end"]]
        out.append(max(inside) - invocation["start"] if inside else None)
    return out


def flatten(counter):
    """{(service, action): n} -> {"service:action": n}"""
    return {f"{service}:{action}": n for (service, action), n in sorted(counter.items())}


def answer_digest(invocation):
    """What the invocation answered, without the (long) summaries."""
    answer = invocation["answer"]
    digest = {"status": invocation["status"]}
    if isinstance(answer, dict):
        if "errorType" in answer:
            digest["error_type"] = answer["errorType"]
            digest["error_message"] = str(answer.get("errorMessage", ""))[:300]
        if "batchItemFailures" in answer:
            digest["batch_item_failures"] = len(answer["batchItemFailures"])
        if "outcome" in answer:
            digest["outcome"] = answer["outcome"]
    return digest
