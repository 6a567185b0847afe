//! Driver and firmware compliance: which inventory fields a policy may constrain
//! ([`fields`]).

pub mod fields;
