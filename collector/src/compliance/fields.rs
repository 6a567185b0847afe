//! The inventory fields a policy can constrain, the version matrix lists and the change
//! history tracks: one table ([`FIELDS`]), each entry naming the field, whether it is per GPU,
//! how its values compare, and how to read it. Adding a field is one entry here.

use std::fmt;

use gpufleet_model::{GpuInfo, Inventory, Sample};

/// How a field's values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A dotted version (`550.54.15`, `96.00.89.00.01`, `5.15.0-105-generic`): exact values,
    /// lists and ranges (`>=550.54.15, <560`), compared field by field.
    Version,
    /// Free text: exact values and lists.
    Text,
    /// `true` / `false`.
    Bool,
    /// A whole number: exact values, lists and ranges (`>= 600`).
    Int,
}

/// One reading of a field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Text(String),
    Bool(bool),
    Int(u64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
        }
    }
}

/// Where a field is read.
#[derive(Clone, Copy)]
pub enum Read {
    /// Once per node, from its inventory.
    Node(fn(&Inventory) -> Option<Value>),
    /// Once per GPU, from its inventory entry.
    Gpu(fn(&GpuInfo) -> Option<Value>),
    /// Once per GPU, from the node's latest sample (not part of the inventory, so not in
    /// the change history).
    GpuSample(fn(&Sample, u32) -> Option<Value>),
}

/// One field a policy can constrain.
pub struct Field {
    /// Its name in policy files, JSON, CSV and change records.
    pub name: &'static str,
    /// Short names `gpufleet versions --field` accepts.
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub read: Read,
    /// For docs/policy.md.
    pub doc: &'static str,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl Field {
    pub fn per_gpu(&self) -> bool {
        !matches!(self.read, Read::Node(_))
    }

    /// Whether the field is part of the inventory (and so of the change history).
    pub fn in_inventory(&self) -> bool {
        !matches!(self.read, Read::GpuSample(_))
    }
}

fn text(s: &str) -> Option<Value> {
    (!s.is_empty()).then(|| Value::Text(s.to_string()))
}

fn gpu_sample(s: &Sample, index: u32) -> Option<&gpufleet_model::GpuSample> {
    s.gpu(index)
}

