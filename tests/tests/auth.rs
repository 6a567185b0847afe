//! Authentication end to end (docs/security.md): the real `gpufleet serve`, `gpufleet-agent`
//! and CLI over loopback with TLS, mutual TLS and tokens. Each way in that must be refused is
//! tried — a wrong CA, no, expired or foreign client certificates, missing or wrong tokens,
//! node A's credentials streaming as node B, a read-only token streaming or changing state —
//! and each refusal is checked for its status and its count in `/metrics`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use gpufleet_tests::pki::{CertFiles, Pki};
use gpufleet_tests::{Proc, agent, free_port, gpufleet, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `gpufleet ARGS` with the environment's credentials out of the way.
fn cli(args: &[&str]) -> Command {
    let mut c = gpufleet();
    c.args(args)
        .env_remove("GPUFLEET_TOKEN")
        .env_remove("GPUFLEET_TOKEN_FILE")
        .env_remove("GPUFLEET_TLS_CA")
        .env_remove("GPUFLEET_TLS_CERT")
        .env_remove("GPUFLEET_TLS_KEY")
        .env("GPUFLEET_TIMEOUT", "10s");
    c
}

fn with_cert(c: &mut Command, files: &CertFiles) {
    c.arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key);
}

/// The nodes a CLI command lists (`None` when it fails).
fn node_names(cmd: &mut Command) -> Option<Vec<String>> {
    let out = cmd.args(["-o", "json"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter(|n| n["connected"] == true)
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// A simulated one-GPU agent streaming as `node` to `url`, with extra arguments.
fn spawn_agent(node: &str, url: &str, extra: &[&std::ffi::OsStr]) -> Proc {
    let mut a = agent();
    a.args([
        "run",
        "--simulate",
        "1",
        "--node-name",
        node,
        "--interval",
        "200ms",
        "--collector",
        url,
    ])
    .args(extra)
    .env("GPUFLEET_CONFIG", "/dev/null")
    .env_remove("GPUFLEET_TOKEN");
    Proc::spawn(a, &format!("agent {node}"))
}

fn tls_args<'a>(ca: &'a Path, files: &'a CertFiles) -> Vec<&'a std::ffi::OsStr> {
    vec![
        "--tls-ca".as_ref(),
        ca.as_os_str(),
        "--tls-cert".as_ref(),
        files.cert.as_os_str(),
        "--tls-key".as_ref(),
        files.key.as_os_str(),
    ]
}

/// `gpufleet_auth_refusals_total{reason="…"}` on the collector's /metrics.
fn refusals(metrics_port: u16, reason: &str) -> u64 {
    let body = reqwest::blocking::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default();
    let series = format!("gpufleet_auth_refusals_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[test]
fn mutual_tls_refuses_strangers_and_binds_each_node_to_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "fleet");
    let stranger = Pki::new(dir.path(), "stranger");
    let server_files = pki.server("collector");
    let node_a = pki.client("node-a", "node-a", &["node-a.example"]);
    let ops = pki.client("ops", "ops", &[]);
    let expired = pki.expired_client("old-ops", "ops");
    let foreign = stranger.client("foreign", "ops", &[]);

    let (port, metrics_port) = (free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let server = serve_with_metrics_and(
        port,
        data.path(),
        metrics_port,
        &[
            "--tls-cert".as_ref(),
            server_files.cert.as_os_str(),
            "--tls-key".as_ref(),
            server_files.key.as_os_str(),
            "--tls-client-ca".as_ref(),
            pki.ca.as_os_str(),
        ],
    );
    let url = format!("https://127.0.0.1:{port}");
    let nodes = |client: Option<&CertFiles>, ca: &Path| {
        let mut c = cli(&["nodes", "--collector", &url]);
        c.arg("--tls-ca").arg(ca);
        if let Some(f) = client {
            with_cert(&mut c, f);
        }
        c
    };

    // Node A streams with its own certificate, by its CN and by its DNS SAN.
    let _a = spawn_agent("node-a", &url, &tls_args(&pki.ca, &node_a));
    let _a2 = spawn_agent("node-a.example", &url, &tls_args(&pki.ca, &node_a));
    let listed = wait_for(WAIT, || {
        let n = node_names(&mut nodes(Some(&ops), &pki.ca))?;
        (n.len() == 2).then_some(n)
    })
    .unwrap_or_else(|| panic!("node-a never streamed over mutual TLS:\n{}", server.log()));
    assert_eq!(listed, ["node-a", "node-a.example"]);

    // Node A's certificate cannot stream as node B.
    let mut b = spawn_agent("node-b", &url, &tls_args(&pki.ca, &node_a));
    let log = wait_for(WAIT, || {
        let l = b.log();
        l.contains("PermissionDenied").then_some(l)
    })
    .unwrap_or_else(|| panic!("node-b was not refused:\n{}", b.log()));
    assert!(
        log.contains("the client certificate is for node-a, node-a.example, not node \"node-b\""),
        "{log}"
    );
    assert!(b.exited().is_none(), "a refused agent keeps retrying");
    let listed = node_names(&mut nodes(Some(&ops), &pki.ca)).unwrap();
    assert!(!listed.contains(&"node-b".to_string()), "{listed:?}");
    assert!(refusals(metrics_port, "wrong_node") >= 1);

    // Without a certificate, with an expired one, one from another CA, or trusting another
    // CA for the collector's: refused at the TLS handshake, with a transport error saying so.
    let before = refusals(metrics_port, "tls_handshake");
    for (what, mut cmd, says) in [
        (
            "no client certificate",
            nodes(None, &pki.ca),
            "CertificateRequired",
        ),
        (
            "an expired certificate",
            nodes(Some(&expired), &pki.ca),
            "expired",
        ),
        (
            "a certificate from another CA",
            nodes(Some(&foreign), &pki.ca),
            "UnknownCA",
        ),
        (
            "another CA for the collector",
            nodes(Some(&ops), &stranger.ca),
            "UnknownIssuer",
        ),
    ] {
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{what}: accepted");
        let t = text(&out);
        // Under TLS 1.3 the client may see the alert, or only the reset that follows it;
        // then it says where to look.
        assert!(
            t.to_lowercase().contains(&says.to_lowercase())
                || t.contains("its log names the refusal"),
            "{what}: {t}"
        );
    }
    // Plain HTTP/2 to the TLS port gets nowhere either.
    let out = cli(&["nodes", "--collector", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    // The client side of the last check fails before the server sees a bad certificate.
    let counted = wait_for(WAIT, || {
        let n = refusals(metrics_port, "tls_handshake");
        (n >= before + 4).then_some(n)
    });
    assert!(counted.is_some(), "handshake refusals not counted");
    // Logged once per peer and reason, however often it happens.
    for _ in 0..3 {
        let _ = nodes(None, &pki.ca).output();
    }
    std::thread::sleep(Duration::from_millis(500));
    let logged = server
        .log()
        .lines()
        .filter(|l| l.contains("refused") && l.contains("tls_handshake"))
        .count();
    assert_eq!(logged, 1, "{}", server.log());

    // Rotation: the collector's certificate is replaced by one from a new CA and SIGHUP
    // makes it take effect without a restart.
    let rotated_ca = Pki::new(dir.path(), "rotated");
    let new_files = rotated_ca.server("collector-2");
    std::fs::copy(&new_files.cert, &server_files.cert).unwrap();
    std::fs::copy(&new_files.key, &server_files.key).unwrap();
    Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", server.child.id())])
        .status()
        .unwrap();
    let rotated = wait_for(WAIT, || {
        node_names(&mut nodes(Some(&ops), &rotated_ca.ca)).filter(|n| !n.is_empty())
    });
    assert!(
        rotated.is_some(),
        "the new certificate was not served:\n{}",
        server.log()
    );
    assert!(
        node_names(&mut nodes(Some(&ops), &pki.ca)).is_none(),
        "the old certificate is still served"
    );
    assert!(server.log().contains("TLS certificates reloaded"));
}

/// `gpufleet serve` on 127.0.0.1:`port`, `/metrics` on `metrics_port`, with more arguments
/// (paths, which the shared `serve_with` does not take).
fn serve_with_metrics_and(
    port: u16,
    data: &Path,
    metrics_port: u16,
    args: &[&std::ffi::OsStr],
) -> Proc {
    let mut serve = gpufleet();
    serve
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(args)
        .env("GPUFLEET_CONFIG", "/dev/null");
    Proc::spawn(serve, "gpufleet serve")
}

/// `gpufleet token create` against `data`; the token.
fn create_token(data: &Path, name: &str, scope: &[&str]) -> String {
    let mut c = cli(&["token", "create", name]);
    c.args(scope).arg("--data-dir").arg(data);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn tokens_are_scoped_bound_to_their_node_and_revocable() {
    let (port, metrics_port) = (free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let server =
        serve_with_metrics_and(port, data.path(), metrics_port, &["--auth-tokens".as_ref()]);
    let url = format!("http://127.0.0.1:{port}");
    // The database exists once the collector listens.
    wait_for(WAIT, || {
        data.path().join("gpufleet.db").exists().then_some(())
    })
    .expect("the collector created its database");
    wait_for(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("the collector listens");

    // Made while the collector runs: it picks them up within a second.
    let node_a = create_token(data.path(), "node-a", &[]);
    let reader = create_token(data.path(), "ops", &["--read-only"]);
    let admin = create_token(data.path(), "root", &["--admin"]);
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, token: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, format!("{token}\n")).unwrap();
        p
    };
    let (node_a_file, reader_file, admin_file) = (
        file("node-a", &node_a),
        file("ops", &reader),
        file("root", &admin),
    );
    let bad_file = file("bad", "gpft_not-a-token-anyone-made");
    let as_user = |args: &[&str], token: Option<&Path>| {
        let mut c = cli(args);
        c.args(["--collector", &url]);
        if let Some(t) = token {
            c.arg("--token-file").arg(t);
        }
        c
    };

    let _a = spawn_agent(
        "node-a",
        &url,
        &["--token-file".as_ref(), node_a_file.as_os_str()],
    );
    wait_for(WAIT, || {
        let n = node_names(&mut as_user(&["nodes"], Some(&reader_file)))?;
        (n == ["node-a"]).then_some(())
    })
    .unwrap_or_else(|| panic!("node-a never streamed with its token:\n{}", server.log()));

    // Node A's token cannot stream as node B; a read-only token cannot stream at all.
    let mut b = spawn_agent(
        "node-b",
        &url,
        &["--token-file".as_ref(), node_a_file.as_os_str()],
    );
    let mut r = spawn_agent(
        "node-r",
        &url,
        &["--token-file".as_ref(), reader_file.as_os_str()],
    );
    let mut anon = spawn_agent("node-x", &url, &[]);
    for (p, says) in [
        (
            &mut b,
            "PermissionDenied: token \"node-a\" may only stream as node \"node-a\", not \"node-b\"",
        ),
        (&mut r, "PermissionDenied: token \"ops\" is a read token"),
        (
            &mut anon,
            "Unauthenticated: this collector requires a token",
        ),
    ] {
        wait_for(WAIT, || p.log().contains(says).then_some(()))
            .unwrap_or_else(|| panic!("{}: not refused with {says:?}:\n{}", p.name, p.log()));
    }
    let listed = node_names(&mut as_user(&["nodes"], Some(&admin_file))).unwrap();
    assert_eq!(listed, ["node-a"]);

    // The query service: no token, a wrong one, a node's, a reader changing state.
    let silence = ["silence", "add", "--node", "node-a", "--for", "1h"];
    for (what, mut cmd, says) in [
        ("no token", as_user(&["nodes"], None), "requires a token"),
        (
            "a wrong token",
            as_user(&["nodes"], Some(&bad_file)),
            "unknown or revoked token",
        ),
        (
            "a node token",
            as_user(&["nodes"], Some(&node_a_file)),
            "is a node token",
        ),
        (
            "a read token changing state",
            as_user(&silence, Some(&reader_file)),
            "needs an admin token",
        ),
    ] {
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{what}: accepted");
        assert!(text(&out).contains(says), "{what}: {}", text(&out));
    }
    let out = as_user(&silence, Some(&admin_file)).output().unwrap();
    assert!(out.status.success(), "admin: {}", text(&out));
    // GPUFLEET_TOKEN works like --token-file.
    let mut env = as_user(&["nodes"], None);
    env.env("GPUFLEET_TOKEN", &reader);
    assert_eq!(node_names(&mut env).unwrap(), ["node-a"]);

    assert!(refusals(metrics_port, "wrong_node") >= 1);
    assert!(refusals(metrics_port, "wrong_scope") >= 3);
    assert!(refusals(metrics_port, "no_credentials") >= 2);
    assert!(refusals(metrics_port, "bad_token") >= 1);
    // The refused agents retry every few seconds; each peer and reason is logged once.
    let logged = server
        .log()
        .lines()
        .filter(|l| l.contains("refused") && l.contains("wrong_scope"))
        .count();
    assert!(
        (1..=3).contains(&logged),
        "{logged} wrong_scope lines:\n{}",
        server.log()
    );

    // The list shows names and scopes, never a token.
    let mut list = cli(&["token", "list"]);
    let out = list.arg("--data-dir").arg(data.path()).output().unwrap();
    let t = text(&out);
    assert!(
        t.contains("node-a") && t.contains("admin") && t.contains("read"),
        "{t}"
    );
    for secret in [&node_a, &reader, &admin] {
        assert!(!t.contains(secret.as_str()), "{t}");
    }

    // Revoked: node-a's open stream ends and it cannot come back.
    let mut revoke = cli(&["token", "revoke", "node-a"]);
    let out = revoke.arg("--data-dir").arg(data.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    wait_for(WAIT, || {
        let n = node_names(&mut as_user(&["nodes"], Some(&reader_file)))?;
        n.is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("node-a still streams after revocation:\n{}", server.log()));
    assert!(
        server.log().contains("token \"node-a\" was revoked"),
        "{}",
        server.log()
    );
    assert!(refusals(metrics_port, "token_revoked") >= 1);

    // Stopping writes each token's last use (otherwise written every minute).
    let mut server = server;
    assert!(
        server.terminate(WAIT).is_some_and(|s| s.success()),
        "{}",
        server.log()
    );
    let mut list = cli(&["token", "list", "-o", "json"]);
    let out = list.arg("--data-dir").arg(data.path()).output().unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let used = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| !t["last_used"].is_null())
    };
    assert_eq!(used("ops"), Some(true), "{listed}");
    assert_eq!(used("root"), Some(true), "{listed}");
}

#[test]
fn a_reachable_collector_without_client_authentication_needs_insecure_and_says_so() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        let mut c = gpufleet();
        c.args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--data-dir",
        ])
        .arg(data.path().join("db"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env("GPUFLEET_CONFIG", "/dev/null")
        .env_remove("GPUFLEET_INSECURE");
        c
    };
    let out = serve(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("refusing to listen on 0.0.0.0"), "{t}");
    assert!(
        t.contains("--insecure") && t.contains("docs/security.md"),
        "{t}"
    );
    assert!(!data.path().join("db").exists(), "nothing is created");

    let server = Proc::spawn(serve(&["--insecure"]), "gpufleet serve --insecure");
    let url = format!("http://127.0.0.1:{port}");
    let out = wait_for(WAIT, || {
        let out = cli(&["nodes", "--collector", &url]).output().ok()?;
        out.status.success().then_some(out)
    })
    .unwrap_or_else(|| panic!("no answer:\n{}", server.log()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("warning: INSECURE"), "{stderr}");
    assert!(server.log().contains("INSECURE"), "{}", server.log());

    // On loopback nothing is needed and nothing is said.
    let port = free_port();
    let local = gpufleet_tests::serve(port, &data.path().join("local"));
    let out = wait_for(WAIT, || {
        let out = cli(&["nodes", "--collector", &format!("127.0.0.1:{port}")])
            .output()
            .ok()?;
        out.status.success().then_some(out)
    })
    .unwrap_or_else(|| panic!("no answer:\n{}", local.log()));
    assert!(out.stderr.is_empty(), "{}", text(&out));
}
