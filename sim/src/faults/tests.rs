//! The catalog as a whole: names, parameters, parse-time and per-model validation.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::*;
use crate::models::model_by_name;

/// Builds a kind from TOML parameter text, as a scenario's `[[fault]]` would.
fn build_kind(name: &str, gpu: Option<u32>, params: &str) -> Result<Arc<dyn FaultKind>, String> {
    let table: toml::Table = toml::from_str(params).expect("test parameters are TOML");
    let params: BTreeMap<String, (toml::Value, usize)> =
        table.into_iter().map(|(k, v)| (k, (v, 1))).collect();
    build(name, gpu, params).map(|(_, k)| k)
}

fn info_of(name: &str, gpu: Option<u32>, params: &str) -> &'static FaultKindInfo {
    let table: toml::Table = toml::from_str(params).unwrap();
    let params = table.into_iter().map(|(k, v)| (k, (v, 1))).collect();
    build(name, gpu, params).unwrap().0
}

#[test]
fn catalog_names_are_unique_and_buildable() {
    let mut seen = HashSet::new();
    for k in fault_kinds() {
        for n in std::iter::once(k.name).chain(k.aliases.iter().copied()) {
            assert!(seen.insert(n), "duplicate kind name {n}");
        }
        let params = if k.name == "xid" { "xid = 79" } else { "" };
        build_kind(k.name, None, params).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        assert_eq!(info_of(k.name, None, params).name, k.name);
    }
    assert_eq!(
        info_of("applications_clocks", Some(0), "").name,
        "clocks_locked"
    );
    assert_eq!(fault_kinds().len(), 60);
}

#[test]
fn parameters_are_the_struct_fields() {
    let params = |name: &str| fault_kind(name).unwrap().params();
    assert_eq!(
        params("thermal_throttle"),
        ["target_celsius", "ramp", "sm_clock_percent"]
    );
    assert_eq!(params("pcie_downtrain"), ["gen", "width", "per_minute"]);
    assert_eq!(params("xid"), ["xid", "repeat", "interval"]);
    assert!(params("gpu_hung").is_empty());
    for k in fault_kinds() {
        for p in k.params() {
            assert!(
                !COMMON_KEYS.contains(p),
                "{}: {p} shadows a common key",
                k.name
            );
        }
    }
}

#[test]
fn build_rejects_bad_parameters() {
    let cases: &[(&str, Option<u32>, &str, &str)] = &[
        ("thermal", None, "", "unknown fault kind `thermal`"),
        ("thermal_throttle", None, "gen = 3", "does not take `gen`"),
        ("thermal_throttle", None, "foo = 3", "unknown field `foo`"),
        ("fallen_off_bus", None, "link = 1", "takes no parameters"),
        ("host_cpu_saturated", Some(1), "", "remove `gpu`"),
        ("xid", None, "", "needs `xid"),
        ("xid", None, "xid = 1000", "out of range"),
        (
            "xid",
            None,
            "xid = 13\nrepeat = 2\ninterval = \"0s\"",
            "interval must be positive",
        ),
        ("pcie_downtrain", None, "width = 3", "not a PCIe link width"),
        (
            "pcie_link_downtrained",
            None,
            "width = 3",
            "not a PCIe link width",
        ),
        (
            "pcie_link_downtrained",
            None,
            "speed_mts = 7",
            "not a PCIe rate",
        ),
        (
            "hw_slowdown",
            None,
            "sm_clock_percent = 100",
            "out of range",
        ),
        (
            "driver_change",
            Some(2),
            "driver_version = \"535.1\"",
            "per node",
        ),
        ("nic_saturated", None, "direction = \"up\"", "direction"),
        (
            "kernel_change",
            None,
            "kernel_version = \" \"",
            "must not be empty",
        ),
        (
            "thermal_throttle",
            None,
            "ramp = \"soon\"",
            "invalid duration",
        ),
        (
            "thermal_throttle",
            None,
            "target_celsius = \"hot\"",
            "invalid type",
        ),
    ];
    for (name, gpu, params, want) in cases {
        let err = build_kind(name, *gpu, params).expect_err(name);
        assert!(err.contains(want), "{name} {params}: {err}");
    }
}

