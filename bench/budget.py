"""Inside the account's real ELB budget (issue 24): waves of node agents on the seed's own topology, and the rows the
issue holds the function to, behind a proxy that meters AWS's documented ELB buckets.

The proxy (bench/proxy.py, model `aws`) meters every ELB call on the account's one bucket (40 tokens, 10 a second)
and on its category's (RegisterTargets and DeregisterTargets 20 and 4 a second, Describe* 40 and 10, the rest 20 and
3), and EC2's per-action buckets, shared by every function process of a run, as AWS shares them between every caller
of the account; 20 ms a call. Every run uses bench/wave.py's set-up: the binary with the default template's
configuration (the registration index's table, a record key, every other variable at its default), one process per
invocation under the stand-in runtime API (the template's 110 s deadline), a fresh fleet per size, a watcher reading
moto directly for when the last registration is gone.

Rows:
- `nodeport`: the seed's topology (bench/fleet.py `nodeport`): G target groups, two thirds of them NodePort instance
  groups holding every node. N nodes interrupted at once, one invocation each (node agents, EventBridge), with the
  index refreshed and empty; the same N as one SQS batch, and as four SQS batches at once (an SQS event source's
  pollers), both with the index refreshed.
- `lone`: one interruption at 300 groups (the instance in 10), empty index: still at the budget's limit.
- `issue14`: issue 14's wave: 10 invocations at 100 groups, each instance in 2, empty index.

Each row runs for the binary under test, and for `--old-binary` when given (interleaved), so before and after are
measured in one session. Writes bench/out/budget.json, the section "## Inside the account's ELB budget" of
bench/RESULTS.md and bench/budget.png (seconds until every registration is gone against wave size).
"""
import collections
import datetime
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

import fleet as fleet_module  # noqa: E402
from proxy import BUCKETS_DOC  # noqa: E402
from report import save_figure  # noqa: E402
from wave import WaveBench, log  # noqa: E402

HEADING = "## Inside the account's ELB budget"
NODEPORT_GROUPS = 60
LONE_GROUPS = 300


def parse_sizes(text):
    return [int(n) for n in text.split(",") if n.strip()]


def plan(args):
    """(row, topology, groups, nodes, per_instance, kind, index) of every run, in order."""
    rows = []
    for nodes in args.budget_sizes:
        for index in ("fresh", "empty"):
            rows.append(("nodeport", "nodeport", NODEPORT_GROUPS, nodes, None, "wave", index))
        if nodes == 20 and args.budget_batches:
            for kind in ("batch", "batches4"):
                rows.append(("nodeport", "nodeport", NODEPORT_GROUPS, nodes, None, kind, "fresh"))
            rows.append(("nodeport", "nodeport", NODEPORT_GROUPS, nodes, None, "batch", "empty"))
    if "lone" in args.budget_rows:
        rows.append(("lone", "spread", LONE_GROUPS, 1, 10, "lone", "empty"))
    if "issue14" in args.budget_rows:
        rows.append(("issue14", "spread", 100, 10, 2, "wave", "empty"))
    return rows


def run_all(root, moto, proxy, log_dir, args):
    started = datetime.datetime.now().isoformat(timespec="seconds")
    bench = WaveBench(root, moto, proxy, log_dir, args.binary, args.old_binary, args.function_env)
    binaries = [("new", args.binary)] + ([("old", args.old_binary)] if args.old_binary else [])
    results = []
    fleets = {}
    load_start = os.getloadavg()
    for row, topology, groups, nodes, per_instance, kind, index in plan(args):
        key = (topology, groups, nodes, per_instance)
        if key not in fleets:
            moto.reset()
            fleets.clear()
            fleets[key] = fleet_module.build(moto.endpoint, groups, nodes,
                                              per_instance or fleet_module.GROUPS_PER_INSTANCE, topology)
            log(f"{row} {nodes}@{groups} ({topology}): fleet built in {fleets[key].build_seconds:.1f} s")
        fleet = fleets[key]
        for label, binary in binaries:
            result = bench.run(fleet, kind, index, fleet.spot, binary, label)
            result.update({"row": row, "topology": topology})
            results.append(result)
    return {
        "run": {"started": started, "binary": str(args.binary),
                "old_binary": str(args.old_binary) if args.old_binary else None, "cpus": os.cpu_count(),
                "latency_ms": args.latency_ms, "load_start": load_start, "load_end": os.getloadavg(),
                "buckets": BUCKETS_DOC},
        "results": results,
    }


def calls(result, action):
    return result["calls"].get(f"elasticloadbalancing:{action}", 0)


def throttled(result):
    return sum(result["throttled"].values())


