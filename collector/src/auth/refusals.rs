//! Every refusal is counted (`gpufleet_auth_refusals_total{reason}`) and logged once per peer
//! and reason within [`LOG_EVERY`]: an agent retrying with a revoked token every few seconds
//! makes one log line, not thousands. What is remembered is bounded ([`LOG_PEERS`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::auth::AuthMetrics;

/// A peer refused for one reason is logged again after this.
pub const LOG_EVERY: Duration = Duration::from_secs(600);
/// Most (peer, reason) pairs remembered; past that the oldest is forgotten.
pub const LOG_PEERS: usize = 4096;

/// Why a caller was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No token where one is required (UNAUTHENTICATED).
    NoCredentials,
    /// A token that is malformed, unknown or revoked (UNAUTHENTICATED).
    BadToken,
    /// A stream whose token was revoked while it was open (UNAUTHENTICATED).
    TokenRevoked,
    /// A valid token whose scope does not allow the call (PERMISSION_DENIED).
    WrongScope,
    /// A node's token or certificate used for another node's Hello (PERMISSION_DENIED).
    WrongNode,
    /// The TLS handshake failed: no client certificate, one from another CA, expired, or not
    /// TLS at all.
    TlsHandshake,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::NoCredentials,
        Reason::BadToken,
        Reason::TokenRevoked,
        Reason::WrongScope,
        Reason::WrongNode,
        Reason::TlsHandshake,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoCredentials => "no_credentials",
            Reason::BadToken => "bad_token",
            Reason::TokenRevoked => "token_revoked",
            Reason::WrongScope => "wrong_scope",
            Reason::WrongNode => "wrong_node",
            Reason::TlsHandshake => "tls_handshake",
        }
    }
}

/// Counts and logs refusals.
pub struct Refusals {
    metrics: AuthMetrics,
    log: Mutex<LogOnce>,
}

impl Refusals {
    pub fn new(metrics: AuthMetrics) -> Refusals {
        Refusals {
            metrics,
            log: Mutex::new(LogOnce::new(LOG_PEERS, LOG_EVERY)),
        }
    }

    pub fn metrics(&self) -> &AuthMetrics {
        &self.metrics
    }

    /// Counts the refusal; logs it unless this peer was logged for this reason lately.
    pub fn refuse(&self, why: Reason, peer: Option<IpAddr>, detail: &str) {
        self.metrics.refused(why);
        let first = self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first((peer, why), Instant::now());
        if first {
            let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            tracing::warn!(
                %peer,
                reason = why.as_str(),
                "refused: {detail} (further refusals of this peer for this reason are counted in \
                 gpufleet_auth_refusals_total, not logged, for {} min)",
                LOG_EVERY.as_secs() / 60
            );
        }
    }
}

/// Remembers when each key was last logged; bounded.
struct LogOnce {
    seen: HashMap<(Option<IpAddr>, Reason), Instant>,
    capacity: usize,
    every: Duration,
}

impl LogOnce {
    fn new(capacity: usize, every: Duration) -> LogOnce {
        LogOnce {
            seen: HashMap::new(),
            capacity,
            every,
        }
    }

    /// True when `key` is to be logged at `now` (and remembers that it was).
    fn first(&mut self, key: (Option<IpAddr>, Reason), now: Instant) -> bool {
        let every = self.every;
        if let Some(at) = self.seen.get(&key)
            && now.saturating_duration_since(*at) < every
        {
            return false;
        }
        if !self.seen.contains_key(&key) && self.seen.len() >= self.capacity {
            self.seen
                .retain(|_, at| now.saturating_duration_since(*at) < every);
            if self.seen.len() >= self.capacity
                && let Some(oldest) = self.seen.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k)
            {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn each_peer_and_reason_is_logged_once_per_window() {
        let t0 = Instant::now();
        let mut log = LogOnce::new(8, Duration::from_secs(600));
        assert!(log.first((ip(1), Reason::BadToken), t0));
        assert!(!log.first((ip(1), Reason::BadToken), t0 + Duration::from_secs(1)));
        assert!(
            log.first((ip(1), Reason::WrongNode), t0),
            "another reason is news"
        );
        assert!(
            log.first((ip(2), Reason::BadToken), t0),
            "another peer is news"
        );
        assert!(!log.first((ip(1), Reason::BadToken), t0 + Duration::from_secs(599)));
        assert!(log.first((ip(1), Reason::BadToken), t0 + Duration::from_secs(601)));
    }

    #[test]
    fn memory_stays_bounded_under_many_peers() {
        let t0 = Instant::now();
        let mut log = LogOnce::new(4, Duration::from_secs(600));
        for n in 0..200u8 {
            assert!(log.first(
                (ip(n), Reason::NoCredentials),
                t0 + Duration::from_millis(n as u64)
            ));
            assert!(log.seen.len() <= 4);
        }
        // The newest are remembered, the oldest forgotten.
        assert!(!log.first(
            (ip(199), Reason::NoCredentials),
            t0 + Duration::from_secs(1)
        ));
        assert!(log.first((ip(0), Reason::NoCredentials), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn refusals_are_counted_every_time() {
        let m = AuthMetrics::default();
        let r = Refusals::new(m.clone());
        for _ in 0..5 {
            r.refuse(Reason::BadToken, ip(1), "unknown token");
        }
        assert_eq!(m.count(Reason::BadToken), 5);
        assert_eq!(m.count(Reason::WrongNode), 0);
    }
}
