//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` once per
//! family, then one `name{labels} value` line per sample; a histogram is its cumulative
//! `_bucket{le="..."}` lines, `_sum` and `_count`.

use std::fmt::Write;

use super::HistogramSnapshot;

/// The `Content-Type` of what [`TextEncoder`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families into a string, in the order they are given.
#[derive(Debug, Default)]
pub struct TextEncoder {
    out: String,
}

impl TextEncoder {
    pub const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    pub fn new() -> Self {
        TextEncoder::default()
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// Starts a family: its help text and type (`counter`, `gauge` or `histogram`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.out, "# HELP {name} ");
        escape_into(&mut self.out, help, false);
        let _ = writeln!(self.out, "\n# TYPE {name} {kind}");
    }

    pub fn sample_u64(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.series(name, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.series(name, labels, None);
        self.out.push(' ');
        push_f64(&mut self.out, value);
        self.out.push('\n');
    }

    /// A whole counter family with one unlabelled sample.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample_u64(name, &[], value);
    }

    /// A whole gauge family with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample_f64(name, &[], value);
    }

    /// One histogram's samples (after its `family`): `_bucket` lines with `le`, `_sum`, `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut le = String::new();
        for &(bound, count) in &h.cumulative {
            le.clear();
            push_f64(&mut le, bound);
            self.series(&bucket, labels, Some(&le));
            let _ = writeln!(self.out, " {count}");
        }
        self.sample_f64(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample_u64(&format!("{name}_count"), labels, h.count);
    }

    /// `name{a="x",b="y",le="z"}` (no braces without labels).
    fn series(&mut self, name: &str, labels: &[(&str, &str)], le: Option<&str>) {
        self.out.push_str(name);
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|v| ("le", v));
        for (i, (key, value)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value, true);
            self.out.push('"');
        }
        self.out.push('}');
    }
}

/// Escapes `\` and newlines (and, in label values, `"`), as the format requires.
fn escape_into(out: &mut String, text: &str, quotes: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Go's float syntax as Prometheus reads it: `+Inf`, `-Inf`, `NaN`, else Rust's shortest
/// round-trip decimal (`0.005`, `1`, `2.5`).
fn push_f64(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Histogram;

    #[test]
    fn renders_the_exposition_format() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_secs(20));
        let mut e = TextEncoder::new();
        e.counter(
            "loghouse_produce_records_total",
            "Records acknowledged.",
            42,
        );
        e.gauge("loghouse_raft_term", "The term.\\ a \"quoted\"\nline", 7.0);
        e.family("loghouse_gossip_members", "gauge", "Members by state.");
        e.sample_u64("loghouse_gossip_members", &[("state", "up")], 3);
        e.sample_u64("loghouse_gossip_members", &[("state", "a\"b\\c\nd")], 0);
        e.family("loghouse_rpc_duration_seconds", "histogram", "Latency.");
        e.histogram(
            "loghouse_rpc_duration_seconds",
            &[("rpc", "Produce")],
            &h.snapshot(),
        );
        let expected = r#"# HELP loghouse_produce_records_total Records acknowledged.
# TYPE loghouse_produce_records_total counter
loghouse_produce_records_total 42
# HELP loghouse_raft_term The term.\\ a "quoted"\nline
# TYPE loghouse_raft_term gauge
loghouse_raft_term 7
# HELP loghouse_gossip_members Members by state.
# TYPE loghouse_gossip_members gauge
loghouse_gossip_members{state="up"} 3
loghouse_gossip_members{state="a\"b\\c\nd"} 0
# HELP loghouse_rpc_duration_seconds Latency.
# TYPE loghouse_rpc_duration_seconds histogram
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.00005"} 1
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.0001"} 1
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.00025"} 1
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.0005"} 1
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.001"} 1
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.0025"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.005"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.01"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.025"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.05"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.1"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.25"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="0.5"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="1"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="2.5"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="5"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="7.5"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="10"} 2
loghouse_rpc_duration_seconds_bucket{rpc="Produce",le="+Inf"} 3
loghouse_rpc_duration_seconds_sum{rpc="Produce"} 20.00203
loghouse_rpc_duration_seconds_count{rpc="Produce"} 3
"#;
        assert_eq!(e.finish(), expected);
    }

    #[test]
    fn special_floats() {
        let mut s = String::new();
        for v in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.5, 3.0] {
            push_f64(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "+Inf -Inf NaN 0.5 3 ");
    }
}
