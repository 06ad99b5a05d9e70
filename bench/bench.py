#!/usr/bin/env python3
"""Benchmark spot-cleanup's release binary against a throttled, latency-adding moto, and compare it with a naive
sequential baseline. Run it through `bench/run`, which prepares the venv and the binary first.

For each fleet size (number of target groups) it builds a fleet on moto, then runs, each in a fresh function process
under `cargo lambda watch`: ours for one interrupted instance, ours for an SQS batch of K, and the baseline (the same
binary, one invocation per instance, back to back). There is no `--concurrency` any more: ELB_CONCURRENCY is
deprecated and ignored (the ELB budget paces the reads), so a baseline with ELB_CONCURRENCY=1, a sequential sweep,
cannot be run; RESULTS.md rows labelled so were measured before. The fleet is restored between scenarios and the proxy's
token buckets refilled, so each starts from the same state. Writes bench/out/results.{json,md} and
bench/out/time-vs-groups.png, and copies the table and the plot to bench/RESULTS.md and bench/time-vs-groups.png.

With --wave it runs only the wave part instead (bench/wave.py): N interruptions at once, each in its own function
process, against one SQS batch of the same N, and a lone interruption with this binary against an older one. That
writes bench/out/wave.{json,md} and bench/out/wave.png, puts the section "A wave of interruptions" at the end of
bench/RESULTS.md (a later full run keeps it) and copies the plot to bench/wave.png.

With --faults it runs only the throttling and failing-dependency part (bench/faults.py, issue 18): one interruption at
30 target groups, the instance in 5, with spurious throttling on 10/30/50 % of the ELB and EC2 calls, DynamoDB down
or 5 s a call, ELB Describe* 2 s a call, KMS down, SNS down; --fault-runs runs per row. That writes
bench/out/faults.json and the section "Throttles and failing dependencies" of bench/RESULTS.md (a later full or wave
run keeps it).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import budget
import cold_init
import faults
import fleet as fleet_module
import report
import wave
import wave_report
from processes import Moto
from proxy import BUCKETS_DOC, ThrottlingProxy
from scenarios import Bench

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
BINARY = ROOT / "target" / "release" / "spot-cleanup"


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="There is no --concurrency: ELB_CONCURRENCY is deprecated and ignored (the ELB budget paces the reads), "
               "so the baseline is one invocation per instance, back to back, with the function's own settings.")
    parser.add_argument("--sizes", default="50,300,1000", help="target group counts, comma-separated")
    parser.add_argument("--latency-ms", type=float, default=20, help="latency the proxy adds to every call")
    parser.add_argument("--batch", type=int, help="instances per SQS batch (default: 50 for 300 groups, else 10)")
    parser.add_argument("--baseline-budget", type=float, default=45,
                        help="seconds after which the baseline starts no more invocations (the rest is extrapolated)")
    parser.add_argument("--cold-init-runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a smoke run: sizes 20,60, batches of 3")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--rerender", action="store_true",
                        help="only rewrite the report and plot from bench/out/results.json (with --wave: wave.json); "
                             "runs nothing")
    parser.add_argument("--binary", type=Path, default=BINARY,
                        help="the function binary to measure (default: target/release/spot-cleanup)")
    parser.add_argument("--wave", action="store_true",
                        help="run only the wave part: N interruptions at once in N processes, against one SQS batch, "
                             "and the lone comparison")
    parser.add_argument("--wave-sizes", default="10@100,20@300",
                        help="wave sizes, instances@target groups, comma-separated")
    parser.add_argument("--old-binary", type=Path,
                        help="with --wave: an older binary to compare a lone interruption with (skipped without it)")
    parser.add_argument("--lone-runs", type=int, default=3,
                        help="with --wave: runs of the lone comparison per binary and index state (0: none)")
    parser.add_argument("--lone-groups", type=int, default=300,
                        help="with --wave: target groups of the lone comparison")
    parser.add_argument("--budget", action="store_true",
                        help="run only the ELB budget part (bench/budget.py, issue 24): NodePort waves, the lone "
                             "interruption at 300 groups, issue 14's wave, behind AWS's documented ELB buckets")
    parser.add_argument("--budget-sizes", default="10,20,50",
                        help="with --budget: NodePort wave sizes (nodes), comma-separated")
    parser.add_argument("--no-budget-batches", dest="budget_batches", action="store_false",
                        help="with --budget: leave out the 20-node wave delivered as SQS batches")
    parser.add_argument("--budget-rows", default="lone,issue14",
                        help="with --budget: the other rows to run, comma-separated (lone, issue14)")
    parser.add_argument("--function-env", action="append", default=[], metavar="NAME=VALUE",
                        help="with --budget: a setting of the function over the template's (repeatable), e.g. "
                             "ELB_DESCRIBE_RATE=10")
    parser.add_argument("--bucket-model", default="aws", choices=["aws", "describe"],
                        help="the ELB buckets the proxy meters: AWS's documented ones (account-level plus category; "
                             "the default), or the older Describe*-only bucket")
    parser.add_argument("--faults", action="store_true",
                        help="run only the throttling and failing-dependency part (bench/faults.py, issue 18)")
    parser.add_argument("--fault-runs", type=int, default=5, help="with --faults: runs per row, seeds differing")
    parser.add_argument("--fault-rows", default="",
                        help=f"with --faults: rows to run, comma-separated (default all: {','.join(faults.ROW_NAMES)})")
    parser.add_argument("--fault-seed", type=int, default=1,
                        help="with --faults: the seed of the first run's spurious throttles (then +1 per run)")
    parser.add_argument("--fault-index", default="empty",
                        help="with --faults: the registration index empty (as issue 18 measured), fresh (filled by "
                             "one refresh beforehand), or both: empty,fresh")
    parser.add_argument("--fault-label", default="",
                        help="with --faults: what the binary is, for the report (e.g. 'main at abc123, before "
                             "issue 18')")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.batch, args.baseline_budget, args.cold_init_runs = "20,60", args.batch or 3, 10, 3
        args.wave_sizes, args.lone_groups, args.lone_runs = "3@20", 20, min(args.lone_runs, 1)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.fault_index = [i.strip() for i in args.fault_index.split(",") if i.strip()]
    if not args.fault_index or set(args.fault_index) - {"empty", "fresh"}:
        parser.error("--fault-index takes empty, fresh or empty,fresh")
    args.wave_sizes = wave.parse_sizes(args.wave_sizes)
    args.budget_sizes = budget.parse_sizes(args.budget_sizes)
    args.budget_rows = [r.strip() for r in args.budget_rows.split(",") if r.strip()]
    try:
        args.function_env = dict(setting.split("=", 1) for setting in args.function_env)
    except ValueError:
        parser.error(f"--function-env takes NAME=VALUE: {args.function_env}")
    args.binary = args.binary.resolve()
    args.old_binary = args.old_binary.resolve() if args.old_binary else None
    for binary in (args.binary, args.old_binary):
        if binary is not None and not binary.is_file() and not args.rerender:
            parser.error(f"no binary at {binary}")
    return args


def batch_size(args, groups):
    if args.batch:
        return args.batch
    return 50 if groups == 300 else 10


def run_size(bench, moto, args, groups):
    """Build the fleet for `groups` on a fresh moto and run its scenarios; returns (results, build seconds)."""
    moto.reset()
    k = batch_size(args, groups)
    fleet = fleet_module.build(moto.endpoint, groups, k)
    log(f"{groups} groups: fleet of {k} Spot instances + neighbour built in {fleet.build_seconds:.1f} s")
    results = []
    table = fleet_module.create_index_table(moto.endpoint)
    status, answer, seconds = bench.refresh_index(fleet, table)
    refreshed = answer.get("index_refresh", {}) if isinstance(answer, dict) else {}
    log(f"{groups} groups: index refresh {status} in {seconds:.1f} s: {refreshed.get('registrations')} registrations, "
        f"{len(refreshed.get('errors', []))} errors")
    plan = [("single", "single", fleet.spot[:1], None, None),
            ("batch", "batch", fleet.spot, None, None),
            ("single+index", "single", fleet.spot[:1], None, table),
            ("batch+index", "batch", fleet.spot, None, table)]
    if not args.no_baseline:
        plan.append(("baseline", "baseline", fleet.spot, args.baseline_budget, None))
    for name, kind, nodes, budget, index_table in plan:
        result = bench.run(fleet, name, kind, nodes, budget_seconds=budget, index_table=index_table)
        log(f"  {name}: {len(nodes) if kind != 'baseline' else result['instances_run']} instance(s), "
            f"last dereg {report.seconds(result['last_dereg_s'])} s, total {result['total_s']:.1f} s, "
            f"outcomes {sorted(set(result['outcomes'].values()))}, load {result['load_after']:.1f}")
        results.append(result)
    return results, fleet.build_seconds


def measure_cold_init(binary, runs):
    """Reuse bench/cold_init.py: exec to first runtime poll, and RSS then."""
    cold_init.one_run(str(binary))  # warm the page cache
    samples = [cold_init.one_run(str(binary)) for _ in range(runs)]
    times = sorted(t for t, _ in samples)
    return {"runs": runs, "median_ms": statistics.median(times), "min_ms": times[0], "max_ms": times[-1],
            "rss_mib": max(r for _, r in samples) / 1024}


def run_info(args, started_wall):
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True,
                           text=True).stdout.strip()
    return {
        "started": started_wall,
        "commit": commit + (" (src/ has uncommitted changes)" if dirty else ""),
        "binary": shown_path(args.binary),
        "binary_mib": args.binary.stat().st_size / 2**20,
        "binary_built": datetime.datetime.fromtimestamp(args.binary.stat().st_mtime).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "latency_ms": args.latency_ms,
        "buckets": BUCKETS_DOC,
        "baseline_budget_s": args.baseline_budget,
        "load_start": os.getloadavg(),
    }


def shown_path(path):
    """`path` relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def markdown(info, cold, build_times, results, by_size):
    """The whole report as markdown lines."""
    lines = [
        "# spot-cleanup benchmark",
        "",
        f"Generated by `bench/run` on {info['started']} (commit {info['commit']}; binary built "
        f"{info['binary_built']}). Machine: {info['cpus']} CPUs; load average {fmt_load(info['load_start'])} at "
        f"the start, {fmt_load(info['load_end'])} at the end; 1-minute load during the scenarios "
        f"{load_range(results)} (this benchmark's own processes included). Whole run: "
        f"{info['run_seconds'] / 60:.1f} min.",
        "",
        f"Setup: moto behind a proxy adding {info['latency_ms']:g} ms to every call and enforcing "
        + "; ".join(info["buckets"].values())
        + ". Buckets start full in every scenario. Fleet: half `instance` and half `ip` target groups in one VPC; "
        f"each Spot instance in {fleet_module.GROUPS_PER_INSTANCE} groups spread over the fleet, one neighbour in "
        "every group. The baseline is the same binary, one invocation per instance, back to back. The instances carry no `aws:autoscaling:groupName` tag, so the Auto "
        "Scaling fast path finds nothing; the `+ index` scenarios set REGISTRATION_INDEX_TABLE after one scheduled "
        "refresh, the others locate by the full sweep alone. moto's own service "
        "time (roughly 10-15 ms a call here) comes on top of the proxy's latency.",
        "",
        f"Binary: {info['binary_mib']:.1f} MiB. Cold init (exec to first runtime poll, bench/cold_init.py): "
        f"median {cold['median_ms']:.1f} ms over {cold['runs']} runs (min {cold['min_ms']:.1f}, max "
        f"{cold['max_ms']:.1f}), RSS then {cold['rss_mib']:.1f} MiB.",
        "",
        "Fleet build on moto (boto3, not through the proxy): "
        + ", ".join(f"{g} groups {s:.1f} s" for g, s in sorted(build_times.items())) + ".",
        "",
        "## Results",
        "",
        "Times are seconds from the start of the scenario's first invocation; `~` marks extrapolated figures.",
        "",
        *report.main_table(results),
        "",
        "## Ours over the baseline (same run)",
        "",
        "Below 1× means ours is faster (or makes fewer calls, per instance).",
        "",
        *report.ratio_lines(by_size),
        "",
        "## Calls per action",
        "",
        "Requests the proxy received, throttled ones included; `thr` = how many of them it answered with the "
        "service's throttling error (the SDK then retried).",
        "",
        *report.calls_table(results),
        "",
        "## Where the function's time went (seconds, from the summaries' `timings_ms`, mean per invocation)",
        "",
        *report.step_table(results),
        "",
        "![time against target groups](time-vs-groups.png)",
        "",
        "## Flags",
        "",
        *flags(results),
    ]
    return lines


