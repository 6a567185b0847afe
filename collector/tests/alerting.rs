//! Alert delivery through the real outbox, dispatcher and sinks, against loopback HTTP
//! receivers (axum) that record every request and answer as each test scripts: each sink's
//! exact wire format, grouping, resolve, repeat, silences, `for`, receivers that are down,
//! fail, rate-limit or are slow, and the give-up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use gpufleet_collector::alerting::Alerting;
use gpufleet_collector::alerting::config::AlertsConfig;
use gpufleet_collector::fleet::{Fleet, Window};
use gpufleet_collector::store::sqlite::SqliteStore;
use gpufleet_collector::store::{Store, Write};
use gpufleet_model::{Evidence, Finding, FindingRecord, FindingState, Severity, UnixMs};
use hmac::Mac;
use serde_json::Value;

#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Value,
    raw: String,
}

/// One scripted answer: status, Retry-After, delay before answering.
type Answer = (u16, Option<&'static str>, Duration);

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers for the next requests, in order; afterwards 200.
    script: Arc<Mutex<Vec<Answer>>>,
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let answer = {
        let mut s = r.script.lock().unwrap();
        if s.is_empty() {
            None
        } else {
            Some(s.remove(0))
        }
    };
    let (status, retry_after, delay) = answer.unwrap_or((200, None, Duration::ZERO));
    tokio::time::sleep(delay).await;
    if status == 200 {
        r.got.lock().unwrap().push(Received {
            at: Instant::now(),
            headers,
            body: serde_json::from_str(&body).unwrap_or(Value::String(body.clone())),
            raw: body,
        });
    }
    let mut h = HeaderMap::new();
    if let Some(ra) = retry_after {
        h.insert("retry-after", ra.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), h, "ok")
}

