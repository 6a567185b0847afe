//! `gpu.xid.*`: Xid errors the driver reported in the last 30 minutes, classified into what
//! on-call must do. The Xids that matter most in fleets have an explicit entry here (some are
//! missing from NVIDIA's catalog, and the catalog's resolution words alone do not say that 48
//! or 95 are memory errors); every other Xid is classified by the catalog's resolution.

use gpufleet_model::{Event, EventKind, Evidence, Finding, Severity, UnixMs, xid};

use super::raise;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct XidErrors;

/// An Xid keeps its finding this long after the last occurrence.
const RECENT_MS: u64 = 30 * 60 * 1000;

const APPLICATION: Cause = Cause {
    id: "gpu.xid.application",
    title: "Xid: application error",
    severity: Severity::Warning,
    detects: "Xids NVIDIA attributes to the application — 13 graphics engine exception, 31 memory \
              page fault, 43 stopped processing, and every Xid whose resolution is RESTART_APP.",
    action: "Restart the application; the GPU is usually fine. If the same Xid repeats on this \
             GPU with different jobs, run `dcgmi diag -r 3` and suspect the hardware.",
};

const MEMORY: Cause = Cause {
    id: "gpu.xid.memory",
    title: "Xid: GPU memory error",
    severity: Severity::Critical,
    detects: "Memory Xids: 48 double-bit ECC, 63 row-remapping event, 64 row-remapping failure, 92 \
              high single-bit ECC rate, 94 contained and 95 uncontained error, 140 unrecovered \
              ECC, 168/171/172.",
    action: "Per Xid (the finding says which): 63 needs nothing now; 94 restart the application; \
             48, 95 and 140 drain the GPU and reset it; 64 reset and open an RMA; 92 schedule a \
             reset and watch the ECC counters.",
};

const BUS: Cause = Cause {
    id: "gpu.xid.bus",
    title: "Xid: GPU fell off the bus",
    severity: Severity::Critical,
    detects: "Xid 79 (the GPU stopped answering on PCIe) and 167 (PCIe fatal timeout).",
    action: "Drain the node and reboot it; if the GPU falls off again, check its power cables, \
             seating and slot or riser, then open an RMA.",
};

const NVLINK: Cause = Cause {
    id: "gpu.xid.nvlink",
    title: "Xid: NVLink error",
    severity: Severity::Critical,
    detects: "NVLink Xids: 74, 136 link training failed, 144–150 NVLink5 errors, 155, and every Xid \
              whose resolution is an NVLink workflow.",
    action: "Drain the node; check `nvidia-smi nvlink --status` and `-e`; reset the GPUs of the \
             NVLink domain (on NVSwitch systems restart Fabric Manager) or reboot. If the link \
             errors recur, open an RMA for the GPU or baseboard.",
};

const GSP: Cause = Cause {
    id: "gpu.xid.gsp",
    title: "Xid: GSP firmware error",
    severity: Severity::Critical,
    detects: "Xid 119 (GSP RPC timeout) and 120 (GSP error): the GPU's System Processor stopped \
              answering the driver.",
    action: "Drain the GPU and reset it (`nvidia-smi -r`) or reboot the node. If it recurs, \
             update the driver (the GSP firmware ships with it) and report it to NVIDIA with \
             `nvidia-bug-report.sh`.",
};

const RESET: Cause = Cause {
    id: "gpu.xid.reset",
    title: "Xid: GPU needs a reset",
    severity: Severity::Critical,
    detects: "Xids whose resolution is a GPU reset: 46 and 62 stopped processing / \
              micro-controller halt, 109 context-switch timeout, 143 initialisation error, 156, \
              158 fatal timeout, and others with RESET_GPU.",
    action: "Drain the GPU and reset it (`nvidia-smi -r -i <gpu>`) or reboot the node; run \
             `dcgmi diag -r 3` before returning it, and open an RMA if it repeats.",
};

