//! The `Query` service: what the CLI and scripts ask. Answers come from live fleet state and
//! a diagnosis made at request time.

use std::sync::Arc;
use std::time::Duration;

use gpufleet_model::{Selector, UnixMs};
use gpufleet_proto::v1::{self as pb, query_server::Query};
use tonic::{Request, Response, Status};

use crate::alerting::Alerting;
use crate::alerting::alert::dedupe_key;
use crate::alerting::silence::NewSilence;
use crate::api::{self, AlertList, Diagnosis, FiringAlert, NodeDetail, SinkInfo};
use crate::compliance::audit::{Against, DEFAULT_STALE_AFTER, audit};
use crate::compliance::changes::{self, Change};
use crate::compliance::policy::Policy;
use crate::compliance::{fields, versions};
use crate::evaluator::Evaluator;
use crate::fleet::{Fleet, NodeState};
use crate::store::Store;

/// Recent events returned with a node.
const NODE_EVENTS: usize = 50;

/// Recent changes returned with a node.
const NODE_CHANGES: usize = 10;

/// History entries returned by one `diagnose --since`.
const HISTORY_LIMIT: usize = 10_000;

pub struct QueryService {
    fleet: Arc<Fleet>,
    evaluator: Arc<Evaluator>,
    store: Arc<dyn Store>,
    alerting: Option<Arc<Alerting>>,
    /// What `ListNodes` tells the CLI about an exposed collector (docs/security.md).
    security_warning: Option<String>,
}

impl QueryService {
    pub fn new(fleet: Arc<Fleet>, evaluator: Arc<Evaluator>, store: Arc<dyn Store>) -> Self {
        QueryService {
            fleet,
            evaluator,
            store,
            alerting: None,
            security_warning: None,
        }
    }

    /// Sent with every node list (`serve --insecure` on a reachable address, tokens in clear
    /// text), so `gpufleet nodes` shows it.
    pub fn with_security_warning(mut self, warning: Option<String>) -> Self {
        self.security_warning = warning;
        self
    }

    /// Answers the alerting RPCs from `alerting` (its sinks; silences and deliveries are in
    /// the store either way).
    pub fn with_alerting(mut self, alerting: Arc<Alerting>) -> Self {
        self.alerting = Some(alerting);
        self
    }

    /// Runs a store call off the reactor.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&dyn Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("{what} failed: {e}")))?
            .map_err(|e| Status::internal(format!("{what}: {e}")))
    }
}

/// Deliveries returned by `ListDeliveries` without a limit.
const DELIVERIES_DEFAULT: usize = 50;

