//! The `Query` service: what the CLI and scripts ask. Answers come from live fleet state and
//! a diagnosis made at request time.

use std::sync::Arc;
use std::time::Duration;

use gpufleet_model::UnixMs;
use gpufleet_proto::v1::{self as pb, query_server::Query};
use tonic::{Request, Response, Status};

use crate::api::{self, Diagnosis, NodeDetail};
use crate::compliance::audit::{Against, DEFAULT_STALE_AFTER, audit};
use crate::compliance::policy::Policy;
use crate::compliance::{fields, versions};
use crate::evaluator::Evaluator;
use crate::fleet::Fleet;
use crate::store::Store;

/// Recent events returned with a node.
const NODE_EVENTS: usize = 50;

/// History entries returned by one `diagnose --since`.
const HISTORY_LIMIT: usize = 10_000;

pub struct QueryService {
    fleet: Arc<Fleet>,
    evaluator: Arc<Evaluator>,
    store: Arc<dyn Store>,
}

impl QueryService {
    pub fn new(fleet: Arc<Fleet>, evaluator: Arc<Evaluator>, store: Arc<dyn Store>) -> Self {
        QueryService {
            fleet,
            evaluator,
            store,
        }
    }
}

/// A request's label selector; a bad one is INVALID_ARGUMENT saying why.
pub fn selector_of(text: &str) -> Result<gpufleet_model::Selector, Status> {
    gpufleet_model::Selector::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))
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
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let eval = self.evaluator.latest();
        let nodes = self.fleet.with_nodes(|nodes| {
            nodes
                .iter()
                .map(|n| api::summarize(n, &eval.firing).into())
                .collect()
        });
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn get_node(
        &self,
        request: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::GetNodeResponse>, Status> {
        let name = request.into_inner().name;
        let Some(n) = self.fleet.node(&name) else {
            let known: Vec<String> = self
                .fleet
                .with_nodes(|n| n.iter().take(10).map(|n| n.name().to_string()).collect());
            return Err(Status::not_found(format!(
                "no node named {name:?} (known: {}); `gpufleet nodes` lists them",
                if known.is_empty() {
                    "none yet".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
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
            && self.fleet.node(n).is_none()
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
        let selector = selector_of(&req.selector)?;
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
        let selector = selector_of(&req.selector)?;
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
        _request: Request<pb::ChangesRequest>,
    ) -> Result<Response<pb::ChangesResponse>, Status> {
        Err(Status::unimplemented("changes is not implemented yet"))
    }
}
