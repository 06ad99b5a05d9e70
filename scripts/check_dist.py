"""Check what scripts/package wrote to dist/, as a user would use it:

  1. SHA256SUMS lists every artefact, and every sum verifies;
  2. each agent binary is a static ELF for its architecture (no interpreter: it needs no C library), and runs: without
     its function it refuses to start with exit 2 and a JSON line naming SPOT_CLEANUP_FUNCTION (the arm64 one under
     qemu-user);
  3. the chart archive loads with Helm v4, is the version Cargo.toml says, and renders with the example values;
  4. the Lambda zip holds one executable `bootstrap` for arm64, which runs under the runtime emulator (cargo lambda
     watch, the arm64 binary under qemu-user): against a local fleet on moto it cleans up a Spot interruption dated
     now, and the instance's registrations are gone.

Usage: .venv/bin/python scripts/check_dist.py DIST VERSION
"""
import hashlib
import json
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

import chart  # noqa: E402
import demo  # noqa: E402
import fleet  # noqa: E402
import helm_python as helm  # noqa: E402
from processes import Function, Moto  # noqa: E402

MACHINES = {62: "x86_64", 183: "aarch64"}
PT_INTERP = 3
QEMU = "qemu-aarch64"
# Where Debian's libc6-arm64-cross puts the arm64 dynamic loader and C library the Lambda bootstrap links against.
ARM64_SYSROOT = "/usr/aarch64-linux-gnu"


def elf(path):
    """(machine, static) of an ELF executable."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path.name} is not a 64-bit little-endian ELF file")
    machine = struct.unpack_from("<H", data, 18)[0]
    phoff = struct.unpack_from("<Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    kinds = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return MACHINES.get(machine, f"machine {machine}"), PT_INTERP not in kinds


class Check:
    def __init__(self):
        self.problems = []

    def __call__(self, ok, what):
        if not ok:
            self.problems.append(what)
        return ok


def sums(check, dist):
    listed = {}
    for line in (dist / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    present = {p.name for p in dist.iterdir() if p.name != "SHA256SUMS"}
    check(set(listed) == present, f"SHA256SUMS lists {sorted(listed)}, dist/ holds {sorted(present)}")
    for name, digest in listed.items():
        actual = hashlib.sha256((dist / name).read_bytes()).hexdigest() if (dist / name).is_file() else None
        check(actual == digest, f"{name}: sha256 {actual}, SHA256SUMS says {digest}")
    print(f"    SHA256SUMS: {len(listed)} artefacts, every sum verifies")


def agent(check, path, machine):
    found, static = elf(path)
    check(found == machine and static, f"{path.name}: {found}, static {static}; expected static {machine}")
    command = [str(path)] if machine == "x86_64" else [QEMU, str(path)]
    done = subprocess.run(command, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    line = json.loads(done.stdout.splitlines()[0]) if done.stdout.strip() else {}
    check(done.returncode == 2 and "SPOT_CLEANUP_FUNCTION" in line.get("error", ""),
          f"{path.name}: exit {done.returncode}, {done.stdout}{done.stderr}")
    print(f"    {path.name}: static {found} ELF, {path.stat().st_size} bytes; runs"
          f"{' under qemu-user' if machine != 'x86_64' else ''} and refuses to start without its function")


def packaged_chart(check, path, version):
    loaded = helm.Chart.load_archive(path.read_bytes())
    check((loaded.name, loaded.version) == ("spot-agent", version), f"{path.name}: {loaded.name} {loaded.version}")
    rendered = loaded.render(chart.EXAMPLE, name=chart.RELEASE, namespace=chart.NAMESPACE)
    kinds = sorted(path.rsplit("/", 1)[-1] for path, text in rendered.items() if text.strip() and path.endswith(".yaml"))
    check("daemonset.yaml" in kinds, f"{path.name}: renders {kinds}")
    print(f"    {path.name}: chart {loaded.name} {loaded.version}, renders {', '.join(kinds)}")


def lambda_zip(check, path, work):
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
        names = [e.filename for e in entries]
        if not check(names == ["bootstrap"], f"{path.name}: holds {names}, expected only bootstrap"):
            return
        mode = entries[0].external_attr >> 16
        check(stat.S_ISREG(mode) and mode & 0o111 == 0o111, f"{path.name}: bootstrap's mode is {oct(mode)}")
        archive.extract("bootstrap", work)
    bootstrap = work / "bootstrap"
    bootstrap.chmod(0o755)
    machine, _ = elf(bootstrap)
    check(machine == "aarch64", f"{path.name}: bootstrap is for {machine}")
    # The emulated function is one process: this wrapper execs qemu-user with the arm64 system root.
    runner = work / "run-bootstrap"
    runner.write_text(f"#!/bin/sh\nexec {shutil.which(QEMU)} -L {ARM64_SYSROOT} {bootstrap}\n")
    runner.chmod(0o755)

    moto = function = None
    try:
        moto = Moto(work)
        built = fleet.build(moto.endpoint, groups=4, spot_count=2)
        interrupted = built.spot[0]
        function = Function(runner, {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "SNS_TOPIC_ARN": built.topic_arn,
            "QUARANTINE_SECURITY_GROUP_ID": built.quarantine_group,
        }, work, "dist")
        started = time.monotonic()
        status, answer = function.invoke(demo.interruption_event(interrupted.id))
        seconds = time.monotonic() - started
        outcome = answer.get("outcome") if isinstance(answer, dict) else None
        check(status == 200 and outcome == "cleaned", f"{path.name}: the emulator answered {status}: {answer}")
        after = fleet.check(moto.endpoint, built, [interrupted])
        check((after["targets_left"], after["neighbour_lost"], after["enis_not_quarantined"]) == (0, 0, 0)
              and after["enis"] > 0, f"{path.name}: after the cleanup, moto shows {after}")
        print(f"    {path.name}: bootstrap (arm64) under cargo lambda watch and qemu-user cleaned up "
              f"{interrupted.id} on moto in {seconds:.1f} s: outcome {outcome}, {len(answer.get('removed', []))} "
              f"targets removed")
    finally:
        if function:
            function.close()
        if moto:
            moto.close()


def main(dist, version):
    dist = Path(dist)
    check = Check()
    print("==> dist/: checksums, the agents, the chart, the Lambda under the runtime emulator")
    sums(check, dist)
    agent(check, dist / f"spot-agent-{version}-linux-x86_64", "x86_64")
    agent(check, dist / f"spot-agent-{version}-linux-arm64", "aarch64")
    packaged_chart(check, dist / f"spot-agent-{version}.tgz", version)
    with tempfile.TemporaryDirectory(prefix="spot-cleanup-dist-") as work:
        lambda_zip(check, dist / f"spot-cleanup-{version}-lambda-arm64.zip", Path(work))
    for problem in check.problems:
        print(f"    {problem}", file=sys.stderr)
    if check.problems:
        return 1
    print("    clean")
    return 0


if __name__ == "__main__":
    helm.disable_logging()
    sys.exit(main(*sys.argv[1:]))
