//! Generic webhook: POSTs the notification as JSON (the versioned schema in docs/alerts.md),
//! optionally signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).

use std::collections::BTreeMap;

use base64::Engine as _;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Outcome, SendContext, Sink, SinkSpec, post_json};
use crate::alerting::alert::Notification;
use crate::alerting::config::{AlertsConfigError, check_url};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Signing secret: `whsec_<base64>` (Standard Webhooks; the key is the decoded bytes) or
    /// any other string (its bytes are the key). Unset: requests are not signed.
    #[serde(default)]
    pub secret: Option<String>,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl WebhookConfig {
    /// A webhook for `url` without signing (`serve --alert-webhook`).
    pub fn plain(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.to_string(),
            secret: None,
            headers: BTreeMap::new(),
        }
    }
}

/// The HMAC key a secret stands for.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the part after whsec_ is not base64 ({e})")),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// A header-safe form of a notification id (visible ASCII, else its SHA-256).
pub fn header_id(id: &str) -> String {
    if !id.is_empty() && id.len() <= 250 && id.bytes().all(|b| b.is_ascii_graphic()) {
        return id.to_string();
    }
    use sha2::Digest;
    format!("sha256:{}", crate::alerting::alert::hex(&Sha256::digest(id.as_bytes())))
}

impl SinkSpec for WebhookConfig {
    fn check(&self, key: &str) -> Result<(), AlertsConfigError> {
        check_url(&format!("{key}.url"), &self.url)?;
        if let Some(s) = &self.secret {
            let k = secret_key(s).map_err(|e| AlertsConfigError::new(format!("{key}.secret"), e))?;
            if k.is_empty() {
                return Err(AlertsConfigError::new(format!("{key}.secret"), "is empty"));
            }
        }
        for (h, v) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                return Err(AlertsConfigError::new(
                    format!("{key}.headers.{h}"),
                    "not a valid HTTP header name and value",
                ));
            }
        }
        Ok(())
    }

    fn build(&self, _name: &str) -> Box<dyn Sink> {
        Box::new(Webhook {
            url: self.url.clone(),
            key: self.secret.as_deref().and_then(|s| secret_key(s).ok()),
            headers: self.headers.clone().into_iter().collect(),
        })
    }
}

struct Webhook {
    url: String,
    key: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
}

impl Sink for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, n: &'a Notification, ctx: &'a SendContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let body = serde_json::to_vec(n).expect("notifications always serialize");
            let id = header_id(&n.id);
            let mut headers: Vec<(&str, String)> = self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            headers.push(("idempotency-key", id.clone()));
            if let Some(key) = &self.key {
                let ts = gpufleet_model::UnixMs::now().0 / 1000;
                headers.push(("webhook-signature", signature(key, &id, ts, &body)));
                headers.push(("webhook-timestamp", ts.to_string()));
                headers.push(("webhook-id", id));
            }
            post_json(ctx, &self.url, &headers, body).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The test vector of the Standard Webhooks spec's reference libraries.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn ids_that_are_not_header_safe_are_hashed() {
        assert_eq!(header_id("n1/gpu0/c@firing:1"), "n1/gpu0/c@firing:1");
        assert!(header_id("nœud/gpu0").starts_with("sha256:"));
    }
}
