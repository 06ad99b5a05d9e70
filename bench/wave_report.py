"""The wave part of the report: the section "## A wave of interruptions" of bench/RESULTS.md, and bench/wave.png."""
import collections

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

from report import save_figure  # noqa: E402
from wave import (LONE_WATCH_PERIOD_S, TARGET_CALLS_PER_GROUP, TIMEOUT_S, WATCH_LIMIT_S,  # noqa: E402
                  WATCH_PERIOD_S, median)

HEADING = "## A wave of interruptions"
VARIANTS = [("wave", "fresh"), ("wave", "empty"), ("batch", "fresh"), ("batch", "empty")]
STYLE = {("wave", "fresh"): ("tab:green", "-"), ("wave", "empty"): ("tab:red", "-"),
         ("batch", "fresh"): ("tab:green", "--"), ("batch", "empty"): ("tab:red", "--")}


def label(result):
    if result["kind"] == "wave":
        how = f"wave: {result['instances']} invocations, one process each"
    elif result["kind"] == "batch":
        how = f"one SQS batch of {result['instances']}, one process"
    else:
        how = f"lone, {result['label']} binary"
    return f"{how}, {'index refreshed' if result['index'] == 'fresh' else 'empty index'}"


def seconds(value):
    return "n/a" if value is None else f"{value:.1f}"


# The old binary's summaries have neither field.
UNSAID = {"none": "not said", "unsaid": "not said"}


def counts(counter):
    return ", ".join(f"{UNSAID.get(k, k)} {v}"
                     for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def gone_cell(result):
    if result["gone_s"] is not None:
        return seconds(result["gone_s"])
    left = sum(result["left_at_end"].values())
    return (f"**not gone**: {left} registration(s) of {len(result['left_at_end'])} instance(s) left after "
            f"{result['watched_s']:.0f} s")


def error_cell(result):
    n = len(result["in_error"])
    cell = f"{n} of {result['invocations']}"
    return (f"**{cell}**" if n else cell) + f" ({counts(result['outcomes'])})"


def found_cell(result):
    return f"swept_by: {counts(result['swept_by'])}; targets: {counts(result['found_by'])}"


def size_table(results):
    lines = [
        "| variant | DescribeTargetHealth (whole groups + named targets) | throttles (DTH / all) | invocations in "
        "error (outcomes) | seconds until all gone | last DeregisterTargets (s) | last answer (s) | found by |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {label(r)} | {r['dth_whole'] + r['dth_named']} ({r['dth_whole']} + {r['dth_named']}) "
            f"| {r['dth_throttled']} / {sum(r['throttled'].values())} | {error_cell(r)} | {gone_cell(r)} "
            f"| {seconds(r['last_dereg_s'])} | {r['last_end_s']:.1f} | {found_cell(r)} |")
    return lines


def lone_table(lone):
    """Median over the runs of each (binary, index), with each run's figure."""
    groups = collections.OrderedDict()
    for r in lone:
        groups.setdefault((r["index"], r["label"]), []).append(r)
    lines = [
        "| binary | index | runs | seconds until gone, median (each run) | last DeregisterTargets (s), median "
        "| summary `timings_ms.total` (s), median (each run) | DescribeTargetHealth, median | outcomes |",
        "|---|---|---:|---|---:|---|---:|---|",
    ]
    for (index, which), runs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "fresh", kv[0][1])):
        gone = [r["gone_s"] for r in runs]
        total = [t for r in runs for t in r["summary_total_s"]]
        calls = [r["dth_whole"] + r["dth_named"] for r in runs]
        outcomes = collections.Counter()
        for r in runs:
            outcomes.update(r["outcomes"])
        lines.append(
            f"| {which} ({runs[0]['binary']}) | {'refreshed' if index == 'fresh' else 'empty'} | {len(runs)} "
            f"| {seconds(median(gone))} ({', '.join(seconds(g) for g in gone)}) "
            f"| {seconds(median([r['last_dereg_s'] for r in runs]))} "
            f"| {seconds(median(total))} ({', '.join(seconds(t) for t in total)}) | {median(calls):g} "
            f"| {counts(outcomes)} |")
    return lines


