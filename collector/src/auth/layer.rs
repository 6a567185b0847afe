//! The tower layer in front of every gRPC service: classifies the call by its path
//! ([`Need::of`]), checks the caller's token and certificate ([`Auth::check`]) and either puts
//! the [`super::Caller`] in the request's extensions for the service or answers the refusal
//! itself, before any message is decoded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{Auth, Need, tls};

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Auth>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            auth: self.auth.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    auth: Arc<Auth>,
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let need = Need::of(req.uri().path());
        let ext = req.extensions();
        let tls_info = ext.get::<TlsConnectInfo<TcpConnectInfo>>();
        let peer: Option<SocketAddr> = tls_info
            .and_then(|i| i.get_ref().remote_addr())
            .or_else(|| ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()));
        let names = || {
            tls_info
                .and_then(|i| i.peer_certs())
                .and_then(|certs| certs.first().map(tls::cert_names))
        };
        let authorization = req
            .headers()
            .get(gpufleet_proto::client::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match self.auth.check(need, authorization, peer, names) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                // The service that was made ready is the one called (tower's contract).
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                ready.call(req).boxed()
            }
            Err(status) => {
                let response = status.into_http::<Body>();
                async move { Ok(response) }.boxed()
            }
        }
    }
}
