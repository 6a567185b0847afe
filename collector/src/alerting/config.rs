//! `[alerts]` in the collector's config file (docs/alerts.md): named sinks, routes that pick
//! sinks by severity, cause prefix and node labels, and how hard delivery tries. Every struct
//! refuses unknown keys, so a typo is an error naming the key instead of a silently ignored
//! setting.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gpufleet_model::{Selector, Severity};
use serde::{Deserialize, Deserializer};

use super::sinks::SinkConfig;

/// Alerts of one node that come due within this window are one notification.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_millis(300);
/// A still-firing alert is sent again after this long (Alertmanager's default).
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Generic webhook URLs that receive every alert without any route
    /// (`gpufleet serve --alert-webhook URL` adds to these). Named `webhook-1`, `webhook-2`, …
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Base URL under which the collector serves node pages; alerts then link to
    /// `{external_url}/nodes/NAME` (Alertmanager's `generatorURL`). Unset: alerts carry the
    /// `gpufleet node NAME` command only.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Named sinks (`[alerts.sinks.NAME]` with `type = "webhook" | "slack" | "pagerduty" |
    /// "alertmanager" | "exec"`).
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Which alerts go to which sinks. Without any route, every sink receives every alert.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// One route: alerts matching every given condition go to `sinks`, with this timing. Every
/// matching route sends (a sink named by several matching routes gets an alert once, timed
/// by the first of them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names from `[alerts.sinks]`.
    pub sinks: Vec<String>,
    /// Only these severities (`critical`, `warning`, `info`); empty: all.
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// Only causes starting with one of these (`gpu.thermal`, `compliance.`); empty: all.
    #[serde(default)]
    pub cause: Vec<String>,
    /// Only nodes whose labels match this kubectl-style selector (`pool=training,rack!=r13`).
    #[serde(default, deserialize_with = "selector")]
    pub labels: Selector,
    /// Alerts of one node due within this window are sent as one notification.
    #[serde(default = "group_wait", with = "duration")]
    pub group_wait: Duration,
    /// A still-firing alert is re-sent after this long.
    #[serde(default = "repeat_interval", with = "duration")]
    pub repeat_interval: Duration,
    /// Only alerts that have been firing this long are sent (a finding that resolves sooner
    /// sends neither firing nor resolved). Like Prometheus' `for`.
    #[serde(default, rename = "for", with = "duration")]
    pub min_firing: Duration,
}

/// How hard one notification is tried.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// One attempt (HTTP request or program run) is abandoned after this long.
    #[serde(default = "timeout", with = "duration")]
    pub timeout: Duration,
    /// Wait before the first retry; doubled on each further retry (with jitter).
    #[serde(default = "initial_backoff", with = "duration")]
    pub initial_backoff: Duration,
    /// Longest wait between retries (a receiver's `Retry-After` may ask for longer).
    #[serde(default = "max_backoff", with = "duration")]
    pub max_backoff: Duration,
    /// A notification still failing this long after it was first tried is recorded as
    /// failed and counted.
    #[serde(default = "give_up_after", with = "duration")]
    pub give_up_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: timeout(),
            initial_backoff: initial_backoff(),
            max_backoff: max_backoff(),
            give_up_after: give_up_after(),
        }
    }
}

fn group_wait() -> Duration {
    DEFAULT_GROUP_WAIT
}
fn repeat_interval() -> Duration {
    DEFAULT_REPEAT_INTERVAL
}
fn timeout() -> Duration {
    Duration::from_secs(10)
}
fn initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn give_up_after() -> Duration {
    Duration::from_secs(3600)
}

/// A bad `[alerts]` setting: which key, and why.
#[derive(Debug, thiserror::Error)]
#[error("{origin}{}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct AlertsConfigError {
    /// `FILE: ` when known (with the line in `message` when TOML knows it).
    pub origin: String,
    /// The full key, e.g. `alerts.sinks.oncall.url`.
    pub key: String,
    pub message: String,
}

