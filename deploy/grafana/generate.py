#!/usr/bin/env python3
"""Writes gpufleet.json, the Grafana dashboard for gpufleet's own view of the fleet.

The dashboard is generated so that its panels stay uniform and its queries stay in one
readable place; edit this file, run it, commit both. `.ci/deploy-check` fails when
gpufleet.json differs from what this script writes, and checks that every query names only
metrics the collector exports.

    python3 deploy/grafana/generate.py          # rewrite gpufleet.json
    python3 deploy/grafana/generate.py --check  # exit 1 if gpufleet.json is stale
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("gpufleet.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
NODE = 'Hostname=~"$Hostname"'
GPU = 'Hostname=~"$Hostname", gpu=~"$gpu"'
JOB = 'job=~"$job"'
WIDTH = 24


class Layout:
    """Places panels left to right, wrapping at the dashboard's 24 columns."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def add(self, panel, w, h):
        if self.x + w > WIDTH:
            self.newline()
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    def newline(self):
        self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def row(self, title):
        if self.x:
            self.newline()
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, WIDTH, 1)
        self.newline()


def target(expr, legend="", instant=False, ref="A"):
    t = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto"}
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    return t


def targets(*queries, instant=False):
    return [
        target(q[0], q[1] if len(q) > 1 else "", instant, chr(ord("A") + i))
        for i, q in enumerate(queries)
    ]


def stat(title, expr, unit="short", description="", thresholds=None, mappings=None):
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
        },
    }


def red_above(n):
    return [{"color": "green", "value": None}, {"color": "red", "value": n}]


def timeseries(title, queries, unit="short", description="", stacked=False):
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets(*queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 20 if stacked else 0,
                    "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
                    "showPoints": "never",
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def table(title, expr, description="", hide=("Time",), rename=None):
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, instant=True)],
        "transformations": [
            {
                "id": "organize",
                "options": {
                    "excludeByName": {name: True for name in hide},
                    "renameByName": rename or {},
                },
            }
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
    }


def bars(title, expr, legend, unit="short", description=""):
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, legend, instant=True)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "orientation": "horizontal",
            "displayMode": "basic",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    }


def pie(title, expr, legend, description=""):
    return {
        "type": "piechart",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, legend, instant=True)],
        "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
        "options": {
            "pieType": "donut",
            "legend": {"displayMode": "table", "placement": "right", "values": ["value"]},
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    }


def fleet_health(d):
    d.row("Fleet health")
    d.add(stat("Nodes connected", 'sum(gpufleet_nodes{state="connected"})'), 4, 4)
    d.add(
        stat(
            "Nodes disconnected",
            'sum(gpufleet_nodes{state="disconnected"})',
            thresholds=red_above(1),
        ),
        4,
        4,
    )
    d.add(
        stat(
            "Critical findings",
            'sum(gpufleet_findings_firing{severity="critical"})',
            thresholds=red_above(1),
        ),
        4,
        4,
    )
    d.add(
        stat(
            "Warning findings",
            'sum(gpufleet_findings_firing{severity="warning"})',
            thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
        ),
        4,
        4,
    )
    d.add(stat("Compliant nodes", 'sum(gpufleet_compliance_nodes{status="compliant"})'), 4, 4)
    d.add(
        stat(
            "Violating or stale nodes",
            'sum(gpufleet_compliance_nodes{status=~"violating|stale"})',
            thresholds=red_above(1),
        ),
        4,
        4,
    )
    d.add(
        timeseries(
            "Firing findings by cause",
            [("sum by (cause) (gpufleet_findings_firing) > 0", "{{cause}}")],
            description="Findings the collector has decided (pending, then firing), per cause.",
            stacked=True,
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Firing findings by severity",
            [("sum by (severity) (gpufleet_findings_firing)", "{{severity}}")],
            stacked=True,
        ),
        12,
        8,
    )
    d.add(
        table(
            "Firing findings",
            f"gpufleet_finding_firing{{{NODE}}} == 1",
            description="One row per firing finding; gpu is empty for node-scope causes. "
            "`gpufleet diagnose NODE` gives the evidence and the action.",
            hide=("Time", "Value", "__name__", "job", "instance"),
        ),
        24,
        8,
    )


