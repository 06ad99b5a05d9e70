"""A wave of interruptions: N instances interrupted within a second, each delivered on its own to its own execution
environment, as node agents and an EventBridge rule that targets the function deliver them (issue 14).

Every variant runs the binary with the default template's configuration: REGISTRATION_INDEX_TABLE (a fresh table,
shaped as template.yaml's), RECORD_KEY_ID (a KMS HMAC_256 key for GenerateMac/VerifyMac),
ELB_DESCRIBE_RATE and CLAIM_LEASE_SECONDS at their defaults, and the function's 110 s timeout as each invocation's
deadline. That deadline needs the stand-in runtime API of bench/runtime.py: `cargo lambda watch` tells every
invocation it has 600 s. Each process goes through bench/proxy.py (the account's one ELB Describe* bucket, 40 burst and
10/s, and 20 ms a call) to moto.

Per size N@G (N instances, G target groups), on a fresh fleet:
- `wave`: N function processes, started and settled (their first poll of the runtime API seen, so cold init is not
  counted), then each handed one EventBridge Spot interruption warning for its own instance, all from threads
  released together. Run twice: with the index freshly refreshed (one scheduled refresh beforehand, as the
  template's schedule keeps it) and with an empty table (the first wave after a deploy: the fast path knows nothing,
  so the shared sweep finds everything).
- `batch`: the same N instances as one SQS batch in one process (the baseline), with a fresh and an empty index.

While they run, a watcher in its own process reads AWS's state straight from moto (not through the proxy): every
group that still holds one of the instances, a round every WATCH_PERIOD_S at most, and a group next, ahead of its
round, once the proxy has seen a DeregisterTargets succeed there; until no registration of the instances is left or
WATCH_LIMIT_S have passed. The proxy counts the calls (DescribeTargetHealth split into whole-group reads and checks
of named targets) and the throttles; the summaries, read from the SNS topic's queue, say how each registration was
found (`swept_by`, `found_by`); and each function's log is digested for warnings, errors and its shared-sweep role.

`lone`: one interruption, one process, at G groups, this binary against an older one, interleaved run by run, each
with a fresh (refreshed by that binary) and an empty index.
"""
import collections
import datetime
import json
import multiprocessing
import os
import queue
import re
import statistics
import threading
import time
from pathlib import Path

import boto3

import fleet as fleet_module
from runtime import LambdaProcess
from scenarios import interruption_event, sqs_batch

# template.yaml, SpotCleanupFunction: Timeout and MemorySize.
TIMEOUT_S = 110
MEMORY_MB = 512
WATCH_PERIOD_S = 0.5
# A lone interruption's 10 groups are cheap to read; its registrations leave in a fraction of a second.
LONE_WATCH_PERIOD_S = 0.2
WATCH_LIMIT_S = 180
# Issue 14's targets for a wave of 20 at 300 groups.
TARGET_CALLS_PER_GROUP = 1.5
TARGET_GONE_S = 60
RESOURCE_ID = re.compile(r"\b(eni|i|sg|vpc)-[0-9a-f]{8,17}\b|arn:aws:[^\s\"',]+|\b[0-9a-f]{8}-[0-9a-f-]{27}\b")


def parse_sizes(text):
    """"10@100,20@300" -> [(10, 100), (20, 300)]: instances @ target groups."""
    sizes = []
    for item in text.split(","):
        instances, groups = item.strip().split("@")
        sizes.append((int(instances), int(groups)))
    return sizes


def log(message):
    print(message, flush=True)


