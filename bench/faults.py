"""Throttling and failing dependencies (issue 18): one interruption, with spurious throttles on every ELB and EC2 call,
or with a dependency down or slow, measured as the issue measured it.

Every run is on a fresh fleet (moto reset, then bench/fleet.py), with a new record key and index table:
FAULT_GROUPS target groups, the one Spot instance
registered in FAULT_PER_INSTANCE of them (3 by instance id in `instance` groups, 2 by a pod address in `ip` groups),
a neighbour in every group. The function is one process of the binary under the stand-in runtime API of
bench/runtime.py (the template's 110 s deadline), with the default template's configuration, as bench/wave.py sets
it: REGISTRATION_INDEX_TABLE (a fresh table: empty by default, as a new user's first interruption finds it and as
issue 18 measured it, its 9.4 s with ELB Describe* at 2 s is a sweep's; with `--fault-index fresh` filled by one
scheduled refresh beforehand, straight against moto, as the template's 15-minute schedule keeps it; `empty,fresh`
runs both), RECORD_KEY_ID (a KMS HMAC_256
key), the SNS topic, everything else at its default. It gets one EventBridge Spot interruption warning through
bench/proxy.py: 20 ms a call, the account's ELB Describe* bucket (40 burst, 10/s) and EC2's buckets, and the row's
faults on top (proxy.Faults):

    none               no fault
    throttle10/30/50   spurious throttling errors on 10/30/50 % of all ELB and EC2 calls, seeded per run
    dynamodb-down      DynamoDB answers every call with 503 ServiceUnavailable
    dynamodb-slow      DynamoDB answers after 5 s a call
    elb-describe-slow  ELB Describe* answers after 2 s a call
    kms-down           KMS answers every call with 503
    sns-down           SNS answers every call with 503

Measured per run: seconds from the hand-over of the event to the last DeregisterTargets moto answered with success
(the proxy's clock, the same process's), seconds to the answer, the answer (ok, or its errorType), what AWS looks like
afterwards read straight from moto (registrations of the instance left, its ENIs not on the quarantine group), calls
per action and what the proxy refused (bucket throttles, injected throttles, 503s), and the function's warnings and
errors. Each row runs `--fault-runs` times (seeds `--fault-seed`, +1, ...); the report gives median and max.

Writes bench/out/faults.json and the section "## Throttles and failing dependencies" of bench/RESULTS.md, with the
issue's figures and targets next to each row.
"""
import collections
import datetime
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import fleet as fleet_module
from proxy import BUCKETS_DOC, Faults
from runtime import LambdaProcess
from scenarios import interruption_event
from wave import MEMORY_MB, TIMEOUT_S, WaveBench, log_digest

HEADING = "## Throttles and failing dependencies"
FAULT_GROUPS = 30
FAULT_PER_INSTANCE = 5


@dataclass(frozen=True)
class Row:
    name: str
    title: str
    spurious: float = 0.0
    down: frozenset = frozenset()
    slow: tuple = ()
    # What issue 18 measured before ("last DeregisterTargets", "answer"), None where it gives nothing.
    issue_dereg_s: float = None
    issue_answer_s: float = None
    # Its targets: last DeregisterTargets and answer at most these seconds; the answer's errorType, if it says.
    target_dereg_s: float = None
    target_answer_s: float = None
    target_error: str = None
    target_note: str = ""

    def faults(self, seed):
        return Faults(spurious=self.spurious, seed=seed, down=self.down, slow=self.slow)


ROWS = [
    Row("none", "no fault", issue_dereg_s=0.43, issue_answer_s=0.6),
    Row("throttle10", "10 % of ELB and EC2 calls throttled", spurious=0.10, issue_dereg_s=18.4, issue_answer_s=20.6),
    Row("throttle30", "30 % throttled", spurious=0.30, issue_dereg_s=36.0, issue_answer_s=57.9,
        target_dereg_s=3, target_answer_s=8),
    Row("throttle50", "50 % throttled", spurious=0.50, issue_dereg_s=84.8, issue_answer_s=94.2,
        target_dereg_s=6, target_answer_s=15),
    Row("dynamodb-down", "DynamoDB down (503)", down=frozenset({"dynamodb"}), issue_dereg_s=46.8, target_dereg_s=3),
    Row("dynamodb-slow", "DynamoDB 5 s a call", slow=(("dynamodb", "", 5.0),), issue_dereg_s=30.4,
        target_dereg_s=3),
    Row("elb-describe-slow", "ELB Describe* 2 s a call", slow=(("elasticloadbalancing", "Describe", 2.0),),
        issue_dereg_s=9.4, target_dereg_s=5),
    Row("kms-down", "KMS down (503)", down=frozenset({"kms"}), issue_dereg_s=4.0, target_dereg_s=4.0,
        target_note="as today or better"),
    Row("sns-down", "SNS down (503)", down=frozenset({"sns"}), target_error="CleanupIncomplete"),
]
ROW_NAMES = [row.name for row in ROWS]