def stragglers(d):
    d.row("Stragglers")
    d.add(
        bars(
            "Nodes with the most findings",
            "topk(10, count by (Hostname) (gpufleet_finding_firing == 1))",
            "{{Hostname}}",
        ),
        8,
        8,
    )
    d.add(
        bars(
            "Slowest busy GPUs (SM clock)",
            "bottomk(10, max by (Hostname, gpu) (DCGM_FI_DEV_SM_CLOCK) * 1000000"
            " and on (Hostname, gpu) max by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL) > 50)",
            "{{Hostname}} GPU {{gpu}}",
            unit="hertz",
            description="GPUs more than 50% busy, lowest SM clock first: a straggler runs "
            "slower than its peers under the same load.",
        ),
        8,
        8,
    )
    d.add(
        bars(
            "Hottest GPUs",
            "topk(10, max by (Hostname, gpu) (DCGM_FI_DEV_GPU_TEMP))",
            "{{Hostname}} GPU {{gpu}}",
            unit="celsius",
        ),
        8,
        8,
    )
    d.add(
        timeseries(
            "SM clock against the fleet median",
            [
                (
                    f"max by (Hostname, gpu) (DCGM_FI_DEV_SM_CLOCK{{{GPU}}})"
                    " / scalar(quantile(0.5, DCGM_FI_DEV_SM_CLOCK))",
                    "{{Hostname}} GPU {{gpu}}",
                )
            ],
            unit="percentunit",
            description="1.0 is the fleet's median SM clock; a GPU well below it is held back "
            "(thermal, power, clocks).",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Power against the fleet median",
            [
                (
                    f"max by (Hostname, gpu) (DCGM_FI_DEV_POWER_USAGE{{{GPU}}})"
                    " / scalar(quantile(0.5, DCGM_FI_DEV_POWER_USAGE))",
                    "{{Hostname}} GPU {{gpu}}",
                )
            ],
            unit="percentunit",
        ),
        12,
        8,
    )


def versions(d):
    d.row("Versions and compliance")
    d.add(
        pie(
            "Compliance",
            "gpufleet_compliance_nodes",
            "{{status}}",
            description="Nodes per audit status against the policy in force "
            "(serve --policy), else the fleet majority per GPU model.",
        ),
        6,
        8,
    )
    d.add(
        table(
            "Driver versions per GPU model",
            "count by (modelName, driver_version) (gpufleet_gpu_info)",
            rename={"Value": "GPUs"},
        ),
        9,
        8,
    )
    d.add(
        table(
            "VBIOS versions per GPU model",
            "count by (modelName, vbios_version) (gpufleet_gpu_info)",
            rename={"Value": "GPUs"},
        ),
        9,
        8,
    )
    d.add(
        table(
            "Agent versions",
            "count by (agent_version) (gpufleet_node_info)",
            rename={"Value": "nodes"},
        ),
        6,
        8,
    )
    d.add(
        table(
            "Kernels and OS releases",
            "count by (kernel_version, os_release) (gpufleet_node_info)",
            rename={"Value": "nodes"},
        ),
        9,
        8,
    )
    d.add(
        table(
            "CUDA driver, InfoROM and GSP firmware",
            "count by (modelName, cuda_driver_version, inforom_version, gsp_firmware_version)"
            " (gpufleet_gpu_info)",
            rename={"Value": "GPUs"},
        ),
        9,
        8,
    )


