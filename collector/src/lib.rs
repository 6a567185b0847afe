//! `gpufleet-collector`: the collector (ingest → store → diagnose → query) and the ops CLI's
//! client; the `gpufleet` binary (crate `gpufleet-cli`) puts them on the command line.
//!
//! Data flow: agents stream to [`ingest`], which validates at the wire boundary, commits to the
//! [`store`] through the group-commit [`store::writer`], then acks and updates [`fleet`] state.
//! [`query`] answers the CLI from fleet state and [`diagnose`], whose rules are pure; the
//! [`evaluator`] stores finding transitions, which [`alerting`] routes to on-call. [`auth`]
//! decides who may stream and query (TLS, mutual TLS, tokens).

pub mod alerting;
pub mod api;
pub mod auth;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod connections;
pub mod diagnose;
pub mod evaluator;
pub mod fleet;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod query;
pub mod series;
pub mod server;
pub mod store;

pub use gpufleet_proto::DEFAULT_COLLECTOR_URL;