const REBOOT: Cause = Cause {
    id: "gpu.xid.reboot",
    title: "Xid: node needs a reboot",
    severity: Severity::Critical,
    detects: "Xids (other than 79) whose resolution is rebooting the node or VM, and Xid 154 \
              when the driver asks for a node reboot.",
    action: "Drain the node and reboot it (or restart the VM); if the Xid returns after the \
             reboot, collect `nvidia-bug-report.sh` and contact NVIDIA support.",
};

const HARDWARE: Cause = Cause {
    id: "gpu.xid.hardware",
    title: "Xid: hardware problem",
    severity: Severity::Critical,
    detects: "Xid 54 (auxiliary power not connected) and Xids whose resolution is checking the \
              mechanics or contacting support.",
    action: "Drain the GPU; power the node down and check the GPU's auxiliary power cables and \
             seating. If it persists, contact NVIDIA support and open an RMA.",
};

const SOFTWARE: Cause = Cause {
    id: "gpu.xid.software",
    title: "Xid: driver or firmware update needed",
    severity: Severity::Warning,
    detects: "Xids whose resolution is updating software or firmware (e.g. 78 vGPU start error).",
    action: "Update the driver and GPU firmware to the fleet's current release on this node.",
};

const INFORMATIONAL: Cause = Cause {
    id: "gpu.xid.informational",
    title: "Xid: informational",
    severity: Severity::Info,
    detects: "Xids NVIDIA marks IGNORE, 45 preemptive cleanup (follows another error), and 154 \
              without a new recovery action.",
    action: "No action needed now; look at the Xids around it and watch for repeats.",
};

const UNKNOWN: Cause = Cause {
    id: "gpu.xid.unknown",
    title: "Xid: not in NVIDIA's catalog",
    severity: Severity::Warning,
    detects: "Xids without a resolution in NVIDIA's catalog (newer than the catalog, or \
              undocumented).",
    action: "Look the Xid up in the driver's release notes; if it repeats, drain the GPU, collect \
             `nvidia-bug-report.sh` and ask NVIDIA support.",
};

static INFO: RuleInfo = RuleInfo {
    id: "gpu.xid",
    title: "Xid error",
    catalog: &[
        APPLICATION,
        MEMORY,
        BUS,
        NVLINK,
        GSP,
        RESET,
        REBOOT,
        HARDWARE,
        SOFTWARE,
        INFORMATIONAL,
        UNKNOWN,
    ],
};

/// A fleet-critical Xid with its own class, severity and action.
struct Known {
    code: u32,
    cause: &'static Cause,
    severity: Severity,
    /// Used when NVIDIA's catalog lacks the code.
    description: &'static str,
    action: &'static str,
}

macro_rules! known {
    ($code:expr, $cause:expr, $sev:ident, $desc:expr, $action:expr) => {
        Known {
            code: $code,
            cause: &$cause,
            severity: Severity::$sev,
            description: $desc,
            action: $action,
        }
    };
}

const RESET_ACTION: &str = "Drain the GPU and reset it (`nvidia-smi -r -i <gpu>`) or reboot the \
                            node; open an RMA if it repeats.";
const NVLINK5_ACTION: &str = "Follow NVIDIA's NVLink5 error workflow: drain the node, check the \
                              link and fabric state, reset the GPU; open an RMA if it recurs.";

