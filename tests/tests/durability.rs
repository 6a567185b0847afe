//! No data lost (docs/reliability.md), proved over the real binaries on loopback: the collector
//! SIGKILLed again and again under ingest and down for a long outage, an agent SIGKILLed and
//! restarted while the collector is away, a spool that fills up. Every sample an agent took is
//! stored exactly once, counted against the agent's own count, and the database passes
//! SQLite's integrity check.

use std::path::Path;
use std::time::{Duration, Instant};

use gpufleet_collector::store::Store;
use gpufleet_collector::store::sqlite::SqliteStore;
use gpufleet_model::UnixMs;
use gpufleet_tests::{Proc, agent, free_port, gpufleet, run, serve, wait_for};

const INTERVAL: &str = "100ms";

fn spawn_agent(name: &str, port: u16, state: &Path, gpus: u32, extra: &[&str]) -> Proc {
    let mut cmd = agent();
    cmd.args([
        "run",
        "--simulate",
        &gpus.to_string(),
        "--node-name",
        name,
        "--interval",
        INTERVAL,
        "--collector",
        &format!("http://127.0.0.1:{port}"),
        "--state-dir",
    ])
    .arg(state)
    .args(extra)
    .env("GPUFLEET_CONFIG", "/dev/null")
    .env("GPUFLEET_LOG", "info");
    Proc::spawn(cmd, name)
}

/// `kill -KILL`: no shutdown path runs.
fn sigkill(p: &mut Proc) {
    let _ = p.child.kill();
    let _ = p.child.wait();
}

/// The agent's last line: samples it took this run, how many were still unacknowledged, and
/// how many it dropped (counted and reported).
fn stopped_counts(p: &Proc) -> (u64, u64, u64) {
    let log = p.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("stopped: "))
        .unwrap_or_else(|| panic!("{} did not log its counts:\n{log}", p.name));
    let nums: Vec<u64> = line
        .split("stopped: ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    (nums[0], nums[1], nums[2])
}