class WaveBench:
    """What every wave run shares: moto, the proxy, the binaries and the log directory."""

    def __init__(self, root, moto, proxy, log_dir, binary, old_binary=None, extra_env=None):
        self.root, self.moto, self.proxy, self.log_dir = root, moto, proxy, log_dir
        # Settings given with --function-env, over the template's: e.g. ELB_DESCRIBE_RATE=10.
        self.extra_env = dict(extra_env or {})
        self.binary, self.old_binary = Path(binary), Path(old_binary) if old_binary else None
        self.tables = 0

    # --- the configuration ----------------------------------------------------------------------------------------

    def new_table(self):
        self.tables += 1
        return fleet_module.create_index_table(self.moto.endpoint, f"spot-cleanup-wave-{self.tables}")

    def drop_table(self, table):
        fleet_module.clients(self.moto.endpoint)["dynamodb"].delete_table(TableName=table)

    def record_key(self):
        """A KMS key shaped as template.yaml's RecordKey: HMAC_256, for GenerateMac and VerifyMac."""
        kms = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x",
                                    region_name=fleet_module.REGION).client("kms", endpoint_url=self.moto.endpoint)
        key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC", Description="spot-cleanup records")
        return key["KeyMetadata"]["Arn"]

    def template_env(self, fleet, table, key):
        """The default template's environment, as far as this fleet needs it."""
        return {
            "AWS_ENDPOINT_URL": self.proxy.endpoint,
            "SNS_TOPIC_ARN": fleet.topic_arn,
            "QUARANTINE_SECURITY_GROUP_ID": fleet.quarantine_group,
            "REGISTRATION_INDEX_TABLE": table,
            "RECORD_KEY_ID": key,
            "RUST_LOG": "info",
            **self.extra_env,
        }

    def refresh(self, binary, fleet, table, key):
        """One scheduled refresh into `table`, straight against moto (it is background work long before any
        interruption); returns its report."""
        env = self.template_env(fleet, table, key)
        env["AWS_ENDPOINT_URL"] = self.moto.endpoint
        function = LambdaProcess(binary, env, self.log_dir, f"{table}-refresh", TIMEOUT_S, MEMORY_MB)
        try:
            function.wait_ready()
            status, answer = function.invoke(json.loads((self.root / "events/scheduled-refresh.json").read_text()))
        finally:
            function.close()
        report = answer.get("index_refresh", {}) if isinstance(answer, dict) else {}
        if status != 200 or report.get("errors"):
            log(f"    index refresh: {status} {str(answer)[:300]}")
        return report

    # --- one run --------------------------------------------------------------------------------------------------

    def run(self, fleet, kind, index, nodes, binary=None, label=None, run_number=None):
        """One variant on `fleet`: `kind` wave (a process per node), batch (one SQS batch) or lone (one node);
        `index` fresh or empty. Returns its measurements; the fleet is restored afterwards."""
        binary = Path(binary or self.binary)
        key = self.record_key()
        table = self.new_table()
        refreshed = self.refresh(binary, fleet, table, key) if index == "fresh" else None
        env = self.template_env(fleet, table, key)
        name = f"{fleet.groups}-{len(nodes)}-{kind}-{index}-{label or 'new'}-{self.tables}"
        if kind == "wave":
            plan = [([node], interruption_event(self.root, node.id)) for node in nodes]
        elif kind == "batch":
            plan = [(list(nodes), sqs_batch(self.root, [node.id for node in nodes]))]
        elif kind.startswith("batches"):
            # `batches4`: the instances split over 4 SQS batches, each its own process at once, as an SQS event
            # source's concurrent pollers deliver a queue's backlog.
            count = int(kind[len("batches"):])
            chunks = [list(nodes[i::count]) for i in range(count) if nodes[i::count]]
            plan = [(chunk, sqs_batch(self.root, [node.id for node in chunk])) for chunk in chunks]
        else:
            plan = [([nodes[0]], interruption_event(self.root, nodes[0].id))]
        self.proxy.reset()
        load_before = os.getloadavg()[0]
        functions = [LambdaProcess(binary, env, self.log_dir, f"{name}-{n}", TIMEOUT_S, MEMORY_MB)
                     for n in range(len(plan))]
        try:
            for function in functions:
                function.wait_ready()
            watched = [node for instances, _ in plan for node in instances]
            invocations, watch = self.invoke_and_watch(fleet, functions, plan, watched)
        finally:
            peak_rss = [function.close() for function in functions]
        stats = self.proxy.stats.snapshot()
        summaries = fleet_module.published_summaries(self.moto.endpoint, fleet.queue_url)
        aws_after = fleet_module.check(self.moto.endpoint, fleet, watched)
        logs = log_digest(functions)
        fleet_module.restore(self.moto.endpoint, fleet, watched)
        self.drop_table(table)
        result = measure(kind, index, fleet, watched, invocations, watch, stats, summaries, aws_after, logs)
        result.update({
            "label": label or "new", "binary": str(binary), "run": run_number, "processes": len(functions),
            "index_refresh": refreshed, "peak_rss_mib": max((r or 0) for r in peak_rss) / 1024,
            "load_before": load_before, "load_after": os.getloadavg()[0],
        })
        log(f"  {describe(result)}")
        return result

    def invoke_and_watch(self, fleet, functions, plan, watched):
        """Release every invocation together from its own thread, and watch moto until the watched nodes' last
        registration is gone (or WATCH_LIMIT_S). Returns (invocations, watch)."""
        owners = {i: node.id for node in watched for i in (node.id, *node.pod_ips)}
        groups = {arn: sorted(set(targets) & set(owners)) for arn, targets in fleet.registered.items()
                  if set(targets) & set(owners)}
        context = multiprocessing.get_context("spawn")
        hints, reports, stop = context.Queue(), context.Queue(), context.Event()
        period = LONE_WATCH_PERIOD_S if len(watched) == 1 else WATCH_PERIOD_S
        watcher = context.Process(target=watch_moto, daemon=True,
                                  args=(self.moto.endpoint, groups, owners, period, hints, reports, stop))
        watcher.start()
        first = reports.get(timeout=60)  # one whole round before anything is sent: what there is to remove
        registrations = sum(first[3].values())
        barrier = threading.Barrier(len(plan) + 1)
        invocations = [{"instances": [node.id for node in instances]} for instances, _ in plan]
        threads = [threading.Thread(target=invoke_one, args=(function, payload, barrier, record), daemon=True)
                   for function, (_, payload), record in zip(functions, plan, invocations)]
        for thread in threads:
            thread.start()
        barrier.wait()
        t0 = time.monotonic()
        timeline, gone_at, left, rounds, hinted = [(0.0, registrations)], {}, first[3], [], 0
        while time.monotonic() - t0 <= WATCH_LIMIT_S:
            deregistered = self.proxy.stats.deregistered_groups
            for _, arn in deregistered[hinted:]:
                hints.put(arn)
            hinted = len(deregistered)
            try:
                report = reports.get(timeout=0.05)
            except queue.Empty:
                continue
            if report[0] == "round":
                _, began, ended, left, gone = report
                if began < t0:
                    continue
                rounds.append(ended - began)
                at = ended
            else:
                _, at, left, gone = report
            timeline.append((at - t0, sum(left.values())))
            gone_at = {node_id: when - t0 for node_id, when in gone.items()}
            if not any(left.values()):
                break
        stop.set()
        for thread in threads:
            thread.join()
        watcher.join(10)
        if watcher.is_alive():
            watcher.terminate()
        for record in invocations:
            record["start"] -= t0
            record["end"] -= t0
        watch = {
            "registrations": registrations,
            "timeline": timeline,
            "gone_s": max(gone_at.values()) if len(gone_at) == len(watched) else None,
            "instance_gone_s": gone_at,
            "left_at_end": {node_id: count for node_id, count in left.items() if count},
            "watched_s": time.monotonic() - t0,
            "watch_round_s": {"median": median(rounds), "max": max(rounds) if rounds else None},
            "t0": t0,
        }
        return invocations, watch

    # --- the parts of a run ---------------------------------------------------------------------------------------

    def size(self, instances, groups):
        """Every variant for N@G, on one fleet: the wave and the batch, each with a fresh and an empty index."""
        self.moto.reset()
        fleet = fleet_module.build(self.moto.endpoint, groups, instances)
        log(f"{instances}@{groups}: fleet built in {fleet.build_seconds:.1f} s "
            f"({sum(fleet.registrations_of(n) for n in fleet.spot)} registrations of the wave's instances)")
        results = []
        for kind, index in (("wave", "fresh"), ("wave", "empty"), ("batch", "fresh"), ("batch", "empty")):
            results.append(self.run(fleet, kind, index, fleet.spot))
        for result in results:
            result["build_s"] = fleet.build_seconds
        return results

    def lone(self, groups, runs, indexes=("fresh", "empty")):
        """One interruption at `groups` groups, this binary and the old one interleaved, `runs` times each."""
        self.moto.reset()
        fleet = fleet_module.build(self.moto.endpoint, groups, 1)
        log(f"lone@{groups}: fleet built in {fleet.build_seconds:.1f} s")
        binaries = [("new", self.binary)] + ([("old", self.old_binary)] if self.old_binary else [])
        results = []
        for run_number in range(1, runs + 1):
            for index in indexes:
                for label, binary in binaries:
                    results.append(self.run(fleet, "lone", index, fleet.spot, binary, label, run_number))
        return results