def load_range(results):
    loads = [r[k] for r in results for k in ("load_before", "load_after")]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a"


def fmt_load(load):
    return "/".join(f"{x:.1f}" for x in load)


def flags(results):
    """Anything a reader should not miss: outcomes other than cleaned, errors, AWS state that disagrees."""
    out = []
    for result in results:
        where = f"{result['groups']} groups, {result['scenario']}"
        bad = sorted(i for i, o in result["outcomes"].items() if o != "cleaned")
        if bad:
            kinds = sorted({result["outcomes"][i] for i in bad})
            out.append(f"- {where}: **{len(bad)} of {len(result['outcomes'])} instance(s) not `cleaned`** "
                       f"({', '.join(kinds)}), e.g. {', '.join(bad[:3])}")
        for error, n in count_similar(result["summary_errors"]).items():
            out.append(f"- {where}: {n}× summary error: {error}")
        for answer, n in count_similar(str(a) for a in result["answers"]
                                       if a.get("error_type") or a.get("batch_item_failures")).items():
            out.append(f"- {where}: {n}× invocation answered {answer}")
        for key, n in result["upstream_errors"].items():
            out.append(f"- {where}: moto answered {n} call(s) with an error: {key}")
        short = {i: (r, result["expected_registrations"][i]) for i, r in result["removed"].items()
                 if r != result["expected_registrations"][i]}
        if short:
            out.append(f"- {where}: removed vs registered differ for {len(short)} instance(s), e.g. "
                       f"{dict(list(short.items())[:3])}")
        if result["kind"] == "baseline" and result["instances_run"] < result["instances_planned"]:
            out.append(f"- {where}: ran {result['instances_run']} of {result['instances_planned']} invocations "
                       f"within its {result['budget_s']:g} s budget; the rest is extrapolated")
    return out or ["- none: every instance `cleaned`, no errors, AWS agrees."]