/// The Xids that matter most in fleets (NVIDIA's list; see docs/causes.md).
static FLEET_XIDS: &[Known] = &[
    known!(
        13,
        APPLICATION,
        Warning,
        "Graphics engine exception",
        "Restart the application; it is usually an application bug (an illegal address or \
         instruction) — run it under `compute-sanitizer`. If it repeats on this GPU only, run \
         `dcgmi diag -r 3`."
    ),
    known!(
        31,
        APPLICATION,
        Warning,
        "",
        "Restart the application; it accessed memory it does not own (a bug in the application \
         or a library). If it repeats on this GPU with different jobs, run `dcgmi diag -r 3`."
    ),
    known!(
        43,
        APPLICATION,
        Warning,
        "",
        "The driver stopped one of the application's channels (usually after an application \
         error); restart the application. The GPU is fine unless other Xids come with it."
    ),
    known!(
        45,
        INFORMATIONAL,
        Info,
        "Preemptive cleanup, due to previous errors",
        "Follows another error or a killed process (Ctrl-C, OOM kill): look at the Xid before \
         it."
    ),
    known!(46, RESET, Critical, "", RESET_ACTION),
    known!(
        48,
        MEMORY,
        Critical,
        "",
        "Double-bit ECC error: the process using that memory was killed. Drain the GPU and \
         reset it so the row is remapped (or the page retired); if uncorrectable errors recur, \
         open an RMA."
    ),
    known!(
        54,
        HARDWARE,
        Critical,
        "",
        "Auxiliary power is not connected: the GPU runs at reduced clocks. Power the node down \
         and check the GPU's power cables and seating; open an RMA if it persists."
    ),
    known!(
        62,
        RESET,
        Critical,
        "Internal micro-controller halt",
        RESET_ACTION
    ),
    known!(
        63,
        MEMORY,
        Info,
        "",
        "A row remap (or page retirement) was recorded: no action now; it applies at the next \
         GPU reset. Watch for Xid 64."
    ),
    known!(
        64,
        MEMORY,
        Critical,
        "",
        "Row remapping failed: drain the GPU, reset it, and open an RMA — it has no spare rows \
         left or the remap did not take."
    ),
    known!(
        74,
        NVLINK,
        Critical,
        "",
        "Drain the node; check `nvidia-smi nvlink --status` and `-e`; reset the GPUs (restart \
         Fabric Manager on NVSwitch systems) or reboot; open an RMA if the link errors recur."
    ),
    known!(
        79,
        BUS,
        Critical,
        "",
        "The GPU fell off the bus: drain the node and reboot it; if it happens again, check the \
         power cables, seating and slot or riser, then open an RMA."
    ),
    known!(
        92,
        MEMORY,
        Warning,
        "",
        "Single-bit ECC errors at a high rate: the memory is degrading. Schedule a GPU reset to \
         remap the rows, run `dcgmi diag -r 3`, and open an RMA if the rate stays high."
    ),
    known!(
        94,
        MEMORY,
        Warning,
        "",
        "Contained memory error: only the application that hit it was affected. Restart the \
         application, and reset the GPU at the next drain to remap the row."
    ),
    known!(
        95,
        MEMORY,
        Critical,
        "",
        "Uncontained memory error: every application on this GPU may be affected. Drain the GPU \
         and reset it (`nvidia-smi -r`) or reboot; open an RMA if it repeats."
    ),
    known!(109, RESET, Critical, "", RESET_ACTION),
    known!(
        119,
        GSP,
        Critical,
        "",
        "GSP firmware timed out: drain the GPU and reset it or reboot the node. If it recurs, \
         update the driver (the GSP firmware ships with it) and report it to NVIDIA."
    ),
    known!(
        120,
        GSP,
        Critical,
        "",
        "GSP firmware error: drain the GPU and reset it or reboot the node. If it recurs, update \
         the driver (the GSP firmware ships with it) and report it to NVIDIA."
    ),
    known!(
        136,
        NVLINK,
        Critical,
        "",
        "NVLink training failed: reset the GPU; if it fails again, check the link's signal \
         integrity (baseboard, cables) and open an RMA."
    ),
    known!(
        140,
        MEMORY,
        Critical,
        "",
        "An uncorrectable ECC error escaped containment: drain the GPU and reset it; open an RMA \
         if it repeats."
    ),
    known!(
        143,
        RESET,
        Critical,
        "",
        "The GPU failed to initialise: reset it or reboot the node; open an RMA if it fails \
         again."
    ),
    known!(144, NVLINK, Critical, "", NVLINK5_ACTION),
    known!(145, NVLINK, Critical, "", NVLINK5_ACTION),
    known!(146, NVLINK, Critical, "", NVLINK5_ACTION),
    known!(147, NVLINK, Critical, "", NVLINK5_ACTION),
    known!(148, NVLINK, Critical, "", NVLINK5_ACTION),
    known!(149, NVLINK, Critical, "", NVLINK5_ACTION),
    known!(150, NVLINK, Critical, "", NVLINK5_ACTION),
    known!(
        155,
        NVLINK,
        Critical,
        "",
        "NVLink software-defined error: reset the GPU, and check the NVLink/Fabric Manager \
         configuration and software versions."
    ),
    known!(
        156,
        RESET,
        Critical,
        "",
        "A GPU resource was retired: reset the GPU to complete the retirement."
    ),
    known!(158, RESET, Critical, "", RESET_ACTION),
    known!(
        167,
        BUS,
        Critical,
        "",
        "PCIe fatal timeout: drain the node and reboot it; check the slot, riser and cabling; \
         open an RMA if it repeats."
    ),
    known!(
        168,
        MEMORY,
        Critical,
        "",
        "The GPU runs with reduced memory capacity: drain it and open an RMA."
    ),
    known!(
        171,
        MEMORY,
        Critical,
        "",
        "Uncorrectable DRAM error: drain the GPU and reset it; open an RMA if it repeats."
    ),
    known!(
        172,
        MEMORY,
        Critical,
        "",
        "Uncorrectable SRAM error: drain the GPU and reset it; open an RMA if it repeats."
    ),
];