/// A request's `selector` (kubectl syntax; empty selects every node). A bad one is
/// INVALID_ARGUMENT with the parse error, which says how to write one.
pub fn parse_selector(text: &str) -> Result<Selector, Status> {
    Selector::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// NOT_FOUND for a node the collector does not know, naming some it does.
fn unknown_node(fleet: &Fleet, name: &str) -> Status {
    let known: Vec<String> =
        fleet.with_nodes(|n| n.iter().take(10).map(|n| n.name().to_string()).collect());
    Status::not_found(format!(
        "no node named {name:?} (known: {}); `gpufleet nodes` lists them",
        if known.is_empty() {
            "none yet".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// The change history of one node or of the fleet, oldest first, from the stored inventories
/// and the agents' drift events (so it survives collector restarts).
fn stored_changes(store: &dyn Store, node: Option<&str>) -> Result<Vec<Change>, Status> {
    let failed = |e: crate::store::StoreError| {
        Status::internal(format!("cannot read the change history: {e}"))
    };
    let inventories = store.inventories(node).map_err(failed)?;
    let mut drift: std::collections::HashMap<String, Vec<gpufleet_model::Event>> =
        std::collections::HashMap::new();
    for (n, e) in store
        .events_with_code_prefix(node, "drift.")
        .map_err(failed)?
    {
        drift.entry(n).or_default().push(e);
    }
    // `inventories` comes by node, so each node's run is contiguous: moved, not copied.
    let mut by_node: Vec<(String, Vec<gpufleet_model::Inventory>)> = Vec::new();
    for (n, inv) in inventories {
        match by_node.last_mut() {
            Some((last, invs)) if *last == n => invs.push(inv),
            _ => by_node.push((n, vec![inv])),
        }
    }
    let mut out = Vec::new();
    for (name, invs) in by_node {
        let events = drift.remove(&name).unwrap_or_default();
        out.extend(changes::history(&name, &invs, &events));
    }
    // Drift reported by a node with no stored inventory (cannot happen through ingest, which
    // stores the Hello's inventory first, but a history must not lose it).
    for (name, events) in drift {
        out.extend(changes::from_drift_events(&name, &events, &[]));
    }
    changes::sort(&mut out);
    Ok(out)
}

/// The nodes whose labels `selector` matches, in fleet order.
pub fn selected<'a>(nodes: &[&'a NodeState], selector: &Selector) -> Vec<&'a NodeState> {
    nodes
        .iter()
        .copied()
        .filter(|n| selector.matches(&n.labels))
        .collect()
}

/// The latest evaluation, for the whole fleet or one node.
pub fn diagnosis(fleet: &Fleet, evaluator: &Evaluator, node: Option<&str>) -> Diagnosis {
    let eval = evaluator.latest();
    let keep = |f: &gpufleet_model::Finding| node.is_none_or(|n| f.node == n);
    let findings: Vec<_> = eval.firing.iter().filter(|f| keep(f)).cloned().collect();
    let pending: Vec<_> = eval.pending.iter().filter(|f| keep(f)).cloned().collect();
    let now = eval.at;
    fleet.with_nodes(|nodes| {
        let considered: Vec<_> = nodes
            .iter()
            .filter(|n| node.is_none_or(|x| x == n.name()))
            .collect();
        let sick: std::collections::BTreeSet<&str> =
            findings.iter().map(|f| f.node.as_str()).collect();
        Diagnosis {
            evaluated_at: now,
            nodes_total: considered.len() as u32,
            nodes_healthy: considered
                .iter()
                .filter(|n| !sick.contains(n.name()))
                .count() as u32,
            findings,
            pending,
            history: None,
        }
    })
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let selector = parse_selector(&request.into_inner().selector)?;
        let eval = self.evaluator.latest();
        let nodes = self.fleet.with_nodes(|nodes| {
            selected(nodes, &selector)
                .into_iter()
                .map(|n| api::summarize(n, &eval.firing).into())
                .collect()
        });
        Ok(Response::new(pb::ListNodesResponse {
            nodes,
            security_warning: self.security_warning.clone().unwrap_or_default(),
        }))
    }

    async fn get_node(
        &self,
        request: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::GetNodeResponse>, Status> {
        let name = request.into_inner().name;
        let Some(n) = self.fleet.node_now(&name) else {
            return Err(unknown_node(&self.fleet, &name));
        };
        let store = self.store.clone();
        let of = name.clone();
        let mut recent_changes =
            tokio::task::spawn_blocking(move || stored_changes(store.as_ref(), Some(&of)))
                .await
                .map_err(|e| Status::internal(format!("change history query failed: {e}")))??;
        recent_changes.drain(..recent_changes.len().saturating_sub(NODE_CHANGES));
        let d = diagnosis(&self.fleet, &self.evaluator, Some(&name));
        let detail = NodeDetail {
            summary: api::summarize(&n, &d.findings),
            inventory: n.inventory.clone(),
            latest: n.latest().cloned(),
            findings: d.findings,
            recent_events: n
                .events
                .iter()
                .rev()
                .take(NODE_EVENTS)
                .rev()
                .cloned()
                .collect(),
            recent_changes,
        };
        Ok(Response::new(detail.into()))
    }

    async fn diagnose(
        &self,
        request: Request<pb::DiagnoseRequest>,
    ) -> Result<Response<pb::DiagnoseResponse>, Status> {
        let req = request.into_inner();
        let node = (!req.node.is_empty()).then_some(req.node);
        if let Some(n) = &node
            && !self.fleet.knows(n)
        {
            return Err(Status::not_found(format!(
                "no node named {n:?}; `gpufleet nodes` lists them"
            )));
        }
        let mut d = diagnosis(&self.fleet, &self.evaluator, node.as_deref());
        if let Some(since) = req.since_unix_ms {
            let store = self.store.clone();
            let history = tokio::task::spawn_blocking(move || {
                store.findings(node.as_deref(), UnixMs(since), HISTORY_LIMIT)
            })
            .await
            .map_err(|e| Status::internal(format!("history query failed: {e}")))?
            .map_err(|e| Status::internal(format!("cannot read findings history: {e}")))?;
            d.history = Some(history);
        }
        Ok(Response::new(d.into()))
    }

    async fn audit(
        &self,
        request: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        let req = request.into_inner();
        let selector = parse_selector(&req.selector)?;
        let given = if req.policy_toml.trim().is_empty() {
            None
        } else {
            let origin = if req.policy_origin.is_empty() {
                "from the request"
            } else {
                req.policy_origin.as_str()
            };
            Some(Arc::new(
                Policy::parse(&req.policy_toml, origin)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ))
        };
        let policy = given.or_else(|| self.evaluator.policy());
        let stale_after = match req.stale_after_ms {
            0 => DEFAULT_STALE_AFTER,
            ms => Duration::from_millis(ms),
        };
        let now = UnixMs::now();
        let report = self.fleet.with_nodes(|nodes| {
            let against = match &policy {
                Some(p) => Against::Policy(p),
                None => Against::FleetMajority,
            };
            audit(nodes, against, &selector, now, stale_after)
        });
        Ok(Response::new(report.into()))
    }

    async fn versions(
        &self,
        request: Request<pb::VersionsRequest>,
    ) -> Result<Response<pb::VersionsResponse>, Status> {
        let req = request.into_inner();
        let selector = parse_selector(&req.selector)?;
        let name = if req.field.is_empty() {
            "driver"
        } else {
            req.field.as_str()
        };
        let field = fields::field(name).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown field {name:?}; use one of {}",
                fields::field_names()
            ))
        })?;
        let m = self
            .fleet
            .with_nodes(|nodes| versions::matrix(nodes, field, &selector));
        Ok(Response::new(m.into()))
    }

    async fn changes(
        &self,
        request: Request<pb::ChangesRequest>,
    ) -> Result<Response<pb::ChangesResponse>, Status> {
        let req = request.into_inner();
        let selector = parse_selector(&req.selector)?;
        let node = (!req.node.is_empty()).then_some(req.node);
        if let Some(n) = &node
            && !self.fleet.knows(n)
        {
            return Err(unknown_node(&self.fleet, n));
        }
        // Labels live in fleet state; a node the store knows but the fleet does not (none,
        // since the fleet is restored from the store) would not match a selector.
        let wanted: Option<std::collections::HashSet<String>> =
            (!selector.is_everything()).then(|| {
                self.fleet.with_nodes(|nodes| {
                    selected(nodes, &selector)
                        .iter()
                        .map(|n| n.name().to_string())
                        .collect()
                })
            });
        let store = self.store.clone();
        let all =
            tokio::task::spawn_blocking(move || stored_changes(store.as_ref(), node.as_deref()))
                .await
                .map_err(|e| Status::internal(format!("change history query failed: {e}")))??;
        let since = req.since_unix_ms.map(UnixMs).unwrap_or(UnixMs(i64::MIN));
        let changes = all
            .into_iter()
            .filter(|c| c.at >= since)
            .filter(|c| wanted.as_ref().is_none_or(|w| w.contains(&c.node)))
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ChangesResponse { changes }))
    }

    async fn series(
        &self,
        request: Request<pb::SeriesRequest>,
    ) -> Result<Response<pb::SeriesResponse>, Status> {
        use crate::series;
        let req = request.into_inner();
        if req.series.is_empty() {
            return Ok(Response::new(pb::SeriesResponse {
                available: series::available(),
                ..Default::default()
            }));
        }
        let (id, _) = series::lookup(&req.series).map_err(Status::invalid_argument)?;
        if !self.fleet.knows(&req.node) {
            return Err(unknown_node(&self.fleet, &req.node));
        }
        let until = req.until_unix_ms.unwrap_or_else(|| UnixMs::now().0);
        let step = series::plan(req.since_unix_ms, until, req.step_ms)
            .map_err(Status::invalid_argument)?;
        let (node, since) = (req.node.clone(), req.since_unix_ms);
        let (tier, rollup) = self
            .blocking("reading the series", move |s| {
                s.series(
                    &node,
                    UnixMs(since),
                    UnixMs(until),
                    step,
                    series::RAW_MAX_SAMPLES,
                )
            })
            .await?;
        Ok(Response::new(series::answer(
            &rollup, id, req.gpu, tier, step,
        )))
    }

    async fn list_alerts(
        &self,
        _request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let now = UnixMs::now();
        let silences = self
            .blocking("reading silences", move |s| s.alerts().silences(now, false))
            .await?;
        let alerts = self
            .evaluator
            .latest()
            .firing
            .iter()
            .map(|f| FiringAlert {
                dedupe_key: dedupe_key(&f.node, f.gpu_index, &f.rule_id),
                silenced_by: silences
                    .iter()
                    .filter(|s| s.matches(&f.node, f.gpu_index, &f.rule_id, now))
                    .cloned()
                    .collect(),
                finding: f.clone(),
            })
            .collect();
        let sinks = self
            .alerting
            .as_ref()
            .map(|a| a.sinks())
            .unwrap_or_default()
            .into_iter()
            .map(|(name, kind)| SinkInfo {
                name,
                kind: kind.to_string(),
            })
            .collect();
        Ok(Response::new(AlertList { alerts, sinks }.into()))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => DELIVERIES_DEFAULT,
            n => n as usize,
        };
        let deliveries = self
            .blocking("reading deliveries", move |s| s.alerts().deliveries(limit))
            .await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: deliveries.into_iter().map(Into::into).collect(),
        }))
    }

    async fn add_silence(
        &self,
        request: Request<pb::AddSilenceRequest>,
    ) -> Result<Response<pb::AddSilenceResponse>, Status> {
        let req = request.into_inner();
        if req.node.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a silence needs a node (--node NAME)",
            ));
        }
        if req.duration_ms == 0 {
            return Err(Status::invalid_argument(
                "a silence needs a duration (--for 2h)",
            ));
        }
        let now = UnixMs::now();
        let new = NewSilence {
            node: req.node,
            gpu: req.gpu_index,
            cause_prefix: req.cause_prefix,
            comment: req.comment,
            created_at: now,
            expires_at: now.plus_ms(req.duration_ms.min(i64::MAX as u64) as i64),
        };
        let silence = self
            .blocking("adding the silence", move |s| s.alerts().add_silence(&new))
            .await?;
        tracing::info!(id = silence.id, node = %silence.node, gpu = ?silence.gpu, cause = %silence.cause_prefix, until = %silence.expires_at, "silence added: {}", silence.comment);
        Ok(Response::new(pb::AddSilenceResponse {
            silence: Some(silence.into()),
        }))
    }

    async fn list_silences(
        &self,
        request: Request<pb::ListSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        let all = request.into_inner().include_expired;
        let now = UnixMs::now();
        let silences = self
            .blocking("reading silences", move |s| s.alerts().silences(now, all))
            .await?;
        Ok(Response::new(pb::ListSilencesResponse {
            silences: silences.into_iter().map(Into::into).collect(),
        }))
    }

    async fn remove_silence(
        &self,
        request: Request<pb::RemoveSilenceRequest>,
    ) -> Result<Response<pb::RemoveSilenceResponse>, Status> {
        let id = request.into_inner().id;
        let removed = self
            .blocking("removing the silence", move |s| {
                s.alerts().remove_silence(id)
            })
            .await?;
        if !removed {
            return Err(Status::not_found(format!(
                "no silence with id {id}; `gpufleet silence list` shows them"
            )));
        }
        tracing::info!(id, "silence removed");
        Ok(Response::new(pb::RemoveSilenceResponse {}))
    }

    async fn test_alert_sink(
        &self,
        request: Request<pb::TestAlertSinkRequest>,
    ) -> Result<Response<pb::TestAlertSinkResponse>, Status> {
        let sink = request.into_inner().sink;
        let Some(alerting) = &self.alerting else {
            return Err(Status::failed_precondition(
                "this collector runs without alerting",
            ));
        };
        let outcome = alerting.test(&sink).await.map_err(Status::not_found)?;
        use crate::alerting::sinks::Outcome;
        let (delivered, answer) = match outcome {
            Outcome::Delivered(a) => (true, a),
            Outcome::Retry { error, .. } => (false, error),
            Outcome::Reject(e) => (false, format!("refused: {e}")),
        };
        Ok(Response::new(pb::TestAlertSinkResponse {
            delivered,
            answer,
        }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let name = request.into_inner().name;
        let Some(n) = self.fleet.node_now(&name) else {
            return Err(unknown_node(&self.fleet, &name));
        };
        if n.connected {
            return Err(Status::failed_precondition(format!(
                "{name}'s agent is connected: stop it first (`systemctl disable --now \
                 gpufleet-agent` on the node), then remove the node"
            )));
        }
        let of = name.clone();
        self.blocking("removing the node", move |s| {
            s.apply(&[crate::store::Write::RemoveNode { name: of }])
        })
        .await?;
        self.fleet.remove(&name);
        tracing::info!(node = %name, "node removed");
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::EngineConfig;
    use crate::store::sqlite::SqliteStore;
    use gpufleet_model::convert::Hello;
    use gpufleet_model::{Labels, NodeIdentity};

    fn hello(node: &str, labels: &[(&str, &str)]) -> Hello {
        Hello {
            protocol_version: gpufleet_proto::PROTOCOL_VERSION,
            node: NodeIdentity {
                hostname: node.into(),
                ..Default::default()
            },
            agent_version: "test".into(),
            session_id: format!("{node}-session"),
            inventory: Default::default(),
            gpu_source: "simulated".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
        }
    }

    fn service(dir: &std::path::Path) -> QueryService {
        let fleet = Arc::new(Fleet::default());
        for h in [
            hello("train-a", &[("pool", "training"), ("rack", "r12")]),
            hello("train-b", &[("pool", "training"), ("rack", "r13")]),
            hello("infer-a", &[("pool", "inference"), ("rack", "r12")]),
            hello("bare", &[]),
        ] {
            fleet.on_hello(&h, UnixMs(1));
        }
        let evaluator = Arc::new(Evaluator::new(fleet.clone(), EngineConfig::default()));
        let store = Arc::new(SqliteStore::open(&dir.join("q.db")).unwrap());
        QueryService::new(fleet, evaluator, store)
    }

    async fn names(q: &QueryService, selector: &str) -> Result<Vec<String>, Status> {
        let r = q
            .list_nodes(Request::new(pb::ListNodesRequest {
                selector: selector.into(),
            }))
            .await?;
        Ok(r.into_inner().nodes.into_iter().map(|n| n.name).collect())
    }

    #[tokio::test]
    async fn list_nodes_keeps_the_nodes_the_selector_matches() {
        let dir = tempfile::tempdir().unwrap();
        let q = service(dir.path());
        let cases: &[(&str, &[&str])] = &[
            ("", &["bare", "infer-a", "train-a", "train-b"]),
            ("pool=training", &["train-a", "train-b"]),
            ("pool=training,rack!=r13", &["train-a"]),
            ("rack in (r12)", &["infer-a", "train-a"]),
            ("pool!=training", &["bare", "infer-a"]),
            ("!pool", &["bare"]),
            ("pool=nothing", &[]),
        ];
        for (selector, want) in cases {
            assert_eq!(names(&q, selector).await.unwrap(), *want, "{selector:?}");
        }
        let r = q
            .list_nodes(Request::new(pb::ListNodesRequest {
                selector: "pool=training".into(),
            }))
            .await
            .unwrap();
        let labels = &r.into_inner().nodes[0].labels;
        assert_eq!(labels["rack"], "r12", "summaries carry the labels");
    }

    #[tokio::test]
    async fn a_bad_selector_is_invalid_argument_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let q = service(dir.path());
        let status = names(&q, "rack in (r12").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("without its ')'"), "{status:?}");
        assert!(status.message().contains("write e.g."), "{status:?}");
    }
}
