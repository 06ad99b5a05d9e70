"""What template.yaml shows the people who deploy and watch it (run by scripts/check-template):

  1. `AWS::CloudFormation::Interface`: every parameter in exactly one group, and each with a label;
  2. `AWS::ServerlessRepo::Application`: the listing's fields, its version and licence those of Cargo.toml, its
     licence and readme files present;
  3. the alarms: on failed cleanups, on every dead-letter queue's depth, on both functions' Errors and Throttles; each
     names its runbook through a `*RunbookUrl` parameter in its description, and notifies someone;
  4. the dashboard, built as deployed with and without the SQS buffer: valid JSON; time to safety (`Duration`) as
     p50/p90/p99, outcomes, failures, the dead-letter queues, throttles, and every alarm; and every SpotCleanup metric
     and dimension it reads is one the function writes (src/telemetry/metrics.rs).

Usage: .venv/bin/python scripts/template_watch.py template.yaml
"""
import json
import pathlib
import re
import sys
import tomllib

from cfnlint.decode import decode

ROOT = pathlib.Path(__file__).resolve().parent.parent
EMF = ROOT / "src" / "telemetry" / "metrics.rs"


def sub_text(value):
    """The template text of a Fn::Sub (short or long form), or None."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return None


def resolve_join(value, enabled):
    """A Fn::Join of strings, Fn::Sub and Fn::If, as text: each ${...} becomes a marker naming what it refers to, each
    Fn::If takes the branch its condition has in `enabled`."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(resolve_join(p, enabled) for p in parts)
    if "Fn::If" in value:
        condition, yes, no = value["Fn::If"]
        return resolve_join(yes if enabled[condition] else no, enabled)
    text = sub_text(value)
    if text is not None:
        return re.sub(r"\$\{([^}!]+)\}", lambda m: f"<{m.group(1)}>", text)
    raise ValueError(f"unexpected in a dashboard body: {value}")


