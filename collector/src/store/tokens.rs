//! The bearer tokens' table in the collector's SQLite file: name, scope, SHA-256 of the token,
//! created and last used. `gpufleet token` edits it with its own connection beside a running
//! collector (SQLite WAL allows that); every create or revoke bumps `auth_generation` in the
//! same transaction, which the collector polls to reload (`auth/tokens.rs`).

use std::path::{Path, PathBuf};

use gpufleet_model::UnixMs;
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::auth::tokens::{Grant, Scope, TokenHash};

/// Added in schema version 4.
macro_rules! token_tables {
    () => {
        "
CREATE TABLE IF NOT EXISTS auth_tokens (
    name TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    sha256 BLOB NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER
);
CREATE TABLE IF NOT EXISTS auth_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT OR IGNORE INTO auth_generation (id, generation) VALUES (1, 0);
"
    };
}
pub(super) use token_tables;

/// A token as `gpufleet token list` shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub scope: Scope,
    pub created: UnixMs,
    /// As precise as [`crate::auth::tokens::LAST_USED_FLUSH`]; `None`: never used.
    pub last_used: Option<UnixMs>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "a {scope} token named {name:?} exists already; `gpufleet token create --replace {name}` \
         replaces it (the old one stops working), `gpufleet token revoke {name}` removes it"
    )]
    Exists { name: String, scope: Scope },
    #[error("no token named {name:?} (`gpufleet token list` shows them)")]
    NotFound { name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for TokenError {
    fn from(e: rusqlite::Error) -> Self {
        TokenError::Store(StoreError::Sql(e))
    }
}

pub struct TokenStore {
    conn: Connection,
    path: PathBuf,
}

impl TokenStore {
    /// Opens (and if needed creates and migrates) the database at `path`.
    pub fn open(path: &Path) -> Result<TokenStore, StoreError> {
        Ok(TokenStore {
            conn: super::sqlite::open_connection(path)?,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a token's hash under `name`; with `replace`, one of that name is replaced.
    pub fn create(
        &mut self,
        name: &str,
        scope: Scope,
        hash: &TokenHash,
        now: UnixMs,
        replace: bool,
    ) -> Result<(), TokenError> {
        let tx = self.conn.transaction()?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT scope FROM auth_tokens WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(s) = existing {
            if !replace {
                return Err(TokenError::Exists {
                    name: name.to_string(),
                    scope: parse_scope(&s, &self.path)?,
                });
            }
            tx.execute("DELETE FROM auth_tokens WHERE name = ?1", [name])?;
        }
        tx.execute(
            "INSERT INTO auth_tokens (name, scope, sha256, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name, scope.as_str(), &hash[..], now.0],
        )?;
        bump(&tx)?;
        tx.commit()?;
        Ok(())
    }

    pub fn revoke(&mut self, name: &str) -> Result<(), TokenError> {
        let tx = self.conn.transaction()?;
        if tx.execute("DELETE FROM auth_tokens WHERE name = ?1", [name])? == 0 {
            return Err(TokenError::NotFound {
                name: name.to_string(),
            });
        }
        bump(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Every token, by name.
    pub fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, scope, created_ms, last_used_ms FROM auth_tokens ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, scope, created, last_used) = row?;
            out.push(TokenInfo {
                name,
                scope: parse_scope(&scope, &self.path)?,
                created: UnixMs(created),
                last_used: last_used.map(UnixMs),
            });
        }
        Ok(out)
    }

    /// Changes with every create and revoke.
    pub fn generation(&self) -> Result<u64, StoreError> {
        let g: i64 = self.conn.query_row(
            "SELECT generation FROM auth_generation WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        Ok(g as u64)
    }

    /// The generation and every valid token, read in one transaction.
    pub fn grants(&self) -> Result<(u64, Vec<Grant>), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let generation: i64 = tx.query_row(
            "SELECT generation FROM auth_generation WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        let mut out = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT name, scope, sha256 FROM auth_tokens")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            for row in rows {
                let (name, scope, hash) = row?;
                let hash: TokenHash = hash.try_into().map_err(|_| StoreError::Corrupt {
                    what: format!("token {name:?} in {}", self.path.display()),
                    reason: "its hash is not 32 bytes; revoke it and create it again".into(),
                })?;
                out.push(Grant::new(name, parse_scope(&scope, &self.path)?, hash));
            }
        }
        tx.finish()?;
        Ok((generation as u64, out))
    }

    /// Records that these tokens were used at `at` (does not change the generation).
    pub fn touch(&mut self, names: &[String], at: UnixMs) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt =
                tx.prepare("UPDATE auth_tokens SET last_used_ms = ?2 WHERE name = ?1")?;
            for n in names {
                stmt.execute(params![n, at.0])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn bump(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE auth_generation SET generation = generation + 1 WHERE id = 1",
        [],
    )
    .map(|_| ())
}

fn parse_scope(s: &str, path: &Path) -> Result<Scope, StoreError> {
    Scope::parse(s).ok_or_else(|| StoreError::Corrupt {
        what: format!("a token in {}", path.display()),
        reason: format!("unknown scope {s:?} (written by a newer gpufleet?)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::hash;

    #[test]
    fn create_list_replace_revoke_and_every_change_moves_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gpufleet.db");
        let mut s = TokenStore::open(&db).unwrap();
        let g0 = s.generation().unwrap();
        s.create("node-a", Scope::Node, &hash("a"), UnixMs(10), false)
            .unwrap();
        s.create("ops", Scope::Read, &hash("r"), UnixMs(11), false)
            .unwrap();
        let g1 = s.generation().unwrap();
        assert_eq!(g1, g0 + 2);
        let e = s
            .create("node-a", Scope::Node, &hash("b"), UnixMs(12), false)
            .unwrap_err();
        assert!(e.to_string().contains("--replace node-a"), "{e}");
        s.create("node-a", Scope::Node, &hash("b"), UnixMs(12), true)
            .unwrap();
        let (g2, grants) = s.grants().unwrap();
        assert_eq!(g2, g1 + 1);
        assert_eq!(grants.len(), 2);
        assert!(grants.contains(&Grant::new("node-a".into(), Scope::Node, hash("b"))));

        s.touch(&["ops".to_string()], UnixMs(99)).unwrap();
        assert_eq!(s.generation().unwrap(), g2, "use is not a change of tokens");
        let listed = s.list().unwrap();
        assert_eq!(
            listed,
            [
                TokenInfo {
                    name: "node-a".into(),
                    scope: Scope::Node,
                    created: UnixMs(12),
                    last_used: None
                },
                TokenInfo {
                    name: "ops".into(),
                    scope: Scope::Read,
                    created: UnixMs(11),
                    last_used: Some(UnixMs(99))
                },
            ]
        );

        // Another connection (the running collector's) sees the change.
        let other = TokenStore::open(&db).unwrap();
        s.revoke("ops").unwrap();
        assert_eq!(other.generation().unwrap(), g2 + 1);
        assert_eq!(other.grants().unwrap().1.len(), 1);
        assert!(matches!(
            s.revoke("ops").unwrap_err(),
            TokenError::NotFound { .. }
        ));
    }

    #[test]
    fn the_hash_is_all_that_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gpufleet.db");
        let mut s = TokenStore::open(&db).unwrap();
        let (token, h) = crate::auth::tokens::generate().unwrap();
        s.create("node-a", Scope::Node, &h, UnixMs(1), false)
            .unwrap();
        drop(s);
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "the token itself is on disk"
            );
        }
    }
}