def node_detail(d):
    d.row("Node detail ($Hostname)")
    d.add(
        stat(
            "Connected",
            f"min(gpufleet_node_connected{{{NODE}}})",
            thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "disconnected"},
                        "1": {"text": "connected"},
                    },
                }
            ],
        ),
        4,
        4,
    )
    d.add(
        stat(
            "Oldest last sample",
            f"max(gpufleet_node_last_sample_age_seconds{{{NODE}}})",
            unit="s",
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 120}],
        ),
        4,
        4,
    )
    d.add(
        stat(
            "Samples dropped (1h)",
            f"sum(increase(gpufleet_node_dropped_samples_total{{{NODE}}}[1h]))",
            thresholds=red_above(1),
            description="Samples the agent could not keep while the collector was unreachable.",
        ),
        4,
        4,
    )
    d.add(
        stat(
            "Findings firing",
            f"count(gpufleet_finding_firing{{{NODE}}} == 1) or vector(0)",
            thresholds=red_above(1),
        ),
        4,
        4,
    )
    d.add(
        stat(
            "Last Xid",
            f"max(DCGM_FI_DEV_XID_ERRORS{{{GPU}}})",
            description="The last Xid any selected GPU reported (0: none).",
            thresholds=red_above(1),
        ),
        4,
        4,
    )
    d.add(
        stat(
            "GPUs",
            f"count(gpufleet_gpu_info{{{NODE}}})",
        ),
        4,
        4,
    )
    d.add(
        table(
            "GPU inventory",
            f"gpufleet_gpu_info{{{NODE}}}",
            hide=("Time", "Value", "__name__", "job", "instance"),
        ),
        24,
        6,
    )
    per_gpu = "{{Hostname}} GPU {{gpu}}"
    d.add(
        timeseries(
            "GPU temperature", [(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", per_gpu)], unit="celsius"
        ),
        12,
        8,
    )
    d.add(
        timeseries("Power", [(f"DCGM_FI_DEV_POWER_USAGE{{{GPU}}}", per_gpu)], unit="watt"),
        12,
        8,
    )
    d.add(
        timeseries(
            "SM clock", [(f"DCGM_FI_DEV_SM_CLOCK{{{GPU}}} * 1000000", per_gpu)], unit="hertz"
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "GPU utilization", [(f"DCGM_FI_DEV_GPU_UTIL{{{GPU}}}", per_gpu)], unit="percent"
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Framebuffer used", [(f"DCGM_FI_DEV_FB_USED{{{GPU}}}", per_gpu)], unit="mbytes"
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "SM and tensor core activity (GPM)",
            [
                (f"DCGM_FI_PROF_SM_ACTIVE{{{GPU}}}", per_gpu + " SM"),
                (f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{GPU}}}", per_gpu + " tensor"),
            ],
            unit="percentunit",
            description="NVML GPM profiling (Hopper and later; empty on older GPUs). A busy GPU "
            "with idle tensor cores runs its math on the FP32 pipes: a workload hint "
            "(gpu.tensor_cores_idle).",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "PCIe replays",
            [(f"rate(DCGM_FI_DEV_PCIE_REPLAY_COUNTER{{{GPU}}}[$__rate_interval])", per_gpu)],
            unit="ops",
            description="Link-level retransmissions; a steady rate points at a bad riser, "
            "slot or cable.",
        ),
        12,
        8,
    )


def host(d):
    """The rest of the server (docs/host-parts.md): fabric, PCIe tree, storage, OS."""
    d.row("Host: fabric, PCIe, storage, OS ($Hostname)")
    port = "{{Hostname}} {{device}}/{{port}}"
    d.add(
        timeseries(
            "InfiniBand port rate",
            [(f"gpufleet_ib_port_rate_gbps{{{NODE}}}", port)],
            unit="Gbits",
            description="The rate each port trained at; one lower than the rest is "
            "fabric.ib.rate_degraded (400 Gb/s NDR, 200 HDR).",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "InfiniBand link errors",
            [
                (
                    f"sum by (Hostname, device) (rate(gpufleet_ib_port_symbol_errors_total{{{NODE}}}[$__rate_interval]))",
                    "{{Hostname}} {{device}} symbol",
                ),
                (
                    f"sum by (Hostname, device) (increase(gpufleet_ib_port_link_downed_total{{{NODE}}}[$__rate_interval]))",
                    "{{Hostname}} {{device}} link downed",
                ),
            ],
            unit="ops",
            description="Symbol errors per second and link-down events: a steady rate is "
            "fabric.ib.link_errors (a bad cable or transceiver).",
        ),
        12,
        8,
    )
    d.add(
        table(
            "PCIe links below their rating",
            f"gpufleet_pcie_link_width{{{NODE}}} < on (Hostname, bdf) "
            f"gpufleet_pcie_link_max_width{{{NODE}}}",
            description="Devices whose link trained narrower than the device supports (value: "
            "lanes now). NICs, NVMe and NVSwitches below their port's rating are "
            "pcie.link_downtrained; GPUs are gpu.pcie.downtrained.",
            hide=("Time", "__name__", "job", "instance"),
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "PCIe AER errors",
            [
                (
                    f"sum by (Hostname, bdf) (rate(gpufleet_pcie_aer_correctable_errors_total{{{NODE}}}[$__rate_interval]))",
                    "{{Hostname}} {{bdf}} correctable",
                ),
                (
                    f"sum by (Hostname, bdf) (increase(gpufleet_pcie_aer_fatal_errors_total{{{NODE}}}[$__rate_interval]))",
                    "{{Hostname}} {{bdf}} fatal",
                ),
            ],
            unit="ops",
            description="AER counters of GPUs, NICs, NVMe drives and bridges (pcie.aer.*).",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Watched mounts: statfs time",
            [(f"gpufleet_storage_mount_statfs_seconds{{{NODE}}}", "{{Hostname}} {{mount_point}}")],
            unit="s",
            description="How long the agent's statfs of each watched mount took; a gap with "
            "gpufleet_storage_mount_unresponsive = 1 is storage.mount.unresponsive (a hung "
            "NFS or Lustre server).",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Kernel log errors",
            [
                (
                    f"sum by (Hostname, type) (increase(gpufleet_kernel_log_events_total{{{NODE}}}[$__rate_interval]))",
                    "{{Hostname}} {{type}}",
                )
            ],
            description="NVSwitch SXids, AER, storage, NIC transmit-timeout and hung-task "
            "lines the agent read from /dev/kmsg.",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Processes stuck in D state",
            [
                (f"gpufleet_processes_uninterruptible{{{NODE}}}", "{{Hostname}} in D"),
                (
                    f"gpufleet_processes_blocked_seconds_max{{{NODE}}}",
                    "{{Hostname}} longest blocked (s)",
                ),
            ],
            description="host.os.stuck_processes: processes blocked in the kernel (usually "
            "on storage or a GPU driver call) without running.",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "File handles used",
            [
                (
                    f'max by (Hostname) (gpufleet_file_handles{{{NODE}, which="allocated"}}) / '
                    f'max by (Hostname) (gpufleet_file_handles{{{NODE}, which="max"}})',
                    "{{Hostname}}",
                )
            ],
            unit="percentunit",
            description="Allocated against fs.file-max (host.os.file_handles).",
        ),
        12,
        8,
    )


def collector(d):
    d.row("Collector")
    d.add(
        timeseries(
            "Ingest",
            [
                (f"sum(rate(gpufleet_ingest_batches_total{{{JOB}}}[$__rate_interval]))", "batches"),
                (
                    f"sum(rate(gpufleet_ingest_gpu_samples_total{{{JOB}}}[$__rate_interval]))",
                    "GPU samples",
                ),
                (
                    f"sum by (reason) (rate(gpufleet_ingest_rejected_total{{{JOB}}}[$__rate_interval]))",
                    "rejected: {{reason}}",
                ),
            ],
            unit="ops",
        ),
        8,
        8,
    )
    d.add(
        timeseries(
            "Database commit time",
            [
                (
                    "histogram_quantile(0.5, sum by (le) "
                    f"(rate(gpufleet_store_write_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(gpufleet_store_write_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "p99",
                ),
            ],
            unit="s",
            description="Agents are acknowledged after the commit.",
        ),
        8,
        8,
    )
    d.add(
        timeseries(
            "Alert delivery",
            [
                (
                    "sum by (sink, outcome) "
                    f"(increase(gpufleet_alert_deliveries_total{{{JOB}}}[$__rate_interval]))",
                    "{{sink}} {{outcome}}",
                ),
                (f"sum(gpufleet_alert_outbox_pending{{{JOB}}})", "outbox pending"),
            ],
        ),
        8,
        8,
    )
    d.add(
        timeseries(
            "Collector CPU",
            [(f"rate(process_cpu_seconds_total{{{JOB}}}[$__rate_interval])", "{{instance}}")],
            unit="percentunit",
        ),
        12,
        6,
    )
    d.add(
        timeseries(
            "Collector memory",
            [(f"process_resident_memory_bytes{{{JOB}}}", "{{instance}}")],
            unit="bytes",
        ),
        12,
        6,
    )


def variable(name, label, query, multi=True):
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": {"query": query, "refId": f"var-{name}"},
        "definition": query,
        "refresh": 2,
        "sort": 3,
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard():
    d = Layout()
    fleet_health(d)
    stragglers(d)
    versions(d)
    node_detail(d)
    host(d)
    collector(d)
    return {
        "uid": "gpufleet-overview",
        "title": "gpufleet",
        "description": "gpufleet's view of a GPU fleet: health by cause, stragglers, versions "
        "and compliance, per-node detail, the collector itself. Scrapes the collector's "
        ":9400 (docs/deploy.md).",
        "tags": ["gpufleet", "gpu", "nvidia"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "version": 1,
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Prometheus",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                variable("job", "Collector job", "label_values(gpufleet_ingest_batches_total, job)"),
                variable("Hostname", "Node", "label_values(gpufleet_node_connected, Hostname)"),
                variable(
                    "gpu", "GPU", 'label_values(DCGM_FI_DEV_GPU_TEMP{Hostname=~"$Hostname"}, gpu)'
                ),
            ]
        },
        "panels": d.panels,
    }


def render():
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main():
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python3 {Path(__file__)} and commit it", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