def log(message):
    print(message, flush=True)


def parse_rows(text):
    names = [n.strip() for n in text.split(",") if n.strip()] if text else ROW_NAMES
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown:
        raise SystemExit(f"unknown fault rows {unknown}; known: {', '.join(ROW_NAMES)}")
    return [row for row in ROWS if row.name in names]


class FaultBench(WaveBench):
    """WaveBench's configuration (template environment, record key, index table, refresh), one fault run at a time."""

    def new_fleet(self):
        """A fresh moto and fleet."""
        self.moto.reset()
        self.tables = 0
        return fleet_module.build(self.moto.endpoint, FAULT_GROUPS, 1, FAULT_PER_INSTANCE)

    def run_one(self, row, seed, index):
        """One run of `row` on a fresh fleet, with a new record key and a new index table."""
        fleet = self.new_fleet()
        node = fleet.spot[0]
        key = self.record_key()
        table = self.new_table()
        refreshed = self.refresh(self.binary, fleet, table, key) if index == "fresh" else None
        env = self.template_env(fleet, table, key)
        self.proxy.reset()
        self.proxy.set_faults(row.faults(seed))
        load_before = os.getloadavg()[0]
        function = LambdaProcess(self.binary, env, self.log_dir, f"{row.name}-{seed}", TIMEOUT_S, MEMORY_MB)
        try:
            function.wait_ready()
            event = interruption_event(self.root, node.id)
            t0 = time.monotonic()
            status, answer = function.invoke(event)
            answered = time.monotonic() - t0
        finally:
            function.close()
        stats = self.proxy.stats.snapshot()
        self.proxy.reset()  # no faults for anything else
        summaries = fleet_module.published_summaries(self.moto.endpoint, fleet.queue_url)
        aws_after = fleet_module.check(self.moto.endpoint, fleet, [node])
        deregs = sorted(t - t0 for t in stats["deregistered_at"])
        error_type = answer.get("errorType") if isinstance(answer, dict) else None
        summary = summaries[0] if summaries else {}
        return {
            "row": row.name,
            "build_s": fleet.build_seconds,
            "seed": seed,
            "index": index,
            "index_refresh": refreshed,
            "status": status,
            "answer": error_type or ("ok" if status == 200 else f"HTTP {status}"),
            "outcome": (answer.get("outcome") if isinstance(answer, dict) else None) or summary.get("outcome"),
            "error_message": str(answer.get("errorMessage", ""))[:400] if error_type else None,
            "answer_s": answered,
            "first_dereg_s": deregs[0] if deregs else None,
            "last_dereg_s": deregs[-1] if deregs else None,
            "deregistrations": len(deregs),
            "registrations": fleet.registrations_of(node),
            "aws_after": aws_after,
            "work_done": aws_after["targets_left"] == 0 and aws_after["enis_not_quarantined"] == 0
                         and aws_after["neighbour_lost"] == 0,
            "summaries": len(summaries),
            "summary_errors": [f"{e['step']}: {e['message'][:200]}" for s in summaries for e in s.get("errors", [])],
            "calls": flat(stats["calls"]),
            "throttled": flat(stats["throttled"]),
            "spurious": flat(stats["spurious"]),
            "unavailable": flat(stats["unavailable"]),
            "upstream_errors": {f"{s}:{a}:{code}": n for (s, a, code), n in stats["errors"].items()},
            "dropped": [f"{s}:{a} after {seconds:.1f} s" for s, a, seconds in stats["dropped"]],
            "timed_out": function.timed_out,
            "logs": log_digest([function]),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        }


def flat(counter):
    return {f"{service}:{action}": n for (service, action), n in sorted(counter.items())}


