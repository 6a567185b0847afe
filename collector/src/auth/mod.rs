//! Who may talk to the collector (docs/security.md): TLS and mutual TLS ([`tls`]), bearer
//! tokens with scopes ([`tokens`]), the layer that checks every request before tonic routes
//! it ([`layer`]), and the counted, rate-limited log of refusals ([`refusals`]).
//!
//! - Without client authentication (no client CA, no tokens) everyone is let in: allowed on
//!   loopback, and elsewhere only with `--insecure` ([`AuthConfig::exposure`]).
//! - With a client CA, the TLS handshake refuses clients without a certificate from it, and a
//!   stream's Hello must name the certificate's CN or one of its DNS SANs.
//! - With tokens, every call but health checks needs one: a node token streams as its node
//!   only, a read token may use the query service's reading calls, an admin token also the
//!   calls that change state.
//!
//! No/wrong credentials are UNAUTHENTICATED; valid credentials that do not allow the call are
//! PERMISSION_DENIED. Both are counted and logged once per peer and reason.

pub mod layer;
pub mod refusals;
pub mod tls;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::Status;

use crate::metrics::auth::AuthMetrics;
use refusals::{Reason, Refusals};
use tls::{ServerTls, TlsFiles};
use tokens::{Grant, Scope, TokenTable};

/// `serve`'s authentication settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub tls: Option<TlsFiles>,
    /// Require a bearer token on every call (`--auth-tokens`).
    pub tokens: bool,
    /// Allow listening beyond loopback without client authentication (`--insecure`).
    pub insecure: bool,
}

/// How exposed a collector with these settings on that address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback only, or clients authenticated over TLS.
    Fine,
    /// Running, but with this warning at start and in `gpufleet nodes`.
    Warn(String),
}

impl AuthConfig {
    fn client_ca(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
    }

    /// Refuses settings that let anyone who can reach `listen` stream as any node and read the
    /// fleet, unless `insecure`; says what a reachable collector without TLS exposes.
    pub fn exposure(&self, listen: SocketAddr) -> Result<Exposure, String> {
        if listen.ip().is_loopback() {
            return Ok(Exposure::Fine);
        }
        if self.tls.is_some() && (self.client_ca() || self.tokens) {
            return Ok(Exposure::Fine);
        }
        if self.tokens {
            return Ok(Exposure::Warn(format!(
                "the collector on {listen} takes tokens without TLS: they and all telemetry \
                 cross the network in clear text, and anyone on the path can reuse a token \
                 (add --tls-cert and --tls-key; docs/security.md)"
            )));
        }
        let what = if self.tls.is_some() {
            "TLS without client authentication"
        } else {
            "neither TLS nor client authentication"
        };
        if self.insecure {
            return Ok(Exposure::Warn(format!(
                "INSECURE: the collector on {listen} runs with {what} (--insecure): anyone who \
                 can reach it can stream as any node and read the whole fleet (docs/security.md)"
            )));
        }
        Err(format!(
            "refusing to listen on {listen} with {what}: anyone who can reach it could stream as \
             any node and read the whole fleet. Authenticate clients — --tls-cert, --tls-key and \
             --tls-client-ca (mutual TLS), or --auth-tokens (with `gpufleet token create`) — or \
             listen on loopback (--listen 127.0.0.1:50051), or accept the risk with --insecure \
             (config key `insecure = true`). docs/security.md walks through it."
        ))
    }
}

/// What kind of call a request is, from its gRPC path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health checks: they reveal nothing, and probes carry no credentials.
    Open,
    /// The telemetry stream.
    Stream,
    /// The query service's reading calls, and reflection.
    Read,
    /// Calls that change state.
    Admin,
}

/// The query calls that change state (need an admin token).
const ADMIN_CALLS: &[&str] = &[
    "/gpufleet.v1.Query/AddSilence",
    "/gpufleet.v1.Query/RemoveSilence",
    "/gpufleet.v1.Query/TestAlertSink",
    "/gpufleet.v1.Query/RemoveNode",
];

impl Need {
    pub fn of(path: &str) -> Need {
        if path.starts_with("/grpc.health.v1.Health/") {
            Need::Open
        } else if path.starts_with("/gpufleet.v1.Telemetry/") {
            Need::Stream
        } else if ADMIN_CALLS.contains(&path) {
            Need::Admin
        } else {
            // The reading calls, reflection, and anything unknown (answered UNIMPLEMENTED).
            Need::Read
        }
    }
}

/// Who is calling, as the layer established it; in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub peer: Option<SocketAddr>,
    /// The valid token presented, when tokens are required.
    pub token: Option<Grant>,
    /// The client certificate's names, under mutual TLS, for streams.
    pub cert_names: Option<Vec<String>>,
}