#[test]
fn validate_for_checks_the_model() {
    let h100 = model_by_name("h100").unwrap();
    let t4 = model_by_name("t4").unwrap();
    let l40s = model_by_name("l40s").unwrap();
    let ada = model_by_name("rtx-6000-ada").unwrap();
    // (kind, parameters, gpu, model, the error it must give or None)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<u32>,
        &'a GpuModelProfile,
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        ("thermal_throttle", "", Some(7), h100, None),
        ("thermal_throttle", "", Some(8), h100, Some("has 8 GPUs")),
        (
            "thermal_throttle",
            "target_celsius = 95",
            None,
            h100,
            Some("shutdown"),
        ),
        (
            "power_cap",
            "limit_watts = 150",
            None,
            h100,
            Some("out of range"),
        ),
        ("power_cap", "limit_watts = 300", None, h100, None),
        (
            "pcie_downtrain",
            "gen = 5\nwidth = 16",
            None,
            h100,
            Some("full link"),
        ),
        ("pcie_downtrain", "gen = 4", None, t4, Some("above")),
        (
            "pcie_link_downtrained",
            "nic = \"mlx5_9\"",
            None,
            h100,
            Some("not an HCA"),
        ),
        ("ib_hca_missing", "hca = \"all\"", None, h100, None),
        (
            "ib_port_down",
            "hca = \"all\"",
            None,
            h100,
            Some("not an HCA"),
        ),
        ("row_remap_failure", "", None, t4, Some("retires pages")),
        ("nvlink_down", "link = 18", None, h100, Some("18 NVLinks")),
        ("nvlink_errors", "", None, l40s, Some("no NVLink")),
        ("fan_failure", "", None, h100, Some("no fans")),
        ("fan_failure", "", None, ada, None),
        ("tensor_cores_idle", "", None, h100, None),
        ("tensor_cores_idle", "", None, l40s, Some("GPM")),
        (
            "disk_full",
            "mount = \"/data\"",
            None,
            h100,
            Some("not a filesystem"),
        ),
        (
            "nic_errors",
            "nic = \"eth9\"",
            None,
            h100,
            Some("not a NIC"),
        ),
        (
            "clocks_locked",
            "sm_clock_mhz = 1980",
            None,
            h100,
            Some("out of range"),
        ),
    ];
    for (name, params, gpu, model, want) in cases {
        let table: toml::Table = toml::from_str(params).unwrap();
        let (info, kind) = build(
            name,
            None,
            table.into_iter().map(|(k, v)| (k, (v, 1))).collect(),
        )
        .unwrap();
        let fault = Fault {
            info,
            kind,
            node: None,
            gpu: *gpu,
            start_ms: 0,
            end_ms: None,
            line: 0,
        };
        let got = fault.validate_for(model, 8);
        match want {
            None => assert!(got.is_ok(), "{name} {params}: {got:?}"),
            Some(w) => assert!(
                got.as_ref().is_err_and(|e| e.contains(w)),
                "{name} {params}: {got:?}"
            ),
        }
    }
}

#[test]
fn fault_windows() {
    let (info, kind) = build("gpu_hung", None, BTreeMap::new()).unwrap();
    let f = Fault {
        info,
        kind,
        node: None,
        gpu: None,
        start_ms: 1_000,
        end_ms: Some(3_000),
        line: 0,
    };
    for (t, active, on) in [
        (0, false, 0),
        (999, false, 0),
        (1_000, true, 0),
        (2_500, true, 1_500),
        (3_000, false, 2_000),
        (9_000, false, 2_000),
    ] {
        assert_eq!(f.active_at(t), active, "{t}");
        assert_eq!(f.on_for_ms(t), on, "{t}");
    }
    let at = At {
        t: 31_000,
        start: 1_000,
        end: None,
    };
    assert_eq!(at.per_minute(600), 300);
}
