//! The ops CLI's client side: ask the collector's `Query` service, print tables or JSON.

pub mod alerts;
pub mod audit;
pub mod changes;
pub mod render;

use anyhow::{Context, Result};
use gpufleet_proto::v1::{self as pb, query_client::QueryClient};
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

pub async fn connect(collector: &str) -> Result<QueryClient<Channel>> {
    let url = gpufleet_proto::collector_url(collector).map_err(anyhow::Error::msg)?;
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .with_context(|| {
            format!("{collector:?} is not a valid collector address (e.g. http://127.0.0.1:50051)")
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        // A peer that accepts and never answers must not hang the CLI (or a CI job).
        .timeout(deadline()?);
    let channel = endpoint.connect().await.with_context(|| {
        format!("cannot reach the collector at {collector}; is `gpufleet serve` running there? (set --collector or GPUFLEET_COLLECTOR)")
    })?;
    Ok(QueryClient::new(channel).max_decoding_message_size(64 << 20))
}

fn status(e: tonic::Status) -> anyhow::Error {
    match e.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => anyhow::anyhow!(
            "the collector did not answer within {:?} ({}); is it overloaded or is something else listening there? (GPUFLEET_TIMEOUT sets the deadline)",
            deadline().unwrap_or(CLI_DEADLINE),
            e.message()
        ),
        _ => anyhow::anyhow!("{}", e.message()),
    }
}

/// The nodes `selector` matches (every node for `Selector::everything()`).
pub async fn nodes(
    c: &mut QueryClient<Channel>,
    selector: &gpufleet_model::Selector,
) -> Result<Vec<NodeSummary>> {
    let r = c
        .list_nodes(pb::ListNodesRequest {
            selector: selector.to_string(),
        })
        .await
        .map_err(status)?;
    Ok(r.into_inner().nodes.into_iter().map(Into::into).collect())
}

pub async fn node(c: &mut QueryClient<Channel>, name: &str) -> Result<NodeDetail> {
    let r = c
        .get_node(pb::GetNodeRequest {
            name: name.to_string(),
        })
        .await
        .map_err(status)?;
    NodeDetail::try_from(r.into_inner()).context("the collector sent an invalid node")
}

pub async fn diagnose(
    c: &mut QueryClient<Channel>,
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
    c: &mut QueryClient<Channel>,
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
    c: &mut QueryClient<Channel>,
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
    c: &mut QueryClient<Channel>,
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
pub async fn remove_node(c: &mut QueryClient<Channel>, name: &str) -> Result<()> {
    c.remove_node(pb::RemoveNodeRequest {
        name: name.to_string(),
    })
    .await
    .map_err(status)?;
    Ok(())
}