/// What an Xid means for on-call.
#[derive(Debug, Clone, PartialEq)]
struct Class {
    cause: &'static Cause,
    severity: Severity,
    description: &'static str,
    action: String,
}

fn classify(code: u32, message: &str) -> Class {
    let info = xid::lookup(code);
    let description = info.map(|i| i.description).unwrap_or("");
    if let Some(k) = FLEET_XIDS.iter().find(|k| k.code == code) {
        return Class {
            cause: k.cause,
            severity: k.severity,
            description: if description.is_empty() {
                k.description
            } else {
                description
            },
            action: k.action.to_string(),
        };
    }
    if code == 154 {
        return recovery_action(message, description);
    }
    let res = info.map(|i| i.immediate_resolution).unwrap_or("");
    let (cause, severity, action) = match res {
        "IGNORE" => (
            &INFORMATIONAL,
            Severity::Info,
            INFORMATIONAL.action.to_string(),
        ),
        "RESTART_APP" | "CHECK_UVM" => (
            &APPLICATION,
            Severity::Warning,
            "Restart the application; if it repeats on this GPU only, suspect the hardware."
                .to_string(),
        ),
        "RESET_GPU" => (&RESET, Severity::Critical, RESET_ACTION.to_string()),
        "RESTART_BM" => (
            &REBOOT,
            Severity::Critical,
            "Drain and reboot the node.".to_string(),
        ),
        "RESTART_VM" => (&REBOOT, Severity::Critical, "Restart the VM.".to_string()),
        "CHECK_MECHANICALS" => (&HARDWARE, Severity::Critical, HARDWARE.action.to_string()),
        "CONTACT_SUPPORT" => (
            &HARDWARE,
            Severity::Critical,
            "Drain the GPU, collect `nvidia-bug-report.sh` and contact NVIDIA support (RMA)."
                .to_string(),
        ),
        "UPDATE_SWFW" => (&SOFTWARE, Severity::Warning, SOFTWARE.action.to_string()),
        r if r.contains("NVLINK") => (
            &NVLINK,
            Severity::Critical,
            format!("Follow NVIDIA's {r} procedure. {}", NVLINK.action),
        ),
        "" => (&UNKNOWN, Severity::Warning, UNKNOWN.action.to_string()),
        other => (
            &UNKNOWN,
            Severity::Warning,
            format!("NVIDIA recommends {other}; {}", UNKNOWN.action),
        ),
    };
    let inv = info.map(|i| i.investigatory_resolution).unwrap_or("");
    let action = if inv == "CONTACT_SUPPORT" && cause.id != HARDWARE.id {
        format!("{action} If it repeats, contact NVIDIA support / open an RMA.")
    } else {
        action
    };
    Class {
        cause,
        severity,
        description,
        action,
    }
}