/// Every field, in documentation order.
pub static FIELDS: &[Field] = &[
    Field {
        name: "driver_version",
        aliases: &["driver"],
        kind: Kind::Version,
        read: Read::Node(|i| text(&i.driver.driver_version)),
        doc: "NVIDIA kernel driver, e.g. `550.54.15`",
    },
    Field {
        name: "cuda_driver_version",
        aliases: &["cuda"],
        kind: Kind::Version,
        read: Read::Node(|i| text(&i.driver.cuda_driver_version)),
        doc: "CUDA version the driver supports, e.g. `12.4`",
    },
    Field {
        name: "kernel_version",
        aliases: &["kernel"],
        kind: Kind::Version,
        read: Read::Node(|i| text(&i.host.kernel_version)),
        doc: "Linux kernel release, e.g. `5.15.0-105-generic`",
    },
    Field {
        name: "os_name",
        aliases: &["os"],
        kind: Kind::Text,
        read: Read::Node(|i| text(&i.host.os_name)),
        doc: "OS release, e.g. `Ubuntu 22.04.4 LTS`",
    },
    Field {
        name: "gpu_count",
        aliases: &["gpus"],
        kind: Kind::Int,
        read: Read::Node(|i| Some(Value::Int(i.gpus.len() as u64))),
        doc: "GPUs the node enumerates",
    },
    Field {
        name: "vbios_version",
        aliases: &["vbios"],
        kind: Kind::Version,
        read: Read::Gpu(|g| text(&g.vbios_version)),
        doc: "VBIOS, per GPU, e.g. `96.00.89.00.01`",
    },
    Field {
        name: "inforom_version",
        aliases: &["inforom"],
        kind: Kind::Version,
        read: Read::Gpu(|g| text(&g.inforom_image_version)),
        doc: "InfoROM image, per GPU, e.g. `G520.0200.00.05`",
    },
    Field {
        name: "gsp_firmware_version",
        aliases: &["gsp"],
        kind: Kind::Version,
        read: Read::Gpu(|g| text(&g.gsp_firmware_version)),
        doc: "GSP firmware, per GPU (`n/a` on GPUs without GSP)",
    },
    Field {
        name: "ecc_enabled",
        aliases: &["ecc"],
        kind: Kind::Bool,
        read: Read::Gpu(|g| g.ecc_enabled.map(Value::Bool)),
        doc: "ECC mode, per GPU",
    },
    Field {
        name: "persistence_mode",
        aliases: &["persistence"],
        kind: Kind::Bool,
        read: Read::Gpu(|g| g.persistence_mode.map(Value::Bool)),
        doc: "persistence mode, per GPU",
    },
    Field {
        name: "mig_enabled",
        aliases: &["mig"],
        kind: Kind::Bool,
        read: Read::Gpu(|g| g.mig_enabled.map(Value::Bool)),
        doc: "MIG mode, per GPU (`n/a` on GPUs without MIG)",
    },
    Field {
        name: "compute_mode",
        aliases: &[],
        kind: Kind::Text,
        read: Read::Gpu(|g| text(&g.compute_mode)),
        doc: "compute mode, per GPU: `Default`, `Exclusive_Process` or `Prohibited`",
    },
    Field {
        name: "pcie_gen_max",
        aliases: &[],
        kind: Kind::Int,
        read: Read::Gpu(|g| g.pcie_link_gen_max.map(|v| Value::Int(u64::from(v)))),
        doc: "PCIe generation the GPU and its slot support, per GPU",
    },
    Field {
        name: "pcie_width_max",
        aliases: &[],
        kind: Kind::Int,
        read: Read::Gpu(|g| g.pcie_link_width_max.map(|v| Value::Int(u64::from(v)))),
        doc: "PCIe lanes the GPU and its slot support, per GPU",
    },
    Field {
        name: "power_limit_watts",
        aliases: &["power"],
        kind: Kind::Int,
        read: Read::GpuSample(|s, i| {
            gpu_sample(s, i)
                .and_then(|g| g.power_limit_enforced_milliwatts)
                .map(|mw| Value::Int(u64::from(mw.div_ceil(1000))))
        }),
        doc: "enforced power limit, W, per GPU, from the latest sample",
    },
];

/// A field by its name or alias.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

/// Every field name, for messages.
pub fn field_names() -> String {
    FIELDS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// The readings of `field` on a node: one `(None, value)` for a node-wide field, one
/// `(Some(gpu), value)` per GPU otherwise.
pub fn read(
    field: &Field,
    inv: &Inventory,
    latest: Option<&Sample>,
) -> Vec<(Option<u32>, Option<Value>)> {
    match field.read {
        Read::Node(f) => vec![(None, f(inv))],
        Read::Gpu(f) => inv.gpus.iter().map(|g| (Some(g.index), f(g))).collect(),
        Read::GpuSample(f) => inv
            .gpus
            .iter()
            .map(|g| (Some(g.index), latest.and_then(|s| f(s, g.index))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for f in FIELDS {
            for n in std::iter::once(f.name).chain(f.aliases.iter().copied()) {
                assert!(seen.insert(n), "{n} twice");
            }
        }
        assert_eq!(field("driver").unwrap().name, "driver_version");
        assert!(field("nope").is_none());
    }

    #[test]
    fn reads_node_and_gpu_fields() {
        let mut inv = Inventory::default();
        inv.driver.driver_version = "550.54.15".into();
        inv.gpus = (0..2)
            .map(|i| GpuInfo {
                index: i,
                vbios_version: format!("96.00.89.00.0{i}"),
                ecc_enabled: Some(true),
                ..Default::default()
            })
            .collect();
        let r = |name| read(field(name).unwrap(), &inv, None);
        assert_eq!(r("driver"), [(None, Some(Value::Text("550.54.15".into())))]);
        assert_eq!(r("gpu_count"), [(None, Some(Value::Int(2)))]);
        assert_eq!(r("kernel"), [(None, None)]);
        assert_eq!(
            r("vbios")[1],
            (Some(1), Some(Value::Text("96.00.89.00.01".into())))
        );
        assert_eq!(r("mig"), [(Some(0), None), (Some(1), None)]);
        assert_eq!(r("power"), [(Some(0), None), (Some(1), None)]);
    }
}
