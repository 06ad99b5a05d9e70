"""Turn the benchmark's measurements into a markdown report, ratios of ours over the baseline, and a plot.

Figures marked `~` are extrapolated: the baseline stopped starting invocations when its time budget ran out, and the
rest of the batch is estimated from the mean of the invocations it did run (which, for one measured invocation, had
the full ELB burst to itself, so the estimate flatters the baseline).
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

ACTIONS = [
    ("elasticloadbalancing:DescribeTargetGroups", "DescTG"),
    ("elasticloadbalancing:DescribeTargetHealth", "DescTH"),
    ("elasticloadbalancing:DescribeTargetGroupAttributes", "DescAttr"),
    ("elasticloadbalancing:DeregisterTargets", "Dereg"),
    ("ec2:DescribeInstances", "DescInst"),
    ("ec2:DescribeNetworkInterfaces", "DescENI"),
    ("ec2:DescribeSecurityGroups", "DescSG"),
    ("ec2:CreateTags", "Tags"),
    ("ec2:ModifyNetworkInterfaceAttribute", "ModENI"),
    ("sns:Publish", "Publish"),
]


def extrapolate(result):
    """For a baseline cut short, estimate the whole batch; returns a copy with `extrapolated` set when it did."""
    result = dict(result)
    missing = result["instances_planned"] - result["instances_run"]
    result["extrapolated"] = missing > 0
    if missing > 0:
        per_invocation = sum(result["invocation_s"]) / len(result["invocation_s"])
        result["total_s"] += missing * per_invocation
        if result["last_dereg_s"] is not None:
            result["last_dereg_s"] += missing * per_invocation
    return result


def first_invocation(baseline):
    """The baseline's first invocation alone: a sequential sweep for one instance, comparable with `single`."""
    return {
        "first_dereg_s": baseline["first_dereg_s"],
        "last_dereg_s": baseline["invocation_last_dereg_s"][0],
        "total_s": baseline["invocation_s"][0],
    }


def seconds(value, approx=False):
    if value is None:
        return "n/a"
    return f"{'~' if approx else ''}{value:.1f}"


def ratio(ours, theirs):
    if ours is None or theirs in (None, 0):
        return "n/a"
    return f"{ours / theirs:.2f}×"


def scenario_label(result):
    index = " + index" if result.get("index") else ""
    if result["kind"] == "single":
        return f"ours{index}, 1 instance"
    if result["kind"] == "batch":
        return f"ours{index}, SQS batch of {result['instances_planned']}"
    label = f"baseline, {result['instances_planned']} invocations"
    if result["instances_run"] < result["instances_planned"]:
        label += f", {result['instances_run']} run, rest extrapolated"
    return label


def outcome_cell(result):
    counts = {}
    for outcome in result["outcomes"].values():
        counts[outcome] = counts.get(outcome, 0) + 1
    text = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    problems = []
    if not result["all_cleaned"]:
        problems.append("NOT ALL CLEANED")
    after = result["aws_after"]
    if after["targets_left"] or after["neighbour_lost"] or after["enis_not_quarantined"]:
        problems.append(f"AWS after: {after['targets_left']} targets left, {after['neighbour_lost']} neighbour "
                        f"groups lost, {after['enis_not_quarantined']} ENIs not quarantined")
    return text + (" **" + "; ".join(problems) + "**" if problems else "")


