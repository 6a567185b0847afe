#!/usr/bin/env python3
"""The offline deploy/ checks that need more than a tool's exit status (.ci/deploy-check).

    deploy_check.py metrics    dashboard and rules query only metrics the collector exports
    deploy_check.py config     deploy/config/*.toml: valid TOML, contract keys only
    deploy_check.py k8s FILE   the rendered manifests: references resolve, pods stay unprivileged
    deploy_check.py k8s-full-host FILE
                               the same for deploy/k8s-full-host, whose agent alone may be
                               privileged, with the host's /, /proc, /sys and /dev/kmsg read-only
    deploy_check.py package    cargo-deb metadata, units, Dockerfiles and the build context agree
    deploy_check.py selftest   the PromQL name extraction on known cases
    deploy_check.py dashboard-rules FILE
                               write the dashboard's queries as recording rules to FILE (with
                               Grafana's variables filled in) for promtool to parse

Each prints what is wrong and exits 1, or prints a one-line summary and exits 0.
"""

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# Every family the collector exports, written and checked by collector/tests/metrics_exposition.rs.
GOLDEN = ROOT / "collector/tests/golden/metrics.txt"
# Series Prometheus makes itself, not the collector.
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "Inf", "NaN",
}

problems = []


def problem(msg):
    problems.append(msg)


def finish(summary):
    if problems:
        for p in problems:
            print(f"deploy-check: {p}", file=sys.stderr)
        return 1
    print(summary)
    return 0


# ---------------------------------------------------------------------------- metrics


def metric_names(expr):
    """Metric names a PromQL expression selects (Grafana variables allowed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    s = re.sub(r"'(?:\\.|[^'\\])*'", "''", s)
    s = re.sub(r"`[^`]*`", "``", s)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":
            continue  # 1e6, 5m
        if re.match(r"\s*\(", s[m.end():]) or m.group() in PROMQL_WORDS:
            continue  # a function or a keyword
        names.add(m.group())
    return names


def variable_metric_names(query):
    """Metric names a Grafana Prometheus variable query selects."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.S)
    if m:
        return metric_names(m.group(1))
    if re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", query):
        return set()
    m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
    return metric_names(m.group(1) if m else query)


def exported_names():
    """Family names in the golden file: each family is a line `NAME TYPE` at the start of a
    line; its `help:` and `labels:` lines are indented."""
    names = set()
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        if not line or line[0].isspace() or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)\s+(counter|gauge|histogram|summary|info|unknown)$", line)
        if m:
            names.add(m.group(1))
    return GOLDEN, names


def known(name, names):
    if name in names or name in SYNTHETIC:
        return True
    return any(name.endswith(suf) and name[: -len(suf)] in names for suf in HISTOGRAM_SUFFIXES)


def dashboard_queries(dash):
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield f"panel {p.get('title')!r}", t["expr"], metric_names
    yield from walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            yield f"variable {v['name']!r}", q, variable_metric_names