impl Receiver {
    /// Starts on a loopback port; returns its base URL.
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(self.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn script(&self, answers: &[Answer]) {
        *self.script.lock().unwrap() = answers.to_vec();
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests were accepted.
    async fn wait(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Rig {
    store: Arc<dyn Store>,
    alerting: Arc<Alerting>,
    _task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(config: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("gpufleet.db")).unwrap());
        let fleet = Arc::new(Fleet::new(Window::default()));
        let config = AlertsConfig::parse_file_text(config, "test.toml").unwrap();
        let alerting = Arc::new(Alerting::new(config, store.clone(), fleet).unwrap());
        let task = alerting.spawn();
        Rig {
            store,
            alerting,
            _task: task,
            _dir: dir,
        }
    }

    /// Stores transitions as the evaluator does, and wakes the dispatcher.
    fn transition(&self, records: Vec<FindingRecord>) {
        self.store.apply(&[Write::Findings(records)]).unwrap();
        self.alerting.wake();
    }

    fn counts(&self, sink: &str) -> (u64, u64, u64) {
        let c = self.alerting.counters().deliveries();
        let get = |o: &str| {
            c.iter()
                .find(|(s, x, _)| s == sink && *x == o)
                .map(|t| t.2)
                .unwrap_or(0)
        };
        (get("delivered"), get("failed"), get("silenced"))
    }
}

fn firing(node: &str, gpu: Option<u32>, cause: &str, severity: Severity) -> FindingRecord {
    let now = UnixMs::now();
    FindingRecord {
        finding: Finding {
            rule_id: cause.into(),
            title: "Hardware thermal slowdown".into(),
            severity,
            node: node.into(),
            gpu_index: gpu,
            gpu_uuid: gpu.map(|g| format!("GPU-{g:04}")).unwrap_or_default(),
            summary: format!("GPU {gpu:?} is throttled by HW slowdown at 95 °C"),
            evidence: vec![Evidence::new("temperature_gpu_celsius", "95", ">= 90").held_for(4000)],
            performance_ratio: Some(0.5),
            action: "Check the node's cooling and airflow".into(),
            since: now.plus_ms(-5000),
            ..Default::default()
        },
        state: FindingState::Firing,
        fired_at: now,
        resolved_at: None,
    }
}

fn resolved(mut r: FindingRecord) -> FindingRecord {
    r.state = FindingState::Resolved;
    r.resolved_at = Some(UnixMs::now());
    r
}

const FAST: &str =
    "[alerts.delivery]\ninitial_backoff = \"100ms\"\nmax_backoff = \"400ms\"\ntimeout = \"1s\"\n";

#[tokio::test]
async fn webhook_body_is_the_documented_schema_and_the_signature_verifies() {
    let rx = Receiver::default();
    let url = rx.start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rig = Rig::new(&format!(
        "[alerts]\nexternal_url = \"http://collector.example:8080\"\n[alerts.sinks.hook]\ntype = \"webhook\"\nurl = \"{url}/hook\"\nsecret = \"{secret}\"\n[alerts.sinks.hook.headers]\nAuthorization = \"Bearer t0k3n\"\n"
    ));
    let r = firing(
        "node-a",
        Some(3),
        "gpu.thermal.hw_slowdown",
        Severity::Critical,
    );
    rig.transition(vec![r.clone()]);
    let got = rx.wait(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let b = &got[0].body;
    assert_eq!(b["version"], "1");
    assert_eq!(b["test"], false);
    assert_eq!(b["node"], "node-a");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["severity"], "critical");
    let a = &b["alerts"][0];
    let key = "node-a/gpu3/gpu.thermal.hw_slowdown";
    assert_eq!(a["dedupe_key"], key);
    assert_eq!(
        a["idempotency_key"],
        format!("{key}@firing:{}", r.fired_at.0)
    );
    assert_eq!(b["id"], a["idempotency_key"]);
    assert_eq!(a["cause"], "gpu.thermal.hw_slowdown");
    assert_eq!(a["gpu"], 3);
    assert_eq!(a["gpu_uuid"], "GPU-0003");
    assert_eq!(a["evidence"][0]["field"], "temperature_gpu_celsius");
    assert_eq!(a["evidence"][0]["threshold"], ">= 90");
    assert_eq!(a["action"], "Check the node's cooling and airflow");
    assert_eq!(a["node_command"], "gpufleet node node-a");
    assert_eq!(a["node_url"], "http://collector.example:8080/nodes/node-a");
    assert!(a["fired_at"].as_str().unwrap().ends_with('Z'));
    assert!(a.get("resolved_at").is_none());

    // Standard Webhooks: HMAC-SHA256 over "id.timestamp.body" with the decoded secret.
    let h = &got[0].headers;
    assert_eq!(h["authorization"], "Bearer t0k3n");
    let id = h["webhook-id"].to_str().unwrap();
    assert_eq!(id, b["id"].as_str().unwrap());
    assert_eq!(h["idempotency-key"], id);
    let ts = h["webhook-timestamp"].to_str().unwrap();
    let age = UnixMs::now().0 / 1000 - ts.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "timestamp {age} s old");
    let body = &got[0].raw;
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key_bytes).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig = h["webhook-signature"].to_str().unwrap();
    assert_eq!(sig, format!("v1,{want}"));

    rig.transition(vec![resolved(r)]);
    let got = rx.wait(2, Duration::from_secs(5)).await;
    let b = &got[1].body;
    assert_eq!(b["status"], "resolved");
    assert_eq!(b["alerts"][0]["dedupe_key"], key);
    assert!(b["alerts"][0]["resolved_at"].is_string());
    assert_eq!(rig.counts("hook"), (2, 0, 0));
}