fn up(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Every node connected to the collector on `port`, per `gpufleet nodes -o json`.
fn all_connected(port: u16, names: &[String]) -> bool {
    let out = run(
        gpufleet()
            .args(["nodes", "-o", "json", "--collector"])
            .arg(format!("http://127.0.0.1:{port}")),
        false,
    );
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    let nodes = v.as_array().cloned().unwrap_or_default();
    names.iter().all(|n| {
        nodes
            .iter()
            .any(|x| x["name"] == n.as_str() && x["connected"] == true)
    })
}

/// Stored samples of `node`: the distinct moments, and the rows holding them (a moment stored
/// twice would count twice here).
fn stored(db: &Path, node: &str) -> (Vec<UnixMs>, i64) {
    let store = SqliteStore::open(db).unwrap();
    let ts: Vec<UnixMs> = store
        .samples(node, UnixMs(0), UnixMs(i64::MAX), 1_000_000)
        .unwrap()
        .into_iter()
        .map(|s| s.timestamp)
        .collect();
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT (SELECT COALESCE(SUM(samples), 0) FROM sample_head WHERE node = ?1)
                  + (SELECT COALESCE(SUM(samples), 0) FROM sample_chunks WHERE node = ?1)",
            [node],
            |r| r.get(0),
        )
        .unwrap();
    (ts, rows)
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// The collector is SIGKILLed `kills` times under ingest from four 8-GPU agents, then down for
/// `outage`; at the end every sample each agent took is stored exactly once.
fn collector_kills_and_an_outage_lose_nothing(kills: usize, outage: Duration) {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let states = tempfile::tempdir().unwrap();
    let db = data.path().join("gpufleet.db");
    let mut collector = serve(port, data.path());
    assert!(wait_for(Duration::from_secs(20), || up(port).then_some(())).is_some());
    let names: Vec<String> = (0..4).map(|i| format!("durable-{i}")).collect();
    let metrics: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut agents: Vec<Proc> = names
        .iter()
        .zip(&metrics)
        .map(|(n, m)| {
            let listen = format!("127.0.0.1:{m}");
            spawn_agent(
                n,
                port,
                &states.path().join(n),
                8,
                &["--metrics-listen", &listen],
            )
        })
        .collect();
    assert!(
        wait_for(Duration::from_secs(30), || all_connected(port, &names)
            .then_some(()))
        .is_some(),
        "agents never connected:\n{}",
        collector.log()
    );
    // Kills at uneven moments, each followed by an immediate restart on the same files.
    let mut seed = 0x9e37_79b9_u64;
    for _ in 0..kills {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(400 + (seed >> 33) % 1200));
        sigkill(&mut collector);
        collector = serve(port, data.path());
        assert!(wait_for(Duration::from_secs(20), || up(port).then_some(())).is_some());
    }
    // The long outage: agents keep sampling into their buffers and spools.
    sigkill(&mut collector);
    std::thread::sleep(outage);
    collector = serve(port, data.path());
    let back = Instant::now();
    assert!(
        wait_for(Duration::from_secs(90), || all_connected(port, &names)
            .then_some(()))
        .is_some(),
        "agents did not come back:\n{}",
        collector.log()
    );
    eprintln!("all agents back {:?} after the restart", back.elapsed());
    // Let the re-sent backlog land (the collector paces each node at
    // limits.max_samples_per_second), then stop the agents (they wait for their last acks).
    let drained = wait_for(Duration::from_secs(300), || {
        metrics
            .iter()
            .all(|m| scrape(*m, "gpufleet_agent_buffered_samples").is_some_and(|b| b <= 1))
            .then_some(())
    });
    assert!(
        drained.is_some(),
        "the backlog never drained:\n{}",
        collector.log()
    );
    eprintln!("backlog drained {:?} after the restart", back.elapsed());
    let mut counts = Vec::new();
    for a in &mut agents {
        assert!(a.terminate(Duration::from_secs(15)).is_some());
        counts.push(stopped_counts(a));
    }
    assert!(collector.terminate(Duration::from_secs(15)).is_some());

    assert_eq!(integrity(&db), "ok");
    for ((name, (taken, unacked, dropped)), a) in names.iter().zip(counts).zip(&agents) {
        let (ts, rows) = stored(&db, name);
        let holes: Vec<String> = ts
            .windows(2)
            .filter(|w| w[1].since(w[0]) > 250)
            .map(|w| format!("{:?}+{}ms", w[0], w[1].since(w[0])))
            .collect();
        let why = format!("holes {holes:?}; agent log:\n{}", a.log());
        assert_eq!(
            unacked, 0,
            "{name}: everything was acknowledged before it stopped"
        );
        assert_eq!(dropped, 0, "{name}: nothing dropped: {why}");
        assert_eq!(
            ts.len() as u64,
            taken,
            "{name}: every sample the agent took, stored; {why}"
        );
        assert_eq!(rows, ts.len() as i64, "{name}: each stored once");
        assert!(taken > 20, "{name}: {taken} samples");
    }
}

#[test]
fn collector_killed_repeatedly_under_ingest_and_down_for_a_while_loses_nothing() {
    collector_kills_and_an_outage_lose_nothing(5, Duration::from_secs(5));
}

/// The five-minute outage (about 6 minutes in all): `cargo test -p gpufleet-tests
/// --test durability -- --ignored`.
#[test]
#[ignore]
fn a_five_minute_collector_outage_loses_nothing() {
    collector_kills_and_an_outage_lose_nothing(3, Duration::from_secs(300));
}

