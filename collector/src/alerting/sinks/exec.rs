//! exec: runs a program with the notification's JSON (the webhook schema) on stdin. The
//! command is an argument list run without a shell; an attempt that outlives the timeout is
//! killed. Exit 0 is delivered; any other exit is retried; the exit status and stderr go to
//! the delivery log.

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{Outcome, SendContext, Sink, SinkSpec};
use crate::alerting::alert::Notification;
use crate::alerting::config::AlertsConfigError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Program and arguments, e.g. `["/usr/local/bin/page", "--team", "gpu"]`.
    pub command: Vec<String>,
}

impl SinkSpec for ExecConfig {
    fn check(&self, key: &str) -> Result<(), AlertsConfigError> {
        match self.command.first() {
            None => Err(AlertsConfigError::new(
                format!("{key}.command"),
                "is empty; give the program and its arguments, e.g. [\"/usr/local/bin/page\", \"--team\", \"gpu\"]",
            )),
            Some(p) if p.is_empty() => Err(AlertsConfigError::new(
                format!("{key}.command"),
                "the program name is empty",
            )),
            Some(_) => Ok(()),
        }
    }

    fn build(&self, name: &str) -> Box<dyn Sink> {
        Box::new(Exec {
            command: self.command.clone(),
            name: name.to_string(),
        })
    }
}

struct Exec {
    command: Vec<String>,
    name: String,
}

fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    let start = s.len().saturating_sub(500);
    let mut start = start;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

impl Exec {
    async fn run(&self, n: &Notification) -> std::io::Result<std::process::Output> {
        let mut child = tokio::process::Command::new(&self.command[0])
            .args(&self.command[1..])
            .env("GPUFLEET_ALERT_SINK", &self.name)
            .env("GPUFLEET_NOTIFICATION_ID", &n.id)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            let body = serde_json::to_vec(n).expect("notifications always serialize");
            // A program that exits without reading stdin is its own business.
            let _ = stdin.write_all(&body).await;
        }
        child.wait_with_output().await
    }
}

impl Sink for Exec {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn send<'a>(&'a self, n: &'a Notification, ctx: &'a SendContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let program = &self.command[0];
            match tokio::time::timeout(ctx.timeout, self.run(n)).await {
                Err(_) => Outcome::Retry {
                    error: format!("{program} did not finish within {:?}; killed", ctx.timeout),
                    after: None,
                },
                Ok(Err(e)) => Outcome::Retry {
                    error: format!("cannot run {program}: {e}"),
                    after: None,
                },
                Ok(Ok(out)) => {
                    let stderr = tail(&out.stderr);
                    let said = match (out.status.code(), stderr.is_empty()) {
                        (Some(c), true) => format!("exit {c}"),
                        (Some(c), false) => format!("exit {c}; stderr: {stderr}"),
                        (None, _) => format!("killed by a signal; stderr: {stderr}"),
                    };
                    if out.status.success() {
                        Outcome::Delivered(said)
                    } else {
                        Outcome::Retry {
                            error: said,
                            after: None,
                        }
                    }
                }
            }
        })
    }
}