RESOURCE_ID = re.compile(r"\b(eni|i|sg|vpc)-[0-9a-f]{8,17}\b")


def count_similar(messages):
    """Messages with resource ids blanked out, and how often each occurred."""
    counts = {}
    for message in messages:
        key = RESOURCE_ID.sub(lambda m: f"{m.group(1)}-…", message)
        counts[key] = counts.get(key, 0) + 1
    return counts


def write_outputs(info, cold, build_times, results):
    by_size = {}
    for result in results:
        by_size.setdefault(result["groups"], {})[result["scenario"]] = result
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(
        {"run": info, "cold_init": cold, "fleet_build_s": build_times, "scenarios": results}, indent=2, default=str))
    report.plot(by_size, OUT / "time-vs-groups.png")
    text = "\n".join(markdown(info, cold, build_times, results, by_size)) + "\n"
    (OUT / "results.md").write_text(text)
    # The wave part (`--wave`) is run on its own: keep its section.
    previous = (BENCH / "RESULTS.md").read_text() if (BENCH / "RESULTS.md").exists() else ""
    kept = wave_report.section_of(previous)
    text_md = wave_report.replace_section(text, kept) if kept else text
    kept_faults = faults.section_of(previous)
    (BENCH / "RESULTS.md").write_text(faults.replace_section(text_md, kept_faults) if kept_faults else text_md)
    shutil.copy(OUT / "time-vs-groups.png", BENCH / "time-vs-groups.png")
    return text


