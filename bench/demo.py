#!/usr/bin/env python3
"""A guided run for a newcomer: a Spot instance gets its two-minute warning, and the real function binary, under the
Lambda runtime loop (`cargo lambda watch`) and against a local AWS (moto), takes it out of every target group and
walls off its ENIs. Prints what AWS looks like before and after, the function's answer, and the SNS notification.

Run it with `scripts/demo`, which installs the tools, starts the function's build in the background and hands this
driver the build's status file, so the fleet is built and shown while the function compiles. `SPOT_CLEANUP_BINARY`
runs another build (the release one, say) and skips the build. Exits non-zero if the cleanup did not succeed.
"""
import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3

import fleet as fleet_module
from processes import ROOT, VENV_BIN, Function, Moto

EVENT = "spot-interruption-terminate.json"
ACCOUNT = "123456789012"  # moto's account
REGION = fleet_module.REGION
GROUPS = 4  # bench/fleet.py's groups: nodeport-0000 and -0001 (instance), pods-0000 and -0001 (ip)
SPOT = 2
OTHER_VPC_GROUP = "other-vpc-ip"
ORIGINAL_GROUPS_TAG = "spot-cleanup:original-groups"  # src/steps/records.rs
PROGRESS_SECONDS = 30
# Lines are kept to this many columns where JSON allows.
WIDTH = 112


def main():
    # scripts/demo stops the driver with SIGTERM (on Ctrl-C, say): leave through the `finally` that stops moto and
    # the function.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    started = time.monotonic()
    log_dir = Path(args.work_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    moto = function = None
    try:
        say("Starting a local AWS (moto) and building a small fleet on it ...")
        moto = Moto(log_dir)
        demo = Demo(moto, log_dir)
        demo.build_fleet()
        demo.introduce()
        heading("BEFORE")
        demo.show_state()

        binary = wait_for_binary(args)
        demo.binary = binary
        heading("RUN  the real binary under the Lambda runtime loop")
        function = Function(binary, demo.function_env(), log_dir, "demo")
        summary, answer_ok = demo.run(function)

        heading("ANSWER  the function's return value")
        demo.show_answer(summary, answer_ok)

        heading("AFTER")
        demo.show_state()

        heading("SNS  the notification, as the SQS subscription received it")
        published = demo.published()
        for note in published:
            show_notification(note, summary)
        if not published:
            say("  (nothing was published)")
        say()

        problem = demo.check(summary if answer_ok else None, len(published))
        if problem:
            say(f"The function's log ({function.function_log_path}):")
            say(indent(function.function_log_path.read_text(errors="replace"), 2))
            fail(problem)
        say("OK: spot-0 left every target group in its VPC, its ENIs are on the quarantine group, its neighbours\n"
            "    and the other VPC's group were left alone, and one summary was published.")
        say(f"({time.monotonic() - started:.0f} s in this driver)")
    finally:
        if function is not None:
            function.close()
        if moto is not None:
            moto.close()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, help="where the logs and the payload go")
    parser.add_argument("--binary", help="the function binary (default: $SPOT_CLEANUP_BINARY)")
    parser.add_argument("--build-status", help="a file the background build writes its exit status to")
    parser.add_argument("--build-log", help="the background build's output")
    parser.add_argument("--build-started", type=float, help="when the build started (seconds since the epoch)")
    return parser.parse_args()