#[test]
fn an_agent_killed_and_restarted_while_the_collector_is_down_loses_nothing() {
    let port = free_port();
    let metrics = free_port();
    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let db = data.path().join("gpufleet.db");
    let listen = format!("127.0.0.1:{metrics}");
    let mut a = spawn_agent(
        "respooled",
        port,
        state.path(),
        2,
        &["--metrics-listen", &listen],
    );
    // Killed once it has taken a few dozen samples, none of which could be sent.
    let taken_before_kill = wait_for(Duration::from_secs(60), || {
        scrape(metrics, "gpufleet_agent_samples_total").filter(|n| *n >= 30)
    })
    .unwrap_or_else(|| panic!("the agent never sampled:\n{}", a.log()));
    let killed = UnixMs::now();
    sigkill(&mut a);
    let mut a = spawn_agent("respooled", port, state.path(), 2, &[]);
    std::thread::sleep(Duration::from_secs(2));
    let mut collector = serve(port, data.path());
    let names = ["respooled".to_string()];
    assert!(
        wait_for(Duration::from_secs(60), || all_connected(port, &names)
            .then_some(()))
        .is_some(),
        "{}",
        a.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.terminate(Duration::from_secs(15)).is_some());
    let (taken_second_run, unacked, _) = stopped_counts(&a);
    assert!(collector.terminate(Duration::from_secs(15)).is_some());
    assert!(
        a.log().contains("from before the restart"),
        "the restarted agent read its spool:\n{}",
        a.log()
    );

    let (ts, rows) = stored(&db, "respooled");
    assert_eq!(unacked, 0);
    assert_eq!(rows, ts.len() as i64, "each stored once");
    let (before, after): (Vec<UnixMs>, Vec<UnixMs>) = ts.iter().partition(|t| **t <= killed);
    assert_eq!(
        after.len() as u64,
        taken_second_run,
        "the second run's samples all stored"
    );
    // The first run was never connected: all of it came from the spool, whole — at least what
    // it had counted a moment before the kill, with no hole beyond scheduling jitter.
    assert!(
        before.len() as u64 >= taken_before_kill,
        "{} of the first run's {taken_before_kill}+ samples stored",
        before.len()
    );
    let gap = before.windows(2).map(|w| w[1].since(w[0])).max().unwrap();
    assert!(gap < 400, "a {gap} ms hole in the first run");
    assert_eq!(integrity(&db), "ok");
}

/// A counter or gauge from the agent's /metrics on `port`.
fn scrape(port: u16, name: &str) -> Option<u64> {
    let body = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .ok()?
        .text()
        .ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_full_spool_drops_the_oldest_and_the_loss_is_counted_and_shown() {
    let port = free_port();
    let metrics = free_port();
    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // The smallest spool, a buffer big enough that only the spool's cap bites.
    let min = gpufleet_agent::spool::MIN_SPOOL_MAX_BYTES.to_string();
    let mut a = spawn_agent(
        "overflowing",
        port,
        state.path(),
        8,
        &[
            "--spool-max-bytes",
            &min,
            "--buffer-samples",
            "100000",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ],
    );
    let scrape = |name: &str| scrape(metrics, name);
    let dropped = wait_for(Duration::from_secs(60), || {
        scrape("gpufleet_agent_dropped_samples_total").filter(|d| *d > 0)
    })
    .unwrap_or_else(|| panic!("the spool never filled:\n{}", a.log()));
    let spool_bytes = scrape("gpufleet_agent_spool_bytes").unwrap();
    assert!(
        spool_bytes < 2 * gpufleet_agent::spool::MIN_SPOOL_MAX_BYTES,
        "the spool stays near its cap: {spool_bytes} bytes"
    );
    assert!(a.log().contains("spool full"), "{}", a.log());

    let mut collector = serve(port, data.path());
    let url = format!("http://127.0.0.1:{port}");
    // The agent may be in its longest backoff (max_backoff, 30 s) when the collector comes.
    let shown = wait_for(Duration::from_secs(60), || {
        let out = run(
            gpufleet()
                .args(["node", "overflowing", "-o", "json", "--collector"])
                .arg(&url),
            false,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["summary"]["dropped_samples"]
            .as_u64()
            .filter(|d| *d >= dropped)
    })
    .unwrap_or_else(|| panic!("the collector never showed the loss:\n{}", collector.log()));
    // The table says it in words.
    let table = run(
        gpufleet()
            .args(["node", "overflowing", "--collector"])
            .arg(&url),
        true,
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("Lost by the agent:"), "{text}");
    // Stop the agent first: its final count and the collector's must agree.
    assert!(a.terminate(Duration::from_secs(15)).is_some());
    let total_dropped = scrape_log_dropped(&a);
    let out = run(
        gpufleet()
            .args(["node", "overflowing", "-o", "json", "--collector"])
            .arg(&url),
        true,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["summary"]["dropped_samples"].as_u64(),
        Some(total_dropped),
        "agent:\n{}",
        a.log()
    );
    assert!(shown >= dropped);
    assert!(collector.terminate(Duration::from_secs(15)).is_some());
}

/// The `dropped` count of the agent's final "stopped:" line.
fn scrape_log_dropped(p: &Proc) -> u64 {
    let log = p.log();
    let line = log.lines().rev().find(|l| l.contains("stopped: ")).unwrap();
    let tail = line.split("stopped: ").nth(1).unwrap();
    tail.split(", ")
        .find(|part| part.ends_with("dropped"))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped count in {line:?}"))
}