def check_metrics():
    import yaml

    source, names = exported_names()
    rules_file = DEPLOY / "prometheus/gpufleet-rules.yml"
    rules = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    queries = []
    for g in rules["groups"]:
        for r in g["rules"]:
            queries.append((f"{rules_file.name} {r.get('alert') or r.get('record')}", r["expr"], metric_names))
    dash_file = DEPLOY / "grafana/gpufleet.json"
    try:
        dash = json.loads(dash_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        problem(f"{dash_file}: not JSON: {e}")
        return finish("")
    queries += [(f"{dash_file.name} {w}", q, f) for w, q, f in dashboard_queries(dash)]
    used = set()
    for where, expr, extract in queries:
        found = extract(expr)
        if not found:
            problem(f"{where}: no metric found in {expr!r}")
        for name in found:
            used.add(name)
            if not known(name, names | recorded):
                problem(f"{where}: {name} is not exported by the collector (not in {source.relative_to(ROOT)}): {expr!r}")
    return finish(
        f"metrics: {len(queries)} queries name {len(used)} metrics, all in {source.relative_to(ROOT)}"
    )


def selftest():
    cases = [
        ('max(DCGM_FI_DEV_GPU_TEMP{Hostname=~"$Hostname", gpu=~"$gpu"}) by (Hostname, gpu, uuid)',
         {"DCGM_FI_DEV_GPU_TEMP"}),
        ("histogram_quantile(0.99, sum by (le) (rate(gpufleet_store_write_seconds_bucket[5m]))) > 1",
         {"gpufleet_store_write_seconds_bucket"}),
        ("bottomk(10, max by (Hostname, gpu) (A_X) * 1e6 and on (Hostname, gpu) B_Y > 50)", {"A_X", "B_Y"}),
        ('count(x{a="by (z) y"} == 1) or vector(0)', {"x"}),
        ("rate(c_total[$__rate_interval]) offset 5m", {"c_total"}),
        ("gpufleet:findings_firing:sum_by_severity", {"gpufleet:findings_firing:sum_by_severity"}),
        ('up{job="gpufleet-collector"} == 0 or absent(up{job="gpufleet-collector"})', {"up"}),
    ]
    for expr, want in cases:
        got = metric_names(expr)
        if got != want:
            problem(f"selftest: metric_names({expr!r}) = {sorted(got)}, want {sorted(want)}")
    for q, want in [
        ('label_values(DCGM_FI_DEV_GPU_TEMP{Hostname=~"$Hostname"}, gpu)', {"DCGM_FI_DEV_GPU_TEMP"}),
        ("label_values(Hostname)", set()),
    ]:
        if variable_metric_names(q) != want:
            problem(f"selftest: variable_metric_names({q!r}) = {variable_metric_names(q)}")
    if known("gpufleet_not_a_metric", {"gpufleet_nodes"}):
        problem("selftest: an unknown name passed")
    return finish(f"selftest: {len(cases) + 3} cases")


# ---------------------------------------------------------------------------- config

# The contract: keys are the flags with `-` written `_`.
AGENT_KEYS = {
    "collector", "node_name", "labels", "interval", "state_dir", "metrics_listen",
    "log_format", "buffer_samples", "spool_max_bytes", "saturation_hold", "nvml_lib", "slow_interval",
    "inventory_interval", "tls_ca", "tls_cert", "tls_key", "token_file",
    "sysfs_root", "procfs_root", "host_root", "watch_mounts",
}
COLLECTOR_KEYS = {
    "listen", "data_dir", "retention", "retention_1m", "retention_1h", "policy",
    "metrics_listen", "log_format",
    "sample_interval", "window_samples", "alerts", "limits",
    "fleet_min_share", "fleet_min_nodes", "fleet_group_labels",
    "tls_cert", "tls_key", "tls_client_ca", "auth_tokens", "insecure",
}
DURATION_KEYS = {"interval", "retention", "retention_1m", "retention_1h", "sample_interval", "slow_interval", "inventory_interval"}
DURATION = re.compile(r"^(\d+(ns|us|ms|s|m|h|d|w)\s*)+$")


def check_config():
    checked = 0
    for name, allowed in [("agent.toml", AGENT_KEYS), ("collector.toml", COLLECTOR_KEYS)]:
        path = DEPLOY / "config" / name
        text = path.read_text(encoding="utf-8")
        # The commented-out examples are checked too: uncommenting one must give a valid file.
        uncommented = re.sub(r"(?m)^#([a-z_]+\s*=)", r"\1", text)
        for label, body in [("as shipped", text), ("with every example uncommented", uncommented)]:
            try:
                doc = tomllib.loads(body)
            except tomllib.TOMLDecodeError as e:
                problem(f"{path} ({label}): not valid TOML: {e}")
                continue
            for key, value in doc.items():
                checked += 1
                if key not in allowed:
                    problem(f"{path} ({label}): unknown key {key!r} (the contract allows {sorted(allowed)})")
                if key in DURATION_KEYS and not (isinstance(value, str) and DURATION.match(value)):
                    problem(f"{path}: {key} = {value!r} is not a humantime duration")
                if key == "log_format" and value not in ("human", "json"):
                    problem(f"{path}: log_format must be human or json")
    return finish(f"config: {checked} keys in deploy/config/*.toml are contract keys")


# ---------------------------------------------------------------------------- k8s


# What deploy/k8s-full-host gives the agent beyond the base: host path -> (mount path, type).
FULL_HOST_MOUNTS = {
    "/": ("/host/root", "Directory"),
    "/proc": ("/host/proc", "Directory"),
    "/sys": ("/host/sys", "Directory"),
    "/dev/kmsg": ("/dev/kmsg", "CharDevice"),
}
FULL_HOST_ARGS = {
    "--sysfs-root=/host/sys",
    "--procfs-root=/host/proc",
    "--host-root=/host/root",
    "--kmsg-path=/dev/kmsg",
}


def check_full_host_agent(agent):
    """The overlay's agent: privileged for /dev/kmsg, everything of the host's read-only, and
    pointed at the mounts."""
    spec = agent["spec"]["template"]["spec"]
    c = spec["containers"][0]
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    seen = set()
    for name, v in vols.items():
        hp = v.get("hostPath")
        if not hp or hp["path"] == "/var/lib/gpufleet-agent":
            continue
        want = FULL_HOST_MOUNTS.get(hp["path"])
        if not want:
            problem(f"k8s-full-host: hostPath {hp['path']} is not one the agent reads")
            continue
        seen.add(hp["path"])
        m = mounts.get(name, {})
        if m.get("mountPath") != want[0] or m.get("readOnly") is not True:
            problem(f"k8s-full-host: {hp['path']} must be mounted read-only at {want[0]}: {m}")
        if hp.get("type") != want[1]:
            problem(f"k8s-full-host: hostPath {hp['path']} must have type {want[1]}")
    for path in FULL_HOST_MOUNTS.keys() - seen:
        problem(f"k8s-full-host: the agent does not get the host's {path}")
    missing = FULL_HOST_ARGS - set(c.get("args", []))
    if missing or c.get("args", [None])[0] != "run":
        problem(f"k8s-full-host: the agent's args must be run {sorted(FULL_HOST_ARGS)}: {c.get('args')}")
    if not c.get("securityContext", {}).get("privileged"):
        problem("k8s-full-host: /dev/kmsg needs a privileged agent container")
    if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
        problem("k8s-full-host: the agent's root filesystem must stay read-only")


def check_k8s(rendered, full_host=False):
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text(encoding="utf-8")) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    configmaps = set(by_kind.get("ConfigMap", {}))
    services = by_kind.get("Service", {})
    workloads = {**by_kind.get("DaemonSet", {}), **by_kind.get("StatefulSet", {})}
    for want in [("DaemonSet", "gpufleet-agent"), ("StatefulSet", "gpufleet-collector"),
                 ("Service", "gpufleet-collector"), ("ServiceMonitor", "gpufleet-collector"),
                 ("Namespace", "gpufleet")]:
        if want[1] not in by_kind.get(want[0], {}):
            problem(f"k8s: no {want[0]} {want[1]}")
    for d in docs:
        ns = d["metadata"].get("namespace")
        if d["kind"] != "Namespace" and ns != "gpufleet":
            problem(f"k8s: {d['kind']} {d['metadata']['name']} is in namespace {ns!r}, not gpufleet")

    for name, w in workloads.items():
        where = f"{w['kind']} {name}"
        spec = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        for k, v in w["spec"]["selector"]["matchLabels"].items():
            if labels.get(k) != v:
                problem(f"k8s: {where}: selector {k}={v} does not match its pod labels")
        if spec.get("hostPID") or spec.get("hostIPC"):
            problem(f"k8s: {where}: shares the host's PID or IPC namespace")
        if spec.get("automountServiceAccountToken") is not False:
            problem(f"k8s: {where}: mounts a service account token it never uses")
        for vol in spec.get("volumes", []):
            if "configMap" in vol and vol["configMap"]["name"] not in configmaps:
                problem(f"k8s: {where}: ConfigMap {vol['configMap']['name']} does not exist")
            if "hostPath" in vol and vol["hostPath"]["path"] != "/var/lib/gpufleet-agent" and not (
                full_host and name == "gpufleet-agent"
            ):
                problem(f"k8s: {where}: hostPath {vol['hostPath']['path']} beyond the agent's state dir")
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            cw = f"{where} container {c['name']}"
            if full_host and name == "gpufleet-agent" and c in spec["containers"]:
                continue  # check_full_host_agent
            if sc.get("privileged"):
                problem(f"k8s: {cw} is privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(f"k8s: {cw}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(f"k8s: {cw}: root filesystem must be read-only")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problem(f"k8s: {cw}: must drop ALL capabilities")
            if c in spec["containers"] and sc.get("capabilities", {}).get("add"):
                problem(f"k8s: {cw}: adds capabilities")
            if "/" not in c["image"]:
                problem(f"k8s: {cw}: image {c['image']!r} not set by the kustomization's images:")
    agent = workloads.get("gpufleet-agent")
    if agent and full_host:
        check_full_host_agent(agent)
    if agent:
        spec = agent["spec"]["template"]["spec"]
        if spec.get("nodeSelector", {}).get("nvidia.com/gpu.present") != "true":
            problem("k8s: the agent DaemonSet must select nvidia.com/gpu.present=true nodes")
        if not any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule"
                   for t in spec.get("tolerations", [])):
            problem("k8s: the agent DaemonSet must tolerate the nvidia.com/gpu NoSchedule taint")
        env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
        node = env.get("GPUFLEET_NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {})
        if node.get("fieldPath") != "spec.nodeName":
            problem("k8s: the agent's GPUFLEET_NODE_NAME must come from spec.nodeName")
        if env.get("NVIDIA_DRIVER_CAPABILITIES", {}).get("value") != "utility":
            problem("k8s: the agent needs NVIDIA_DRIVER_CAPABILITIES=utility")
        if spec["containers"][0].get("resources", {}).get("limits", {}).get("nvidia.com/gpu"):
            problem("k8s: the agent must not request GPUs (it would take them from jobs)")
    for name, svc in services.items():
        pods = [w for w in workloads.values()
                if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in svc["spec"]["selector"].items())]
        if not pods:
            problem(f"k8s: Service {name} selects no workload's pods")
        ports = {p["name"]: p["containerPort"] for w in pods
                 for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports and p["targetPort"] not in ports.values():
                problem(f"k8s: Service {name} port {p['name']} targets {p['targetPort']}, which no container has")
        if sorted(p["port"] for p in svc["spec"]["ports"]) != [9400, 50051]:
            problem(f"k8s: Service {name} must offer 50051 (gRPC) and 9400 (metrics)")
    sts = workloads.get("gpufleet-collector")
    if sts:
        if sts["spec"].get("serviceName") not in services:
            problem("k8s: the StatefulSet's serviceName is not a Service")
        claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        if not any(mounts.get(c) == "/var/lib/gpufleet" for c in claims):
            problem("k8s: the collector's /var/lib/gpufleet must be a PVC")
    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            problem(f"k8s: ServiceMonitor {name}: apiVersion {sm['apiVersion']}")
        sel = sm["spec"]["selector"]["matchLabels"]
        targets = [s for s in services.values()
                   if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not targets:
            problem(f"k8s: ServiceMonitor {name} selects no Service (by the Service's labels)")
        port_names = {p["name"] for s in targets for p in s["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in port_names:
                problem(f"k8s: ServiceMonitor {name}: port {ep.get('port')!r} is not a port name of the Service")
            if ep.get("honorLabels") is not True:
                problem(f"k8s: ServiceMonitor {name}: honorLabels must be true (Hostname is the node's)")
    if full_host:
        return finish(
            f"k8s-full-host: {len(docs)} objects, references resolve, only the agent privileged, "
            "the host's trees read-only"
        )
    return finish(f"k8s: {len(docs)} objects, references resolve, no privileged container")


# ---------------------------------------------------------------------------- package


def dockerignore_patterns():
    pats = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:] if neg else line
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**", i):
                rx += ".*"
                i += 2
                if pat.startswith("/", i):
                    rx += "/?"
                    i += 1
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        pats.append((neg, re.compile(rx.strip("/") + "$")))
    return pats


def in_context(path, pats):
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for neg, rx in pats:
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not neg
    return not excluded


def check_package():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in files if (ROOT / f).is_file()]
    pats = dockerignore_patterns()
    context = {f for f in files if in_context(f, pats)}
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    packages = {p["name"]: p for p in meta["packages"]}
    bins = {p["name"]: {t["name"] for t in p["targets"] if "bin" in t["kind"]} for p in meta["packages"]}

    # The build context holds every workspace member and every file the sources include.
    for p in meta["packages"]:
        manifest = str(Path(p["manifest_path"]).relative_to(ROOT))
        if manifest not in context:
            problem(f".dockerignore leaves out {manifest}, a workspace member")
    for f in sorted(context):
        if f.endswith(".rs"):
            for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', (ROOT / f).read_text(encoding="utf-8")):
                target = (ROOT / f).parent.joinpath(inc).resolve()
                rel = str(target.relative_to(ROOT))
                if rel not in context:
                    problem(f".dockerignore leaves out {rel}, which {f} includes")
    if "Cargo.lock" not in context:
        problem(".dockerignore leaves out Cargo.lock (the images build --locked)")

    # Each Dockerfile builds a real package and copies one of its binaries.
    for df in sorted((DEPLOY / "docker").glob("*.Dockerfile")):
        text = df.read_text(encoding="utf-8")
        pkg = re.search(r"cargo build [^\n]*-p ([\w-]+)", text)
        copied = re.findall(r"target/release/([\w-]+)", text)
        if not pkg or pkg.group(1) not in packages:
            problem(f"{df.name}: builds no workspace package")
            continue
        for b in copied:
            if b not in bins[pkg.group(1)]:
                problem(f"{df.name}: {b} is not a binary of {pkg.group(1)}")

    # cargo-deb metadata: assets exist, binaries are the package's, units and scripts match.
    units = 0
    for name in ("gpufleet-agent", "gpufleet-cli"):
        p = packages[name]
        crate_dir = Path(p["manifest_path"]).parent
        deb = tomllib.loads(Path(p["manifest_path"]).read_text(encoding="utf-8"))["package"]["metadata"]["deb"]
        dests = []
        for src, dest, mode in deb["assets"]:
            if src.startswith("target/release/"):
                if src.removeprefix("target/release/") not in bins[name]:
                    problem(f"{name}: asset {src} is not a binary of {name}")
            elif not (crate_dir / src).is_file():
                problem(f"{name}: asset {src} does not exist")
            dests.append("/" + (dest + Path(src).name if dest.endswith("/") else dest))
            if not re.fullmatch(r"[0-7]{3,4}", mode):
                problem(f"{name}: asset {src} mode {mode!r}")
        for conf in deb.get("conf-files", []):
            if conf not in dests:
                problem(f"{name}: conf-file {conf} is not installed by any asset")
        scripts = crate_dir / deb["maintainer-scripts"]
        for s in scripts.iterdir():
            if "#DEBHELPER#" not in s.read_text(encoding="utf-8"):
                problem(f"{name}: {s} lacks the #DEBHELPER# token cargo-deb fills in")
            if not s.stat().st_mode & 0o111:
                problem(f"{name}: {s} is not executable")
        su = deb["systemd-units"]
        unit = crate_dir / su["unit-scripts"] / f"{su['unit-name']}.service"
        if not unit.is_file():
            problem(f"{name}: no unit {unit}")
            continue
        units += 1
        exec_start = re.search(r"(?m)^ExecStart=(\S+)", unit.read_text(encoding="utf-8")).group(1)
        if exec_start not in dests:
            problem(f"{unit.name}: ExecStart={exec_start} is not installed by {name}'s package")
        user = re.search(r"(?m)^User=(\S+)", unit.read_text(encoding="utf-8")).group(1)
        sysusers = [d for d in dests if d.startswith("/usr/lib/sysusers.d/")]
        if not any(re.search(rf"(?m)^u\s+{re.escape(user)}\s", (DEPLOY / "sysusers" / Path(d).name).read_text(encoding="utf-8"))
                   for d in sysusers):
            problem(f"{unit.name}: User={user} is created by no sysusers.d file of {name}")
    return finish(f"package: {len(context)} files in the build context, {units} units and their packages agree")


def dashboard_rules(out):
    """Every panel query as a recording rule, so that `promtool check rules` parses it."""
    import yaml

    dash = json.loads((DEPLOY / "grafana/gpufleet.json").read_text(encoding="utf-8"))
    fill = {"$__rate_interval": "1m", "$Hostname": ".*", "$gpu": ".*", "$job": ".*"}
    rules = []
    for i, (where, expr, _) in enumerate(dashboard_queries(dash)):
        if not where.startswith("panel "):
            continue
        for k, v in fill.items():
            expr = expr.replace(k, v)
        rules.append({"record": f"dashboard:panel_{i}", "expr": expr})
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return finish(f"dashboard-rules: {len(rules)} panel queries written to {out}")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "dashboard-rules" and len(sys.argv) == 3:
        return dashboard_rules(sys.argv[2])
    if cmd == "metrics":
        return check_metrics()
    if cmd == "config":
        return check_config()
    if cmd == "k8s" and len(sys.argv) == 3:
        return check_k8s(sys.argv[2])
    if cmd == "k8s-full-host" and len(sys.argv) == 3:
        return check_k8s(sys.argv[2], full_host=True)
    if cmd == "package":
        return check_package()
    if cmd == "selftest":
        return selftest()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
