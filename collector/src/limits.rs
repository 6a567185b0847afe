//! `[limits]`: how much any one client may take of the collector (docs/limits.md) — message
//! and batch sizes, GPUs, strings and labels per node, samples per second per node,
//! concurrent streams and connections, and how long a silent connection or stream is kept.
//!
//! Each is a key of `collector.toml`'s `[limits]` table with a default sized for a fleet of
//! 10,000 nodes; what a client gets past each is in docs/limits.md. [`RateBucket`] is the
//! per-stream samples-per-second budget (pure: time is an argument).

use std::time::{Duration, Instant};

use gpufleet_model::convert::WireLimits;
use serde::{Deserialize, Serialize};

/// The window `max_samples_per_second` is measured over: a stream may send this many seconds'
/// worth at once (an agent's buffer replayed after an outage), then only at the rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Time-outs shorter than this would close healthy clients on a loaded host.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The smallest `max_message_bytes` that still carries a batch of one 64-GPU sample.
const MIN_MESSAGE_BYTES: usize = 64 << 10;

/// `[limits]` in `collector.toml`. Every key is optional; a missing key keeps its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest gRPC message (bytes) accepted from any client; larger ones are refused with
    /// OUT_OF_RANGE.
    pub max_message_bytes: usize,
    /// Samples (node readings) in one batch.
    pub max_batch_samples: usize,
    /// Events in one batch.
    pub max_batch_events: usize,
    /// GPUs in one node's inventory or sample.
    pub max_gpus_per_node: usize,
    /// Bytes of each identifying string of a Hello (agent version, GPU source, machine and
    /// boot ids, session id); host names are DNS names of at most 253 bytes.
    pub max_string_bytes: usize,
    /// Labels per node.
    pub max_labels: usize,
    /// Samples per second one node's stream may send, sustained over 10 s; a stream past it is
    /// slowed (its next message is read later), never refused, so an agent replaying its buffer
    /// after an outage catches up at this pace instead of losing data.
    pub max_samples_per_second: u32,
    /// Telemetry streams open at once (all nodes); a stream past it gets RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// TCP connections open at once (agents and CLIs); a connection past it is closed at once
    /// and counted. Keep it below the process's file-descriptor limit (`LimitNOFILE`).
    pub max_connections: usize,
    /// A stream that has sent nothing for this long (after its Hello) is ended with
    /// DEADLINE_EXCEEDED; a connection that has sent not a byte for this long plus
    /// `hello_timeout` is closed (agents ping every 20 s). Keep it several times the longest
    /// agent sample interval.
    #[serde(with = "humantime_serde")]
    pub idle_stream_timeout: Duration,
    /// A stream whose Hello has not come by then is ended with DEADLINE_EXCEEDED; a connection
    /// that has sent nothing (no TLS or HTTP/2 handshake) by then is closed.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let wire = WireLimits::default();
        LimitsConfig {
            max_message_bytes: 16 << 20,
            max_batch_samples: wire.max_batch_samples,
            max_batch_events: wire.max_batch_events,
            max_gpus_per_node: wire.max_gpus_per_node,
            max_string_bytes: wire.max_string_bytes,
            max_labels: wire.max_labels,
            max_samples_per_second: 100,
            max_streams: 20_000,
            max_connections: 20_000,
            idle_stream_timeout: Duration::from_secs(300),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// Doc lines of each key, in file order, for the commented default file.
pub const KEY_DOCS: &[(&str, &str)] = &[
    (
        "max_message_bytes",
        "Largest gRPC message (bytes) from any client; larger: OUT_OF_RANGE.",
    ),
    (
        "max_batch_samples",
        "Samples (node readings) in one batch; more: INVALID_ARGUMENT.",
    ),
    ("max_batch_events", "Events in one batch."),
    (
        "max_gpus_per_node",
        "GPUs in one node's inventory or sample.",
    ),
    (
        "max_string_bytes",
        "Bytes of a Hello's agent version, GPU source, machine/boot/session ids.",
    ),
    ("max_labels", "Labels per node."),
    (
        "max_samples_per_second",
        "Samples per second per node, sustained over 10 s: a faster stream is slowed, not refused.",
    ),
    (
        "max_streams",
        "Telemetry streams open at once; more: RESOURCE_EXHAUSTED.",
    ),
    (
        "max_connections",
        "TCP connections open at once; more are closed at once. Keep below LimitNOFILE.",
    ),
    (
        "idle_stream_timeout",
        "A stream silent this long is ended (DEADLINE_EXCEEDED); so is a silent connection.",
    ),
    (
        "hello_timeout",
        "A stream without its Hello by then is ended; a connection that sent nothing is closed.",
    ),
];

impl LimitsConfig {
    /// The limits conversion checks.
    pub fn wire(&self) -> WireLimits {
        WireLimits {
            max_gpus_per_node: self.max_gpus_per_node,
            max_batch_samples: self.max_batch_samples,
            max_batch_events: self.max_batch_events,
            max_string_bytes: self.max_string_bytes,
            max_labels: self.max_labels,
        }
    }

    /// Values that parse but cannot work, named by key.
    pub fn check(&self) -> Result<(), String> {
        let at_least = |key: &str, got: usize, min: usize| {
            if got < min {
                Err(format!("limits.{key} = {got}: must be at least {min}"))
            } else {
                Ok(())
            }
        };
        at_least(
            "max_message_bytes",
            self.max_message_bytes,
            MIN_MESSAGE_BYTES,
        )?;
        if self.max_message_bytes > u32::MAX as usize {
            return Err(format!(
                "limits.max_message_bytes = {}: at most {} (4 GiB)",
                self.max_message_bytes,
                u32::MAX
            ));
        }
        at_least("max_batch_samples", self.max_batch_samples, 1)?;
        at_least("max_batch_events", self.max_batch_events, 1)?;
        at_least("max_gpus_per_node", self.max_gpus_per_node, 1)?;
        // An agent's session id is a UUID.
        at_least("max_string_bytes", self.max_string_bytes, 36)?;
        at_least(
            "max_samples_per_second",
            self.max_samples_per_second as usize,
            1,
        )?;
        at_least("max_streams", self.max_streams, 1)?;
        at_least("max_connections", self.max_connections, 1)?;
        for (key, d) in [
            ("hello_timeout", self.hello_timeout),
            ("idle_stream_timeout", self.idle_stream_timeout),
        ] {
            if d < MIN_TIMEOUT {
                return Err(format!(
                    "limits.{key} = {}: must be at least 1s",
                    humantime::format_duration(d)
                ));
            }
        }
        if self.idle_stream_timeout < self.hello_timeout {
            return Err(format!(
                "limits.idle_stream_timeout ({}) is shorter than limits.hello_timeout ({})",
                humantime::format_duration(self.idle_stream_timeout),
                humantime::format_duration(self.hello_timeout)
            ));
        }
        Ok(())
    }

    /// The `[limits]` table of the commented default file: every key with its default.
    pub fn default_table() -> String {
        let values = toml::Table::try_from(LimitsConfig::default())
            .expect("the limits' defaults serialize to TOML");
        let mut out = String::from(
            "# How much any one client may take of the collector (docs/limits.md); file only, \
             no flags.\n[limits]\n",
        );
        for (key, doc) in KEY_DOCS {
            out.push_str(&format!("# {doc}\n{key} = {}\n", values[*key]));
        }
        out
    }
}

/// A stream's samples-per-second budget: a token bucket holding at most [`RATE_WINDOW`] worth
/// of samples. A batch takes its samples even past empty; the stream then waits until the
/// bucket is back at zero before its next message is read.
#[derive(Debug, Clone)]
pub struct RateBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl RateBucket {
    pub fn new(per_second: u32, now: Instant) -> RateBucket {
        let per_second = f64::from(per_second.max(1));
        let capacity = per_second * RATE_WINDOW.as_secs_f64();
        RateBucket {
            per_second,
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    /// Takes `samples` at `now`; returns how long to wait before reading the next message.
    pub fn take(&mut self, samples: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.tokens -= samples as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::config_file::ConfigFile;

    fn parse(text: &str) -> Result<LimitsConfig, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            limits: LimitsConfig,
        }
        let f: File = ConfigFile::parse(text, "collector.toml")
            .and_then(|f| f.parse_as())
            .map_err(|e| e.to_string())?;
        f.limits.check()?;
        Ok(f.limits)
    }

    #[test]
    fn a_partial_table_keeps_the_other_defaults() {
        let l = parse("[limits]\nmax_gpus_per_node = 4\nhello_timeout = \"3s\"\n").unwrap();
        assert_eq!(l.max_gpus_per_node, 4);
        assert_eq!(l.hello_timeout, Duration::from_secs(3));
        assert_eq!(l.wire().max_gpus_per_node, 4);
        assert_eq!(
            LimitsConfig {
                max_gpus_per_node: 64,
                hello_timeout: Duration::from_secs(10),
                ..l
            },
            LimitsConfig::default()
        );
        assert_eq!(parse("").unwrap(), LimitsConfig::default());
        assert_eq!(LimitsConfig::default().wire(), WireLimits::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, want) in [
            (
                "max_streams = 0",
                "limits.max_streams = 0: must be at least 1",
            ),
            ("max_connections = 0", "limits.max_connections"),
            ("max_message_bytes = 1000", "limits.max_message_bytes"),
            ("max_message_bytes = 5000000000", "at most 4294967295"),
            ("max_string_bytes = 8", "limits.max_string_bytes"),
            (
                "max_samples_per_second = 0",
                "limits.max_samples_per_second",
            ),
            ("hello_timeout = \"0s\"", "limits.hello_timeout = 0s"),
            (
                "idle_stream_timeout = \"5s\"",
                "limits.idle_stream_timeout (5s) is shorter than limits.hello_timeout (10s)",
            ),
            ("hello_timeout = \"soon\"", "key limits.hello_timeout"),
            ("max_streams = -1", "key limits.max_streams"),
            ("max_stream = 5", "max_stream"),
        ] {
            let e = parse(&format!("[limits]\n{text}\n")).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_default_table_parses_back_to_the_defaults() {
        let table = LimitsConfig::default_table();
        assert_eq!(parse(&table).unwrap(), LimitsConfig::default());
        for (key, _) in KEY_DOCS {
            assert!(table.contains(&format!("\n{key} = ")), "{key}: {table}");
        }
        let serialized = toml::Table::try_from(LimitsConfig::default()).unwrap();
        assert_eq!(serialized.len(), KEY_DOCS.len(), "every key documented");
    }

    #[test]
    fn the_rate_bucket_lets_a_window_through_then_paces() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = RateBucket::new(100, t0);
        // (at, samples, wait)
        for (at, samples, wait) in [
            (s(0), 1_000, Duration::ZERO),        // a full window at once
            (s(0), 100, s(1)),                    // one second beyond it
            (s(1), 100, s(1)),                    // the second refilled was taken again
            (s(2), 1, Duration::from_millis(10)), // back at zero: pacing at 100/s
            (s(100), 1, Duration::ZERO),          // a long pause refills only to the window
            (s(100), 999, Duration::ZERO),
            (s(100), 1, Duration::from_millis(10)),
        ] {
            let got = b.take(samples, t0 + at);
            assert!(
                got.abs_diff(wait) < Duration::from_micros(10),
                "{samples} at {at:?}: waited {got:?}, expected {wait:?}"
            );
        }
        // A clock going backwards takes nothing from the budget.
        let mut b = RateBucket::new(1, t0 + s(5));
        assert_eq!(b.take(10, t0), Duration::ZERO);
    }
}
