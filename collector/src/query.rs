//! The `Query` service: what the CLI and scripts ask. Answers come from live fleet state and
//! a diagnosis made at request time.

use std::sync::Arc;

use gpufleet_model::UnixMs;
use gpufleet_proto::v1::{self as pb, query_server::Query};
use tonic::{Request, Response, Status};

use crate::api::{self, Diagnosis, NodeDetail};
use crate::diagnose;
use crate::fleet::Fleet;

/// Recent events returned with a node.
const NODE_EVENTS: usize = 50;

pub struct QueryService {
    fleet: Arc<Fleet>,
}

impl QueryService {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        QueryService { fleet }
    }
}

/// Diagnosis of the whole fleet (or one node) right now.
pub fn diagnosis(fleet: &Fleet, node: Option<&str>, now: UnixMs) -> Diagnosis {
    fleet.with_nodes(|nodes| {
        let mut findings = diagnose::diagnose(nodes, now);
        if let Some(n) = node {
            findings.retain(|f| f.node == n);
        }
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
        }
    })
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_nodes(
        &self,
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self.fleet.with_nodes(|nodes| {
            let findings = diagnose::diagnose(nodes, UnixMs::now());
            nodes
                .iter()
                .map(|n| api::summarize(n, &findings).into())
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
        let d = diagnosis(&self.fleet, Some(&name), UnixMs::now());
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
        let node = request.into_inner().node;
        let node = (!node.is_empty()).then_some(node);
        if let Some(n) = &node
            && self.fleet.node(n).is_none()
        {
            return Err(Status::not_found(format!(
                "no node named {n:?}; `gpufleet nodes` lists them"
            )));
        }
        Ok(Response::new(
            diagnosis(&self.fleet, node.as_deref(), UnixMs::now()).into(),
        ))
    }
}