/// Xid 154 says which recovery the driver now requires for an earlier error, e.g.
/// `GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)`.
fn recovery_action(message: &str, description: &'static str) -> Class {
    let lower = message.to_ascii_lowercase();
    let new = lower.rsplit(" to ").next().unwrap_or("");
    let (cause, severity, action) = if new.contains("reboot") {
        (
            &REBOOT,
            Severity::Critical,
            "The driver requires a node reboot: drain the node and reboot it.",
        )
    } else if new.contains("reset") || new.contains("drain") {
        (
            &RESET,
            Severity::Critical,
            "The driver requires the GPU to be drained and reset: drain it and reset it (`nvidia-smi -r`).",
        )
    } else {
        (
            &INFORMATIONAL,
            Severity::Info,
            "No recovery required now; look at the Xid before it.",
        )
    };
    Class {
        cause,
        severity,
        description,
        action: action.to_string(),
    }
}

/// The occurrences of one Xid code on one GPU.
struct Occurrences<'a> {
    code: u32,
    class: Class,
    count: usize,
    first: &'a Event,
    last: &'a Event,
}

impl Rule for XidErrors {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, now: UnixMs) -> Vec<Finding> {
        // Per (GPU, code): the class, how often, first and last.
        let mut seen: Vec<(Option<u32>, Occurrences)> = Vec::new();
        for e in node.events.iter().filter(|e| e.kind == EventKind::Xid) {
            let Some(code) = e.xid else {
                continue;
            };
            if now.since(e.timestamp) > RECENT_MS {
                continue;
            }
            match seen
                .iter_mut()
                .find(|(g, o)| *g == e.gpu_index && o.code == code)
            {
                Some((_, o)) => {
                    o.count += 1;
                    o.last = e;
                    if code == 154 {
                        o.class = classify(code, &e.message);
                    }
                }
                None => seen.push((
                    e.gpu_index,
                    Occurrences {
                        code,
                        class: classify(code, &e.message),
                        count: 1,
                        first: e,
                        last: e,
                    },
                )),
            }
        }
        // One finding per (GPU, class): a finding's identity is node + cause + GPU.
        let mut out: Vec<Finding> = Vec::new();
        let mut done = vec![false; seen.len()];
        for i in 0..seen.len() {
            if done[i] {
                continue;
            }
            let (gpu, cause) = (seen[i].0, seen[i].1.class.cause);
            let group: Vec<&Occurrences> = (i..seen.len())
                .filter(|&j| seen[j].0 == gpu && seen[j].1.class.cause.id == cause.id)
                .map(|j| {
                    done[j] = true;
                    &seen[j].1
                })
                .collect();
            out.push(self.report(node, gpu, cause, &group));
        }
        out
    }
}