impl AlertsConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        AlertsConfigError {
            origin: String::new(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl AlertsConfig {
    /// Checks what serde cannot: route sinks exist, URLs parse, each sink's own settings.
    pub fn check(&self) -> Result<(), AlertsConfigError> {
        for (i, url) in self.webhooks.iter().enumerate() {
            check_url(&format!("alerts.webhooks[{i}]"), url)?;
        }
        if let Some(u) = &self.external_url {
            check_url("alerts.external_url", u)?;
        }
        for (name, sink) in &self.sinks {
            sink.check(&format!("alerts.sinks.{name}"))?;
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.sinks.is_empty() {
                return Err(AlertsConfigError::new(
                    format!("alerts.routes[{i}].sinks"),
                    "a route must name at least one sink",
                ));
            }
            for s in &r.sinks {
                if !self.sinks.contains_key(s) {
                    let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
                    return Err(AlertsConfigError::new(
                        format!("alerts.routes[{i}].sinks"),
                        format!(
                            "no sink named {s:?} (defined: {}); add [alerts.sinks.{s}]",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        let d = &self.delivery;
        if d.timeout.is_zero() {
            return Err(AlertsConfigError::new(
                "alerts.delivery.timeout",
                "must be more than 0s",
            ));
        }
        if d.max_backoff < d.initial_backoff {
            return Err(AlertsConfigError::new(
                "alerts.delivery.max_backoff",
                "must be at least alerts.delivery.initial_backoff",
            ));
        }
        Ok(())
    }

    /// Parses the `[alerts]` table of a collector config file's text (other tables are
    /// left to the rest of the config) and checks it.
    pub fn parse_file_text(text: &str, origin: &str) -> Result<AlertsConfig, AlertsConfigError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            alerts: AlertsConfig,
        }
        let file: File = toml::from_str(text).map_err(|e| AlertsConfigError {
            origin: format!("{origin}: "),
            key: String::new(),
            message: e.to_string().trim_end().to_string(),
        })?;
        file.alerts.check().map_err(|mut e| {
            e.origin = format!("{origin}: ");
            if let Some(line) = line_of(text, &e.key) {
                e.origin = format!("{origin}:{line}: ");
            }
            e
        })?;
        Ok(file.alerts)
    }

    /// [`AlertsConfig::parse_file_text`] of the file at `path`.
    pub fn load(path: &Path) -> Result<AlertsConfig, AlertsConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AlertsConfigError {
            origin: format!("{origin}: "),
            key: String::new(),
            message: format!("cannot read it: {e}"),
        })?;
        AlertsConfig::parse_file_text(&text, &origin)
    }
}

/// The line (1-based) where the table holding `key` starts, for errors found after parsing:
/// `[alerts.sinks.NAME]` for a sink's key, the n-th `[[alerts.routes]]` for a route's.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let header = |want: &str, nth: usize| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.trim().replace(' ', "") == want)
            .nth(nth)
            .map(|(i, _)| i + 1)
    };
    if let Some(rest) = key.strip_prefix("alerts.sinks.") {
        let name = rest.split('.').next()?;
        return header(&format!("[alerts.sinks.{name}]"), 0);
    }
    if let Some(rest) = key.strip_prefix("alerts.routes[") {
        let n: usize = rest.split(']').next()?.parse().ok()?;
        return header("[[alerts.routes]]", n);
    }
    None
}

pub(crate) fn check_url(key: &str, url: &str) -> Result<(), AlertsConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(u) => Err(AlertsConfigError::new(
            key,
            format!("{url:?} is a {} URL; use http:// or https://", u.scheme()),
        )),
        Err(e) => Err(AlertsConfigError::new(
            key,
            format!("{url:?} is not a URL ({e}); e.g. https://hooks.example.com/gpufleet"),
        )),
    }
}

