//! The `/metrics` exposition both binaries serve: the dcgm-exporter GPU series
//! ([`dcgm`]), the standard process series ([`process`]), label sets with escaped values, and
//! the two wire formats: OpenMetrics (what `prometheus-client` encodes) and the classic
//! Prometheus text format ([`text`], converted from it) chosen by the scraper's `Accept`.
//!
//! Rendering reads only what the caller passes in: never NVML, never a database.

pub mod dcgm;
pub mod process;
pub mod text;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};

/// The exposition format of one scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what dcgm-exporter serves and promtool checks.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper lists it in `Accept` (Prometheus does, first), else text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Turns a complete OpenMetrics exposition into this format.
    pub fn finish(self, openmetrics: String) -> String {
        match self {
            Format::OpenMetrics => openmetrics,
            Format::Prometheus => text::from_openmetrics(&openmetrics),
        }
    }
}

/// A label value, escaped as both formats require (`\`, `"` and newlines). Values come from
/// agents (model names, versions, labels): they must not be able to break the exposition.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let s = self.0;
        if !s.contains(['\\', '"', '\n']) {
            return encoder.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A label set given as `(name, value)` pairs, values escaped.
#[derive(Debug)]
pub struct LabelSet<'a, const N: usize>(pub [(&'static str, &'a str); N]);

impl<const N: usize> EncodeLabelSet for LabelSet<'_, N> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (k, v) in &self.0 {
            let mut label = encoder.encode_label();
            let mut key = label.encode_label_key()?;
            std::fmt::Write::write_str(&mut key, k)?;
            let mut value = key.encode_label_value()?;
            Escaped(v).encode(&mut value)?;
            value.finish()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::metrics::MetricType;

    #[derive(Debug)]
    struct One;
    impl prometheus_client::collector::Collector for One {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut m = enc.encode_descriptor("t", "help", None, MetricType::Gauge)?;
            let l = LabelSet([("a", "x\"y\\z\nw"), ("b", "plain")]);
            m.encode_family(&l)?.encode_gauge(&1i64)
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(One));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains(r#"t{a="x\"y\\z\nw",b="plain"} 1"#), "{out}");
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let prom =
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
    }
}