def invoke_one(function, payload, barrier, record):
    """One invocation, released with the others."""
    barrier.wait()
    record["start"] = time.monotonic()
    record["status"], record["answer"] = function.invoke(payload)
    record["end"] = time.monotonic()


def watch_moto(endpoint, groups, owners, period, hints, reports, stop):
    """In its own process (so its calls do not compete with the proxy for this one's GIL), read from moto, one call at
    a time (so moto serves the functions first), every group that still holds a watched target: a round every
    `period` at most, until `stop`. Groups named on `hints` (the proxy saw a DeregisterTargets succeed there) are read
    next, ahead of the round, so a removal is seen within a call or two rather than a round, which takes seconds when
    moto is busy. A group once read clear is not read again: nothing re-registers.

    Puts ("round", began, ended, left, gone) on `reports` after each round, and ("clear", at, left, gone) each time a
    group is read clear: `left` counts each node's registrations still there, `gone` says when each node's last group
    was first read clear."""
    elb = fleet_module.clients(endpoint)["elbv2"]
    holding = {arn: set(ids) for arn, ids in groups.items()}
    node_groups = collections.defaultdict(set)
    for arn, ids in groups.items():
        for i in ids:
            node_groups[owners[i]].add(arn)
    clear_at = {}

    def state():
        left = collections.Counter({node: 0 for node in node_groups})
        for ids in holding.values():
            left.update(owners[i] for i in ids)
        gone = {node: max(clear_at[arn] for arn in arns) for node, arns in node_groups.items()
                if all(arn in clear_at for arn in arns)}
        return dict(left), gone

    def read(arn):
        health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        ids = {d["Target"]["Id"] for d in health} & holding[arn]
        if ids:
            holding[arn] = ids
            return
        del holding[arn]
        clear_at[arn] = time.monotonic()
        reports.put(("clear", clear_at[arn], *state()))

    def hinted():
        named = set()
        while True:
            try:
                named.add(hints.get_nowait())
            except queue.Empty:
                return [arn for arn in named if arn in holding]

    while not stop.is_set():
        began = time.monotonic()
        pending = list(holding)
        while pending and not stop.is_set():
            for arn in hinted():
                read(arn)
            arn = pending.pop(0)
            if arn in holding:
                read(arn)
        reports.put(("round", began, time.monotonic(), *state()))
        while not stop.is_set() and time.monotonic() < began + period:
            for arn in hinted():
                read(arn)
            stop.wait(0.02)