#[tokio::test]
async fn one_node_with_eight_hot_gpus_is_one_notification_listing_eight() {
    let rx = Receiver::default();
    let url = rx.start().await;
    let rig = Rig::new(&format!(
        "[alerts.sinks.h]\ntype = \"webhook\"\nurl = \"{url}/hook\"\n[[alerts.routes]]\nsinks = [\"h\"]\ngroup_wait = \"1500ms\"\n"
    ));
    // Two evaluations 100 ms apart: within the group window, so one notification.
    rig.transition(
        (0..4)
            .map(|g| firing("n8", Some(g), "gpu.thermal.hw_slowdown", Severity::Critical))
            .collect(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.transition(
        (4..8)
            .map(|g| firing("n8", Some(g), "gpu.thermal.hw_slowdown", Severity::Critical))
            .collect(),
    );
    rig.transition(vec![firing(
        "other",
        None,
        "node.agent_offline",
        Severity::Warning,
    )]);
    let got = rx.wait(2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = rx.got();
    assert_eq!(
        got_after.len(),
        2,
        "one notification per node: {:?}",
        got.iter().map(|g| &g.body["node"]).collect::<Vec<_>>()
    );
    let n8 = got.iter().find(|g| g.body["node"] == "n8").unwrap();
    let gpus: Vec<u64> = n8.body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["gpu"].as_u64().unwrap())
        .collect();
    assert_eq!(gpus, (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn slack_gets_a_readable_message_and_429_retry_after_is_honoured() {
    let rx = Receiver::default();
    let url = rx.start().await;
    rx.script(&[(429, Some("1"), Duration::ZERO)]);
    let rig = Rig::new(&format!(
        "{FAST}[alerts.sinks.chat]\ntype = \"slack\"\nurl = \"{url}/services/T/B/X\"\n"
    ));
    let start = Instant::now();
    rig.transition(vec![firing(
        "node-a",
        Some(3),
        "gpu.thermal.hw_slowdown",
        Severity::Critical,
    )]);
    let got = rx.wait(1, Duration::from_secs(6)).await;
    assert_eq!(got.len(), 1);
    assert!(
        got[0].at - start >= Duration::from_secs(1),
        "retried before Retry-After: {:?}",
        got[0].at - start
    );
    let text = got[0].body["text"].as_str().unwrap();
    for want in [
        "CRITICAL",
        "gpu.thermal.hw_slowdown",
        "*node-a*",
        "GPU 3",
        "temperature_gpu_celsius = 95 (threshold >= 90)",
        "*Action:* Check the node's cooling",
        "`gpufleet node node-a`",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    assert_eq!(got[0].body.as_object().unwrap().len(), 1, "only `text`");
}

#[tokio::test]
async fn pagerduty_triggers_and_resolves_with_one_dedup_key() {
    let rx = Receiver::default();
    let url = rx.start().await;
    let rig = Rig::new(&format!(
        "[alerts.sinks.pd]\ntype = \"pagerduty\"\nrouting_key = \"0123456789abcdef0123456789abcdef\"\nurl = \"{url}/v2/enqueue\"\n"
    ));
    let r = firing("node-a", Some(1), "gpu.lost", Severity::Critical);
    rig.transition(vec![r.clone()]);
    rx.wait(1, Duration::from_secs(5)).await;
    rig.transition(vec![resolved(r)]);
    let got = rx.wait(2, Duration::from_secs(5)).await;
    let (t, res) = (&got[0].body, &got[1].body);
    assert_eq!(t["routing_key"], "0123456789abcdef0123456789abcdef");
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(t["dedup_key"], "node-a/gpu1/gpu.lost");
    assert_eq!(t["payload"]["severity"], "critical");
    assert_eq!(t["payload"]["source"], "node-a");
    assert_eq!(t["payload"]["class"], "gpu.lost");
    assert!(
        t["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("node-a GPU 1")
    );
    assert_eq!(t["payload"]["custom_details"]["evidence"][0]["value"], "95");
    assert_eq!(
        t["payload"]["custom_details"]["action"],
        "Check the node's cooling and airflow"
    );
    assert_eq!(res["event_action"], "resolve");
    assert_eq!(res["dedup_key"], t["dedup_key"]);
}

#[tokio::test]
async fn alertmanager_gets_labels_annotations_and_is_re_sent_while_firing() {
    let rx = Receiver::default();
    let url = rx.start().await;
    let rig = Rig::new(&format!(
        "[alerts.sinks.am]\ntype = \"alertmanager\"\nurl = \"{url}\"\nresend_interval = \"1s\"\n"
    ));
    let r = firing(
        "node-a",
        Some(2),
        "gpu.thermal.hw_slowdown",
        Severity::Warning,
    );
    rig.transition(vec![r.clone()]);
    // The first send, then a re-send about a second later.
    let got = rx.wait(2, Duration::from_secs(5)).await;
    assert!(got.len() >= 2, "re-sent while firing");
    assert!(got[1].at - got[0].at >= Duration::from_millis(900));
    let a = &got[0].body[0];
    assert_eq!(a["labels"]["alertname"], "gpu.thermal.hw_slowdown");
    assert_eq!(a["labels"]["node"], "node-a");
    assert_eq!(a["labels"]["gpu"], "2");
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(
        a["annotations"]["action"],
        "Check the node's cooling and airflow"
    );
    assert!(
        a["annotations"]["evidence"]
            .as_str()
            .unwrap()
            .contains("temperature_gpu_celsius = 95")
    );
    assert!(a["startsAt"].is_string() && a.get("endsAt").is_none());
    assert_eq!(got[1].body[0]["labels"], a["labels"]);
    rig.transition(vec![resolved(r)]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let last = loop {
        let g = rx.got();
        if let Some(x) = g.iter().find(|x| x.body[0].get("endsAt").is_some()) {
            break x.clone();
        }
        assert!(Instant::now() < deadline, "no resolved alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(last.body[0]["endsAt"].as_str().unwrap() >= last.body[0]["startsAt"].as_str().unwrap());
    // No re-sends after the resolve.
    let n = rx.got().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), n);
}

#[tokio::test]
async fn exec_runs_the_program_with_the_json_on_stdin_and_records_exit_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got.json");
    let script = dir.path().join("page.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {}\necho \"paged $1\" >&2\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rig = Rig::new(&format!(
        "[alerts.sinks.pager]\ntype = \"exec\"\ncommand = [\"{}\", \"gpu-team\"]\n[alerts.sinks.broken]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo no route to pager >&2; exit 3\"]\n{FAST}give_up_after = \"1s\"\n",
        script.display()
    ));
    rig.transition(vec![firing(
        "node-a",
        None,
        "node.agent_offline",
        Severity::Warning,
    )]);
    let deadline = Instant::now() + Duration::from_secs(8);
    while rig.counts("broken").1 == 0 || !out.exists() {
        assert!(Instant::now() < deadline, "exec deliveries did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(got["alerts"][0]["cause"], "node.agent_offline");
    let ds = rig.store.alerts().deliveries(10).unwrap();
    let pager = ds.iter().find(|d| d.sink == "pager").unwrap();
    assert_eq!(pager.detail, "exit 0; stderr: paged gpu-team");
    let broken = ds.iter().find(|d| d.sink == "broken").unwrap();
    assert!(
        broken.detail.contains("exit 3; stderr: no route to pager"),
        "{}",
        broken.detail
    );
    assert!(
        broken.detail.starts_with("gave up after"),
        "{}",
        broken.detail
    );
    assert_eq!(rig.counts("broken"), (0, 1, 0));
}

#[tokio::test]
async fn a_receiver_that_is_down_or_failing_gets_it_once_when_it_recovers() {
    let rx = Receiver::default();
    rx.script(&[
        (500, None, Duration::ZERO),
        (503, None, Duration::ZERO),
        // Slower than the attempt timeout: abandoned and retried.
        (200, None, Duration::from_secs(3)),
    ]);
    let url = rx.start().await;
    // Down: nothing listens on this port at first.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let rig = Rig::new(&format!(
        "[alerts]\nwebhooks = [\"{url}/a\", \"{dead_url}/b\"]\n{FAST}give_up_after = \"3s\"\n"
    ));
    let before = Instant::now();
    rig.transition(vec![firing(
        "node-a",
        Some(0),
        "gpu.lost",
        Severity::Critical,
    )]);
    assert!(
        before.elapsed() < Duration::from_millis(500),
        "storing a transition waits for no receiver"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.counts("webhook-1").0 == 0 || rig.counts("webhook-2").1 == 0 {
        assert!(
            Instant::now() < deadline,
            "counts {:?} {:?}",
            rig.counts("webhook-1"),
            rig.counts("webhook-2")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The slow answer landed too late to count: the accepted copies carry one id.
    let got = rx.got();
    let ids: std::collections::BTreeSet<String> = got
        .iter()
        .map(|g| g.body["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let ds = rig.store.alerts().deliveries(10).unwrap();
    let a = ds.iter().find(|d| d.sink == "webhook-1").unwrap();
    assert!(
        a.attempts >= 4,
        "500, 503, timeout, then delivered: {} attempts",
        a.attempts
    );
    let b = ds.iter().find(|d| d.sink == "webhook-2").unwrap();
    assert!(b.detail.contains("cannot reach"), "{}", b.detail);
    assert_eq!(rig.counts("webhook-2"), (0, 1, 0));
    assert_eq!(rig.alerting.counters().outbox_pending(), 0);
}

#[tokio::test]
async fn silenced_alerts_are_recorded_not_sent_until_the_silence_expires() {
    let rx = Receiver::default();
    let url = rx.start().await;
    let rig = Rig::new(&format!("[alerts]\nwebhooks = [\"{url}/hook\"]\n"));
    let now = UnixMs::now();
    rig.store
        .alerts()
        .add_silence(&gpufleet_collector::alerting::silence::NewSilence {
            node: "node-a".into(),
            gpu: Some(3),
            cause_prefix: "gpu.thermal".into(),
            comment: "fan swap".into(),
            created_at: now,
            expires_at: now.plus_ms(1500),
        })
        .unwrap();
    rig.transition(vec![
        firing(
            "node-a",
            Some(3),
            "gpu.thermal.hw_slowdown",
            Severity::Critical,
        ),
        firing(
            "node-a",
            Some(4),
            "gpu.thermal.hw_slowdown",
            Severity::Critical,
        ),
    ]);
    let got = rx.wait(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len(), 1);
    assert_eq!(got[0].body["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(got[0].body["alerts"][0]["gpu"], 4, "GPU 3 is silenced");
    assert_eq!(rig.counts("webhook-1"), (1, 0, 1));
    let ds = rig.store.alerts().deliveries(10).unwrap();
    assert!(
        ds.iter()
            .any(|d| d.detail.starts_with("silenced by #")
                && d.notification.alerts[0].gpu == Some(3))
    );
    // After it expires, the same kind of alert goes out.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    rig.transition(vec![firing(
        "node-a",
        Some(3),
        "gpu.thermal.sw_slowdown",
        Severity::Warning,
    )]);
    let got = rx.wait(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body["alerts"][0]["gpu"], 3);
}

#[tokio::test]
async fn a_route_for_duration_drops_findings_that_resolve_sooner_and_dedupes_repeats() {
    let rx = Receiver::default();
    let url = rx.start().await;
    let rig = Rig::new(&format!(
        "[alerts.sinks.slow]\ntype = \"webhook\"\nurl = \"{url}/slow\"\n[alerts.sinks.fast]\ntype = \"webhook\"\nurl = \"{url}/fast\"\n[[alerts.routes]]\nsinks = [\"slow\"]\nfor = \"1s\"\n[[alerts.routes]]\nsinks = [\"fast\"]\nseverity = [\"critical\"]\n"
    ));
    let short = firing(
        "node-a",
        Some(0),
        "gpu.thermal.hw_slowdown",
        Severity::Critical,
    );
    rig.transition(vec![short.clone()]);
    // The same transition stored twice (e.g. re-applied) is one alert.
    rig.transition(vec![short.clone()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.transition(vec![resolved(short)]);
    let long = firing(
        "node-b",
        Some(1),
        "gpu.pcie.link_degraded",
        Severity::Warning,
    );
    rig.transition(vec![long]);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let got = rx.got();
    let summary: Vec<(String, String)> = got
        .iter()
        .map(|g| {
            (
                g.body["node"].as_str().unwrap().to_string(),
                g.body["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // fast (critical only): node-a firing + resolved; slow (`for` 1s): only node-b.
    assert_eq!(
        summary,
        [
            ("node-a".into(), "firing".into()),
            ("node-a".into(), "resolved".into()),
            ("node-b".into(), "firing".into())
        ],
        "{summary:?}"
    );
}

#[tokio::test]
async fn a_test_notification_is_marked_and_the_answer_returned() {
    let rx = Receiver::default();
    let url = rx.start().await;
    let rig = Rig::new(&format!("[alerts]\nwebhooks = [\"{url}/hook\"]\n"));
    let out = rig.alerting.test("webhook-1").await.unwrap();
    assert_eq!(
        out,
        gpufleet_collector::alerting::sinks::Outcome::Delivered("HTTP 200: ok".into())
    );
    let got = rx.got();
    assert_eq!(got[0].body["test"], true);
    assert!(
        got[0].body["alerts"][0]["title"]
            .as_str()
            .unwrap()
            .starts_with("TEST")
    );
    assert!(
        rig.alerting
            .test("nope")
            .await
            .unwrap_err()
            .contains("webhook-1")
    );
}