fn selector<'de, D: Deserializer<'de>>(d: D) -> Result<Selector, D::Error> {
    let text = String::deserialize(d)?;
    Selector::parse(&text).map_err(serde::de::Error::custom)
}

/// Durations as humantime strings (`"300ms"`, `"5m"`, `"4h"`).
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"5m\", \"4h\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "0.0.0.0:50051"   # other tables belong to the rest of the config

[alerts]
webhooks = ["http://127.0.0.1:9/hook"]

[alerts.sinks.oncall]
type = "pagerduty"
routing_key = "0123456789abcdef0123456789abcdef"

[alerts.sinks.chat]
type = "slack"
url = "https://hooks.slack.com/services/T/B/X"

[[alerts.routes]]
sinks = ["oncall"]
severity = ["critical"]
cause = ["gpu."]
labels = "pool=training"
for = "1m"

[[alerts.routes]]
sinks = ["chat"]
repeat_interval = "1h"
"#;

    #[test]
    fn a_complete_file_parses_with_defaults_filled_in() {
        let c = AlertsConfig::parse_file_text(GOOD, "collector.toml").unwrap();
        assert_eq!(c.webhooks.len(), 1);
        assert_eq!(c.sinks.len(), 2);
        assert_eq!(c.routes[0].min_firing, Duration::from_secs(60));
        assert_eq!(c.routes[0].group_wait, DEFAULT_GROUP_WAIT);
        assert_eq!(c.routes[1].repeat_interval, Duration::from_secs(3600));
        assert_eq!(c.routes[0].severity, [Severity::Critical]);
        assert!(!c.routes[0].labels.is_everything());
        assert_eq!(c.delivery.give_up_after, Duration::from_secs(3600));
    }

    #[test]
    fn bad_settings_name_the_file_line_and_key() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "unknown key",
                "[alerts]\nwebhook = []\n",
                &["collector.toml", "line 2", "webhook"],
            ),
            (
                "bad duration",
                "[[alerts.routes]]\nsinks = []\nfor = \"soon\"\n",
                &["line 3", "\"soon\" is not a duration"],
            ),
            (
                "unknown sink type",
                "[alerts.sinks.x]\ntype = \"carrier-pigeon\"\n",
                &["carrier-pigeon", "webhook"],
            ),
            (
                "unknown sink key",
                "[alerts.sinks.x]\ntype = \"slack\"\nurl = \"https://a/b\"\nchannel = \"#ops\"\n",
                &[
                    "collector.toml: TOML parse error at line 1",
                    "unknown field `channel`",
                ],
            ),
            (
                "route to a missing sink",
                "[alerts.sinks.a]\ntype = \"slack\"\nurl = \"https://a/b\"\n[[alerts.routes]]\nsinks = [\"b\"]\n",
                &[
                    "collector.toml:4",
                    "alerts.routes[0].sinks",
                    "no sink named \"b\"",
                ],
            ),
            (
                "bad sink URL",
                "[alerts.sinks.a]\ntype = \"webhook\"\nurl = \"ftp://x\"\n",
                &["collector.toml:1", "alerts.sinks.a.url", "ftp"],
            ),
            (
                "bad selector",
                "[[alerts.routes]]\nsinks = []\nlabels = \"pool in (\"\n",
                &["line 3", "labels"],
            ),
            (
                "bad webhook",
                "[alerts]\nwebhooks = [\"not a url\"]\n",
                &["alerts.webhooks[0]", "not a URL"],
            ),
        ];
        for (what, text, want) in cases {
            let e = AlertsConfig::parse_file_text(text, "collector.toml")
                .expect_err(what)
                .to_string();
            for w in *want {
                assert!(e.contains(w), "{what}: {e:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn a_file_without_alerts_is_the_default() {
        let c = AlertsConfig::parse_file_text("listen = \"[::]:1\"\n", "f").unwrap();
        assert!(c.sinks.is_empty() && c.routes.is_empty() && c.webhooks.is_empty());
    }
}
