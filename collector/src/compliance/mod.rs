//! Driver and firmware compliance: which inventory fields a policy may constrain
//! ([`fields`]), how versions compare ([`version`]), policy files ([`policy`]), the audit of
//! the fleet against a policy or the fleet majority ([`audit`]), the version matrix
//! ([`versions`]) and the change history ([`changes`]). All pure: fleet state in, reports out.

pub mod audit;
pub mod changes;
pub mod fields;
pub mod policy;
pub mod version;
pub mod versions;
