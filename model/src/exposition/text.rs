//! OpenMetrics → the classic Prometheus text format (0.0.4), family by family:
//! `prometheus-client` encodes OpenMetrics only, and promtool, dcgm-exporter's users and older
//! scrapers speak the classic format. The differences handled: a counter family is named with
//! its `_total` suffix (when its samples carry one), `info` becomes a gauge named `…_info`,
//! `unknown` becomes `untyped`, and `# UNIT`, `# EOF` and `_created` samples are dropped.

/// Converts a complete OpenMetrics exposition.
pub fn from_openmetrics(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut lines = om.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("# HELP ") else {
            if !line.starts_with('#') && !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        };
        let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut kind = "untyped";
        if let Some(t) = lines.peek().and_then(|l| l.strip_prefix("# TYPE ")) {
            kind = t.rsplit(' ').next().unwrap_or("untyped");
            lines.next();
        }
        if lines.peek().is_some_and(|l| l.starts_with("# UNIT ")) {
            lines.next();
        }
        let mut samples = Vec::new();
        while let Some(l) = lines.peek() {
            if l.starts_with('#') {
                break;
            }
            samples.push(*l);
            lines.next();
        }
        let total = format!("{name}_total");
        let (family, kind) = match kind {
            "counter" if samples.first().is_none_or(|s| s.starts_with(&total)) => {
                (total.clone(), "counter")
            }
            "info" => (format!("{name}_info"), "gauge"),
            "unknown" => (name.to_string(), "untyped"),
            k => (name.to_string(), k),
        };
        out.push_str("# HELP ");
        out.push_str(&family);
        out.push(' ');
        out.push_str(help);
        out.push_str("\n# TYPE ");
        out.push_str(&family);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
        let created = format!("{name}_created");
        for s in samples {
            if s.starts_with(&created) {
                continue;
            }
            out.push_str(s);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_renamed_and_openmetrics_only_lines_dropped() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 3\na_requests_created 17\n\
                  # HELP DCGM_FI_DEV_X Energy.\n# TYPE DCGM_FI_DEV_X counter\nDCGM_FI_DEV_X{gpu=\"0\"} 5\n\
                  # HELP b_build Build.\n# TYPE b_build info\nb_build_info{v=\"1\"} 1\n\
                  # HELP c_age_seconds Age.\n# TYPE c_age_seconds gauge\n# UNIT c_age_seconds seconds\nc_age_seconds 2.5\n\
                  # HELP d_thing Thing.\n# TYPE d_thing unknown\nd_thing 1\n# EOF\n";
        let want = "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 3\n\
                    # HELP DCGM_FI_DEV_X Energy.\n# TYPE DCGM_FI_DEV_X counter\nDCGM_FI_DEV_X{gpu=\"0\"} 5\n\
                    # HELP b_build_info Build.\n# TYPE b_build_info gauge\nb_build_info{v=\"1\"} 1\n\
                    # HELP c_age_seconds Age.\n# TYPE c_age_seconds gauge\nc_age_seconds 2.5\n\
                    # HELP d_thing Thing.\n# TYPE d_thing untyped\nd_thing 1\n";
        assert_eq!(from_openmetrics(om), want);
    }
}
