//! Bearer tokens: their form, their hash, their scopes, and the collector's in-memory table of
//! valid ones, kept in step with the database (`store/tokens.rs`) that `gpufleet token`
//! edits beside a running collector.
//!
//! A token is `gpft_` and 43 base64url characters: 32 bytes from the OS's random source. Only
//! its SHA-256 is stored. A slow password hash (argon2, bcrypt) protects secrets people choose,
//! which are guessable; 256 random bits are not, so a fast hash loses nothing, and it keeps
//! the check per connection and per query at microseconds instead of tens of milliseconds of
//! CPU that any client could make the collector spend.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use gpufleet_model::UnixMs;
use rand::TryRngCore as _;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::store::StoreError;
use crate::store::tokens::TokenStore;

/// Every token starts with this, so secret scanners and people can tell one.
pub const TOKEN_PREFIX: &str = "gpft_";
/// How often the collector looks for tokens created or revoked by `gpufleet token`.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(1);
/// How often "last used" is written back (it is as precise as this).
pub const LAST_USED_FLUSH: Duration = Duration::from_secs(60);

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Stream telemetry as the node the token is named for; nothing else.
    Node,
    /// The query service's reading calls (`gpufleet nodes`, `diagnose`, ...); no streaming,
    /// no changes.
    Read,
    /// Reading, and the calls that change state (silences, `node rm`, `alerts test`).
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Node => "node",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        [Scope::Node, Scope::Read, Scope::Admin]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-256 of a token: what the database keeps.
pub type TokenHash = [u8; 32];

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A new token and its hash. The token is shown once and never stored.
pub fn generate() -> Result<(String, TokenHash), String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("the OS random source failed: {e}"))?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let h = hash(&token);
    Ok((token, h))
}

/// The token in an `authorization` header value: `Some(Err)` for a header that is not
/// `Bearer <token>`.
pub fn bearer(value: &[u8]) -> Result<&str, &'static str> {
    let text = std::str::from_utf8(value).map_err(|_| "the authorization header is not text")?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or("the authorization header is not `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("the authorization header is not `Bearer <token>`");
    }
    Ok(token.trim())
}

/// A valid token's name and scope (for a node token, the name is the node's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub scope: Scope,
    hash: TokenHash,
}

impl Grant {
    pub fn new(name: String, scope: Scope, hash: TokenHash) -> Grant {
        Grant { name, scope, hash }
    }
}

/// The valid tokens, by hash, as of the database's last change.
pub struct TokenTable {
    db: PathBuf,
    grants: RwLock<Arc<HashMap<TokenHash, Grant>>>,
    /// Bumped on every reload: streams wait on it to learn their token was revoked.
    generation: watch::Sender<u64>,
    /// Names used since the last flush of "last used", and streams open per name.
    used: Mutex<Usage>,
}

#[derive(Default)]
struct Usage {
    since_flush: HashSet<String>,
    streaming: HashMap<String, usize>,
}

impl TokenTable {
    /// Loads the tokens of the database at `db` (blocking: call off the reactor).
    pub fn load(db: PathBuf) -> Result<TokenTable, StoreError> {
        let store = TokenStore::open(&db)?;
        let (generation, grants) = store.grants()?;
        Ok(TokenTable {
            db,
            grants: RwLock::new(Arc::new(index(grants))),
            generation: watch::Sender::new(generation),
            used: Mutex::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Arc<HashMap<TokenHash, Grant>> {
        self.grants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The grant of a presented token, if it is valid.
    pub fn lookup(&self, token: &str) -> Option<Grant> {
        self.snapshot().get(&hash(token)).cloned()
    }

    /// Still valid (not revoked, not replaced).
    pub fn is_current(&self, grant: &Grant) -> bool {
        self.snapshot().get(&grant.hash) == Some(grant)
    }

    /// Returns once `grant` is no longer valid (never, while it is).
    pub async fn revoked(&self, grant: &Grant) {
        let mut changes = self.generation.subscribe();
        while self.is_current(grant) {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn mark_used(&self, name: &str) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if !u.since_flush.contains(name) {
            u.since_flush.insert(name.to_string());
        }
    }

    /// Counts an open stream of `name` (its token is "in use" while it lasts).
    pub fn stream_opened(&self, name: &str) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *u.streaming.entry(name.to_string()).or_default() += 1;
    }

    pub fn stream_closed(&self, name: &str) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = u.streaming.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                u.streaming.remove(name);
            }
        }
        u.since_flush.insert(name.to_string());
    }

    /// Names whose "last used" is now: used since the last flush, or streaming.
    fn take_used(&self) -> Vec<String> {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: HashSet<String> = std::mem::take(&mut u.since_flush);
        names.extend(u.streaming.keys().cloned());
        names.into_iter().collect()
    }

    /// Writes "last used" now (blocking): at shutdown, so the last minute is not lost.
    pub fn flush_usage(&self) -> Result<(), StoreError> {
        let names = self.take_used();
        if names.is_empty() {
            return Ok(());
        }
        TokenStore::open(&self.db)?.touch(&names, UnixMs::now())
    }

    fn replace(&self, generation: u64, grants: Vec<Grant>) {
        *self.grants.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index(grants));
        self.generation.send_replace(generation);
    }

