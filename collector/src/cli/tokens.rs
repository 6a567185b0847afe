//! `gpufleet token create|list|revoke`: the collector's bearer tokens, edited in its database
//! file directly (docs/security.md). This works on the collector host only — where the data
//! directory is, and with that directory's permissions — whether or not the collector runs;
//! a running collector picks a change up within a second.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gpufleet_model::UnixMs;

use super::render::table;
use crate::auth::tokens::{self, Scope};
use crate::store::tokens::{TokenInfo, TokenStore};

/// The database of the collector whose data directory is `data_dir`. It must exist (a
/// mistyped directory would otherwise get tokens no collector reads) and belong to whoever
/// runs this, so the files SQLite creates beside it stay the collector's.
pub fn open(data_dir: &Path) -> Result<TokenStore> {
    let db: PathBuf = data_dir.join("gpufleet.db");
    let meta = std::fs::metadata(&db).with_context(|| {
        format!(
            "no collector database at {} — pass the collector's --data-dir (or --config), or \
             start `gpufleet serve` once so it creates it",
            db.display()
        )
    })?;
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            bail!(
                "{} belongs to user id {}, not to you ({me}): run this as the collector's user \
                 (e.g. `sudo -u gpufleet gpufleet token ...`), so the files SQLite writes \
                 beside it stay readable by the collector",
                db.display(),
                meta.uid()
            );
        }
    }
    Ok(TokenStore::open(&db)?)
}

/// Makes a token named `name` with `scope` and returns it (the only time it is seen).
pub fn create(store: &mut TokenStore, name: &str, scope: Scope, replace: bool) -> Result<String> {
    gpufleet_model::convert::validate_node_name(name).with_context(|| {
        format!(
            "{name:?} cannot name a token{}",
            if scope == Scope::Node {
                " (a node token is named exactly as the node's --node-name)"
            } else {
                ""
            }
        )
    })?;
    let (token, hash) = tokens::generate().map_err(anyhow::Error::msg)?;
    store.create(name, scope, &hash, UnixMs::now(), replace)?;
    Ok(token)
}

pub fn table_of(list: &[TokenInfo]) -> String {
    if list.is_empty() {
        return "no tokens (`gpufleet token create NODE` makes one)\n".into();
    }
    let mut t = table();
    t.set_header(["NAME", "SCOPE", "CREATED", "LAST USED"]);
    for i in list {
        t.add_row([
            i.name.clone(),
            i.scope.to_string(),
            i.created.to_string(),
            i.last_used
                .map(|u| u.to_string())
                .unwrap_or_else(|| "never".into()),
        ]);
    }
    format!("{t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_made_in_an_existing_database_and_listed_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("no collector database"), "{e}");
        drop(crate::store::sqlite::SqliteStore::open(&dir.path().join("gpufleet.db")).unwrap());
        let mut store = open(dir.path()).unwrap();
        let token = create(&mut store, "gpu-node-01", Scope::Node, false).unwrap();
        assert!(create(&mut store, "bad name", Scope::Read, false).is_err());
        create(&mut store, "ops", Scope::Read, false).unwrap();
        let out = table_of(&store.list().unwrap());
        assert!(out.contains("gpu-node-01") && out.contains("read"), "{out}");
        assert!(out.contains("never"), "{out}");
        assert!(!out.contains(&token), "{out}");
        assert!(table_of(&[]).contains("no tokens"));
    }
}