# --- measurements ---------------------------------------------------------------------------------------------------

def measure(kind, index, fleet, watched, invocations, watch, stats, summaries, aws_after, logs):
    """Turn one run's observations into the figures the report shows."""
    t0 = watch.pop("t0")
    by_instance = {s["instance"]["id"]: s for s in summaries}
    health = stats["target_health"]
    outcomes = collections.Counter(by_instance.get(n.id, {}).get("outcome", "no summary") for n in watched)
    in_error = []
    for record in invocations:
        answer = record["answer"] if isinstance(record["answer"], dict) else {}
        why = []
        if record["status"] != 200 or "errorType" in answer:
            why.append(f"{answer.get('errorType', record['status'])}: {str(answer.get('errorMessage', ''))[:240]}")
        if answer.get("batchItemFailures"):
            why.append(f"{len(answer['batchItemFailures'])} batch item failure(s)")
        bad = [i for i in record["instances"] if by_instance.get(i, {}).get("outcome", "no summary") != "cleaned"]
        if bad:
            why.append("outcome " + ", ".join(sorted({by_instance.get(i, {}).get("outcome", "no summary")
                                                      for i in bad})))
        if why:
            in_error.append({"instances": record["instances"], "why": why})
    swept_by = collections.Counter(s.get("swept_by") or "none" for s in summaries)
    found_by = collections.Counter(t.get("found_by") or "unsaid" for s in summaries for t in s.get("removed", []))
    deregs = sorted(t - t0 for t in stats["deregistered_at"])
    totals = [s["timings_ms"]["total"] / 1000 for s in summaries if s.get("timings_ms")]
    return {
        "kind": kind,
        "index": index,
        "groups": fleet.groups,
        "instances": len(watched),
        "dth_whole": sum(1 for _, named, _ in health if not named),
        "dth_named": sum(1 for _, named, _ in health if named),
        "dth_throttled": sum(1 for _, _, throttled in health if throttled),
        "dth_times": [round(t - t0, 3) for t, _, _ in health],
        "calls": {f"{s}:{a}": n for (s, a), n in sorted(stats["calls"].items())},
        "throttled": {f"{s}:{a}": n for (s, a), n in sorted(stats["throttled"].items())},
        "upstream_errors": {f"{s}:{a}:{code}": n for (s, a, code), n in stats["errors"].items()},
        "dropped": [f"{s}:{a} after {seconds:.1f} s" for s, a, seconds in stats["dropped"]],
        "invocations": len(invocations),
        "in_error": in_error,
        "error_types": dict(collections.Counter(
            r["answer"].get("errorType") for r in invocations if isinstance(r["answer"], dict)
            and r["answer"].get("errorType"))),
        "outcomes": dict(outcomes),
        "swept_by": dict(swept_by),
        "found_by": dict(found_by),
        "removed": sum(len(s.get("removed", [])) for s in summaries),
        "remaining": sum(len(s.get("remaining", [])) for s in summaries),
        "summary_errors": dict(collections.Counter(
            blank(f"{e['step']}: {e['message']}")[:240] for s in summaries for e in s.get("errors", []))),
        "summary_total_s": totals,
        "start_spread_s": max(r["start"] for r in invocations) - min(r["start"] for r in invocations),
        "invocation_s": [r["end"] - r["start"] for r in invocations],
        "last_end_s": max(r["end"] for r in invocations),
        "first_dereg_s": deregs[0] if deregs else None,
        "last_dereg_s": deregs[-1] if deregs else None,
        "aws_after": aws_after,
        "logs": logs,
        **watch,
    }


