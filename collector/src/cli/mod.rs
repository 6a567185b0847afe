//! The ops CLI's client side: ask the collector's `Query` service, print tables or JSON.

pub mod alerts;
pub mod audit;
pub mod changes;
pub mod render;
pub mod series;
pub mod tokens;

use anyhow::{Context, Result};
use gpufleet_proto::client::{BearerToken, Credentials};
use gpufleet_proto::v1::{self as pb, query_client::QueryClient};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::api::{Diagnosis, NodeDetail, NodeSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Longest the CLI waits for one answer by default (the largest fleet's audit answers in about
/// a second); `GPUFLEET_TIMEOUT` (e.g. `10s`) changes it.
pub const CLI_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The deadline in force: `GPUFLEET_TIMEOUT` or [`CLI_DEADLINE`].
pub fn deadline() -> Result<std::time::Duration> {
    match std::env::var("GPUFLEET_TIMEOUT") {
        Ok(v) => humantime::parse_duration(&v)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| {
                format!("GPUFLEET_TIMEOUT={v:?} is not a duration above zero (e.g. 10s, 2m)")
            }),
        Err(_) => Ok(CLI_DEADLINE),
    }
}

/// A query client that sends the bearer token, when there is one, with every call.
pub type Client = QueryClient<InterceptedService<Channel, BearerToken>>;

/// Connects without TLS or token (loopback, the demo).
pub async fn connect(collector: &str) -> Result<Client> {
    connect_with(collector, &Credentials::default()).await
}

/// Connects with the TLS files and token in `credentials` (docs/security.md).
pub async fn connect_with(collector: &str, credentials: &Credentials) -> Result<Client> {
    let (endpoint, token) = credentials
        .endpoint(collector)
        .map_err(anyhow::Error::msg)?;
    let endpoint = endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        // A peer that accepts and never answers must not hang the CLI (or a CI job).
        .timeout(deadline()?);
    let channel = endpoint.connect().await.with_context(|| {
        format!("cannot reach the collector at {collector}; is `gpufleet serve` running there? (set --collector or GPUFLEET_COLLECTOR; with TLS, check --tls-ca)")
    })?;
    Ok(QueryClient::with_interceptor(channel, token).max_decoding_message_size(64 << 20))
}

fn status(e: tonic::Status) -> anyhow::Error {
    match e.code() {
        // The connection closed under the request (a refused TLS client certificate does
        // that): a transport failure, not a slow collector.
        tonic::Code::Cancelled if !timed_out(&e) && std::error::Error::source(&e).is_some() => {
            transport(&e)
        }
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => anyhow::anyhow!(
            "the collector did not answer within {:?} ({}); is it overloaded or is something else listening there? (GPUFLEET_TIMEOUT sets the deadline)",
            deadline().unwrap_or(CLI_DEADLINE),
            e.message()
        ),
        tonic::Code::Unauthenticated => anyhow::anyhow!(
            "the collector refused the credentials: {} (docs/security.md)",
            e.message()
        ),
        tonic::Code::PermissionDenied => anyhow::anyhow!("not allowed: {}", e.message()),
        // A TLS failure surfaces only as the first call's transport error: say what it was,
        // and where the collector said why (under TLS 1.3 the client may see only a reset).
        _ if std::error::Error::source(&e).is_some() => transport(&e),
        _ => anyhow::anyhow!("{}", e.message()),
    }
}

/// The client's own deadline passed (tonic reports it as CANCELLED with this cause).
fn timed_out(e: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        if s.is::<tonic::TimeoutExpired>() {
            return true;
        }
        next = s.source();
    }
    false
}

/// A status carrying a transport error: its causes, and where to look.
fn transport(e: &tonic::Status) -> anyhow::Error {
    let causes = std::error::Error::source(e).map(chain).unwrap_or_default();
    let what = if causes.contains(e.message()) {
        causes
    } else {
        format!("{}: {causes}", e.message())
    };
    anyhow::anyhow!(
        "{what} (if the collector uses TLS, pass --tls-ca and an https:// address; if it \
         requires client certificates (--tls-client-ca), --tls-cert and --tls-key from that CA, \
         valid and unexpired; its log names the refusal)"
    )
}

