//! A strict reader of the text format: stricter than Prometheus itself (which tolerates
//! some of these), so a test that parses a scrape with it knows every scraper can.
//!
//! Checked: names and label names by the format's character rules; label values quoted
//! with only `\\`, `\"` and `\n` escapes and no raw newline; a value after one space and
//! no timestamp; each family's HELP and TYPE exactly once, before its samples; the
//! samples of a family contiguous; no series twice; counters named `…_total`; a final
//! newline and no empty line (an empty text, no families at all, is valid).

use std::collections::{HashMap, HashSet};

/// One sample line, label values unescaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`NaN` and the infinities included).
    pub value: f64,
}

impl Sample {
    /// Whether every `(key, value)` in `labels` is among this sample's labels.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(sk, sv)| sk == k && sv == v))
    }
}

/// The first sample named `name` that has `labels` (and maybe others).
pub fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && s.has_labels(labels))
}

/// Where the text breaks the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}: {text:?}")]
pub struct ExpositionError {
    /// 1-based line number (0 for the text as a whole).
    pub line: usize,
    /// What is wrong.
    pub problem: String,
    /// The offending line.
    pub text: String,
}

#[derive(Debug, Default)]
struct Family {
    help: usize,
    types: Vec<String>,
    samples: usize,
}

/// Parses and checks a whole exposition; its samples in order.
pub fn parse(text: &str) -> Result<Vec<Sample>, ExpositionError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(error(0, "does not end with a newline", ""));
    }
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let fail = |problem: &str| error(number, problem, line);
        let mut open = |name: &str| -> Result<(), ExpositionError> {
            if current.as_deref() != Some(name) {
                if let Some(previous) = current.take() {
                    finished.insert(previous);
                }
                if finished.contains(name) {
                    return Err(fail("family is not contiguous"));
                }
                current = Some(name.to_owned());
            }
            Ok(())
        };
        if line.is_empty() {
            return Err(fail("empty line"));
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest.split_once(' ').unwrap_or((rest, ""));
            if !is_metric_name(name) {
                return Err(fail("bad metric name"));
            }
            open(name)?;
            let family = families.entry(name.to_owned()).or_default();
            if family.samples > 0 {
                return Err(fail("HELP after samples"));
            }
            family.help += 1;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let Some((name, kind)) = rest.split_once(' ') else {
                return Err(fail("TYPE without a type"));
            };
            if !matches!(kind, "gauge" | "counter") {
                return Err(fail("type is neither gauge nor counter"));
            }
            open(name)?;
            let family = families.entry(name.to_owned()).or_default();
            if family.samples > 0 {
                return Err(fail("TYPE after samples"));
            }
            family.types.push(kind.to_owned());
        } else if line.starts_with('#') {
            return Err(fail("unexpected comment"));
        } else {
            let sample = parse_sample(line).map_err(|problem| fail(&problem))?;
            open(&sample.name)?;
            families.entry(sample.name.clone()).or_default().samples += 1;
            if !series.insert(format!("{}{:?}", sample.name, sample.labels)) {
                return Err(fail("the same series twice"));
            }
            samples.push(sample);
        }
    }
    let mut names: Vec<&String> = families.keys().collect();
    names.sort();
    for name in names {
        let family = &families[name];
        let fail = |problem: &str| error(0, problem, name);
        if family.help != 1 {
            return Err(fail("HELP not exactly once"));
        }
        if family.types.len() != 1 {
            return Err(fail("TYPE not exactly once"));
        }
        if family.samples == 0 {
            return Err(fail("family without samples"));
        }
        if family.types[0] == "counter" && !name.ends_with("_total") {
            return Err(fail("counter not named …_total"));
        }
    }
    Ok(samples)
}

fn error(line: usize, problem: &str, text: &str) -> ExpositionError {
    ExpositionError {
        line,
        problem: problem.to_owned(),
        text: text.to_owned(),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|e| format!("bad value {text:?}: {e}")),
    }
}

/// One sample line: `name{label="value",…} value`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("sample has no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let key = &rest[..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next().ok_or("label value not terminated")?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next().ok_or("escape not completed")?.1 {
                        'n' => value.push('\n'),
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    c => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("labels not separated by ,".into());
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or("no single space before the value")?;
    if value.contains(' ') {
        return Err("a timestamp or trailing text after the value".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: parse_value(value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_texts_are_refused() {
        let cases = [
            ("a 1", "newline"),
            ("# TYPE a gauge\na 1\n", "HELP"),
            (
                "# HELP a x\n# TYPE a gauge\na{v=\"x\ny\"} 1\n",
                "terminated",
            ),
            ("# HELP a x\n# TYPE a gauge\na{v=\"x\\ty\"} 1\n", "escape"),
            ("# HELP a x\n# TYPE a gauge\na 1 123\n", "timestamp"),
            ("# HELP a x\n# TYPE a gauge\na 1\na 2\n", "twice"),
            (
                "# HELP a x\n# TYPE a gauge\na{k=\"1\"} 1\n# HELP b x\n# TYPE b gauge\nb 1\na{k=\"2\"} 1\n",
                "contiguous",
            ),
            ("# HELP a x\n# TYPE a counter\na 1\n", "_total"),
            ("# HELP a x\n# TYPE a gauge\na{1k=\"v\"} 1\n", "label name"),
        ];
        for (text, problem) in cases {
            let Err(e) = parse(text) else {
                panic!("{text:?} accepted");
            };
            assert!(e.to_string().contains(problem), "{text:?}: {e}");
        }
    }
}
