//! `gpufleet serve`'s configuration: one struct that is both the command line (clap) and the
//! config file (`/etc/gpufleet/collector.toml`, serde), so every flag has a key of the same
//! name and the defaults are written once. Layering (default < file < environment < flag) is
//! [`gpufleet_model::config_file`]; `docs/config.md` documents the keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gpufleet_model::config_file::{self, ConfigError, ConfigFile, Listen, LogFormat, key_docs};
use serde::{Deserialize, Serialize};

use crate::diagnose::fleet_scope::{DEFAULT_MIN_NODES, DEFAULT_MIN_SHARE, FleetScopeConfig};
use crate::fleet::Window;
use crate::server::ServerConfig;

/// Read when present and no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/gpufleet/collector.toml";
pub const DEFAULT_LISTEN: &str = "0.0.0.0:50051";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/gpufleet";
pub const DEFAULT_RETENTION: &str = "7d";
/// How long the 1-minute aggregates are kept (docs/storage.md).
pub const DEFAULT_RETENTION_1M: &str = "35d";
/// How long the 1-hour aggregates are kept.
pub const DEFAULT_RETENTION_1H: &str = "400d";
/// dcgm-exporter's port, so existing scrape configs find the fleet's GPU series.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9400";
pub const DEFAULT_WINDOW_SAMPLES: usize = 300;

/// Example lines shown commented out for keys without a default.
const EXAMPLES: &[(&str, &str)] = &[
    ("sample_interval", "sample_interval = \"1s\""),
    ("policy", "policy = \"/etc/gpufleet/policy.toml\""),
    ("tls_cert", "tls_cert = \"/etc/gpufleet/tls/collector.pem\""),
    ("tls_key", "tls_key = \"/etc/gpufleet/tls/collector.key\""),
    (
        "tls_client_ca",
        "tls_client_ca = \"/etc/gpufleet/tls/ca.pem\"",
    ),
];