def targets(data):
    """Issue 24's targets, for the binary under test."""
    checks = []
    new = [r for r in data["results"] if r["label"] == "new"]
    for r in new:
        where = f"{r['row']}: {r['kind']} of {r['instances']} at {r['groups']} groups, {r['index']} index"
        gone = r["gone_s"]
        errors = len(r["in_error"])
        dth = r["dth_whole"] + r["dth_named"]
        if r["row"] == "nodeport" and r["kind"] == "wave" and r["instances"] == 20:
            checks += [
                (where, "gone within 30 s", gone is not None and gone <= 30, seconds(gone)),
                (where, "0 invocations in error", errors == 0, str(errors)),
                (where, "at most 80 DeregisterTargets", calls(r, "DeregisterTargets") <= 80,
                 str(calls(r, "DeregisterTargets"))),
                (where, "at most 150 DescribeTargetHealth", dth <= 150, str(dth)),
                (where, "at most 100 throttled answers", throttled(r) <= 100, str(throttled(r))),
            ]
        elif r["row"] == "nodeport" and r["kind"] == "wave" and r["instances"] == 50:
            checks += [
                (where, "gone within 60 s", gone is not None and gone <= 60, seconds(gone)),
                (where, "0 invocations in error", errors == 0, str(errors)),
            ]
        elif r["row"] == "issue14":
            checks += [
                (where, "at most 150 DescribeTargetHealth", dth <= 150, str(dth)),
                (where, "0 invocations in error", errors == 0, str(errors)),
                (where, "gone within 60 s", gone is not None and gone <= 60, seconds(gone)),
            ]
    return checks


def seconds(value):
    return "not gone" if value is None else f"{value:.1f} s"


def cell(value, digits=1):
    return "n/a" if value is None else f"{value:.{digits}f}"


def section(data, plot_name="budget.png"):
    info = data["run"]
    lines = [
        HEADING,
        "",
        f"Generated by `bench/run --budget` on {info['started']} (binary `{info['binary']}`"
        + (f", old binary `{info['old_binary']}`" if info.get("old_binary") else "")
        + f"). Machine: {info['cpus']} CPUs, shared; load average "
        f"{'/'.join(f'{x:.1f}' for x in info['load_start'])} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in info['load_end'])} at the end. The proxy meters AWS's documented buckets, "
        f"shared by every process of a run ({info['latency_ms']:g} ms a call): "
        + "; ".join(info["buckets"].values()) + ".",
        "",
        "| row | delivered as | index | binary | gone (s) | last answer (s) | in error | DeregisterTargets | "
        "DescribeTargetHealth | throttled | found by |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["results"]:
        delivered = {"wave": f"{r['instances']} invocations", "batch": "one SQS batch",
                     "batches4": "four SQS batches at once", "lone": "one invocation"}[r["kind"]]
        found = ", ".join(f"{k} {v}" for k, v in sorted(r["found_by"].items())) or "none"
        lines.append(
            f"| {r['row']} {r['instances']}@{r['groups']} | {delivered} | {r['index']} | {r['label']} | "
            f"{cell(r['gone_s'])} | {cell(r['last_end_s'])} | {len(r['in_error'])} of {r['invocations']} | "
            f"{calls(r, 'DeregisterTargets')} | {r['dth_whole'] + r['dth_named']} | {throttled(r)} | {found} |")
    lines.append("")
    checks = targets(data)
    if checks:
        lines += ["| where | target | result | figure |", "|---|---|---|---|"]
        for where, target, ok, figure in checks:
            lines.append(f"| {where} | {target} | {'pass' if ok else '**FAIL**'} | {figure} |")
        lines.append("")
    lines += [f"![seconds until every registration is gone, against wave size]({plot_name})", ""]
    return lines


def plot(data, path):
    """Seconds until every registration is gone against wave size, for the NodePort waves."""
    waves = [r for r in data["results"] if r["row"] == "nodeport" and r["kind"] == "wave"]
    if not waves:
        return
    figure, axis = plt.subplots(figsize=(8, 5))
    series = collections.defaultdict(list)
    for r in waves:
        series[(r["label"], r["index"])].append((r["instances"], r["gone_s"]))
    style = {"new": "-", "old": ":"}
    colour = {"fresh": "tab:green", "empty": "tab:red"}
    for (label, index), points in sorted(series.items()):
        points.sort()
        xs = [n for n, _ in points]
        ys = [g if g is not None else 240 for _, g in points]
        axis.plot(xs, ys, marker="o", linestyle=style.get(label, "-"), color=colour.get(index, "grey"),
                  label=f"{label} binary, index {'refreshed' if index == 'fresh' else 'empty'}")
    axis.axhline(30, color="grey", linestyle="--", linewidth=1)
    axis.axhline(120, color="black", linestyle=":", linewidth=1)
    axis.annotate("the two-minute notice", (min(r["instances"] for r in waves), 120), fontsize=7,
                  textcoords="offset points", xytext=(2, 3))
    axis.set_xlabel("nodes interrupted at once (one invocation each)")
    axis.set_ylabel("seconds until every registration is gone (240: not gone)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, f"spot-cleanup: NodePort waves at {NODEPORT_GROUPS} target groups, AWS's ELB buckets", path)


def replace_section(text, lines):
    start = text.find(HEADING)
    if start >= 0:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + (text[end + 1:] if end >= 0 else "")
    return text.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n"