def run_all(root, moto, proxy, log_dir, args, save=None):
    """Every row, `args.fault_runs` times each, run by run interleaved across rows (so the machine's load drifts over
    all rows alike). Returns the results as one JSON-able dict, and hands it to `save` after each complete round, so
    an interrupted part still leaves its complete rounds (`--rerender` reports them)."""
    started = time.monotonic()
    rows = parse_rows(args.fault_rows)
    bench = FaultBench(root, moto, proxy, log_dir, args.binary)
    info = run_info(root, args)
    info["runs"] = 0
    data = {"run": info, "rows": [row.name for row in rows], "results": []}
    for run in range(args.fault_runs):
        for index in args.fault_index:
            for row in rows:
                result = bench.run_one(row, args.fault_seed + run, index)
                result["run"] = run + 1
                log(f"  {describe(row, result)}")
                data["results"].append(result)
        info["runs"] = run + 1
        info["load_end"] = os.getloadavg()
        info["run_seconds"] = time.monotonic() - started
        if save is not None:
            save(data)
    return data


def run_info(root, args):
    def git(*words):
        return subprocess.run(["git", "-C", str(root), *words], capture_output=True, text=True).stdout.strip()

    binary = Path(args.binary)
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "label": args.fault_label,
        "bench_commit": git("rev-parse", "--short", "HEAD") + (" (src/ has uncommitted changes)"
                                                               if git("status", "--porcelain", "src") else ""),
        "binary": str(binary),
        "binary_built": datetime.datetime.fromtimestamp(binary.stat().st_mtime, datetime.timezone.utc)
        .isoformat(timespec="seconds"),
        "runs_planned": args.fault_runs,
        "seed": args.fault_seed,
        "index": args.fault_index,
        "groups": FAULT_GROUPS,
        "per_instance": FAULT_PER_INSTANCE,
        "latency_ms": args.latency_ms,
        "buckets": BUCKETS_DOC,
        "timeout_s": TIMEOUT_S,
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg(),
    }


def describe(row, r):
    last = f"{r['last_dereg_s']:.2f} s" if r["last_dereg_s"] is not None else "none"
    refused = sum(r["spurious"].values()) + sum(r["throttled"].values()) + sum(r["unavailable"].values())
    return (f"{row.name} ({r['index']} index) seed {r['seed']}: last DeregisterTargets {last}, answer {r['answer']} after "
            f"{r['answer_s']:.2f} s, {r['deregistrations']} deregistrations of {r['registrations']}, "
            f"left {r['aws_after']['targets_left']}, ENIs unquarantined {r['aws_after']['enis_not_quarantined']}, "
            f"calls {sum(r['calls'].values())}, refused {refused}, load {r['load_after']:.1f}")


# --- the report ------------------------------------------------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def judge(row, runs):
    """(verdict, details) of the issue's target for `row` over its runs: `met` when every run meets it, `median only`
    when the median does and some run does not, `not met` otherwise; '' when the issue sets none."""
    if row.target_dereg_s is None and row.target_answer_s is None and row.target_error is None:
        return ""

    def meets(r):
        ok = r["work_done"]
        if row.target_dereg_s is not None:
            ok = ok and r["last_dereg_s"] is not None and r["last_dereg_s"] <= row.target_dereg_s
        if row.target_answer_s is not None:
            ok = ok and r["answer_s"] <= row.target_answer_s
        if row.target_error is not None:
            ok = ok and r["answer"] == row.target_error
        return ok

    every = all(meets(r) for r in runs)
    if every:
        return "met"
    med_ok = all(r["work_done"] for r in runs)
    if row.target_dereg_s is not None:
        d = median(r["last_dereg_s"] for r in runs)
        med_ok = med_ok and d is not None and d <= row.target_dereg_s and \
            all(r["last_dereg_s"] is not None for r in runs)
    if row.target_answer_s is not None:
        med_ok = med_ok and median(r["answer_s"] for r in runs) <= row.target_answer_s
    if row.target_error is not None:
        med_ok = med_ok and sum(r["answer"] == row.target_error for r in runs) * 2 > len(runs)
    failing = sum(not meets(r) for r in runs)
    return f"median only ({failing} of {len(runs)} runs miss)" if med_ok else f"**not met** ({failing} of " \
        f"{len(runs)} runs miss)"


def target_text(row):
    parts = []
    if row.target_dereg_s is not None:
        parts.append(f"last dereg ≤ {row.target_dereg_s:g} s")
    if row.target_answer_s is not None:
        parts.append(f"answer ≤ {row.target_answer_s:g} s")
    if row.target_error is not None:
        parts.append(f"answers {row.target_error}")
    if parts:
        parts.append("work done")
    text = ", ".join(parts)
    if row.target_note:
        text += f" ({row.target_note})"
    return text or "–"


