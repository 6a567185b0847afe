//! Alert sinks: where notifications go. Each sink is one file with its config struct (a
//! `[alerts.sinks.NAME]` table with `type = "<kind>"`) and its [`Sink`]; [`sinks!`] below is
//! the registry — adding a sink is its file plus one line there.
//!
//! A sink only sends; retries, backoff, give-up and the delivery log belong to the
//! dispatcher, which reads the [`Outcome`] of each attempt.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::alert::Notification;
use super::config::AlertsConfigError;

/// What the dispatcher hands every attempt.
#[derive(Clone)]
pub struct SendContext {
    pub client: reqwest::Client,
    /// One attempt is abandoned after this long.
    pub timeout: Duration,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The receiver took it; its answer (status and a bit of the body, or the exit status).
    Delivered(String),
    /// Worth trying again: no answer, 5xx, 429/408 (`after`: the receiver's `Retry-After`).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The receiver refused it for good (4xx): retrying cannot help.
    Reject(String),
}

pub trait Sink: Send + Sync {
    /// The `type` it is configured with.
    fn kind(&self) -> &'static str;
    /// Firing alerts must be re-sent at least this often (Alertmanager treats a firing alert
    /// it has not heard of within its `resolve_timeout` as resolved).
    fn resend_every(&self) -> Option<Duration> {
        None
    }
    /// One attempt at delivering `n`.
    fn send<'a>(&'a self, n: &'a Notification, ctx: &'a SendContext) -> BoxFuture<'a, Outcome>;
}

/// A sink's config table: checked at startup, then built.
pub trait SinkSpec {
    /// `key` is the table's name, e.g. `alerts.sinks.oncall`.
    fn check(&self, key: &str) -> Result<(), AlertsConfigError>;
    fn build(&self, name: &str) -> Box<dyn Sink>;
}

/// The registry: `Variant => module::ConfigStruct`, the variant's snake_case name being the
/// `type` value.
macro_rules! sinks {
    ($($variant:ident => $module:ident :: $config:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// One `[alerts.sinks.NAME]` table, by its `type`.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum SinkConfig {
            $($variant($module::$config),)*
        }

        impl SinkConfig {
            pub fn check(&self, key: &str) -> Result<(), AlertsConfigError> {
                match self {
                    $(SinkConfig::$variant(c) => c.check(key),)*
                }
            }

            pub fn build(&self, name: &str) -> Box<dyn Sink> {
                match self {
                    $(SinkConfig::$variant(c) => c.build(name),)*
                }
            }
        }
    };
}

sinks! {
    Webhook => webhook::WebhookConfig,
    Slack => slack::SlackConfig,
    Pagerduty => pagerduty::PagerdutyConfig,
    Alertmanager => alertmanager::AlertmanagerConfig,
    Exec => exec::ExecConfig,
}

/// The receiver's answer kept in the delivery log (status and the start of the body).
fn answer(status: reqwest::StatusCode, body: &str) -> String {
    let body = body.trim();
    let mut end = body.len().min(300);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    if body.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {}: {}", status.as_u16(), &body[..end])
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// POSTs a JSON body and classifies the answer: 2xx delivered; 408, 429 and 5xx (and no
/// answer at all) retried, honouring `Retry-After`; any other status refused.
pub async fn post_json(
    ctx: &SendContext,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Outcome {
    let mut req = ctx
        .client
        .post(url)
        .timeout(ctx.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Outcome::Retry {
                error: format!("no answer from {url} within {:?}", ctx.timeout),
                after: None,
            };
        }
        Err(e) => {
            return Outcome::Retry {
                error: format!("cannot reach {url}: {}", error_chain(&e)),
                after: None,
            };
        }
    };
    let status = resp.status();
    let after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, std::time::SystemTime::now()));
    let body = match tokio::time::timeout(ctx.timeout, resp.text()).await {
        Ok(Ok(b)) => b,
        _ => String::new(),
    };
    let said = answer(status, &body);
    if status.is_success() {
        Outcome::Delivered(said)
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Outcome::Retry { error: said, after }
    } else {
        Outcome::Reject(said)
    }
}

/// An error with its causes (reqwest's top level says little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("soon", now), None);
    }
}