/// An error and its causes, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// The nodes `selector` matches (every node for `Selector::everything()`).
pub async fn nodes(
    c: &mut Client,
    selector: &gpufleet_model::Selector,
) -> Result<Vec<NodeSummary>> {
    Ok(list_nodes(c, selector).await?.nodes)
}

/// A node list and what the collector says about its own exposure.
#[derive(Debug, Clone)]
pub struct NodeListing {
    pub nodes: Vec<NodeSummary>,
    /// `serve --insecure` and the like (docs/security.md): to show the user.
    pub security_warning: Option<String>,
}

pub async fn list_nodes(
    c: &mut Client,
    selector: &gpufleet_model::Selector,
) -> Result<NodeListing> {
    let r = c
        .list_nodes(pb::ListNodesRequest {
            selector: selector.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok(NodeListing {
        nodes: r.nodes.into_iter().map(Into::into).collect(),
        security_warning: Some(r.security_warning).filter(|w| !w.is_empty()),
    })
}

pub async fn node(c: &mut Client, name: &str) -> Result<NodeDetail> {
    let r = c
        .get_node(pb::GetNodeRequest {
            name: name.to_string(),
        })
        .await
        .map_err(status)?;
    NodeDetail::try_from(r.into_inner()).context("the collector sent an invalid node")
}

pub async fn diagnose(
    c: &mut Client,
    node: Option<&str>,
    since: Option<gpufleet_model::UnixMs>,
) -> Result<Diagnosis> {
    let r = c
        .diagnose(pb::DiagnoseRequest {
            node: node.unwrap_or_default().to_string(),
            since_unix_ms: since.map(|t| t.0),
        })
        .await
        .map_err(status)?
        .into_inner();
    let history = since.map(|_| r.history.iter().cloned().map(Into::into).collect());
    let mut d: Diagnosis = r.into();
    d.history = history;
    Ok(d)
}

/// Audits the fleet: `policy` is the policy file's text and path, if one is given.
pub async fn audit(
    c: &mut Client,
    policy: Option<(String, String)>,
    selector: &str,
    stale_after: std::time::Duration,
) -> Result<crate::compliance::audit::Audit> {
    let (policy_toml, policy_origin) = policy.unwrap_or_default();
    let r = c
        .audit(pb::AuditRequest {
            policy_toml,
            policy_origin,
            selector: selector.to_string(),
            stale_after_ms: stale_after.as_millis().clamp(1, u64::MAX as u128) as u64,
        })
        .await
        .map_err(status)?;
    Ok(r.into_inner().into())
}

pub async fn versions(
    c: &mut Client,
    field: &str,
    selector: &str,
) -> Result<crate::compliance::versions::VersionMatrix> {
    let r = c
        .versions(pb::VersionsRequest {
            field: field.to_string(),
            selector: selector.to_string(),
        })
        .await
        .map_err(status)?;
    Ok(r.into_inner().into())
}

/// Changes of one node or of the selected nodes at or after `since`, oldest first.
pub async fn changes(
    c: &mut Client,
    node: Option<&str>,
    since: Option<gpufleet_model::UnixMs>,
    selector: &str,
) -> Result<Vec<crate::compliance::changes::Change>> {
    let r = c
        .changes(pb::ChangesRequest {
            node: node.unwrap_or_default().to_string(),
            since_unix_ms: since.map(|t| t.0),
            selector: selector.to_string(),
        })
        .await
        .map_err(status)?;
    Ok(r.into_inner().changes.into_iter().map(Into::into).collect())
}

/// Forgets a decommissioned node (its agent must be stopped).
pub async fn remove_node(c: &mut Client, name: &str) -> Result<()> {
    c.remove_node(pb::RemoveNodeRequest {
        name: name.to_string(),
    })
    .await
    .map_err(status)?;
    Ok(())
}