def log_digest(functions):
    """What the functions said that a reader should see: every warning and error, the shared sweep's roles, and the
    throttled groups read again, counted alike with ids blanked."""
    counts = collections.Counter()
    reread = 0
    for function in functions:
        for line in function.log_lines():
            level, message = line.get("level", ""), str(line.get("message", ""))
            if message == "throttled groups read again":
                reread += int(line.get("groups", 0))
            if level in ("WARN", "ERROR") or message.startswith("shared sweep"):
                extra = {k: v for k, v in line.items()
                         if k in ("error", "reason", "step", "failed", "action", "operation", "code")}
                counts[blank(f"{level} {message}" + (f" {json.dumps(extra, sort_keys=True)}" if extra else ""))] += 1
    return {"lines": dict(counts.most_common()), "throttled_groups_read_again": reread}


def blank(text):
    return RESOURCE_ID.sub("…", text)


def describe(result):
    """One line for the console."""
    gone = f"{result['gone_s']:.1f} s" if result["gone_s"] is not None else \
        f"NOT GONE ({sum(result['left_at_end'].values())} left after {result['watched_s']:.0f} s)"
    return (f"{result['kind']}/{result['index']}/{result['label']} {result['instances']}@{result['groups']}: "
            f"DTH {result['dth_whole']}+{result['dth_named']} ({result['dth_throttled']} thr), "
            f"throttles {sum(result['throttled'].values())}, in error {len(result['in_error'])}/"
            f"{result['invocations']}, gone {gone}, last answer {result['last_end_s']:.1f} s, "
            f"outcomes {result['outcomes']}, swept_by {result['swept_by']}, found_by {result['found_by']}, "
            f"spread {result['start_spread_s'] * 1000:.0f} ms, load {result['load_after']:.1f}")


def targets(results):
    """Issue 14's targets, for each wave of the largest size with 20 instances (or the largest wave run)."""
    waves = [r for r in results if r["kind"] == "wave"]
    if not waves:
        return []
    wanted = [r for r in waves if (r["instances"], r["groups"]) == (20, 300)] or \
        [r for r in waves if (r["instances"], r["groups"]) == max((w["instances"], w["groups"]) for w in waves)]
    checks = []
    for r in wanted:
        where = f"wave of {r['instances']} at {r['groups']} groups, {r['index']} index"
        limit = TARGET_CALLS_PER_GROUP * r["groups"]
        calls = r["dth_whole"] + r["dth_named"]
        checks.append((where, f"at most {limit:g} DescribeTargetHealth calls (throttled ones included)",
                       calls <= limit, f"{calls} ({r['dth_throttled']} of them throttled)"))
        gone = r["gone_s"]
        checks.append((where, f"every registration gone within {TARGET_GONE_S} s",
                       gone is not None and gone <= TARGET_GONE_S,
                       f"{gone:.1f} s" if gone is not None else
                       f"not gone: {sum(r['left_at_end'].values())} left after {r['watched_s']:.0f} s"))
        checks.append((where, "no invocation in error", not r["in_error"],
                       f"{len(r['in_error'])} of {r['invocations']}"))
    return checks


def run_all(root, moto, proxy, log_dir, args):
    """The whole wave part; returns its results as one JSON-able dict."""
    started = time.monotonic()
    bench = WaveBench(root, moto, proxy, log_dir, args.binary, args.old_binary)
    info = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "binary": str(args.binary),
            "old_binary": str(args.old_binary) if args.old_binary else None, "cpus": os.cpu_count(),
            "latency_ms": args.latency_ms, "load_start": os.getloadavg(), "timeout_s": TIMEOUT_S}
    results = []
    for instances, groups in args.wave_sizes:
        results.extend(bench.size(instances, groups))
    lone = []
    if args.lone_runs:
        lone = bench.lone(args.lone_groups, args.lone_runs)
    info["load_end"] = os.getloadavg()
    info["run_seconds"] = time.monotonic() - started
    return {"run": info, "sizes": results, "lone": lone, "targets": targets(results)}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
