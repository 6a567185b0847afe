//! Driver and firmware compliance: which inventory fields a policy may constrain
//! ([`fields`]), how versions compare ([`version`]), policy files ([`policy`]), the audit of
//! the fleet against a policy or the fleet majority ([`audit`]) and the version matrix
//! ([`versions`]). All pure: fleet state in, reports out.

pub mod audit;
pub mod fields;
pub mod policy;
pub mod version;
pub mod versions;
