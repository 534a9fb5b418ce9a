//! The Prometheus text exposition format (version 0.0.4), written in one place for every
//! `/metrics` Shorthorn serves (the engine's and the manager's): label values and HELP
//! texts escaped, names sanitised, and each family's samples kept together under one
//! HELP and TYPE line, as the format requires. [`exposition::parse`] reads the format
//! back strictly, so tests can prove that what is written is what a scraper reads.

use std::fmt::Write as _;

pub mod exposition;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's samples measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only grows (its name ends in `_total`).
    Counter,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        }
    }
}

/// Writes the HELP and TYPE lines that open family `name`. Every sample of the family
/// must follow before the next family opens.
pub fn family_header(out: &mut String, name: &str, help: &str, kind: MetricKind) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
}

/// Writes one sample line; `value` is already formatted (see [`float`]).
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label_value(val));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// A sample value as Prometheus parses it (`NaN`, `+Inf`, `-Inf`, or a decimal).
pub fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// Escapes `\`, `"` and newline in a label value.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `\` and newline in a HELP text.
pub fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Replaces characters not allowed in a metric (`[a-zA-Z_:][a-zA-Z0-9_:]*`, `metric`
/// true) or label (`[a-zA-Z_][a-zA-Z0-9_]*`) name with `_`.
pub fn sanitize_name(name: &str, metric: bool) -> String {
    let mut out: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || (metric && c == ':')
                || (i > 0 && c.is_ascii_digit());
            if ok { c } else { '_' }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn escaping_and_values() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz\""), "x\\\\y\\nz\"");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(3.0), "3");
        assert_eq!(sanitize_name("a-b.c:d", true), "a_b_c:d");
        assert_eq!(sanitize_name("9x:y", false), "_x_y");
        assert_eq!(sanitize_name("", false), "_");
    }

    #[test]
    fn what_is_written_reads_back_unchanged() {
        let awkward = "say \"hi\"\\\nbye";
        let mut out = String::new();
        family_header(&mut out, "x_bytes", "Bytes\nof x \\ y", MetricKind::Gauge);
        sample(
            &mut out,
            "x_bytes",
            &[("volume", awkward), ("disk", "d")],
            "7",
        );
        family_header(&mut out, "x_total", "", MetricKind::Counter);
        sample(&mut out, "x_total", &[], &float(f64::INFINITY));
        let samples = exposition::parse(&out).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(
            samples[0].labels,
            vec![
                ("volume".to_owned(), awkward.to_owned()),
                ("disk".to_owned(), "d".to_owned())
            ]
        );
        assert_eq!(samples[0].value, 7.0);
        assert_eq!(samples[1].value, f64::INFINITY);
    }
}