#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Address to listen on for agents and the CLI (gRPC).
    #[arg(long, env = "GPUFLEET_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the embedded database lives.
    #[arg(long, env = "GPUFLEET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Ask every agent to sample at this interval (default: agents keep their own).
    #[arg(long, env = "GPUFLEET_SAMPLE_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub sample_interval: Option<Duration>,
    /// Recent samples kept in memory per node for diagnosis (at least 10).
    #[arg(long, env = "GPUFLEET_WINDOW_SAMPLES", default_value_t = DEFAULT_WINDOW_SAMPLES)]
    pub window_samples: usize,
    /// How long samples and events are kept in the database.
    #[arg(long, env = "GPUFLEET_RETENTION", default_value = DEFAULT_RETENTION, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How long the 1-minute min/mean/max aggregates of the charted readings are kept
    /// (`gpufleet series`; docs/storage.md). At least `retention`.
    #[arg(long, env = "GPUFLEET_RETENTION_1M", default_value = DEFAULT_RETENTION_1M, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention_1m: Duration,
    /// How long the 1-hour aggregates are kept. At least `retention_1m`.
    #[arg(long, env = "GPUFLEET_RETENTION_1H", default_value = DEFAULT_RETENTION_1H, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention_1h: Duration,
    /// Compliance policy to evaluate continuously (docs/policy.md): its violations are
    /// `compliance.*` findings, and `gpufleet audit` uses it by default. Re-read on SIGHUP
    /// (a bad file on reload keeps the old policy and logs why).
    #[arg(long, env = "GPUFLEET_POLICY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// Where Prometheus scrapes the fleet's /metrics (dcgm-exporter names), or `off`.
    #[arg(long, env = "GPUFLEET_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: Listen,
    /// Log format: `human`, or `json` (one object a line, for log shippers).
    #[arg(long, env = "GPUFLEET_LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
    /// A cause on at least this share of a group's nodes (0..1] is named once, fleet-wide
    /// (docs/causes.md), with the node findings folded under it.
    #[arg(long, env = "GPUFLEET_FLEET_MIN_SHARE", default_value_t = DEFAULT_MIN_SHARE, value_parser = parse_share)]
    pub fleet_min_share: f64,
    /// ... and on at least this many nodes.
    #[arg(long, env = "GPUFLEET_FLEET_MIN_NODES", default_value_t = DEFAULT_MIN_NODES)]
    pub fleet_min_nodes: u32,
    /// Node labels that group nodes for fleet-wide causes besides their GPU model
    /// (comma-separated on the command line), e.g. `rack`, `row`, `pdu`.
    #[arg(
        long,
        env = "GPUFLEET_FLEET_GROUP_LABELS",
        value_delimiter = ',',
        default_value = "rack"
    )]
    pub fleet_group_labels: Vec<String>,
    /// The collector's TLS certificate chain (PEM, leaf first); with `tls_key` agents and the
    /// CLI connect with https:// (docs/security.md). Re-read on SIGHUP.
    #[arg(long, env = "GPUFLEET_SERVE_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`. Re-read on SIGHUP.
    #[arg(long, env = "GPUFLEET_SERVE_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that sign client certificates: every agent and CLI must present
    /// one (mutual TLS), and an agent streams only as the node its certificate names (CN or a
    /// DNS SAN). Needs `tls_cert`. Re-read on SIGHUP.
    #[arg(long, env = "GPUFLEET_TLS_CLIENT_CA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require a bearer token (`gpufleet token create`) on every call but health checks: node
    /// tokens stream as their node, read tokens query, admin tokens also change state.
    #[arg(long, env = "GPUFLEET_AUTH_TOKENS")]
    pub auth_tokens: bool,
    /// Listen beyond loopback without client authentication (neither `tls_client_ca` nor
    /// `auth_tokens`): anyone who reaches the port may stream as any node and read the
    /// fleet. Without it such a collector refuses to start.
    #[arg(long, env = "GPUFLEET_INSECURE")]
    pub insecure: bool,
    /// `[alerts]`: sinks, routes, grouping and delivery (docs/alerts.md). File only; `gpufleet
    /// serve --alert-webhook URL` adds to `alerts.webhooks`.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub alerts: crate::alerting::config::AlertsConfig,
    /// `[limits]`: message, batch, GPU, string and label limits, samples per second per node,
    /// streams, connections and time-outs (docs/limits.md). File only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub limits: crate::limits::LimitsConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is an address"),
            data_dir: DEFAULT_DATA_DIR.into(),
            sample_interval: None,
            window_samples: DEFAULT_WINDOW_SAMPLES,
            retention: humantime::parse_duration(DEFAULT_RETENTION)
                .expect("DEFAULT_RETENTION is a duration"),
            retention_1m: humantime::parse_duration(DEFAULT_RETENTION_1M)
                .expect("DEFAULT_RETENTION_1M is a duration"),
            retention_1h: humantime::parse_duration(DEFAULT_RETENTION_1H)
                .expect("DEFAULT_RETENTION_1H is a duration"),
            policy: None,
            metrics_listen: DEFAULT_METRICS_LISTEN
                .parse()
                .expect("DEFAULT_METRICS_LISTEN is an address"),
            log_format: LogFormat::Human,
            fleet_min_share: DEFAULT_MIN_SHARE,
            fleet_min_nodes: DEFAULT_MIN_NODES,
            fleet_group_labels: vec!["rack".to_string()],
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_tokens: false,
            insecure: false,
            alerts: Default::default(),
            limits: Default::default(),
        }
    }
}

impl CollectorConfig {
    /// The file's values with what the user set (`user_set(key)`: on the command line or in
    /// the environment) from `flags` on top.
    pub fn resolve(
        file: &ConfigFile,
        flags: &CollectorConfig,
        user_set: impl Fn(&str) -> bool,
    ) -> Result<CollectorConfig, ConfigError> {
        file.layer(config_file::overrides(flags, user_set)?)
    }

    /// The complete default `collector.toml`, every key commented with its help.
    pub fn default_file() -> String {
        let cmd = <CollectorConfig as clap::Args>::augment_args(clap::Command::new("serve"));
        config_file::commented_default(
            "gpufleet serve configuration (docs/config.md). Every key is also a flag\n\
             (`--data-dir` for data_dir) and most an environment variable; flags win.",
            &CollectorConfig::default(),
            &key_docs(&cmd, EXAMPLES),
        )
        .map(|text| {
            text + "\n# Alert sinks and routes: an [alerts] table, documented in docs/alerts.md, e.g.\n\
                    # [alerts]\n\
                    # webhooks = [\"https://hooks.example.com/gpufleet\"]\n\n"
                + &crate::limits::LimitsConfig::default_table()
        })
        .expect("the collector's defaults serialize to TOML")
    }

