"""The node agent's Helm chart (deploy/helm/spot-agent), without a helm binary: helm-python-sdk embeds Helm v4 itself.

    .venv/bin/python scripts/chart.py check          # scripts/check-deploy: lint, render, validate, policy checks
    .venv/bin/python scripts/chart.py render         # scripts/render-chart: write deploy/k8s/spot-agent.yaml
    .venv/bin/python scripts/chart.py package DIR    # scripts/package: DIR/spot-agent-<version>.tgz

The chart is the one source of the Kubernetes manifests: deploy/k8s/spot-agent.yaml is its rendering with the example
values below, for `kubectl apply`, and `check` fails when the two differ.
"""
import configparser
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "spot-agent"
MANIFEST = ROOT / "deploy" / "k8s" / "spot-agent.yaml"
POLICY = ROOT / "deploy" / "k8s" / "iam-policy.json"
UNIT = ROOT / "deploy" / "systemd" / "spot-agent.service"
RELEASE, NAMESPACE = "spot-agent", "spot-cleanup"

# What deploy/k8s/spot-agent.yaml is rendered with: the values a user replaces.
EXAMPLE = {
    "function": "arn:aws:lambda:us-east-1:123456789012:function:spot-cleanup-agent",
    "image": {"repository": "123456789012.dkr.ecr.us-east-1.amazonaws.com/spot-agent"},
    "serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/spot-agent"},
    "namespace": {"create": True},
}
MANIFEST_HEADER = """\
# Generated from the Helm chart deploy/helm/spot-agent by scripts/render-chart, with the chart's example values:
# change the chart, not this file (scripts/check-deploy fails when they differ). For `kubectl apply -f` without Helm:
# copy it and set the agent function (SPOT_CLEANUP_FUNCTION, the stack's AgentFunctionArn output), the image, and the
# IRSA role (eks.amazonaws.com/role-arn; drop it for EKS Pod Identity). docs/agent.md says how.
"""
# Every option switched on, for the second rendering the checks look at.
EVERYTHING = {
    **EXAMPLE,
    "image": {"repository": "registry.example/spot-agent", "digest": "sha256:" + "0" * 64},
    "pollInterval": 5,
    "metrics": {"enabled": True, "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "extraEnv": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}],
    "probes": {"port": 9090, "bindAddress": "[::]"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
}
# The restricted Pod Security profile (Kubernetes 1.25+): volume types a pod may use.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}


def render(values, name=RELEASE, namespace=NAMESPACE):
    """The chart's manifests for `values`, as parsed documents in template order (NOTES.txt left out)."""
    rendered = helm.Chart.load(CHART).render(values, name=name, namespace=namespace, is_install=True)
    docs = []
    for path in sorted(rendered):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(rendered[path]) if d]
    return docs


def manifest_text(values=EXAMPLE):
    """deploy/k8s/spot-agent.yaml as it must be."""
    documents = render(values)
    order = {"Namespace": 0, "ServiceAccount": 1, "ClusterRole": 2, "ClusterRoleBinding": 3, "DaemonSet": 4}
    documents.sort(key=lambda d: order.get(d["kind"], 9))
    return MANIFEST_HEADER + "---\n" + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents)


def by_kind(docs):
    found = {}
    for d in docs:
        found.setdefault(d["kind"], []).append(d)
    return found


def restricted_violations(pod_spec):
    """Where a pod spec breaks the restricted Pod Security profile (baseline's rules included), or []."""
    problems = []
    pod_context = pod_spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            problems.append(f"{key} is on")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume.get('name')} is of type {sorted(kinds)}")
    if (pod_context.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append("the pod's seccomp profile is Unconfined")
    for container in (pod_spec.get("initContainers") or []) + pod_spec["containers"]:
        name, context = container["name"], container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities.get('add')}")
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if 0 in (context.get("runAsUser"), pod_context.get("runAsUser")):
            problems.append(f"{name}: runs as user 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccomp profile is {seccomp}, not RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            problems.append(f"{name}: uses a host port")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount is {context['procMount']}")
    return problems