def log(message):
    print(message, flush=True)


def run_all(args):
    """Every measurement; returns (run info, cold init, fleet build times, scenario results)."""
    started = time.monotonic()
    info = run_info(args, datetime.datetime.now().isoformat(timespec="seconds"))
    log(f"binary {info['binary']} ({info['binary_mib']:.1f} MiB, built {info['binary_built']}); "
        f"load {fmt_load(info['load_start'])}")
    cold = measure_cold_init(args.binary, args.cold_init_runs)
    log(f"cold init median {cold['median_ms']:.1f} ms, RSS {cold['rss_mib']:.1f} MiB")
    logs = fresh_log_dir()
    log(f"process logs in {logs.relative_to(ROOT)}")
    moto = Moto(logs)
    proxy = ThrottlingProxy(moto.port, args.latency_ms, model=args.bucket_model)
    bench = Bench(ROOT, args.binary, moto, proxy, logs)
    results, build_times = [], {}
    try:
        for groups in args.sizes:
            size_results, build_times[groups] = run_size(bench, moto, args, groups)
            for result in size_results:
                result["budget_s"] = args.baseline_budget if result["kind"] == "baseline" else None
            results.extend(size_results)
    finally:
        proxy.close()
        moto.close()
    info["load_end"] = os.getloadavg()
    info["run_seconds"] = time.monotonic() - started
    return info, cold, build_times, results