impl XidErrors {
    fn report(
        &self,
        node: &NodeState,
        gpu: Option<u32>,
        cause: &'static Cause,
        group: &[&Occurrences],
    ) -> Finding {
        let first = group
            .iter()
            .map(|o| o.first)
            .min_by_key(|e| e.timestamp)
            .expect("a group is not empty");
        let last = group
            .iter()
            .map(|o| o.last)
            .max_by_key(|e| e.timestamp)
            .expect("a group is not empty");
        // The most severe code decides the severity and the action.
        let worst = group
            .iter()
            .max_by_key(|o| (o.class.severity, std::cmp::Reverse(o.first.timestamp)))
            .expect("a group is not empty");
        let desc = |o: &Occurrences| {
            if o.class.description.is_empty() {
                "unknown Xid"
            } else {
                o.class.description
            }
        };
        let mut f = raise(self, cause, node, first.timestamp);
        f.severity = worst.class.severity;
        f.action = worst.class.action.clone();
        f.gpu_index = gpu;
        f.gpu_uuid = first.gpu_uuid.clone();
        f.title = if let [o] = group {
            format!("Xid {}: {}", o.code, desc(o))
        } else {
            let codes: Vec<String> = group.iter().map(|o| o.code.to_string()).collect();
            format!(
                "Xids {}: {}",
                codes.join(", "),
                cause.title.trim_start_matches("Xid: ")
            )
        };
        // `xid` first, as the number alone: when the engine folds this finding into the one of
        // the fault it reports (by class, e.g. memory into `gpu.ecc.uncorrectable`), it quotes
        // this field.
        f.evidence.push(
            Evidence::new("xid", worst.code, "").held_for(last.timestamp.since(first.timestamp)),
        );
        f.evidence.push(Evidence::new(
            "occurrences",
            group.iter().map(|o| o.count).sum::<usize>(),
            "",
        ));
        if group.len() > 1 {
            for o in group {
                f.evidence.push(
                    Evidence::new(
                        &format!("xid {}", o.code),
                        format!("{} time(s): {}", o.count, desc(o)),
                        "",
                    )
                    .held_for(o.last.timestamp.since(o.first.timestamp)),
                );
            }
        }
        if let Some(i) = xid::lookup(worst.code) {
            f.evidence.push(Evidence::new(
                "nvidia_resolution",
                format!(
                    "{} / {}",
                    i.immediate_resolution, i.investigatory_resolution
                ),
                "",
            ));
        }
        f.evidence
            .push(Evidence::new("last_seen", last.timestamp, ""));
        if !last.message.is_empty() {
            f.evidence.push(Evidence::new("message", &last.message, ""));
        }
        let what: Vec<String> = group
            .iter()
            .map(|o| format!("Xid {} ({}) {} time(s)", o.code, desc(o), o.count))
            .collect();
        f.summary = format!(
            "{}{}, last at {}",
            gpu.map(|g| format!("GPU {g}: ")).unwrap_or_default(),
            what.join(", "),
            last.timestamp
        );
        f
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let mut n = super::testutil::trigger("xid", |_, _| {});
    for (gpu, code) in [13, 48, 79, 74, 119, 46, 151, 54, 78, 45, 9999]
        .into_iter()
        .enumerate()
    {
        let mut e = Event::new(
            UnixMs(95_000),
            EventKind::Xid,
            Severity::Critical,
            format!("xid.{code}"),
            format!("Xid {code}"),
        )
        .on_gpu(gpu as u32 % 8, &format!("GPU-{}", gpu % 8));
        e.xid = Some(code);
        n.1.events.push_back(e);
    }
    vec![n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    fn xid_event(code: u32, t: i64) -> Event {
        let mut e = Event::new(
            UnixMs(t),
            EventKind::Xid,
            Severity::Critical,
            format!("xid.{code}"),
            "x",
        )
        .on_gpu(2, "GPU-2");
        e.xid = Some(code);
        e
    }

    /// The Xids NVIDIA lists as mattering most in fleets (`/work/shared/reference/xid.md`).
    const FLEET_CRITICAL: &[u32] = &[
        13, 31, 43, 45, 46, 48, 54, 62, 63, 64, 74, 79, 92, 94, 95, 109, 119, 120, 136, 140, 143,
        144, 145, 146, 147, 148, 149, 150, 154, 155, 156, 158,
    ];

    #[test]
    fn classifies() {
        use Severity::*;
        let cases: &[(u32, &str, Severity)] = &[
            (13, "gpu.xid.application", Warning),
            (31, "gpu.xid.application", Warning),
            (43, "gpu.xid.application", Warning),
            (48, "gpu.xid.memory", Critical),
            (63, "gpu.xid.memory", Info),
            (64, "gpu.xid.memory", Critical),
            (92, "gpu.xid.memory", Warning),
            (94, "gpu.xid.memory", Warning),
            (95, "gpu.xid.memory", Critical),
            (79, "gpu.xid.bus", Critical),
            (74, "gpu.xid.nvlink", Critical),
            (149, "gpu.xid.nvlink", Critical),
            (119, "gpu.xid.gsp", Critical),
            (120, "gpu.xid.gsp", Critical),
            (46, "gpu.xid.reset", Critical),
            (54, "gpu.xid.hardware", Critical),
            (45, "gpu.xid.informational", Info),
            // By the catalog's resolution:
            (8, "gpu.xid.application", Warning),
            (38, "gpu.xid.informational", Info),
            (110, "gpu.xid.reset", Critical),
            (151, "gpu.xid.reboot", Critical),
            (78, "gpu.xid.software", Warning),
            (142, "gpu.xid.hardware", Critical),
            (162, "gpu.xid.unknown", Warning),
            (9999, "gpu.xid.unknown", Warning),
        ];
        for (code, id, sev) in cases {
            let mut n = node(4, 1, |_, _| {});
            n.events.push_back(xid_event(*code, 90_000));
            n.events.push_back(xid_event(*code, 95_000));
            let f = XidErrors.check(&n, &FleetContext::default(), NOW);
            assert_eq!(f.len(), 1, "{code}");
            assert_eq!(
                (f[0].rule_id.as_str(), f[0].severity, f[0].gpu_index),
                (*id, *sev, Some(2)),
                "{code}"
            );
            assert_eq!(f[0].evidence[0].value, code.to_string(), "{code}");
            assert_eq!(f[0].evidence[1].value, "2", "{code}");
            assert_eq!(f[0].evidence[0].duration_ms, 5_000, "{code}");
            assert_eq!(f[0].since, UnixMs(90_000));
        }
    }

    #[test]
    fn every_fleet_critical_xid_has_a_specific_class_and_action() {
        for &code in FLEET_CRITICAL {
            let c = classify(code, "");
            assert_ne!(c.cause.id, UNKNOWN.id, "{code}");
            assert!(!c.description.is_empty(), "{code}");
            assert!(c.action.len() > 20, "{code}: {}", c.action);
        }
        for k in FLEET_XIDS {
            assert!(
                INFO.catalog.iter().any(|c| c.id == k.cause.id),
                "{} is classified outside the catalog",
                k.code
            );
        }
    }

    #[test]
    fn xid_154_follows_the_new_recovery_action() {
        let cases = [
            (
                "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)",
                "gpu.xid.reboot",
            ),
            (
                "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)",
                "gpu.xid.reset",
            ),
            (
                "GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)",
                "gpu.xid.informational",
            ),
        ];
        for (message, id) in cases {
            assert_eq!(classify(154, message).cause.id, id, "{message}");
        }
    }

    #[test]
    fn one_finding_per_gpu_and_class() {
        let mut n = node(4, 1, |_, _| {});
        n.events.push_back(xid_event(13, 80_000));
        n.events.push_back(xid_event(31, 85_000));
        n.events.push_back(xid_event(31, 90_000));
        n.events.push_back(xid_event(79, 95_000));
        let f = XidErrors.check(&n, &FleetContext::default(), NOW);
        let got: Vec<(&str, &str)> = f
            .iter()
            .map(|f| (f.rule_id.as_str(), f.title.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("gpu.xid.application", "Xids 13, 31: application error"),
                ("gpu.xid.bus", "Xid 79: GPU has fallen off the bus"),
            ]
        );
        assert_eq!(f[0].since, UnixMs(80_000));
        assert!(
            f[0].summary
                .contains("Xid 31 (GPU memory page fault) 2 time(s)"),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn the_engine_folds_a_memory_xid_into_the_ecc_finding() {
        let mut n = node(4, 10, |_, s| {
            s.gpus[2].ecc_uncorrected_volatile = Some(1);
        });
        n.events.push_back(xid_event(48, 95_000));
        let f = crate::diagnose::diagnose(&[&n], NOW);
        let ids: Vec<&str> = f.iter().map(|f| f.rule_id.as_str()).collect();
        assert_eq!(ids, ["gpu.ecc.uncorrectable"]);
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e.field == "xid" && e.value.starts_with("48"))
        );
    }

    #[test]
    fn old_xids_expire() {
        let mut n = node(4, 1, |_, _| {});
        n.events.push_back(xid_event(79, 1_000));
        let later = UnixMs(1_000 + RECENT_MS as i64 + 1);
        assert!(
            XidErrors
                .check(&n, &FleetContext::default(), later)
                .is_empty()
        );
    }
}