class Demo:
    """The fleet on moto and what the tables need to know about it."""

    def __init__(self, moto, log_dir):
        self.moto = moto
        self.log_dir = log_dir
        self.aws = fleet_module.clients(moto.endpoint)
        session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION)
        self.kms = session.client("kms", endpoint_url=moto.endpoint)
        self.binary = None

    def build_fleet(self):
        """bench/fleet.py's fleet (2 Spot instances with a pod ENI each, an on-demand neighbour, 4 target groups of
        both kinds, the SNS topic read through SQS), plus what the demo shows on top: a group the interrupted instance
        is not in, another VPC whose IP group holds spot-0's address, and the KMS key the records are signed with."""
        started = time.monotonic()
        ec2, elb = self.aws["ec2"], self.aws["elbv2"]
        self.fleet = fleet = fleet_module.build(self.moto.endpoint, GROUPS, SPOT)
        self.nodes = {f"spot-{n}": node for n, node in enumerate(fleet.spot)}
        self.nodes["neighbour"] = fleet.neighbour
        self.interrupted = fleet.spot[0]

        reservations = ec2.describe_instances(InstanceIds=[n.id for n in self.nodes.values()])["Reservations"]
        instances = {i["InstanceId"]: i for r in reservations for i in r["Instances"]}
        self.primary_ip = {node.id: instances[node.id]["PrivateIpAddress"] for node in self.nodes.values()}
        self.enis = {}  # instance id -> [(ENI id, device index)], primary first
        for eni in fleet_module.node_enis(ec2, list(self.nodes.values())):
            attachment = eni["Attachment"]
            self.enis.setdefault(attachment["InstanceId"], []).append(
                (eni["NetworkInterfaceId"], attachment["DeviceIndex"]))
        for enis in self.enis.values():
            enis.sort(key=lambda e: e[1])

        neighbour_only = fleet_module.create_target_group(elb, "neighbour-only", fleet.vpc_id, "instance", 80)
        fleet_module.register(elb, {neighbour_only: (80, [fleet.neighbour.id])})
        self.other_vpc_id = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
        self.other_quarantine_group = fleet_module.create_security_group(ec2, self.other_vpc_id, "quarantine-other")
        other = fleet_module.create_target_group(elb, OTHER_VPC_GROUP, self.other_vpc_id, "ip", fleet_module.POD_PORT)
        fleet_module.register(elb, {other: (fleet_module.POD_PORT, [self.primary_ip[self.interrupted.id]])})
        self.record_key = self.kms.create_key(
            KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC", Description="spot-cleanup records",
        )["KeyMetadata"]["KeyId"]

        groups = elb.describe_target_groups()["TargetGroups"]
        # name -> (ARN, target type), the fleet's VPC first, by name; the other VPC's group last
        self.target_groups = {g["TargetGroupName"]: (g["TargetGroupArn"], g["TargetType"])
                              for g in sorted(groups, key=lambda g: (g["VpcId"] != fleet.vpc_id, g["TargetGroupName"]))}
        self.names = {fleet.app_group: "app", fleet.quarantine_group: "quarantine",
                      self.other_quarantine_group: "quarantine-other"}
        for name, node in self.nodes.items():
            self.names[node.id] = name
            self.names[self.primary_ip[node.id]] = f"{name} primary IP"
            for ip in node.pod_ips:
                self.names[ip] = f"{name} pod IP"
        self.build_seconds = time.monotonic() - started

    def introduce(self):
        fleet = self.fleet
        say(f"  moto          {self.moto.endpoint}")
        say(f"  fleet         in {fleet.vpc_id}: 2 Spot instances (spot-0, spot-1) and an on-demand neighbour, each "
            f"with a\n                primary ENI and a pod ENI, behind {len(self.target_groups) - 1} target groups; "
            f"one more group in another VPC\n                (built with bench/fleet.py in "
            f"{self.build_seconds:.1f} s)")
        say(f"  groups        app = {fleet.app_group}, quarantine = {fleet.quarantine_group}\n"
            f"                (quarantine-other = {self.other_quarantine_group} is the other VPC's)")
        say(f"  record key    {self.record_key} (KMS HMAC_256: signs the groups the function records on each ENI)")
        say(f"  interrupted   spot-0 = {self.interrupted.id}")
        say()

    def function_env(self):
        env = {
            "AWS_ENDPOINT_URL": self.moto.endpoint,
            "SNS_TOPIC_ARN": self.fleet.topic_arn,
            # Both VPCs' quarantine groups: the function must pick the one in the instance's VPC.
            "QUARANTINE_SECURITY_GROUP_ID": f"{self.other_quarantine_group},{self.fleet.quarantine_group}",
            "RECORD_KEY_ID": self.record_key,
            "DRY_RUN": "false",
        }
        for inherited in ("RUST_LOG", "RUST_BACKTRACE"):
            if inherited in os.environ:
                env[inherited] = os.environ[inherited]
        return env

    # --- what AWS looks like -------------------------------------------------------------------------------------

    def registrations(self):
        """[(target group name, target id, port, state)] of every group, the other VPC's included."""
        elb = self.aws["elbv2"]
        rows = []
        for name, (arn, _) in self.target_groups.items():
            health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
            for d in sorted(health, key=lambda d: (d["Target"]["Id"], d["Target"].get("Port", 0))):
                rows.append((name, d["Target"]["Id"], d["Target"].get("Port"), d["TargetHealth"].get("State", "")))
        return rows

    def belongs_to_interrupted(self, group, target_id):
        node = self.interrupted
        return group != OTHER_VPC_GROUP and target_id in {node.id, self.primary_ip[node.id], *node.pod_ips}

    def show_state(self):
        rows, previous = [], None
        registered = self.registrations()
        for group, target_id, port, state in registered:
            if self.belongs_to_interrupted(group, target_id):
                note = "<- interrupted"
            elif group == OTHER_VPC_GROUP:
                note = "other VPC, same address: not spot-0; stays"
            else:
                note = ""
            kind = self.target_groups[group][1]
            rows.append([group if group != previous else "", kind if group != previous else "", target_id,
                         "" if port is None else str(port), state, self.names.get(target_id, "?"), note])
            previous = group
        for group, (_, kind) in self.target_groups.items():
            if not any(r[0] == group for r in registered):
                rows.append([group, kind, "(no targets)"])
        table(["TARGET GROUP", "TYPE", "TARGET", "PORT", "STATE", "BELONGS TO", ""], rows)
        say()

        interfaces = {e["NetworkInterfaceId"]: e
                      for e in fleet_module.node_enis(self.aws["ec2"], list(self.nodes.values()))}
        rows, merged = [], False
        for name, node in self.nodes.items():
            for eni_id, index in self.enis.get(node.id, []):
                eni = interfaces.get(eni_id, {})
                groups = [g["GroupId"] for g in eni.get("Groups", [])]
                merged |= self.fleet.quarantine_group in groups and len(groups) > 1
                tags = {t["Key"]: t["Value"] for t in eni.get("TagSet", [])}
                recorded = tags.get(ORIGINAL_GROUPS_TAG)
                rows.append([
                    name, eni_id, "primary" if index == 0 else "pods",
                    self.group_names(groups),
                    f"{recorded} ({self.group_names(recorded.split(','))})" if recorded else "-",
                    ("yes (KMS MAC)" if f"{ORIGINAL_GROUPS_TAG}:mac" in tags else "no")
                    if recorded else "",
                ])
        table(["INSTANCE", "ENI", "", "SECURITY GROUPS", f"TAG {ORIGINAL_GROUPS_TAG}", "SIGNED"], rows)
        if merged:
            say("  (moto also lists the instance's launch group on an attached ENI; the function set only "
                "quarantine, see groups_after)")
        say()

    def group_names(self, ids):
        named = [self.names.get(i, i) for i in ids]
        return ", ".join(named) if named else "-"

    # --- the run -------------------------------------------------------------------------------------------------

    def run(self, function):
        """One invocation through `cargo lambda invoke`. Returns (the answer, whether the invocation succeeded)."""
        port = function.port
        say(f"  $ cargo lambda watch --only-lambda-apis --invoke-port {port}    # the Lambda Runtime API")
        say(f"  $ {relative(self.binary)}    # polls it, as in Lambda, with AWS_LAMBDA_RUNTIME_API=127.0.0.1:{port}/.rt,"
            f"\n      AWS_ENDPOINT_URL=<moto>, SNS_TOPIC_ARN=<topic>, QUARANTINE_SECURITY_GROUP_ID=<both quarantine "
            f"groups>,\n      RECORD_KEY_ID=<the KMS key>")
        event = interruption_event(self.interrupted.id)
        payload = self.log_dir / "payload.json"
        payload.write_text(json.dumps(event, indent=2))
        say(f"  $ cargo lambda invoke --invoke-port {port} --data-file {payload}")
        say(f"  the payload: events/{EVENT}, with spot-0's instance id, moto's account and region,\n"
            f"  and the time set to now:")
        print_json(event, 4)
        clock = time.monotonic()
        invoked = subprocess.run(
            [VENV_BIN / "cargo-lambda", "lambda", "invoke", "--color", "never", "--invoke-address", "127.0.0.1",
             "--invoke-port", str(port), "--data-file", payload],
            cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        wall = time.monotonic() - clock
        say(f"  invoke to answer: {wall * 1000:.0f} ms wall (cargo lambda invoke's own start-up included)")
        say()
        if invoked.returncode != 0:
            problem = invoked.stderr.strip()
            if function.process.poll() is not None:
                problem += f"\n(the function exited with {function.process.returncode})"
            return problem, False
        try:
            return json.loads(invoked.stdout), True
        except ValueError:
            return f"the answer is not JSON: {invoked.stdout}", False

    def show_answer(self, summary, ok):
        if not ok:
            say(indent(str(summary), 2))
            say()
            return
        if not isinstance(summary, dict) or "outcome" not in summary:
            print_json(summary, 2)
            say()
            return
        removed = summary.get("removed", [])
        states = {}
        for target in removed:
            states[target.get("state")] = states.get(target.get("state"), 0) + 1
        by_state = ", ".join(f"{n} {state}" for state, n in sorted(states.items(), key=lambda s: str(s[0])))
        enis = summary.get("network_interfaces", [])
        quarantined = sum(1 for e in enis if e.get("status") in ("quarantined", "already-quarantined"))
        timings = summary.get("timings_ms", {})
        instance = summary.get("instance", {})
        say(f"  {'outcome':<16} {summary['outcome']}")
        say(f"  {'instance':<16} {instance.get('id')} ({self.names.get(instance.get('id'), '?')}), "
            f"{instance.get('lifecycle')}, {instance.get('state')}, in {instance.get('vpc_id')}")
        say(f"  {'target groups':<16} {summary.get('target_groups_checked')} checked")
        say(f"  {'targets removed':<16} {len(removed)}" + (f" ({by_state})" if by_state else "")
            + f"; {len(summary.get('remaining', []))} remaining")
        say(f"  {'ENIs':<16} {quarantined} of {len(enis)} quarantined")
        say(f"  {'warnings':<16} {len(summary.get('warnings', []))}; errors {len(summary.get('errors', []))}")
        say(f"  {'timings (ms)':<16} " + "  ".join(f"{k} {v}" for k, v in timings.items()))
        say()
        rows = [[t.get("target_group_name", "?"), t.get("target_id", "?"), str(t.get("port") or ""),
                 self.names.get(t.get("target_id"), "?"), str(t.get("state")),
                 "" if t.get("deregistration_delay_seconds") is None else f"{t['deregistration_delay_seconds']} s"]
                for t in removed]
        if rows:
            table(["REMOVED FROM", "TARGET", "PORT", "BELONGS TO", "STATE", "DRAINS FOR"], rows)
            say()
        rows = [[e.get("network_interface_id", "?"), e.get("status", "?"),
                 self.group_names(e.get("groups_before", [])), self.group_names(e.get("groups_after", []))]
                for e in enis]
        if rows:
            table(["ENI", "STATUS", "GROUPS BEFORE", "GROUPS AFTER"], rows)
            say()
        say("  the whole answer (a Summary, as published to SNS):")
        print_json(summary, 4)
        say()

    def published(self):
        """Every SNS notification delivered to the subscribed queue so far, as the SNS envelope JSON."""
        sqs = self.aws["sqs"]
        notes = []
        for _ in range(3):
            messages = sqs.receive_message(QueueUrl=self.fleet.queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1 if not notes else 0).get("Messages", [])
            if not messages:
                if notes:
                    break
                continue
            for message in messages:
                notes.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.fleet.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return notes

    def check(self, summary, published):
        """Did the cleanup do what it should? The reason if not."""
        if not isinstance(summary, dict) or "outcome" not in summary:
            return "the function did not answer with a summary"
        if summary["outcome"] != "cleaned":
            return f"the outcome is {summary['outcome']}"
        registered = self.registrations()
        left = [r[:3] for r in registered if self.belongs_to_interrupted(r[0], r[1])]
        if left:
            return f"spot-0 is still registered: {left}"
        others = {r[1] for r in registered}
        if self.primary_ip[self.interrupted.id] not in {r[1] for r in registered if r[0] == OTHER_VPC_GROUP}:
            return "the other VPC's group lost its target"
        for name in ("spot-1", "neighbour"):
            if self.nodes[name].id not in others:
                return f"{name} lost its registrations"
        ec2 = self.aws["ec2"]
        in_quarantine = {e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces(
            Filters=[{"Name": "group-id", "Values": [self.fleet.quarantine_group]}])["NetworkInterfaces"]}
        ours = [eni for eni, _ in self.enis[self.interrupted.id]]
        if not set(ours) <= in_quarantine:
            return f"only {sorted(in_quarantine & set(ours))} of {ours} are quarantined"
        if in_quarantine - set(ours):
            return f"ENIs of other instances were quarantined: {sorted(in_quarantine - set(ours))}"
        if published != 1:
            return f"{published} notifications were published, not 1"
        return None


def interruption_event(instance_id):
    """The sample event with the instance id swapped for spot-0's, moto's account and region, and dated now (the
    function ignores a warning older than its MAX_EVENT_AGE, so this is made just before it is sent)."""
    text = (ROOT / "events" / EVENT).read_text().replace("i-0123456789abcdef0", instance_id)
    event = json.loads(text)
    event["account"] = ACCOUNT
    event["region"] = REGION
    event["time"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return event


def wait_for_binary(args):
    """The function binary: SPOT_CLEANUP_BINARY or --binary, once the background build (if any) has finished."""
    binary = os.environ.get("SPOT_CLEANUP_BINARY") or args.binary
    if not binary:
        fail("no function binary: run scripts/demo, or set SPOT_CLEANUP_BINARY")
    binary = Path(binary)
    if args.build_status and not os.environ.get("SPOT_CLEANUP_BINARY"):
        heading("BUILD  the function, compiling in the background since the start")
        status = Path(args.build_status)
        started = args.build_started or time.time()
        next_note = time.time()  # a note at once, then every PROGRESS_SECONDS of the build
        while not status.exists() or not status.read_text().strip():
            now = time.time()
            if now >= next_note:
                say(f"  still compiling the function ({now - started:.0f} s{build_progress(args.build_log)})…")
                next_note = started + PROGRESS_SECONDS * (int((now - started) // PROGRESS_SECONDS) + 1)
            time.sleep(0.5)
        code = int(status.read_text().strip())
        seconds = status.stat().st_mtime - started
        if code != 0:
            say(f"  the build failed (exit {code}) after {seconds:.0f} s; the end of its log ({args.build_log}):")
            say(indent("\n".join(Path(args.build_log).read_text(errors="replace").splitlines()[-40:]), 4))
            fail("the function did not build")
        say(f"  built {relative(binary)} in {seconds:.0f} s (cargo build --bin spot-cleanup)")
        say()
    if not binary.exists():
        fail(f"{binary} is missing: run scripts/demo, which builds it")
    return binary.resolve()


def build_progress(log):
    """'; 212 crates started, latest aws-sdk-ec2', or what cargo is waiting for."""
    if not log:
        return ""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    if lines and "Blocking waiting for file lock" in lines[-1]:
        return "; waiting for another cargo to release the build directory"
    started = [line.split()[1] for line in lines if line.lstrip().startswith("Compiling ") and len(line.split()) > 1]
    if not started:
        return ""
    return f"; {len(started)} crate{'s' if len(started) > 1 else ''} started, latest {started[-1]}"


# --- output --------------------------------------------------------------------------------------------------------

def say(text=""):
    print(text, flush=True)


def fail(problem):
    say(f"\nFAILED: {problem}")
    raise SystemExit(1)


def heading(title):
    say(title)
    say("-" * len(title))


def table(header, rows):
    """Left-aligned columns, two spaces apart; a row may have fewer cells than the header."""
    widths = [len(h) for h in header]
    for row in rows:
        for n, cell in enumerate(row):
            widths[n] = max(widths[n], len(cell))

    def line(cells):
        say("  " + "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())

    line(header)
    for row in rows:
        line(row)


def relative(path):
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def indent(text, by):
    return "\n".join(" " * by + line for line in text.splitlines())


def show_notification(note, answer):
    say(f"  {'Subject':<18} {note.get('Subject', '?')}")
    label = "MessageAttributes"
    for name, attribute in sorted(note.get("MessageAttributes", {}).items()):
        say(f"  {label:<18} {name:<12} {attribute.get('Type', '?'):<7} {attribute.get('Value', '?')}")
        label = ""
    message = note.get("Message", "")
    try:
        summary = json.loads(message)
    except ValueError:
        say(f"  {'Message':<18} {message}")
        return
    if summary == answer:
        say(f"  {'Message':<18} the Summary JSON ({len(message)} bytes), identical to ANSWER above")
    else:
        say("  Message")
        print_json(summary, 4)


def print_json(value, by):
    """Pretty JSON in the value's own field order, laid out to use the width (see `render`)."""
    lines = iter(line.strip() for line in json.dumps(value, indent=2, ensure_ascii=False).splitlines())
    out = []
    render(parse(next(lines, ""), lines), by, False, out)
    say("\n".join(out))


def parse(first, rest):
    """A line of indented JSON, or a container: (its opening line, its items, its closing line). Indented JSON puts
    a container's opener at the end of a line and its closer at the start of one, and no string value can end a line
    with `{` or `[`, since it ends with a quote."""
    if not first.endswith(("{", "[")):
        return first
    items = []
    for line in rest:
        if line.startswith(("}", "]")):
            return first, items, line
        items.append(parse(line, rest))
    return first, items, ""


def flat(block):
    if isinstance(block, str):
        return block
    opener, items, closer = block
    return opener + " ".join(flat(item) for item in items) + closer


def render(block, by, nested, out):
    """One line if it fits. Else the container's items one per line; or, inside another container and when each item
    is a value or a container that fits on a line, as many to a line as fit, so that a list of records stays short."""
    pad = " " * by
    one_line = flat(block)
    if isinstance(block, str) or by + len(one_line) <= WIDTH:
        out.append(pad + one_line)
        return
    opener, items, closer = block
    out.append(pad + opener)
    inner = by + 2
    if nested and all(isinstance(item, str) or inner + len(flat(item)) <= WIDTH for item in items):
        line = ""
        for item in map(flat, items):
            if line and inner + len(line) + 1 + len(item) > WIDTH:
                out.append(" " * inner + line)
                line = ""
            line = f"{line} {item}" if line else item
        out.append(" " * inner + line)
    else:
        for item in items:
            render(item, inner, True, out)
    out.append(pad + closer)


if __name__ == "__main__":
    sys.exit(main())
