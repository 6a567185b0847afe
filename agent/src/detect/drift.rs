//! Drift: a version or mode that differs from this node's baseline, or GPUs of one node that
//! disagree with each other. Pure functions over inventories; the baseline file is handled by
//! [`super::Detector`].

use std::collections::BTreeMap;

use gpufleet_model::{Inventory, Severity};
use serde::{Deserialize, Serialize};

/// What must stay the same on a node between inventories unless someone changed it on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Baseline {
    /// Node-wide fields: `driver_version`, `cuda_driver_version`, `nvml_version`,
    /// `kernel_version`, `os_name`.
    pub node: BTreeMap<String, String>,
    /// Per GPU UUID: `vbios_version`, `inforom_image_version`, `gsp_firmware_version`,
    /// `persistence_mode`, `compute_mode`, `mig_enabled`, `ecc_enabled`, `name`.
    pub gpus: BTreeMap<String, BTreeMap<String, String>>,
}

/// One difference found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// `drift.<field>` for baseline drift, `drift.intra_node.<field>` for disagreement.
    pub code: String,
    pub field: String,
    pub gpu: Option<(u32, String)>,
    pub baseline: String,
    pub current: String,
    pub severity: Severity,
    pub message: String,
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The fields of one GPU that drift detection watches.
fn gpu_fields(g: &gpufleet_model::GpuInfo) -> BTreeMap<String, String> {
    [
        ("name", g.name.clone()),
        ("vbios_version", g.vbios_version.clone()),
        ("inforom_image_version", g.inforom_image_version.clone()),
        ("gsp_firmware_version", g.gsp_firmware_version.clone()),
        ("persistence_mode", opt(g.persistence_mode)),
        ("compute_mode", g.compute_mode.clone()),
        ("mig_enabled", opt(g.mig_enabled)),
        ("ecc_enabled", opt(g.ecc_enabled)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Baseline {
    pub fn from_inventory(inv: &Inventory) -> Self {
        let node = [
            ("driver_version", inv.driver.driver_version.clone()),
            (
                "cuda_driver_version",
                inv.driver.cuda_driver_version.clone(),
            ),
            ("nvml_version", inv.driver.nvml_version.clone()),
            ("kernel_version", inv.host.kernel_version.clone()),
            ("os_name", inv.host.os_name.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let gpus = inv
            .gpus
            .iter()
            .map(|g| (g.uuid.clone(), gpu_fields(g)))
            .collect();
        Baseline { node, gpus }
    }
}

fn severity_of(field: &str) -> Severity {
    match field {
        "driver_version"
        | "vbios_version"
        | "gsp_firmware_version"
        | "ecc_enabled"
        | "mig_enabled"
        | "cuda_driver_version" => Severity::Warning,
        _ => Severity::Info,
    }
}

/// Differences between the baseline and the current inventory. Fields empty on either side
/// (not readable) are not drift. GPUs new to the baseline are not drift either (a GPU added
/// or replaced is reported by inventory comparison at the collector).
pub fn against_baseline(baseline: &Baseline, inv: &Inventory) -> Vec<Drift> {
    let current = Baseline::from_inventory(inv);
    let mut out = Vec::new();
    for (field, now) in &current.node {
        if let Some(before) = baseline.node.get(field)
            && !before.is_empty()
            && !now.is_empty()
            && before != now
        {
            out.push(Drift {
                code: format!("drift.{field}"),
                field: field.clone(),
                gpu: None,
                baseline: before.clone(),
                current: now.clone(),
                severity: severity_of(field),
                message: format!("{field} changed from {before} to {now}"),
            });
        }
    }
    for g in &inv.gpus {
        let Some(before_fields) = baseline.gpus.get(&g.uuid) else {
            continue;
        };
        for (field, now) in gpu_fields(g) {
            if let Some(before) = before_fields.get(&field)
                && !before.is_empty()
                && !now.is_empty()
                && *before != now
            {
                out.push(Drift {
                    code: format!("drift.{field}"),
                    field: field.clone(),
                    gpu: Some((g.index, g.uuid.clone())),
                    baseline: before.clone(),
                    current: now.clone(),
                    severity: severity_of(&field),
                    message: format!("GPU {} {field} changed from {before} to {now}", g.index),
                });
            }
        }
    }
    out
}

/// GPUs of the same product inside one node that disagree on a version or mode. The majority
/// value is "expected"; each GPU off the majority is one drift.
pub fn intra_node(inv: &Inventory) -> Vec<Drift> {
    let mut out = Vec::new();
    let mut by_model: BTreeMap<&str, Vec<&gpufleet_model::GpuInfo>> = BTreeMap::new();
    for g in &inv.gpus {
        by_model.entry(g.name.as_str()).or_default().push(g);
    }
    for gpus in by_model.values().filter(|g| g.len() > 1) {
        let fields: Vec<BTreeMap<String, String>> = gpus.iter().map(|g| gpu_fields(g)).collect();
        for field in fields[0].keys().filter(|f| f.as_str() != "name") {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for f in &fields {
                let v = f[field].as_str();
                if !v.is_empty() {
                    *counts.entry(v).or_default() += 1;
                }
            }
            if counts.len() < 2 {
                continue;
            }
            // Majority; ties broken by the lexicographically larger (usually newer) value.
            let (majority, _) = counts
                .iter()
                .max_by_key(|(v, n)| (**n, *v))
                .map(|(v, n)| (*v, *n))
                .unwrap_or_default();
            for (g, f) in gpus.iter().zip(&fields) {
                let v = f[field].as_str();
                if !v.is_empty() && v != majority {
                    out.push(Drift {
                        code: format!("drift.intra_node.{field}"),
                        field: field.clone(),
                        gpu: Some((g.index, g.uuid.clone())),
                        baseline: majority.to_string(),
                        current: v.to_string(),
                        severity: severity_of(field),
                        message: format!(
                            "GPU {} has {field} {v} while the node's other {} GPUs have {majority}",
                            g.index, g.name
                        ),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::{DriverInfo, GpuInfo};

    fn inv(driver: &str, vbios: &[&str]) -> Inventory {
        Inventory {
            driver: DriverInfo {
                driver_version: driver.into(),
                ..Default::default()
            },
            gpus: vbios
                .iter()
                .enumerate()
                .map(|(i, v)| GpuInfo {
                    index: i as u32,
                    uuid: format!("GPU-{i}"),
                    name: "NVIDIA H100 80GB HBM3".into(),
                    vbios_version: v.to_string(),
                    persistence_mode: Some(true),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn baseline_drift_cases() {
        let base = Baseline::from_inventory(&inv("550.54.15", &["96.00.89", "96.00.89"]));
        let cases: &[(&str, Inventory, &[&str])] = &[
            (
                "unchanged",
                inv("550.54.15", &["96.00.89", "96.00.89"]),
                &[],
            ),
            (
                "driver",
                inv("550.90.07", &["96.00.89", "96.00.89"]),
                &["drift.driver_version"],
            ),
            (
                "vbios one gpu",
                inv("550.54.15", &["96.00.89", "96.00.99"]),
                &["drift.vbios_version"],
            ),
            ("unreadable is not drift", inv("", &["", "96.00.89"]), &[]),
        ];
        for (name, current, want) in cases {
            let got: Vec<String> = against_baseline(&base, current)
                .into_iter()
                .map(|d| d.code)
                .collect();
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn intra_node_names_the_odd_gpu() {
        let got = intra_node(&inv("550.54.15", &["96.00.89", "96.00.89", "96.00.61"]));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].gpu, Some((2, "GPU-2".to_string())));
        assert_eq!(got[0].baseline, "96.00.89");
        assert!(intra_node(&inv("550.54.15", &["a", "a", "a"])).is_empty());
    }
}