def main_table(results):
    lines = [
        "| groups | scenario | first dereg (s) | last dereg (s) | total (s) | ELB calls | EC2 calls | throttles "
        "(ELB/EC2) | peak RSS (MiB) | outcomes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        shown = extrapolate(result) if result["kind"] == "baseline" else dict(result, extrapolated=False)
        approx = shown["extrapolated"]
        lines.append(
            f"| {result['groups']} | {scenario_label(result)} | {seconds(shown['first_dereg_s'])} "
            f"| {seconds(shown['last_dereg_s'], approx)} | {seconds(shown['total_s'], approx)} "
            f"| {service_total(result['calls'], 'elasticloadbalancing')} | {service_total(result['calls'], 'ec2')} "
            f"| {service_total(result['throttled'], 'elasticloadbalancing')}/"
            f"{service_total(result['throttled'], 'ec2')} "
            f"| {result['peak_rss_mib']:.1f} | {outcome_cell(result)} |"
        )
    return lines


def service_total(counts, service):
    return sum(n for key, n in counts.items() if key.startswith(service + ":"))


def seen_actions(results):
    """(action, column title) for every action any scenario called: the usual ones first, in the order the function
    calls them, then any others (a new fast path, say) by name."""
    seen = {action for result in results for action in result["calls"]}
    known = [(action, short) for action, short in ACTIONS if action in seen]
    others = sorted(seen - {action for action, _ in ACTIONS})
    return known + [(action, action) for action in others]


def calls_table(results):
    """Requests per action as the proxy received them, with how many it throttled (when any)."""
    actions = seen_actions(results)
    head = "| groups | scenario | " + " | ".join(short for _, short in actions) + " |"
    lines = [head, "|---:|---|" + "---:|" * len(actions)]
    for result in results:
        cells = []
        for action, _ in actions:
            calls, throttled = result["calls"].get(action, 0), result["throttled"].get(action, 0)
            cells.append(f"{calls}" + (f" ({throttled} thr)" if throttled else ""))
        scenario = f"{result['scenario']} ({result['instances_run']})"
        lines.append(f"| {result['groups']} | {scenario} | " + " | ".join(cells) + " |")
    return lines


def step_table(results):
    """Where the function's time went, from its own summaries (`timings_ms`), mean per invocation."""
    steps = ["describe", "fast_locate", "locate", "deregister", "quarantine", "verify", "total"]
    lines = ["| groups | scenario | " + " | ".join(steps) + " |", "|---:|---|" + "---:|" * len(steps)]
    for result in results:
        timings = unique_timings(result)
        if not timings:
            continue
        means = [sum(t.get(s, 0) for t in timings) / len(timings) / 1000 for s in steps]
        lines.append(f"| {result['groups']} | {result['scenario']} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return lines


def unique_timings(result):
    """One timings object per invocation: a batch's summaries all carry the same one."""
    timings = [t for t in result["timings_ms"] if t]
    return timings[:1] if result["kind"] == "batch" else timings


def ratio_lines(by_size):
    """Ours over the baseline, per fleet size: below 1 means ours is faster or makes fewer calls."""
    lines = [
        "| groups | comparison | first dereg | last dereg | total | ELB calls | ELB throttles |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for groups, results in sorted(by_size.items()):
        baseline = results.get("baseline")
        if not baseline:
            continue
        for name in ("single", "single+index"):
            if name in results:
                lines.append(single_ratio_row(groups, results[name], baseline))
        for name in ("batch", "batch+index"):
            if name in results:
                lines.append(batch_ratio_row(groups, results[name], baseline))
    return lines


def single_ratio_row(groups, ours, baseline):
    """One instance: ours against the baseline's first invocation (the proxy counts calls per scenario, not per
    invocation, so there are no call ratios here)."""
    first = first_invocation(baseline)
    times = " | ".join(ratio(ours[k], first[k]) for k in ("first_dereg_s", "last_dereg_s", "total_s"))
    who = "ours + index" if ours.get("index") else "ours"
    return f"| {groups} | 1 instance: {who} ÷ baseline's first invocation | {times} | n/a | n/a |"


def batch_ratio_row(groups, ours, baseline):
    """A batch: ours against the baseline's whole run (extrapolated if cut short); calls scaled to the same number
    of instances."""
    theirs = extrapolate(baseline)
    mark = " (baseline extrapolated)" if theirs["extrapolated"] else ""
    times = " | ".join(ratio(ours[k], theirs[k]) for k in ("first_dereg_s", "last_dereg_s", "total_s"))
    scale = baseline["instances_run"] / ours["instances_run"]
    calls = [ratio(service_total(ours[k], "elasticloadbalancing") * scale,
                   service_total(baseline[k], "elasticloadbalancing")) for k in ("calls", "throttled")]
    who = "ours + index" if ours.get("index") else "ours"
    return f"| {groups} | batch of {ours['instances_run']}: {who} ÷ baseline{mark} | {times} | {' | '.join(calls)} |"


def plot(by_size, path):
    """Time to last deregistration and total time against the number of target groups, ours vs baseline."""
    sizes = sorted(by_size)
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    panels = [
        (axes[0], "One interrupted instance", "single", first_invocation, "linear"),
        (axes[1], "A batch of K instances (log scale; K at each point)", "batch", extrapolate, "log"),
    ]
    for axis, title, ours_kind, baseline_view, scale in panels:
        draw_series(axis, sizes, by_size, ours_kind, baseline_view)
        axis.set_yscale(scale)
        axis.set_title(title)
        axis.set_xlabel("target groups in the account")
        axis.set_ylabel("seconds after the first invocation started")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    save_figure(figure, "spot-cleanup on moto behind ELB/EC2 throttling (ELB Describe*: 40 burst, 10/s); "
                "hollow markers: extrapolated", path)


def save_figure(figure, title, path):
    """Title a finished figure, write it to `path` and free it."""
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_series(axis, sizes, by_size, ours_kind, baseline_view):
    ours = [(g, by_size[g][ours_kind]) for g in sizes if ours_kind in by_size[g]]
    indexed = [(g, by_size[g][ours_kind + "+index"]) for g in sizes if ours_kind + "+index" in by_size[g]]
    theirs = [(g, baseline_view(by_size[g]["baseline"])) for g in sizes if "baseline" in by_size[g]]
    for series, name, colour in ((ours, "ours", "tab:blue"), (indexed, "ours + index", "tab:green"),
                                 (theirs, "baseline", "tab:red")):
        if not series:
            continue
        xs = [g for g, _ in series]
        for key, style, marker, what in (("last_dereg_s", "-", "o", "last deregistration"),
                                          ("total_s", "--", "s", "total")):
            ys = [r[key] for _, r in series]
            axis.plot(xs, ys, linestyle=style, marker=marker, color=colour, label=f"{name}: {what}")
            for x, y, (_, r) in zip(xs, ys, series):
                if r.get("extrapolated"):
                    axis.plot([x], [y], marker=marker, color=colour, markerfacecolor="white")
    if ours_kind == "batch":
        for g, r in ours:
            axis.annotate(f"K={r['instances_run']}", (g, r["total_s"]), fontsize=7, textcoords="offset points",
                          xytext=(4, -10))
    axis.axhline(120, color="grey", linestyle=":", linewidth=1)
    axis.annotate("2-minute notice", (sizes[0], 120), fontsize=7, color="grey", textcoords="offset points",
                  xytext=(2, 3))