/// The collector's authentication state: shared by the layer, ingest and the query service.
pub struct Auth {
    mtls: bool,
    tokens: Option<Arc<TokenTable>>,
    tls: Option<Arc<ServerTls>>,
    refusals: Arc<Refusals>,
    warning: Option<String>,
}

impl Auth {
    /// No authentication: everyone may do everything (loopback, tests, the demo).
    pub fn open() -> Auth {
        Auth {
            mtls: false,
            tokens: None,
            tls: None,
            refusals: Arc::new(Refusals::new(AuthMetrics::default())),
            warning: None,
        }
    }

    /// Loads certificates and tokens (blocking: call off the reactor). `db` is the database
    /// holding the tokens.
    pub fn load(
        config: &AuthConfig,
        listen: SocketAddr,
        db: PathBuf,
        metrics: AuthMetrics,
    ) -> anyhow::Result<Auth> {
        use anyhow::Context;
        let warning = match config.exposure(listen).map_err(anyhow::Error::msg)? {
            Exposure::Fine => None,
            Exposure::Warn(w) => Some(w),
        };
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(
                ServerTls::load(files.clone()).context("cannot start with these TLS settings")?,
            )),
            None => None,
        };
        let tokens = if config.tokens {
            let t = TokenTable::load(db).context("cannot read the tokens")?;
            if t.is_empty() {
                tracing::warn!(
                    "tokens are required (--auth-tokens) but none exists yet: every agent and \
                     client is refused until `gpufleet token create` makes theirs"
                );
            }
            Some(Arc::new(t))
        } else {
            None
        };
        Ok(Auth {
            mtls: config.client_ca(),
            tokens,
            tls,
            refusals: Arc::new(Refusals::new(metrics)),
            warning,
        })
    }

    /// The TLS listener's settings, when TLS is on.
    pub fn tls(&self) -> Option<&Arc<ServerTls>> {
        self.tls.as_ref()
    }

    pub fn tokens(&self) -> Option<&Arc<TokenTable>> {
        self.tokens.as_ref()
    }

    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// What `gpufleet nodes` is told about this collector's exposure.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// One line for the start log: what is checked.
    pub fn describe(&self) -> String {
        let transport = match (&self.tls, self.mtls) {
            (None, _) => "plain HTTP/2",
            (Some(_), false) => "TLS",
            (Some(_), true) => "mutual TLS (client certificates required)",
        };
        match &self.tokens {
            Some(t) => format!("{transport}, tokens required ({} valid)", t.len()),
            None => transport.to_string(),
        }
    }

    fn refuse(&self, why: Reason, peer: Option<SocketAddr>, status: Status) -> Status {
        self.refusals
            .refuse(why, peer.map(|p| p.ip()), status.message());
        status
    }

    /// Checks a request's credentials for `need`; `authorization` is the header's value.
    pub fn check(
        &self,
        need: Need,
        authorization: Option<&[u8]>,
        peer: Option<SocketAddr>,
        cert_names: impl FnOnce() -> Option<Vec<String>>,
    ) -> Result<Caller, Status> {
        let mut caller = Caller {
            peer,
            ..Caller::default()
        };
        if need == Need::Open {
            return Ok(caller);
        }
        if self.mtls && need == Need::Stream {
            caller.cert_names = Some(cert_names().unwrap_or_default());
        }
        let Some(table) = &self.tokens else {
            return Ok(caller);
        };
        let Some(header) = authorization else {
            return Err(self.refuse(
                Reason::NoCredentials,
                peer,
                Status::unauthenticated(
                    "this collector requires a token: give the client --token-file FILE or \
                     GPUFLEET_TOKEN (`gpufleet token create` on the collector host makes one)",
                ),
            ));
        };
        let token = tokens::bearer(header).map_err(|e| {
            self.refuse(
                Reason::BadToken,
                peer,
                Status::unauthenticated(format!("{e}; send `authorization: Bearer <token>`")),
            )
        })?;
        let grant = table.lookup(token).ok_or_else(|| {
            self.refuse(
                Reason::BadToken,
                peer,
                Status::unauthenticated(
                    "unknown or revoked token (`gpufleet token list` on the collector host shows \
                     the valid ones)",
                ),
            )
        })?;
        let denied = match (need, grant.scope) {
            (Need::Stream, Scope::Node)
            | (Need::Read, Scope::Read | Scope::Admin)
            | (Need::Admin, Scope::Admin) => None,
            (Need::Stream, s) => Some(format!(
                "token {:?} is a {s} token: only a node's own token may stream telemetry",
                grant.name
            )),
            (_, Scope::Node) => Some(format!(
                "token {:?} is a node token: it may only stream that node's telemetry, not use \
                 the query service (use a read or admin token)",
                grant.name
            )),
            (_, _) => Some(format!(
                "token {:?} is read-only and this call changes state: it needs an admin token \
                 (`gpufleet token create --admin NAME`)",
                grant.name
            )),
        };
        if let Some(why) = denied {
            return Err(self.refuse(Reason::WrongScope, peer, Status::permission_denied(why)));
        }
        table.mark_used(&grant.name);
        caller.token = Some(grant);
        Ok(caller)
    }

    /// Binds a stream to the node its Hello names: under mutual TLS the certificate must be
    /// for it, with tokens the token must be its own. `caller` is what the layer put in the
    /// request (absent when the service runs without it: then only an open collector lets it
    /// through).
    pub fn bind_stream(&self, caller: Option<&Caller>, node: &str) -> Result<Binding, Status> {
        let open = !self.mtls && self.tokens.is_none();
        let Some(caller) = caller else {
            if open {
                return Ok(Binding::default());
            }
            return Err(self.refuse(
                Reason::NoCredentials,
                None,
                Status::unauthenticated("no credentials were checked for this stream"),
            ));
        };
        if self.mtls {
            let names = caller.cert_names.as_deref().unwrap_or_default();
            if !names.iter().any(|n| n == node) {
                return Err(self.refuse(
                    Reason::WrongNode,
                    caller.peer,
                    Status::permission_denied(format!(
                        "the client certificate is for {}, not node {node:?}: a node may only \
                         stream as itself (the Hello's node name must be the certificate's CN \
                         or one of its DNS names)",
                        if names.is_empty() {
                            "no name".to_string()
                        } else {
                            names.join(", ")
                        }
                    )),
                ));
            }
        }
        let Some(table) = &self.tokens else {
            return Ok(Binding::default());
        };
        let Some(grant) = caller.token.clone() else {
            return Err(self.refuse(
                Reason::NoCredentials,
                caller.peer,
                Status::unauthenticated("this collector requires a token"),
            ));
        };
        if grant.name != node {
            return Err(self.refuse(
                Reason::WrongNode,
                caller.peer,
                Status::permission_denied(format!(
                    "token {:?} may only stream as node {:?}, not {node:?}",
                    grant.name, grant.name
                )),
            ));
        }
        table.stream_opened(&grant.name);
        Ok(Binding {
            held: Some((table.clone(), grant, self.refusals.clone(), caller.peer)),
        })
    }
}