    /// Follows the database: reloads within [`TOKEN_REFRESH`] of a `gpufleet token create` or
    /// `revoke`, and writes "last used" every [`LAST_USED_FLUSH`]. A database error is logged
    /// and the tokens in force stay.
    pub fn spawn_refresh(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let db = self.db.clone();
            let mut store = match tokio::task::spawn_blocking(move || TokenStore::open(&db)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::error!("tokens will not be reloaded: {e}");
                    return;
                }
                Err(_) => return,
            };
            let mut tick = tokio::time::interval(TOKEN_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_flush = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let flush = (last_flush.elapsed() >= LAST_USED_FLUSH).then(|| {
                    last_flush = tokio::time::Instant::now();
                    self.take_used()
                });
                let known = *self.generation.borrow();
                let table = self.clone();
                let r = tokio::task::spawn_blocking(move || {
                    if let Some(names) = flush.filter(|n| !n.is_empty()) {
                        store.touch(&names, UnixMs::now())?;
                    }
                    let reloaded = match store.generation()? {
                        g if g == known => None,
                        _ => Some(store.grants()?),
                    };
                    Ok::<_, StoreError>((store, reloaded))
                })
                .await;
                match r {
                    Ok(Ok((s, reloaded))) => {
                        store = s;
                        if let Some((generation, grants)) = reloaded {
                            tracing::info!(tokens = grants.len(), "tokens reloaded");
                            table.replace(generation, grants);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!("cannot reload tokens (keeping those in force): {e}");
                        let db = self.db.clone();
                        match tokio::task::spawn_blocking(move || TokenStore::open(&db)).await {
                            Ok(Ok(s)) => store = s,
                            _ => return,
                        }
                    }
                    Err(_) => return,
                }
            }
        })
    }
}

fn index(grants: Vec<Grant>) -> HashMap<TokenHash, Grant> {
    grants.into_iter().map(|g| (g.hash, g)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_only_their_hash_identifies_them() {
        let (a, ha) = generate().unwrap();
        let (b, hb) = generate().unwrap();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43, "{a}");
        assert_eq!(hash(&a), ha);
        assert!(
            bearer(a.as_bytes()).is_err(),
            "a bare token is not a header"
        );
    }

    #[test]
    fn the_authorization_header_must_be_bearer() {
        assert_eq!(bearer(b"Bearer gpft_x"), Ok("gpft_x"));
        assert_eq!(bearer(b"bearer  gpft_x "), Ok("gpft_x"));
        for bad in [&b"Basic dXNlcg=="[..], b"Bearer ", b"gpft_x", b"\xff\xfe"] {
            assert!(bearer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_round_trip() {
        for s in [Scope::Node, Scope::Read, Scope::Admin] {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("root"), None);
    }

    #[tokio::test]
    async fn a_revoked_token_ends_what_waits_on_it_and_usage_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gpufleet.db");
        let mut store = TokenStore::open(&db).unwrap();
        let (t, h) = generate().unwrap();
        store
            .create("node-a", Scope::Node, &h, UnixMs(1), false)
            .unwrap();
        let table = Arc::new(TokenTable::load(db.clone()).unwrap());
        let grant = table.lookup(&t).unwrap();
        assert_eq!((grant.name.as_str(), grant.scope), ("node-a", Scope::Node));
        assert!(table.lookup("gpft_guess").is_none());
        table.stream_opened("node-a");
        table.mark_used("reader");
        let mut used = table.take_used();
        used.sort();
        assert_eq!(used, ["node-a", "reader"]);
        table.stream_closed("node-a");
        assert_eq!(table.take_used(), ["node-a"], "closing counts as a use");
        assert!(table.take_used().is_empty());

        let waiting = tokio::spawn({
            let table = table.clone();
            let grant = grant.clone();
            async move { table.revoked(&grant).await }
        });
        store.revoke("node-a").unwrap();
        let (g, grants) = store.grants().unwrap();
        table.replace(g, grants);
        waiting.await.unwrap();
        assert!(!table.is_current(&grant));
        assert!(table.lookup(&t).is_none());
    }
}