def fresh_log_dir(name="logs"):
    """bench/out/logs (or `name`), emptied: moto's, the emulator's and each function process's output for this run."""
    logs = OUT / name
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    return logs


def load_previous():
    """The last run's measurements, from bench/out/results.json."""
    saved = json.loads((OUT / "results.json").read_text())
    build_times = {int(g): s for g, s in saved["fleet_build_s"].items()}
    return saved["run"], saved["cold_init"], build_times, saved["scenarios"]


def run_wave(args):
    """The wave part alone: run it (or reload bench/out/wave.json), then write its report, plot and section."""
    if args.rerender:
        data = json.loads((OUT / "wave.json").read_text())
        data["targets"] = wave.targets(data["sizes"])
    else:
        logs = fresh_log_dir("wave-logs")
        log(f"wave part: binary {shown_path(args.binary)}, old binary {args.old_binary}, sizes {args.wave_sizes}; "
            f"process logs in {logs.relative_to(ROOT)}")
        moto = Moto(logs)
        proxy = ThrottlingProxy(moto.port, args.latency_ms, model=args.bucket_model)
        try:
            data = wave.run_all(ROOT, moto, proxy, logs, args)
        finally:
            proxy.close()
            moto.close()
        data["run"]["binary"] = shown_path(args.binary)
        data["run"]["old_binary"] = shown_path(args.old_binary) if args.old_binary else None
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "wave.json").write_text(json.dumps(data, indent=2, default=str))
    lines = wave_report.section(data)
    (OUT / "wave.md").write_text("\n".join(lines) + "\n")
    wave_report.plot(data, OUT / "wave.png")
    if (OUT / "wave.png").exists():
        shutil.copy(OUT / "wave.png", BENCH / "wave.png")
    results_md = BENCH / "RESULTS.md"
    previous = results_md.read_text() if results_md.exists() else "# spot-cleanup benchmark\n"
    results_md.write_text(wave_report.replace_section(previous, lines))
    print("\n".join(lines))
    log(f"wrote {OUT.relative_to(ROOT)}/wave.{{json,md,png}}; section {wave_report.HEADING!r} in bench/RESULTS.md, "
        f"plot bench/wave.png. Wave part {data['run']['run_seconds'] / 60:.1f} min.")
    failed = [t for t in data["targets"] if not t[2]]
    for where, target, ok, figure in data["targets"]:
        log(f"TARGET {'pass' if ok else 'FAIL'}: {where}: {target} ({figure})")
    return 1 if failed else 0