def issue_text(row):
    parts = []
    if row.issue_dereg_s is not None:
        parts.append(f"{row.issue_dereg_s:g}")
    if row.issue_answer_s is not None:
        parts.append(f"{row.issue_answer_s:g}")
    return " / ".join(parts) if parts else "–"


def answers_text(runs):
    counts = collections.Counter(r["answer"] for r in runs)
    return ", ".join(f"{n}× {a}" for a, n in counts.most_common())


def work_text(runs):
    left = max(r["aws_after"]["targets_left"] for r in runs)
    unq = max(r["aws_after"]["enis_not_quarantined"] for r in runs)
    lost = max(r["aws_after"]["neighbour_lost"] for r in runs)
    done = sum(r["work_done"] for r in runs)
    text = f"{done}/{len(runs)}"
    if done < len(runs):
        text += f" (worst: {left} registrations left, {unq} ENIs unquarantined" + \
            (f", {lost} neighbours lost" if lost else "") + ")"
    return text


def refused_text(runs):
    """Median per run of the proxy's refusals: injected throttles, bucket throttles, 503s."""
    parts = []
    for key, name in (("spurious", "injected throttles"), ("throttled", "bucket throttles"),
                      ("unavailable", "503s")):
        values = [sum(r[key].values()) for r in runs]
        if any(values):
            parts.append(f"{median(values):g} {name}")
    return ", ".join(parts) or "none"


def calls_text(runs):
    """Per action, the median calls per run, and refusals of any kind, for the actions called at all."""
    actions = sorted({a for r in runs for a in r["calls"]})
    parts = []
    for action in actions:
        calls = median([r["calls"].get(action, 0) for r in runs])
        refused = median([r["spurious"].get(action, 0) + r["throttled"].get(action, 0)
                          + r["unavailable"].get(action, 0) for r in runs])
        service, name = action.split(":", 1)
        short = {"elasticloadbalancing": "elb", "dynamodb": "ddb"}.get(service, service)
        parts.append(f"{short}:{name} {calls:g}" + (f" ({refused:g} refused)" if refused else ""))
    return ", ".join(parts)