def main(path):
    template, matches = decode(path)
    if matches:
        sys.exit(f"cannot read {path}: {matches}")
    template = json.loads(json.dumps(template))
    parameters = template["Parameters"]
    resources = template["Resources"]
    metadata = template.get("Metadata", {})
    errors = []

    # --- 1. parameter groups and labels ---------------------------------------------------------------------------
    interface = metadata.get("AWS::CloudFormation::Interface", {})
    grouped = [p for g in interface.get("ParameterGroups", []) for p in g["Parameters"]]
    twice = sorted({p for p in grouped if grouped.count(p) > 1})
    ungrouped = sorted(set(parameters) - set(grouped))
    unknown = sorted(set(grouped) - set(parameters))
    labels = interface.get("ParameterLabels", {})
    unlabelled = sorted(p for p in parameters if not labels.get(p, {}).get("default"))
    for what, names in (("in no parameter group (add it to one in Metadata)", ungrouped), ("in two groups", twice),
                        ("grouped but not a parameter", unknown), ("without a label", unlabelled),
                        ("labelled but not a parameter", sorted(set(labels) - set(parameters)))):
        if names:
            errors.append(f"parameters {what}: {names}")
    print(f"    {len(parameters)} parameters in {len(interface.get('ParameterGroups', []))} groups, each labelled: checked")

    # --- 2. the Serverless Application Repository listing ---------------------------------------------------------
    app = metadata.get("AWS::ServerlessRepo::Application", {})
    package = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]
    for key in ("Name", "Description", "Author", "SpdxLicenseId", "LicenseUrl", "ReadmeUrl", "Labels", "SemanticVersion"):
        if not app.get(key):
            errors.append(f"AWS::ServerlessRepo::Application: no {key}")
    if app.get("SemanticVersion") != package["version"] or app.get("SpdxLicenseId") != package["license"]:
        errors.append(f"AWS::ServerlessRepo::Application: version {app.get('SemanticVersion')} and licence "
                      f"{app.get('SpdxLicenseId')}, Cargo.toml says {package['version']} and {package['license']}")
    for key in ("LicenseUrl", "ReadmeUrl"):
        if app.get(key) and not (ROOT / app[key]).is_file():
            errors.append(f"AWS::ServerlessRepo::Application: {key} {app[key]} is not a file of the repository")
    if "Apache License" not in (ROOT / "LICENSE").read_text(errors="replace")[:200]:
        errors.append("LICENSE is not the Apache License")
    print(f"    Serverless Application Repository listing {app.get('Name')} {app.get('SemanticVersion')}: checked")

    # --- 3. alarms, each naming its runbook ------------------------------------------------------------------------
    alarms = {name: r for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    def metric_of(alarm):
        """(namespace, metric, the dimension values) of an alarm, over all of its metric math's inputs."""
        props = alarm["Properties"]
        stats = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m] or [props]
        names = {(s["Namespace"], s["MetricName"]) for s in stats}
        dims = sorted(json.dumps(d["Value"], sort_keys=True) for s in stats for d in s.get("Dimensions", []))
        return names, dims
    ref = lambda name: json.dumps({"Ref": name}, sort_keys=True)  # noqa: E731
    queue = lambda name: json.dumps({"Fn::GetAtt": [name, "QueueName"]}, sort_keys=True)  # noqa: E731
    wanted = {
        "failed cleanups": ({("SpotCleanup", "Failures")}, []),
        "dead letters": ({("AWS/SQS", "ApproximateNumberOfMessagesVisible")}, [queue("DeadLetterQueue")]),
        "buffer dead letters": ({("AWS/SQS", "ApproximateNumberOfMessagesVisible")}, [queue("BufferDeadLetterQueue")]),
        "errors": ({("AWS/Lambda", "Errors")}, sorted([ref("AgentFunction"), ref("RestoreFunction"), ref("SpotCleanupFunction")])),
        "throttles": ({("AWS/Lambda", "Throttles")}, sorted([ref("AgentFunction"), ref("RestoreFunction"), ref("SpotCleanupFunction")])),
    }
    found = {what: [n for n, a in alarms.items() if metric_of(a) == metric] for what, metric in wanted.items()}
    for what, names in found.items():
        if len(names) != 1:
            errors.append(f"alarms on {what}: {names}, expected one")
    if [n for n, a in alarms.items() if a.get("Condition") and a.get("Condition") != "SqsBuffer"] or \
            resources.get((found["buffer dead letters"] or [""])[0], {}).get("Condition") != "SqsBuffer":
        errors.append("only the buffer's dead-letter alarm may depend on a condition (SqsBuffer)")
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        text = sub_text(props.get("AlarmDescription")) or ""
        runbook = re.search(r"Runbook: \$\{(\w+)\}", text)
        param = parameters.get(runbook.group(1), {}) if runbook else {}
        if not runbook or not runbook.group(1).endswith("RunbookUrl") or param.get("Type") != "String":
            errors.append(f"{name}: its description must name its runbook as `Runbook: ${{<...>RunbookUrl}}`, "
                          f"a String parameter: {props.get('AlarmDescription')}")
        elif not re.fullmatch(param.get("AllowedPattern", ""), param.get("Default", "")):
            errors.append(f"{name}: the default runbook {param.get('Default')} does not fit its own pattern")
        if not props.get("AlarmActions"):
            errors.append(f"{name}: notifies nobody (AlarmActions)")
    print(f"    {len(alarms)} alarms (failed cleanups, dead letters, errors, throttles), each naming its runbook: checked")

    # --- 4. the dashboard --------------------------------------------------------------------------------------------
    emf = EMF.read_text()
    emitted = set(re.findall(r'"Name": "(\w+)"', emf))
    dimensions = set(re.findall(r'"Dimensions": \[\[\], \["(\w+)"\], \["(\w+)"\]\]', emf)[0])
    dashboards = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    if len(dashboards) != 1:
        errors.append(f"{len(dashboards)} dashboards, expected one")
    for buffered in (False, True):
        if len(dashboards) != 1:
            break
        label = f"the dashboard with UseSqsBuffer={str(buffered).lower()}"
        try:
            body = json.loads(resolve_join(dashboards[0]["Properties"]["DashboardBody"], {"SqsBuffer": buffered}))
        except (ValueError, KeyError) as e:
            errors.append(f"{label}: not valid JSON: {e}")
            continue
        rows = [row for w in body["widgets"] if w["type"] == "metric" for row in w["properties"]["metrics"]]
        series = {tuple(x for x in row if not isinstance(x, dict)): [x for x in row if isinstance(x, dict)] for row in rows}
        stats = {(key, opts[0].get("stat")) for row in rows
                 for key, opts in [(tuple(x for x in row if not isinstance(x, dict)), [x for x in row if isinstance(x, dict)])]
                 if opts}
        searches = " ".join(x.get("expression", "") for row in rows for x in row if isinstance(x, dict))
        for percentile in ("p50", "p90", "p99"):
            if (("SpotCleanup", "Duration"), percentile) not in stats:
                errors.append(f"{label}: no time to safety (Duration) {percentile}")
        used = {key[1] for key in series if key and key[0] == "SpotCleanup"}
        used |= set(re.findall(r'MetricName=\\?"(\w+)\\?"', searches))
        if not used <= emitted:
            errors.append(f"{label}: reads SpotCleanup metrics the function never writes: {sorted(used - emitted)}")
        used_dimensions = set(re.findall(r"\{SpotCleanup,(\w+)\}", searches))
        if not {"Outcome"} <= used_dimensions <= dimensions:
            errors.append(f"{label}: outcomes by {sorted(used_dimensions)}; the function writes {sorted(dimensions)}")
        if "Failures" not in used:
            errors.append(f"{label}: no failures")
        queues = {key[3] for key in series if key[:2] == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")}
        expected_queues = {"<DeadLetterQueue.QueueName>"} | ({"<BufferDeadLetterQueue.QueueName>"} if buffered else set())
        if queues != expected_queues:
            errors.append(f"{label}: dead-letter queue depth of {sorted(queues)}, expected {sorted(expected_queues)}")
        throttled = {key[3] for key in series if key[:2] == ("AWS/Lambda", "Throttles")}
        if throttled != {"<SpotCleanupFunction>", "<RestoreFunction>", "<AgentFunction>"}:
            errors.append(f"{label}: throttles of {sorted(throttled)}, expected the three functions")
        shown = {a for w in body["widgets"] if w["type"] == "alarm" for a in w["properties"]["alarms"]}
        deployed = {f"<{n}.Arn>" for n, a in alarms.items() if a.get("Condition") != "SqsBuffer" or buffered}
        if shown != deployed:
            errors.append(f"{label}: shows alarms {sorted(shown)}, the stack has {sorted(deployed)}")
    print("    dashboard: time to safety p50/p90/p99, outcomes, failures, dead letters, throttles, every alarm; "
          "only metrics the function writes: checked")

    for e in errors:
        print(f"    ERROR: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