/// A stream's hold on its token: counts it as in use while it lasts, and tells when it was
/// revoked.
#[derive(Default)]
pub struct Binding {
    held: Option<Held>,
}

/// The table the token is in, the token, and what a revocation is counted in, for whom.
type Held = (Arc<TokenTable>, Grant, Arc<Refusals>, Option<SocketAddr>);

impl Binding {
    /// Resolves (with the status to end the stream with) once the stream's token is revoked;
    /// never without tokens.
    pub async fn revoked(&self) -> Status {
        match &self.held {
            Some((table, grant, refusals, peer)) => {
                table.revoked(grant).await;
                let status = Status::unauthenticated(format!(
                    "token {:?} was revoked; this stream ends",
                    grant.name
                ));
                refusals.refuse(Reason::TokenRevoked, peer.map(|p| p.ip()), status.message());
                status
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        if let Some((table, grant, ..)) = &self.held {
            table.stream_closed(&grant.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tokens::TokenStore;
    use gpufleet_model::UnixMs;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn files(client_ca: bool) -> TlsFiles {
        TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: client_ca.then(|| "ca.pem".into()),
        }
    }

    #[test]
    fn a_reachable_collector_needs_client_authentication_or_insecure() {
        let open = AuthConfig::default();
        for lo in ["127.0.0.1:50051", "[::1]:50051", "127.0.0.2:1"] {
            assert_eq!(open.exposure(addr(lo)), Ok(Exposure::Fine), "{lo}");
        }
        let any = addr("0.0.0.0:50051");
        let e = open.exposure(any).unwrap_err();
        assert!(e.contains("refusing to listen on 0.0.0.0:50051"), "{e}");
        assert!(
            e.contains("--insecure") && e.contains("--auth-tokens"),
            "{e}"
        );
        let tls_only = AuthConfig {
            tls: Some(files(false)),
            ..AuthConfig::default()
        };
        assert!(
            tls_only
                .exposure(any)
                .unwrap_err()
                .contains("TLS without client authentication")
        );
        for fine in [
            AuthConfig {
                tls: Some(files(true)),
                ..AuthConfig::default()
            },
            AuthConfig {
                tls: Some(files(false)),
                tokens: true,
                ..AuthConfig::default()
            },
        ] {
            assert_eq!(fine.exposure(any), Ok(Exposure::Fine), "{fine:?}");
        }
        let Ok(Exposure::Warn(w)) = AuthConfig {
            insecure: true,
            ..AuthConfig::default()
        }
        .exposure(any) else {
            panic!("insecure runs with a warning")
        };
        assert!(w.starts_with("INSECURE"), "{w}");
        let Ok(Exposure::Warn(w)) = AuthConfig {
            tokens: true,
            ..AuthConfig::default()
        }
        .exposure(any) else {
            panic!("tokens in clear text run with a warning")
        };
        assert!(w.contains("clear text"), "{w}");
    }

    #[test]
    fn calls_are_classified_by_path() {
        assert_eq!(Need::of("/grpc.health.v1.Health/Check"), Need::Open);
        assert_eq!(Need::of("/gpufleet.v1.Telemetry/Stream"), Need::Stream);
        assert_eq!(Need::of("/gpufleet.v1.Query/ListNodes"), Need::Read);
        assert_eq!(Need::of("/gpufleet.v1.Query/RemoveNode"), Need::Admin);
        assert_eq!(
            Need::of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Need::Read
        );
        assert_eq!(Need::of("/nothing/Here"), Need::Read);
    }

    /// Every (scope, call) pair: what is allowed, and the status of what is not.
    #[test]
    fn token_scopes_allow_exactly_their_calls() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gpufleet.db");
        let mut store = TokenStore::open(&db).unwrap();
        let mut tokens = std::collections::HashMap::new();
        for (name, scope) in [
            ("node-a", Scope::Node),
            ("ops", Scope::Read),
            ("root", Scope::Admin),
        ] {
            let (t, h) = tokens::generate().unwrap();
            store.create(name, scope, &h, UnixMs(1), false).unwrap();
            tokens.insert(scope, format!("Bearer {t}"));
        }
        let metrics = AuthMetrics::default();
        let auth = Auth::load(
            &AuthConfig {
                tokens: true,
                ..AuthConfig::default()
            },
            addr("127.0.0.1:1"),
            db,
            metrics.clone(),
        )
        .unwrap();
        use tonic::Code::{Ok as Allowed, PermissionDenied, Unauthenticated};
        let cases = [
            (Scope::Node, Need::Stream, Allowed),
            (Scope::Node, Need::Read, PermissionDenied),
            (Scope::Node, Need::Admin, PermissionDenied),
            (Scope::Read, Need::Stream, PermissionDenied),
            (Scope::Read, Need::Read, Allowed),
            (Scope::Read, Need::Admin, PermissionDenied),
            (Scope::Admin, Need::Stream, PermissionDenied),
            (Scope::Admin, Need::Read, Allowed),
            (Scope::Admin, Need::Admin, Allowed),
        ];
        for (scope, need, want) in cases {
            let got = auth
                .check(need, Some(tokens[&scope].as_bytes()), None, || None)
                .map(|_| Allowed)
                .unwrap_or_else(|s| s.code());
            assert_eq!(got, want, "{scope:?} token for {need:?}");
        }
        for (header, need) in [
            (None, Need::Read),
            (Some(&b"Bearer gpft_guessed"[..]), Need::Stream),
            (Some(&b"Basic x"[..]), Need::Read),
        ] {
            let s = auth.check(need, header, None, || None).unwrap_err();
            assert_eq!(s.code(), Unauthenticated, "{header:?}");
        }
        assert!(auth.check(Need::Open, None, None, || None).is_ok());
        assert_eq!(metrics.count(Reason::WrongScope), 5);
        assert_eq!(metrics.count(Reason::BadToken), 2);
        assert_eq!(metrics.count(Reason::NoCredentials), 1);

        // A node's token streams as that node only.
        let caller = auth
            .check(
                Need::Stream,
                Some(tokens[&Scope::Node].as_bytes()),
                None,
                || None,
            )
            .unwrap();
        assert!(auth.bind_stream(Some(&caller), "node-a").is_ok());
        let s = auth.bind_stream(Some(&caller), "node-b").err().unwrap();
        assert_eq!(s.code(), PermissionDenied);
        assert!(
            s.message().contains("only stream as node \"node-a\""),
            "{s:?}"
        );
        assert!(auth.bind_stream(None, "node-a").is_err());
    }

    #[test]
    fn under_mutual_tls_the_hello_must_name_the_certificate() {
        let auth = Auth {
            mtls: true,
            ..Auth::open()
        };
        let caller = auth
            .check(Need::Stream, None, None, || {
                Some(vec!["node-a".into(), "node-a.example".into()])
            })
            .unwrap();
        assert!(auth.bind_stream(Some(&caller), "node-a").is_ok());
        assert!(auth.bind_stream(Some(&caller), "node-a.example").is_ok());
        let s = auth.bind_stream(Some(&caller), "node-b").err().unwrap();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("node-a, node-a.example"), "{s:?}");
        // Queries need no node name.
        assert!(auth.check(Need::Read, None, None, || None).is_ok());
        // An open collector binds anything.
        assert!(Auth::open().bind_stream(None, "anything").is_ok());
    }
}