def section(data):
    info = data["run"]
    by_row = collections.defaultdict(list)
    for r in data["results"]:
        by_row[(r["row"], r.get("index", "fresh"))].append(r)
    indexes = [i for i in ("empty", "fresh") if any(k[1] == i for k in by_row)]
    cases = [(row, index, by_row[(row.name, index)]) for index in indexes for row in ROWS
             if by_row.get((row.name, index))]

    def title(row, index):
        return row.title + (f", {index} index" if len(indexes) > 1 else "")

    index_text = " and ".join({"empty": "empty (a new user's first interruption)",
                               "fresh": "filled by one scheduled refresh beforehand"}[i] for i in indexes)
    runs = info["runs"]
    counts = sorted({len(rs) for _, _, rs in cases})
    runs_text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    lines = [
        HEADING,
        "",
        f"Generated by `bench/run --faults` on {info['started']}: **{info['label'] or 'unlabelled'}**. Binary "
        f"`{info['binary']}` (built {info['binary_built']}); bench/ at commit {info['bench_commit']}. "
        f"{runs_text} run{'s' if counts[-1] != 1 else ''} per row"
        + (f" (of {info['runs_planned']} planned: a partial result, saved after the last complete round)"
           if info["runs_planned"] > runs else "")
        + f" (seeds {info['seed']}…{info['seed'] + runs - 1}), rows interleaved run by run; {info['cpus']} shared "
        f"CPUs, load average {fmt_load(info['load_start'])} at the "
        f"start and {fmt_load(info['load_end'])} at the end (this benchmark's own processes included), so figures are "
        f"noisy. Whole part: {info['run_seconds'] / 60:.1f} min."
        + "".join(f" The {index}-index rows come from an earlier part run on the same binary (same path and build "
                  f"time), kept when this one measured only {', '.join(info['index'])}: "
                  f"{max(len(rs) for _, i, rs in cases if i == index)} runs, seeds 1…"
                  f"{max(r['seed'] for _, i, rs in cases if i == index for r in rs)}."
                  for index in indexes if index not in info["index"]),
        "",
        f"Each run: a fresh fleet on moto, {info['groups']} target groups, the instance in {info['per_instance']} "
        "(3 `instance` groups by its id, 2 `ip` groups by a pod address), a neighbour in every group; one process "
        f"of the binary with the template's configuration (REGISTRATION_INDEX_TABLE, index "
        f"{index_text}; RECORD_KEY_ID, a "
        f"KMS HMAC key, new each run; the SNS topic; defaults otherwise) and the template's {info['timeout_s']} s deadline; one "
        f"EventBridge Spot interruption warning. bench/proxy.py adds {info['latency_ms']:g} ms a call and enforces "
        + "; ".join(info["buckets"].values()) + ", and the row's faults on top. Times are seconds from the hand-over "
        "of the event: to the last DeregisterTargets moto answered with success (proxy clock), and to the answer. "
        "`work done`: runs after which moto holds no registration of the instance, every ENI of it is on the "
        "quarantine group and the neighbour is still registered everywhere. Issue 18's figures are its own "
        "measurement (last DeregisterTargets / answer); a target is `met` when every run meets it.",
        "",
        "| faults | last DeregisterTargets, median / max | answer, median / max | answers | work done | "
        "refused per run (median) | issue 18 measured | target | met? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, index, rs in cases:
        deregs = [r["last_dereg_s"] for r in rs]
        missing = sum(d is None for d in deregs)
        dereg_cell = f"{fmt(median(deregs))} / {fmt(max((d for d in deregs if d is not None), default=None))}"
        if missing:
            dereg_cell += f" ({missing} run{'s' if missing > 1 else ''} without any)"
        answers = [r["answer_s"] for r in rs]
        lines.append(
            f"| {title(row, index)} | {dereg_cell} | {fmt(median(answers))} / {fmt(max(answers))} | {answers_text(rs)} | "
            f"{work_text(rs)} | {refused_text(rs)} | {issue_text(row)} | {target_text(row)} | {judge(row, rs)} |")
    lines += [
        "",
        "### Calls per action (median per run; refused = bucket or injected throttles and 503s)",
        "",
        "| faults | calls |",
        "|---|---|",
    ]
    for row, index, rs in cases:
        lines.append(f"| {title(row, index)} | {calls_text(rs)} |")
    lines += ["", "### What the function logged and answered (all runs of a row together)", ""]
    for row, index, rs in cases:
        notes = collections.Counter()
        for r in rs:
            for line, n in r["logs"]["lines"].items():
                notes[line[:220]] += n
        messages = collections.Counter(r["error_message"][:220] for r in rs if r["error_message"])
        dropped = collections.Counter(d.split(" after ")[0] for r in rs for d in r["dropped"])
        timed_out = sum(r["timed_out"] for r in rs)
        out = [f"`{n}× {m}`" for m, n in notes.most_common(6)]
        out += [f"answered {n}×: `{m}`" for m, n in messages.most_common(2)]
        if dropped:
            out.append("calls the function gave up on before they were answered: " +
                       ", ".join(f"{a} {n}" for a, n in dropped.most_common()))
        if timed_out:
            out.append(f"{timed_out} run(s) ran into the {info['timeout_s']} s deadline")
        lines.append(f"- {title(row, index)}: " + ("; ".join(out) or "nothing at WARN or ERROR"))
    return lines


def fmt_load(load):
    return "/".join(f"{x:.1f}" for x in load) if load else "n/a"


def targets(data):
    """(row, target, verdict) for the rows the issue sets a target for."""
    by_row = collections.defaultdict(list)
    for r in data["results"]:
        by_row[(r["row"], r.get("index", "fresh"))].append(r)
    return [(f"{row.title}, {index} index", target_text(row), judge(row, by_row[(row.name, index)]))
            for index in ("empty", "fresh") for row in ROWS
            if by_row.get((row.name, index)) and judge(row, by_row[(row.name, index)])]


# --- the section in bench/RESULTS.md ---------------------------------------------------------------------------------

def without_section(text, heading=HEADING):
    """`text` without the section `heading` (from it to the next `## ` heading or the end)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.strip() == heading:
            inside = True
            continue
        if inside and line.startswith("## "):
            inside = False
        if not inside:
            out.append(line)
    return "\n".join(out) + "\n"


def section_of(text, heading=HEADING):
    """The section `heading` of `text` as lines, or [] when it has none."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip() == heading:
            inside = True
        elif inside and line.startswith("## "):
            break
        if inside:
            lines.append(line)
    return lines


def replace_section(text, lines, heading=HEADING):
    """`text` with its section `heading`, if any, replaced by `lines`, put at the end."""
    return without_section(text, heading).rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n"

