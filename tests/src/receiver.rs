//! A webhook receiver for end-to-end tests and the latency bench: an axum server on a
//! loopback port, on its own thread, that timestamps every POST and answers with the status
//! the test sets (200 by default).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// One POST as it arrived.
#[derive(Debug, Clone)]
pub struct Post {
    /// Wall-clock arrival time.
    pub at: SystemTime,
    pub path: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

#[derive(Clone)]
struct Shared {
    posts: Arc<Mutex<Vec<Post>>>,
    answer: Arc<AtomicU16>,
}

pub struct Receiver {
    shared: Shared,
    pub url: String,
}

async fn take(
    State(s): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, &'static str) {
    let status = s.answer.load(Ordering::SeqCst);
    s.posts.lock().unwrap().push(Post {
        at: SystemTime::now(),
        path: uri.path().to_string(),
        status,
        headers,
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    });
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "ok",
    )
}

impl Receiver {
    /// Starts listening on 127.0.0.1 (any free port) before returning.
    pub fn start() -> Receiver {
        let shared = Shared {
            posts: Arc::default(),
            answer: Arc::new(AtomicU16::new(200)),
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        l.set_nonblocking(true).unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let s = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new()
                    .fallback(axum::routing::post(take))
                    .with_state(s);
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        Receiver { shared, url }
    }

    /// The status every following POST is answered with.
    pub fn answer(&self, status: u16) {
        self.shared.answer.store(status, Ordering::SeqCst);
    }

    /// Every POST so far (answered with any status).
    pub fn posts(&self) -> Vec<Post> {
        self.shared.posts.lock().unwrap().clone()
    }

    /// The POSTs answered 2xx: the ones delivered.
    pub fn accepted(&self) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| (200..300).contains(&p.status))
            .collect()
    }
}