class Checks:
    def __init__(self):
        self.problems = []

    def check(self, ok, what):
        if not ok:
            self.problems.append(what)

    def lint(self):
        report = helm.lint(CHART, EXAMPLE, strict=True, namespace=NAMESPACE)
        serious = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
        self.check(not serious, f"helm lint: {serious}")
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        agent = tomllib.loads((ROOT / "crates" / "agent" / "Cargo.toml").read_text())["package"]["version"]
        self.check(chart["version"] == chart["appVersion"] == agent,
                   f"Chart.yaml version {chart['version']} / appVersion {chart['appVersion']} != spot-agent {agent}")

    def validate(self, label, docs):
        """kubernetes-validate --strict: the Kubernetes API schema, unknown fields being errors. CRDs (PodMonitor)
        have no schema there; their shape is checked below."""
        with tempfile.TemporaryDirectory() as scratch:
            files = []
            for n, d in enumerate(docs):
                if d["apiVersion"].startswith("monitoring.coreos.com/"):
                    continue
                path = pathlib.Path(scratch) / f"{n}-{d['kind']}.yaml"
                path.write_text(yaml.safe_dump(d))
                files.append(str(path))
            done = subprocess.run([str(ROOT / ".venv" / "bin" / "kubernetes-validate"), "--strict", "--quiet", *files],
                                  capture_output=True, text=True)
        self.check(done.returncode == 0, f"{label}: kubernetes-validate: {done.stdout}{done.stderr}")

    def agent(self, label, docs, values):
        kinds = by_kind(docs)
        (daemonset,) = kinds["DaemonSet"]
        spec = daemonset["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
        port = values.get("probes", {}).get("port", 8080)

        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        selectors = {(e["key"], e["operator"], tuple(e["values"])) for t in terms for e in t["matchExpressions"]}
        for key, value in (("karpenter.sh/capacity-type", "spot"), ("eks.amazonaws.com/capacityType", "SPOT"),
                           ("lifecycle", "Ec2Spot")):
            self.check((key, "In", (value,)) in selectors, f"{label}: no Spot-only affinity on {key}={value}")
        self.check(all(len(t["matchExpressions"]) == 1 for t in terms),
                   f"{label}: each Spot label must be its own term (ORed), not ANDed")
        self.check({"operator": "Exists"} in spec.get("tolerations", []), f"{label}: must tolerate every taint")
        self.check(spec.get("priorityClassName") == "system-node-critical", f"{label}: not system-node-critical")
        self.check(spec.get("terminationGracePeriodSeconds", 30) > 10, f"{label}: grace must exceed the agent's 10 s")
        self.check(not restricted_violations(spec),
                   f"{label}: not within the restricted Pod Security profile: {restricted_violations(spec)}")
        self.check(container["securityContext"].get("readOnlyRootFilesystem") is True, f"{label}: root fs writable")
        self.check(container.get("resources", {}).get("limits", {}).get("memory"), f"{label}: no memory limit")

        self.check(env.get("SPOT_CLEANUP_FUNCTION") == values["function"], f"{label}: SPOT_CLEANUP_FUNCTION is not set")
        self.check(1 <= int(env.get("SPOT_AGENT_POLL_INTERVAL", "2")) <= 5, f"{label}: poll interval must be 1 to 5")
        listen = env.get("SPOT_AGENT_LISTEN_ADDRESS", "")
        self.check(listen.endswith(f":{port}"), f"{label}: the agent listens on {listen!r}, not port {port}")
        self.check([p["containerPort"] for p in container.get("ports", []) if p["name"] == "http"] == [port],
                   f"{label}: container port http is not {port}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            self.check(container.get(probe, {}).get("httpGet") == {"path": path, "port": "http"},
                       f"{label}: {probe} must GET {path} on the http port")
        metrics = values.get("metrics", {}).get("enabled", False)
        self.check(env.get("SPOT_AGENT_METRICS") == str(metrics).lower(), f"{label}: SPOT_AGENT_METRICS is not {metrics}")
        annotations = daemonset["spec"]["template"]["metadata"].get("annotations", {})
        self.check((annotations.get("prometheus.io/scrape") == "true") == metrics,
                   f"{label}: prometheus.io/scrape annotation only with metrics: {annotations}")
        if metrics:
            self.check(annotations.get("prometheus.io/port") == str(port), f"{label}: scrape port is not {port}")
        for extra in values.get("extraEnv", []):
            self.check(env.get(extra["name"]) == extra.get("value"), f"{label}: extraEnv {extra['name']} missing")

        accounts = [a for a in kinds.get("ServiceAccount", []) if a["metadata"]["name"] == spec["serviceAccountName"]]
        self.check(len(accounts) == 1, f"{label}: no ServiceAccount {spec['serviceAccountName']}")
        role = values.get("serviceAccount", {}).get("roleArn", "")
        for account in accounts:
            self.check(account["metadata"]["namespace"] == daemonset["metadata"]["namespace"],
                       f"{label}: ServiceAccount in another namespace")
            irsa = account["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
            self.check(irsa == role, f"{label}: IRSA annotation {irsa!r}, expected {role!r} (empty: Pod Identity)")

        labelling = values.get("rbac", {}).get("nodeLabelling", True)
        self.check(spec.get("automountServiceAccountToken") is labelling and
                   all(a.get("automountServiceAccountToken") is labelling for a in accounts),
                   f"{label}: the API token must be mounted only for node labelling")
        roles, bindings = kinds.get("ClusterRole", []), kinds.get("ClusterRoleBinding", [])
        if not labelling:
            self.check(not roles and not bindings and "NODE_NAME" not in env,
                       f"{label}: RBAC objects or NODE_NAME without rbac.nodeLabelling")
        else:
            rules = [(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"])))
                     for (role_doc,) in [roles] for r in role_doc["rules"]] if len(roles) == 1 else []
            self.check(rules == [(("",), ("nodes",), ("get", "patch"))],
                       f"{label}: the ClusterRole must allow get and patch on nodes only: {rules}")
            subjects = [s for b in bindings for s in b["subjects"]]
            self.check(len(bindings) == 1 and subjects == [{"kind": "ServiceAccount", "name": spec["serviceAccountName"],
                                                            "namespace": NAMESPACE}]
                       and bindings[0]["roleRef"]["name"] == roles[0]["metadata"]["name"],
                       f"{label}: the ClusterRoleBinding must bind the ClusterRole to the agent's account only")
            self.check(env.get("NODE_NAME") == {"fieldRef": {"fieldPath": "spec.nodeName"}},
                       f"{label}: NODE_NAME must come from spec.nodeName")

        monitors = kinds.get("PodMonitor", [])
        wanted = metrics and values.get("metrics", {}).get("podMonitor", {}).get("enabled", False)
        self.check(len(monitors) == int(wanted), f"{label}: {len(monitors)} PodMonitors, expected {int(wanted)}")
        for monitor in monitors:
            self.check(monitor["spec"]["selector"]["matchLabels"].items() <=
                       daemonset["spec"]["template"]["metadata"]["labels"].items(),
                       f"{label}: the PodMonitor does not select the agent's pods")
            self.check([(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [("http", "/metrics")],
                       f"{label}: the PodMonitor must scrape /metrics on the http port")
        namespaces = kinds.get("Namespace", [])
        if values.get("namespace", {}).get("create"):
            self.check([n["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") for n in namespaces]
                       == ["restricted"], f"{label}: the namespace must enforce the restricted profile")
        return env

    def refused(self):
        """Values the chart must refuse, each with a message that names what is wrong."""
        cases = [
            ({**EXAMPLE, "function": ""}, "function is required"),
            ({**EXAMPLE, "image": {"repository": ""}}, "image.repository is required"),
            ({**EXAMPLE, "pollInterval": 6}, "pollInterval"),
            ({**EXAMPLE, "functon": "x"}, "functon"),
            ({**EXAMPLE, "function": "spot cleanup"}, "function"),
            ({**EXAMPLE, "serviceAccount": {"roleArn": "spot-agent"}}, "roleArn"),
            ({**EXAMPLE, "terminationGracePeriodSeconds": 5}, "terminationGracePeriodSeconds"),
        ]
        for values, needle in cases:
            try:
                render(values)
                self.check(False, f"the chart accepted {needle!r} in {values}")
            except helm.HelmError as e:
                self.check(needle in str(e), f"refusing {needle!r}, the chart said: {e}")

    def host_network_is_outside_restricted(self):
        """The profile check must be able to fail: hostNetwork is what a user may switch on, and it is not restricted."""
        (daemonset,) = by_kind(render({**EXAMPLE, "hostNetwork": True}))["DaemonSet"]
        spec = daemonset["spec"]["template"]["spec"]
        self.check(restricted_violations(spec) == ["hostNetwork is on"],
                   f"hostNetwork: {restricted_violations(spec)}")
        self.check(spec.get("dnsPolicy") == "ClusterFirstWithHostNet", "hostNetwork needs dnsPolicy ClusterFirstWithHostNet")

    def policy_and_unit(self, functions):
        policy = json.loads(POLICY.read_text())
        statements = policy["Statement"]
        actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        self.check(actions == {"lambda:InvokeFunction"}, f"IAM policy grants {sorted(actions)}, expected only lambda:InvokeFunction")
        self.check(all(s["Effect"] == "Allow" and s["Resource"] != "*" for s in statements), "IAM policy: scope it to the function")
        # One function, unqualified and with its qualifiers (`:*`), and no other wildcard: `function:*` or
        # `function:spot-cleanup*` would also match the restore function, which no agent may invoke. A function name
        # cannot contain ':', so `<arn>:*` matches only that function's versions and aliases.
        function_arn = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]+$")
        resources = [r for s in statements for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]
        unqualified = {r.removesuffix(":*") for r in resources}
        self.check(len(unqualified) == 1 and all(function_arn.match(r) for r in unqualified),
                   f"IAM policy: expected one function's ARN (and its `:*` qualifiers), got {resources}")
        self.check(not any("restore" in r.lower() for r in resources), "IAM policy: names the restore function")
        # The agent function (AgentFunctionArn, whose name says agent), never the cleanup function, which trusts every
        # payload it is given.
        self.check(all(r.removesuffix(":*").rsplit(":", 1)[-1].lower().endswith("agent") for r in resources),
                   f"IAM policy: {resources} is not the agent function (AgentFunctionArn); nodes may invoke no other")
        self.check(all(s.get("Condition") is None and "NotResource" not in s and "NotAction" not in s for s in statements),
                   "IAM policy: no NotResource/NotAction/Condition")

        text = UNIT.read_text()
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read_string(text)
        service = unit["Service"]
        self.check(service.get("ExecStart", "").endswith("/spot-agent"), "systemd: ExecStart must run spot-agent")
        self.check("SPOT_CLEANUP_FUNCTION=" in service.get("Environment", "") or "EnvironmentFile" in service,
                   "systemd: no SPOT_CLEANUP_FUNCTION")
        self.check(service.get("KillSignal") == "SIGTERM", "systemd: the agent stops cleanly on SIGTERM")
        self.check(int(service.get("TimeoutStopSec", "90")) > 10, "systemd: TimeoutStopSec must exceed the agent's 10 s grace")
        self.check(unit["Install"].get("WantedBy") == "multi-user.target", "systemd: not enabled at boot")
        unit_env = dict(e.split("=", 1) for e in re.findall(r"^Environment=(\S+)", text, re.M))
        functions = {**functions, "systemd": unit_env.get("SPOT_CLEANUP_FUNCTION")}
        # The function each agent is given is the one the policy lets it invoke (the agent function).
        for where, name in functions.items():
            self.check(name in unqualified or (name or "").rsplit(":", 1)[0] in unqualified,
                       f"{where}: SPOT_CLEANUP_FUNCTION={name} is not the function iam-policy.json lets the agent invoke")


def check():
    checks = Checks()
    print("==> helm lint --strict deploy/helm/spot-agent (Helm", helm.helm_sdk_version(), "through helm-python-sdk)")
    checks.lint()
    functions = {}
    for label, values in (("the example values", EXAMPLE), ("every option on", EVERYTHING),
                          ("Pod Identity, no IRSA role", {**EXAMPLE, "serviceAccount": {"roleArn": ""}}),
                          ("node labelling off", {**EXAMPLE, "rbac": {"nodeLabelling": False}})):
        print(f"==> render, kubernetes-validate --strict and policy checks: {label}")
        docs = render(values)
        checks.validate(label, docs)
        functions[f"chart ({label})"] = checks.agent(label, docs, values).get("SPOT_CLEANUP_FUNCTION")
    print("==> values the chart refuses, and the restricted profile check")
    checks.refused()
    checks.host_network_is_outside_restricted()
    print("==> deploy/k8s/spot-agent.yaml is the chart's rendering; iam-policy.json and the systemd unit")
    checks.check(MANIFEST.exists() and MANIFEST.read_text() == manifest_text(),
                 f"{MANIFEST.relative_to(ROOT)} differs from the chart's rendering: run scripts/render-chart")
    checks.policy_and_unit(functions)
    for problem in checks.problems:
        print(f"    {problem}", file=sys.stderr)
    if checks.problems:
        return 1
    print("    clean")
    return 0


def main(argv):
    helm.disable_logging()
    command = argv[0] if argv else "check"
    if command == "check":
        return check()
    if command == "render":
        MANIFEST.write_text(manifest_text())
        print(f"wrote {MANIFEST.relative_to(ROOT)}")
        return 0
    if command == "package" and len(argv) == 2:
        print(helm.package(CHART, destination=argv[1]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