def lone_ratios(lone):
    """New over old, medians, per index state."""
    out = []
    for index in ("fresh", "empty"):
        new = [r for r in lone if r["index"] == index and r["label"] == "new"]
        old = [r for r in lone if r["index"] == index and r["label"] == "old"]
        if not new or not old:
            continue
        parts = []
        for what, key in (("until gone", lambda r: [r["gone_s"]]), ("summary total", lambda r: r["summary_total_s"])):
            a = median([v for r in new for v in key(r)])
            b = median([v for r in old for v in key(r)])
            if a is not None and b:
                parts.append(f"{what} {a / b:.2f}×")
        out.append(f"- {'index refreshed' if index == 'fresh' else 'empty index'}: new ÷ old, medians: "
                   + ", ".join(parts))
    return out


def section(data, plot_name="wave.png"):
    """The markdown lines of the section."""
    info = data["run"]
    lines = [
        HEADING,
        "",
        f"Generated by `bench/run --wave` on {info['started']} (binary `{info['binary']}`"
        + (f", old binary `{info['old_binary']}`" if info.get("old_binary") else "")
        + f"). Machine: {info['cpus']} CPUs, shared; load average {fmt_load(info['load_start'])} at the start, "
        f"{fmt_load(info['load_end'])} at the end. Whole wave part: {info['run_seconds'] / 60:.1f} min.",
        "",
        "Each variant runs the binary with the default template's configuration: REGISTRATION_INDEX_TABLE (a fresh "
        "table per variant), RECORD_KEY_ID (a KMS HMAC_256 key), ELB_DESCRIBE_RATE and "
        f"CLAIM_LEASE_SECONDS at their defaults, and a {TIMEOUT_S} s deadline per invocation (the template's "
        "timeout; bench/runtime.py's runtime API sends it, as Lambda does, and ends an invocation that outlives it). "
        f"Each function process goes through the proxy ({info['latency_ms']:g} ms a call, ELB Describe* 40 burst "
        "and 10/s for all of them together) to moto. A *wave* is one process per instance, started and settled "
        "before the first event, then one EventBridge Spot interruption warning each, released together from "
        "threads; the *SQS batch* is the same instances in one invocation of one process. *Index refreshed*: one "
        "scheduled refresh filled the table beforehand, as the template's schedule keeps it; *empty index*: the "
        "first wave after a deploy. Seconds until all gone: from the first invocation until a watcher reading moto "
        "directly first read the last of the instances' groups clear. It reads each group that still holds one of "
        f"them, one call at a time, a round every {WATCH_PERIOD_S:g} s at most ({LONE_WATCH_PERIOD_S:g} s for a lone "
        "interruption), and reads a group next, ahead of its round, as soon as the proxy has seen a DeregisterTargets "
        "succeed there (a round of 200 groups takes seconds while moto serves a wave); it gives up after "
        f"{WATCH_LIMIT_S} s. Last DeregisterTargets: when the proxy saw the last one answered. "
        "DescribeTargetHealth counts include throttled attempts; *whole groups* are a sweep's reads, *named "
        "targets* the checks of particular targets. *Found by*: the summaries' `swept_by`, and the `found_by` of "
        "every removed target.",
        "",
    ]
    by_size = collections.OrderedDict()
    for r in data["sizes"]:
        by_size.setdefault((r["instances"], r["groups"]), []).append(r)
    for (instances, groups), results in by_size.items():
        lines += [f"### {instances} instances, {groups} target groups", "", *size_table(results), ""]
    if data["targets"]:
        lines += ["### Targets", "", "| where | target | result | figure |", "|---|---|---|---|"]
        for where, target, ok, figure in data["targets"]:
            lines.append(f"| {where} | {target} | {'pass' if ok else '**FAIL**'} | {figure} |")
        lines.append("")
    if data["lone"]:
        groups = data["lone"][0]["groups"]
        lines += [f"### A lone interruption at {groups} groups, new binary against the old", "",
                  "Interleaved run by run; each run on a fresh table (refreshed by the binary under test, or empty). "
                  "The old binary was given the same environment: it has no record signing and ignores "
                  "RECORD_KEY_ID, as it ignores every variable it does not know.", "",
                  *lone_table(data["lone"]), "", *lone_ratios(data["lone"]), ""]
    lines += [f"![registrations remaining and DescribeTargetHealth calls over time]({plot_name})", "",
              "### What the functions logged", ""]
    for r in data["sizes"] + data["lone"]:
        where = f"{r['instances']}@{r['groups']} {label(r)}" + (f", run {r['run']}" if r.get("run") else "")
        notes = [f"{n}× {line}" for line, n in r["logs"]["lines"].items()
                 if not line.startswith("INFO shared sweep")]
        for e, n in r["summary_errors"].items():
            notes.append(f"{n}× summary error: {e}")
        for e in r["in_error"][:3]:
            notes.append(f"in error: {', '.join(e['instances'][:3])}: {'; '.join(e['why'])}")
        roles = {line: n for line, n in r["logs"]["lines"].items() if line.startswith("INFO shared sweep")}
        if roles:
            notes.append("shared sweep roles: " + "; ".join(f"{n}× {line[len('INFO shared sweep: '):]}"
                                                           for line, n in roles.items()))
        if r["throttled"]:
            notes.append("throttled by the proxy: " + ", ".join(
                f"{key.split(':', 1)[1]} {n} of {r['calls'][key]}" for key, n in r["throttled"].items()))
        if r.get("dropped"):
            notes.append("answers the function no longer waited for (it closed the connection first): "
                         + ", ".join(r["dropped"]))
        for key, n in r.get("upstream_errors", {}).items():
            notes.append(f"moto answered {n} call(s) with an error: {key}")
        if r.get("watch_round_s", {}).get("max"):
            notes.append(f"watcher rounds: median {r['watch_round_s']['median']:.1f} s, "
                         f"longest {r['watch_round_s']['max']:.1f} s")
        if r["logs"]["throttled_groups_read_again"]:
            notes.append(f"throttled groups read again: {r['logs']['throttled_groups_read_again']}")
        after = r["aws_after"]
        if after["targets_left"] or after["neighbour_lost"] or after["enis_not_quarantined"]:
            notes.append(f"AWS afterwards: {after}")
        if notes:
            lines.append(f"- {where}:")
            lines += [f"  - {note}" for note in notes[:12]]
    lines.append("")
    return lines