    /// Settings each fine alone but unusable together, named by key and flag.
    pub fn check(&self) -> Result<(), String> {
        self.limits.check()?;
        // Whole days as written in the file (`35d`); humantime would print 35 days as
        // "1month 4days 13h 26m 24s".
        let d = |d: &Duration| match d.as_secs() {
            s if s > 0 && s % 86_400 == 0 && d.subsec_nanos() == 0 => format!("{}d", s / 86_400),
            _ => humantime::format_duration(*d).to_string(),
        };
        if self.retention_1m < self.retention {
            return Err(format!(
                "retention_1m (--retention-1m, {}) is shorter than retention ({}): the 1-minute \
                 aggregates would be gone before the samples they summarize; raise retention_1m",
                d(&self.retention_1m),
                d(&self.retention)
            ));
        }
        if self.retention_1h < self.retention_1m {
            return Err(format!(
                "retention_1h (--retention-1h, {}) is shorter than retention_1m ({}); raise \
                 retention_1h",
                d(&self.retention_1h),
                d(&self.retention_1m)
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err("tls_cert (--tls-cert) is set without tls_key (--tls-key)".into());
            }
            (None, Some(_)) => {
                return Err("tls_key (--tls-key) is set without tls_cert (--tls-cert)".into());
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(
                "tls_client_ca (--tls-client-ca) needs tls_cert and tls_key: client certificates \
                 are only asked for over TLS"
                    .into(),
            );
        }
        Ok(())
    }

    /// What [`crate::server::start`] needs.
    pub fn server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(self.listen, self.data_dir.clone());
        config.window = Window {
            samples: self.window_samples.max(10),
            ..Window::default()
        };
        config.sample_interval_ms = self
            .sample_interval
            .map(|d| d.as_millis().clamp(100, u32::MAX as u128) as u32);
        config.retention = self.retention;
        config.retention_1m = self.retention_1m;
        config.retention_1h = self.retention_1h;
        config.metrics_listen = self.metrics_listen.addr();
        config.alerts = self.alerts.clone();
        config.limits = self.limits.clone();
        config.auth = crate::auth::AuthConfig {
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::auth::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            tokens: self.auth_tokens,
            insecure: self.insecure,
        };
        config.engine.fleet_scope = FleetScopeConfig {
            min_share: self.fleet_min_share,
            min_nodes: self.fleet_min_nodes,
            group_labels: self.fleet_group_labels.clone(),
        };
        config
    }
}

/// `fleet_min_share`: a share in (0, 1].
fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a share in (0, 1], e.g. 0.5")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{FromArgMatches, Parser};

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        config: CollectorConfig,
    }

    /// The shipped `deploy/config/collector.toml` reads through the real struct, as it is and
    /// with every commented-out key switched on.
    #[test]
    fn the_shipped_config_file_is_valid_with_and_without_its_comments() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/config/collector.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let as_is: CollectorConfig = ConfigFile::parse(&text, "collector.toml")
            .unwrap()
            .parse_as()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(as_is.listen, CollectorConfig::default().listen);
        let on = config_file::with_commented_keys_on(&text);
        let all: CollectorConfig = ConfigFile::parse(&on, "collector.toml (uncommented)")
            .unwrap()
            .parse_as()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.fleet_group_labels, ["rack"]);
        assert!(all.server_config().alerts.check().is_ok());
    }

    #[test]
    fn the_clap_defaults_are_the_config_defaults() {
        let m = <Serve as clap::CommandFactory>::command()
            .mut_args(|a| match a.get_env() {
                // This process's environment must not leak into the defaults.
                Some(_) => a.env(None),
                None => a,
            })
            .get_matches_from(["serve"]);
        let parsed = Serve::from_arg_matches(&m).unwrap();
        assert_eq!(parsed.config, CollectorConfig::default());
    }

    #[test]
    fn the_default_file_parses_back_to_the_defaults_and_lists_every_key() {
        let text = CollectorConfig::default_file();
        let back: CollectorConfig = ConfigFile::parse(&text, "default")
            .unwrap()
            .parse_as()
            .unwrap();
        assert_eq!(back, CollectorConfig::default());
        let cmd = <CollectorConfig as clap::Args>::augment_args(clap::Command::new("serve"));
        for d in key_docs(&cmd, EXAMPLES) {
            assert!(
                text.contains(&format!("\n{} = ", d.key))
                    || text.contains(&format!("\n# {} = ", d.key)),
                "{} missing from the default file:\n{text}",
                d.key
            );
        }
        assert!(text.contains("metrics_listen = \"0.0.0.0:9400\""), "{text}");
        // Uncommenting the examples gives a valid file too.
        let examples: String = EXAMPLES.iter().map(|(_, e)| format!("{e}\n")).collect();
        let c: CollectorConfig = ConfigFile::parse(&examples, "examples")
            .unwrap()
            .parse_as()
            .unwrap();
        assert_eq!(c.sample_interval, Some(Duration::from_secs(1)));
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = ConfigFile::parse(
            "listen = \"127.0.0.1:7000\"\nretention = \"1d\"\nmetrics_listen = \"off\"\n",
            "collector.toml",
        )
        .unwrap();
        let flags = CollectorConfig {
            listen: "127.0.0.1:8000".parse().unwrap(),
            ..CollectorConfig::default()
        };
        let c = CollectorConfig::resolve(&file, &flags, |k| k == "listen").unwrap();
        assert_eq!(c.listen, flags.listen);
        assert_eq!(c.retention, Duration::from_secs(86400));
        assert_eq!(c.metrics_listen, Listen::Off);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.server_config().metrics_listen, None);
    }

    #[test]
    fn the_limits_table_reaches_the_server_and_bad_values_name_the_key() {
        let file = ConfigFile::parse(
            "listen = \"127.0.0.1:7000\"\n[limits]\nmax_gpus_per_node = 4\nmax_streams = 10\n",
            "collector.toml",
        )
        .unwrap();
        let c: CollectorConfig =
            CollectorConfig::resolve(&file, &CollectorConfig::default(), |_| false).unwrap();
        c.check().unwrap();
        let server = c.server_config();
        assert_eq!(server.limits.max_gpus_per_node, 4);
        assert_eq!(server.limits.max_streams, 10);
        assert_eq!(
            server.limits.hello_timeout,
            crate::limits::LimitsConfig::default().hello_timeout
        );
        let bad = ConfigFile::parse("[limits]\nmax_connections = 0\n", "collector.toml").unwrap();
        let c: CollectorConfig =
            CollectorConfig::resolve(&bad, &CollectorConfig::default(), |_| false).unwrap();
        let e = c.check().unwrap_err();
        assert!(e.contains("limits.max_connections"), "{e}");
        let typo = ConfigFile::parse("\n[limits]\nmax_conections = 5\n", "collector.toml").unwrap();
        let e =
            CollectorConfig::resolve(&typo, &CollectorConfig::default(), |_| false).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("max_conections"), "{e}");
    }

    #[test]
    fn tier_retention_shorter_than_the_finer_tier_is_refused_by_key() {
        let check = |text: &str| {
            let file = ConfigFile::parse(text, "collector.toml").unwrap();
            CollectorConfig::resolve(&file, &CollectorConfig::default(), |_| false)
                .unwrap()
                .check()
        };
        check("").unwrap();
        check("retention = \"30d\"\nretention_1m = \"30d\"\nretention_1h = \"30d\"\n").unwrap();
        let e = check("retention = \"60d\"\n").unwrap_err();
        assert!(
            e.starts_with("retention_1m (--retention-1m, 35d) is shorter than retention (60d)"),
            "{e}"
        );
        let e = check("retention_1h = \"10d\"\n").unwrap_err();
        assert!(e.contains("retention_1h") && e.contains("raise"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line_and_key() {
        for (text, line, key) in [
            (
                "listen = \"127.0.0.1:1\"\nretension = \"1d\"\n",
                2,
                "retension",
            ),
            ("\n\nretention = \"a week\"\n", 3, "retention"),
            ("metrics_listen = \"nowhere\"\n", 1, "metrics_listen"),
            ("log_format = \"xml\"\n", 1, "log_format"),
        ] {
            let file = ConfigFile::parse(text, "/etc/gpufleet/collector.toml").unwrap();
            let e = CollectorConfig::resolve(&file, &CollectorConfig::default(), |_| false)
                .unwrap_err();
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
            assert!(
                e.to_string()
                    .starts_with("config /etc/gpufleet/collector.toml, line"),
                "{e}"
            );
        }
    }
}
