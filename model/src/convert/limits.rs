//! What one wire message may carry, as a value the collector reads from its config
//! (`[limits]` in `collector.toml`, docs/limits.md) instead of constants compiled in.
//!
//! The defaults are the constants of [`crate::convert`]: generous for real fleets, small
//! enough that a corrupt or hostile message cannot make the collector allocate without bound.
//! Every refusal names the config key that set the limit, so an operator knows what to raise.

use serde::{Deserialize, Serialize};

use super::{MAX_EVENTS_PER_BATCH, MAX_GPUS_PER_NODE, MAX_ID_LEN, MAX_SAMPLES_PER_BATCH};

/// Limits checked while a Hello or a batch is converted (counts are entries of one message,
/// lengths are bytes of UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WireLimits {
    /// GPUs in one inventory or one sample (entries). Key `max_gpus_per_node`.
    pub max_gpus_per_node: usize,
    /// Samples (node readings) in one batch (entries). Key `max_batch_samples`.
    pub max_batch_samples: usize,
    /// Events in one batch (entries). Key `max_batch_events`.
    pub max_batch_events: usize,
    /// Bytes of each identifying string of a Hello: agent version, GPU source, machine and
    /// boot ids, session id. Host names are DNS names (at most 253 bytes) whatever this says.
    /// Key `max_string_bytes`.
    pub max_string_bytes: usize,
    /// Labels one node may carry (entries). Key `max_labels`.
    pub max_labels: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits {
            max_gpus_per_node: MAX_GPUS_PER_NODE,
            max_batch_samples: MAX_SAMPLES_PER_BATCH,
            max_batch_events: MAX_EVENTS_PER_BATCH,
            max_string_bytes: MAX_ID_LEN,
            max_labels: crate::labels::MAX_LABELS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_constants_and_a_partial_table_keeps_the_rest() {
        let d = WireLimits::default();
        assert_eq!(
            (d.max_gpus_per_node, d.max_batch_samples, d.max_batch_events),
            (64, 3_600, 10_000)
        );
        assert_eq!((d.max_string_bytes, d.max_labels), (128, 64));
        let l: WireLimits = toml::from_str("max_gpus_per_node = 4").unwrap();
        assert_eq!(
            l,
            WireLimits {
                max_gpus_per_node: 4,
                ..d
            }
        );
        assert!(toml::from_str::<WireLimits>("max_gpus = 4").is_err());
    }
}