def fmt_load(load):
    return "/".join(f"{x:.1f}" for x in load)


def plot(data, path):
    """Registrations remaining, and cumulative DescribeTargetHealth calls, against seconds since the first
    invocation, for every variant of the largest size."""
    if not data["sizes"]:
        return
    largest = max((r["instances"], r["groups"]) for r in data["sizes"])
    results = [r for r in data["sizes"] if (r["instances"], r["groups"]) == largest]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for r in results:
        colour, style = STYLE[(r["kind"], r["index"])]
        xs = [t for t, _ in r["timeline"]]
        ys = [n for _, n in r["timeline"]]
        left.step(xs, ys, where="post", color=colour, linestyle=style, label=label(r))
        times = sorted(r["dth_times"])
        right.step(times, range(1, len(times) + 1), where="post", color=colour, linestyle=style, label=label(r))
    left.set_title(f"{largest[0]} instances at {largest[1]} target groups: registrations left (read from moto)")
    left.set_xlabel("seconds after the first invocation")
    left.set_ylabel("registrations of the instances still there")
    right.axhline(TARGET_CALLS_PER_GROUP * largest[1], color="grey", linestyle=":", linewidth=1)
    right.annotate(f"target: {TARGET_CALLS_PER_GROUP:g} × {largest[1]}", (0, TARGET_CALLS_PER_GROUP * largest[1]),
                   fontsize=7, color="grey", textcoords="offset points", xytext=(2, 3))
    right.set_title("DescribeTargetHealth calls so far (throttled ones included)")
    right.set_xlabel("seconds after the first invocation")
    right.set_ylabel("calls")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    save_figure(figure, "spot-cleanup: a wave of interruptions on moto behind the account's ELB Describe* bucket "
                "(40 burst, 10/s)", path)


def replace_section(text, lines):
    """`text` (a RESULTS.md) with its wave section, if any, replaced by `lines`, put at the end."""
    return without_section(text).rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n"


def without_section(text):
    """`text` without its wave section (from the heading to the next `## ` heading or the end)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.strip() == HEADING:
            inside = True
            continue
        if inside and line.startswith("## "):
            inside = False
        if not inside:
            out.append(line)
    return "\n".join(out) + "\n"


def section_of(text):
    """The wave section of `text` as lines, or [] when it has none."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip() == HEADING:
            inside = True
        elif inside and line.startswith("## "):
            break
        if inside:
            lines.append(line)
    return lines
