//! The `/metrics` listener: its own port (dcgm-exporter's 9400 by default), apart from gRPC.
//! The exposition format follows the scraper's `Accept` header; rendering runs off the
//! reactor (a large fleet is many series).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use gpufleet_model::UnixMs;
use gpufleet_model::exposition::Format;
use tokio::net::TcpListener;

use super::Metrics;

/// Binds the metrics address; the error says what to do when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for /metrics on {addr}: {e} (another exporter on that port? pass \
             --metrics-listen ADDR, or --metrics-listen off to serve none)"
        )
    })
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let metrics = metrics.clone();
            async move {
                let format =
                    Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
                match tokio::task::spawn_blocking(move || metrics.render(format, UnixMs::now()))
                    .await
                {
                    Ok(body) => {
                        ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
                    }
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("rendering /metrics failed: {e}"),
                    )
                        .into_response(),
                }
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("the /metrics listener stopped: {e}");
        }
    })
}