def run_budget(args):
    """The ELB budget part alone (issue 24): run it (or reload bench/out/budget.json), then write its section and plot."""
    if args.rerender:
        data = json.loads((OUT / "budget.json").read_text())
    else:
        logs = fresh_log_dir("budget-logs")
        log(f"budget part: binary {shown_path(args.binary)}, old binary {args.old_binary}, NodePort sizes "
            f"{args.budget_sizes}, rows {args.budget_rows}; process logs in {logs.relative_to(ROOT)}")
        moto = Moto(logs)
        proxy = ThrottlingProxy(moto.port, args.latency_ms, model=args.bucket_model)
        try:
            data = budget.run_all(ROOT, moto, proxy, logs, args)
        finally:
            proxy.close()
            moto.close()
        data["run"]["binary"] = shown_path(args.binary)
        data["run"]["old_binary"] = shown_path(args.old_binary) if args.old_binary else None
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "budget.json").write_text(json.dumps(data, indent=2, default=str))
    lines = budget.section(data)
    budget.plot(data, BENCH / "budget.png")
    results_md = BENCH / "RESULTS.md"
    previous = results_md.read_text() if results_md.exists() else "# spot-cleanup benchmark\n"
    results_md.write_text(budget.replace_section(previous, lines))
    print("\n".join(lines))
    checks = budget.targets(data)
    for where, target, ok, figure in checks:
        log(f"TARGET {'pass' if ok else 'FAIL'}: {where}: {target} ({figure})")
    return 0 if all(ok for _, _, ok, _ in checks) else 1


def run_faults(args):
    """The throttling and failing-dependency part alone: run it (or reload bench/out/faults.json), then write its
    section of bench/RESULTS.md."""
    if args.rerender:
        data = json.loads((OUT / "faults.json").read_text())
    else:
        logs = fresh_log_dir("faults-logs")
        log(f"faults part: binary {shown_path(args.binary)}, {args.fault_runs} run(s) per row; process logs in "
            f"{logs.relative_to(ROOT)}")
        moto = Moto(logs)
        proxy = ThrottlingProxy(moto.port, args.latency_ms, model=args.bucket_model)
        OUT.mkdir(parents=True, exist_ok=True)

        def save(data):
            data["run"]["binary"] = shown_path(args.binary)
            (OUT / "faults.json").write_text(json.dumps(data, indent=2, default=str))

        # Results of this same binary (path and build time) for index states not measured now are kept, so
        # `--fault-index empty` then `--fault-index fresh` report both.
        kept = []
        if (OUT / "faults.json").exists():
            old = json.loads((OUT / "faults.json").read_text())
            if (old["run"].get("binary"), old["run"].get("binary_built")) == (
                    shown_path(args.binary), faults.run_info(ROOT, args)["binary_built"]):
                kept = [r for r in old["results"] if r.get("index", "fresh") not in args.fault_index]
        save_measured = save

        def save(data):
            save_measured({**data, "results": kept + data["results"]})

        try:
            data = faults.run_all(ROOT, moto, proxy, logs, args, save)
        finally:
            proxy.close()
            moto.close()
        save(data)
        data = json.loads((OUT / "faults.json").read_text())
    lines = faults.section(data)
    results_md = BENCH / "RESULTS.md"
    previous = results_md.read_text() if results_md.exists() else "# spot-cleanup benchmark\n"
    results_md.write_text(faults.replace_section(previous, lines))
    print("\n".join(lines))
    log(f"wrote {OUT.relative_to(ROOT)}/faults.json and the section {faults.HEADING!r} of bench/RESULTS.md. "
        f"Faults part {data['run']['run_seconds'] / 60:.1f} min.")
    verdicts = faults.targets(data)
    for where, target, verdict in verdicts:
        log(f"TARGET {'pass' if verdict == 'met' else 'FAIL'}: {where}: {target} ({verdict})")
    return 0 if all(v == "met" for _, _, v in verdicts) else 1


def main():
    args = parse_args()
    if args.budget:
        return run_budget(args)
    if args.faults:
        return run_faults(args)
    if args.wave:
        return run_wave(args)
    info, cold, build_times, results = load_previous() if args.rerender else run_all(args)
    print(write_outputs(info, cold, build_times, results))
    log(f"wrote {OUT.relative_to(ROOT)}/results.{{json,md}}, time-vs-groups.png; copied to bench/RESULTS.md and "
        f"bench/time-vs-groups.png. Whole run {info['run_seconds'] / 60:.1f} min.")
    if not all(r["all_cleaned"] for r in results):
        log("NOT EVERY INSTANCE WAS CLEANED: see Flags above.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
