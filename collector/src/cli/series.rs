//! `gpufleet series NODE NAME`: one reading of a node over time, and its human output.

use anyhow::Result;
use gpufleet_model::UnixMs;
use gpufleet_proto::v1 as pb;

use super::render::table;
use super::{Client, status};

/// Which aggregate a table shows per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stat {
    Mean,
    Min,
    Max,
}

impl Stat {
    fn name(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::Min => "min",
            Stat::Max => "max",
        }
    }

    fn of(self, p: &pb::SeriesPoint) -> f64 {
        match self {
            Stat::Mean => p.mean,
            Stat::Min => p.min,
            Stat::Max => p.max,
        }
    }
}

/// A series request; `name` empty asks for the list of series.
pub struct Ask<'a> {
    pub node: &'a str,
    pub name: &'a str,
    pub gpu: Option<u32>,
    pub since: UnixMs,
    pub until: Option<UnixMs>,
    pub step_ms: i64,
}

pub async fn fetch(c: &mut Client, ask: &Ask<'_>) -> Result<pb::SeriesResponse> {
    let r = c
        .series(pb::SeriesRequest {
            node: ask.node.to_string(),
            series: ask.name.to_string(),
            gpu: ask.gpu,
            since_unix_ms: ask.since.0,
            until_unix_ms: ask.until.map(|t| t.0),
            step_ms: ask.step_ms,
        })
        .await
        .map_err(status)?;
    Ok(r.into_inner())
}

/// The series there are, one a line.
pub fn list(r: &pb::SeriesResponse) -> String {
    let mut t = table();
    t.set_header(["SERIES", "UNIT", "PER", "WHAT"]);
    for s in &r.available {
        t.add_row([
            s.name.as_str(),
            s.unit.as_str(),
            if s.per_gpu { "GPU" } else { "host" },
            s.help.as_str(),
        ]);
    }
    format!("{t}\n")
}

fn number(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{v:.3e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A table: one row per bucket, one column per GPU (or one for the host), `stat` of each
/// bucket; then the whole window's min, mean and max per column.
pub fn render(r: &pb::SeriesResponse, node: &str, stat: Stat) -> String {
    let step =
        humantime::format_duration(std::time::Duration::from_millis(r.step_ms.max(0) as u64));
    let mut out = format!(
        "{} ({}) on {node}: {} per {step}, from the {} tier\n",
        r.series,
        if r.unit.is_empty() { "-" } else { &r.unit },
        stat.name(),
        r.tier
    );
    if r.lines.iter().all(|l| l.points.is_empty()) {
        out += "No readings in this window.\n";
        return out;
    }
    let mut times: Vec<i64> = r
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.start_unix_ms))
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut t = table();
    let mut header = vec!["FROM".to_string()];
    header.extend(r.lines.iter().map(|l| match l.gpu {
        Some(g) => format!("GPU {g}"),
        None => "HOST".into(),
    }));
    t.set_header(header);
    for at in &times {
        let mut row = vec![UnixMs(*at).to_string()];
        for l in &r.lines {
            row.push(
                l.points
                    .binary_search_by_key(at, |p| p.start_unix_ms)
                    .map(|i| number(stat.of(&l.points[i])))
                    .unwrap_or_else(|_| "-".into()),
            );
        }
        t.add_row(row);
    }
    let mut row = vec!["window min".to_string()];
    row.extend(
        r.lines
            .iter()
            .map(|l| number(l.points.iter().map(|p| p.min).fold(f64::INFINITY, f64::min))),
    );
    t.add_row(row);
    let mut row = vec!["window max".to_string()];
    row.extend(r.lines.iter().map(|l| {
        number(
            l.points
                .iter()
                .map(|p| p.max)
                .fold(f64::NEG_INFINITY, f64::max),
        )
    }));
    t.add_row(row);
    let mut row = vec!["window mean".to_string()];
    for l in &r.lines {
        let n: f64 = l.points.iter().map(|p| f64::from(p.count)).sum();
        let sum: f64 = l.points.iter().map(|p| p.mean * f64::from(p.count)).sum();
        row.push(number(if n > 0.0 { sum / n } else { f64::NAN }));
    }
    t.add_row(row);
    out += &format!("{t}\n");
    out
}

/// `gpufleet series -o json`: every aggregate of every bucket.
pub fn json(r: &pb::SeriesResponse, node: &str) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = r
        .lines
        .iter()
        .map(|l| {
            let points: Vec<serde_json::Value> = l
                .points
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "start": UnixMs(p.start_unix_ms).to_string(),
                        "start_unix_ms": p.start_unix_ms,
                        "count": p.count, "min": p.min, "max": p.max, "mean": p.mean,
                    })
                })
                .collect();
            serde_json::json!({ "gpu": l.gpu, "points": points })
        })
        .collect();
    serde_json::json!({
        "node": node, "series": r.series, "unit": r.unit, "step_ms": r.step_ms,
        "tier": r.tier, "lines": lines,
    })
}

/// `gpufleet series --list -o json`.
pub fn list_json(r: &pb::SeriesResponse) -> serde_json::Value {
    r.available
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name, "unit": s.unit, "help": s.help, "per_gpu": s.per_gpu,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: i64, min: f64, max: f64) -> pb::SeriesPoint {
        pb::SeriesPoint {
            start_unix_ms: t,
            count: 60,
            min,
            max,
            mean: (min + max) / 2.0,
        }
    }

    #[test]
    fn table_has_a_column_per_gpu_and_window_totals() {
        let r = pb::SeriesResponse {
            series: "temperature".into(),
            unit: "°C".into(),
            step_ms: 60_000,
            tier: "1m".into(),
            lines: vec![
                pb::SeriesLine {
                    gpu: Some(0),
                    points: vec![point(0, 40.0, 50.0), point(60_000, 50.0, 70.0)],
                },
                pb::SeriesLine {
                    gpu: Some(1),
                    points: vec![point(60_000, 80.0, 90.0)],
                },
            ],
            available: vec![],
        };
        let out = render(&r, "n1", Stat::Mean);
        assert!(
            out.starts_with("temperature (°C) on n1: mean per 1m, from the 1m tier"),
            "{out}"
        );
        assert!(out.contains("GPU 0") && out.contains("GPU 1"), "{out}");
        let first = out
            .lines()
            .find(|l| l.contains("1970-01-01T00:00:00Z"))
            .unwrap();
        assert!(first.contains("45") && first.contains('-'), "{first}");
        let min = out.lines().find(|l| l.contains("window min")).unwrap();
        assert!(min.contains("40") && min.contains("80"), "{min}");
        let max = out.lines().find(|l| l.contains("window max")).unwrap();
        assert!(max.contains("70") && max.contains("90"), "{max}");
        let mean = out.lines().find(|l| l.contains("window mean")).unwrap();
        assert!(mean.contains("52.5") && mean.contains("85"), "{mean}");
        let empty = pb::SeriesResponse { lines: vec![], ..r };
        assert!(render(&empty, "n1", Stat::Max).contains("No readings"));
    }
}
