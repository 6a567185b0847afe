//! `gpufleet-harness`: simulated agents and a collector wired together in one process — the
//! one place that stands on both. [`demo`] is `gpufleet demo` (real gRPC over loopback);
//! [`agents`] starts in-process simulated agents for tests; [`virtual_fleet`] plays a scenario
//! through the agents' pipeline into the collector's fleet state and engine in virtual time.
//!
//! Everything here uses the shipped defaults (the agent's sample interval and saturation hold,
//! the collector's evaluation interval and engine settings), so what the tests see is what ships.

pub mod agents;
pub mod demo;
pub mod virtual_fleet;
