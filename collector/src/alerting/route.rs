//! Routing: which sinks an alert goes to, and with what timing (group window, repeat
//! interval, minimum firing duration). Pure: built once from the config, asked per alert.

use std::time::Duration;

use gpufleet_model::{Labels, Selector, Severity};

use super::config::{AlertsConfig, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL, RouteConfig};

/// How one sink handles one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub group_wait: Duration,
    pub repeat_interval: Duration,
    pub min_firing: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            group_wait: DEFAULT_GROUP_WAIT,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            min_firing: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
struct Route {
    sinks: Vec<String>,
    severity: Vec<Severity>,
    cause: Vec<String>,
    labels: Selector,
    timing: Timing,
}

impl Route {
    fn matches(&self, severity: Severity, cause: &str, labels: &Labels) -> bool {
        (self.severity.is_empty() || self.severity.contains(&severity))
            && (self.cause.is_empty() || self.cause.iter().any(|p| cause.starts_with(p.as_str())))
            && self.labels.matches(labels)
    }
}

impl From<&RouteConfig> for Route {
    fn from(r: &RouteConfig) -> Self {
        Route {
            sinks: r.sinks.clone(),
            severity: r.severity.clone(),
            cause: r.cause.clone(),
            labels: r.labels.clone(),
            timing: Timing {
                group_wait: r.group_wait,
                repeat_interval: r.repeat_interval,
                min_firing: r.min_firing,
            },
        }
    }
}

/// The routing table: routes from the config, plus sinks that take every alert (the
/// `webhooks` list, and every named sink when no route is configured).
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
    catch_all: Vec<String>,
}

impl Router {
    /// `webhook_names` are the names given to `config.webhooks` (they get every alert).
    pub fn new(config: &AlertsConfig, webhook_names: &[String]) -> Router {
        let mut catch_all = webhook_names.to_vec();
        if config.routes.is_empty() {
            catch_all.extend(config.sinks.keys().cloned());
        }
        Router {
            routes: config.routes.iter().map(Route::from).collect(),
            catch_all,
        }
    }

    /// The sinks an alert goes to, each once, with the timing of the first route naming it.
    pub fn route(&self, severity: Severity, cause: &str, labels: &Labels) -> Vec<(String, Timing)> {
        let mut out: Vec<(String, Timing)> = self
            .catch_all
            .iter()
            .map(|s| (s.clone(), Timing::default()))
            .collect();
        for r in self
            .routes
            .iter()
            .filter(|r| r.matches(severity, cause, labels))
        {
            for s in &r.sinks {
                if !out.iter().any(|(n, _)| n == s) {
                    out.push((s.clone(), r.timing));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(toml_text: &str) -> Router {
        let c = AlertsConfig::parse_file_text(toml_text, "t").unwrap();
        Router::new(&c, &["webhook-1".to_string()])
    }

    const SINKS: &str = r#"
[alerts.sinks.pager]
type = "pagerduty"
routing_key = "0123456789abcdef0123456789abcdef"
[alerts.sinks.chat]
type = "slack"
url = "https://hooks.slack.com/x"
"#;

    fn names(v: Vec<(String, Timing)>) -> Vec<String> {
        v.into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn routes_select_by_severity_cause_prefix_and_labels() {
        let r = router(&format!(
            "{SINKS}
[[alerts.routes]]
sinks = [\"pager\"]
severity = [\"critical\"]
labels = \"pool=training\"
for = \"2m\"
[[alerts.routes]]
sinks = [\"chat\", \"pager\"]
cause = [\"compliance.\", \"gpu.thermal\"]
"
        ));
        let training: Labels = [("pool".to_string(), "training".to_string())].into();
        let none = Labels::new();
        type Case<'a> = (Severity, &'a str, &'a Labels, &'a [&'a str]);
        let cases: &[Case] = &[
            (
                Severity::Critical,
                "gpu.lost",
                &training,
                &["webhook-1", "pager"],
            ),
            (Severity::Critical, "gpu.lost", &none, &["webhook-1"]),
            (
                Severity::Warning,
                "gpu.thermal.sw",
                &none,
                &["webhook-1", "chat", "pager"],
            ),
            (
                Severity::Warning,
                "compliance.driver",
                &training,
                &["webhook-1", "chat", "pager"],
            ),
            (Severity::Warning, "gpu.pcie", &training, &["webhook-1"]),
        ];
        for (sev, cause, labels, want) in cases {
            assert_eq!(
                names(r.route(*sev, cause, labels)),
                *want,
                "{sev} {cause} {labels:?}"
            );
        }
        let timing = r.route(Severity::Critical, "gpu.thermal.hw", &training);
        assert_eq!(
            timing[1],
            (
                "pager".into(),
                Timing {
                    min_firing: Duration::from_secs(120),
                    ..Timing::default()
                }
            ),
            "first route's timing"
        );
    }

    #[test]
    fn without_routes_every_sink_gets_everything() {
        let r = router(SINKS);
        assert_eq!(
            names(r.route(Severity::Info, "x", &Labels::new())),
            ["webhook-1", "chat", "pager"]
        );
    }
}
