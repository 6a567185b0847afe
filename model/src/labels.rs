//! Node labels (`pool=training`, `rack=r12`) and kubectl-style selectors over them
//! (`pool=training,rack!=r13`, `gpu-spare`, `!draining`, `rack in (r12,r13)`).
//!
//! Keys and values follow Kubernetes' rules, so labels can be copied from node objects: a key
//! is an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters of
//! `[A-Za-z0-9._-]` that begins and ends with a letter or digit; a value is empty or such a
//! name. Nothing here panics on input: every bad label or selector is an error saying why.

use std::collections::BTreeMap;
use std::fmt;

/// A node's labels, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// Most labels one node may carry.
pub const MAX_LABELS: usize = 64;
const MAX_NAME: usize = 63;
const MAX_PREFIX: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error(
        "label {0:?}: write key=value (e.g. pool=training); keys and values use letters, digits, '-', '_' and '.'"
    )]
    Syntax(String),
    #[error("label key {key:?}: {why}")]
    Key { key: String, why: String },
    #[error("label {key}: value {value:?}: {why}")]
    Value {
        key: String,
        value: String,
        why: String,
    },
    #[error("label {0:?} is given twice")]
    Duplicate(String),
    #[error("{0} labels: at most {MAX_LABELS} per node")]
    TooMany(usize),
    #[error(
        "selector {selector:?}: {why} (write e.g. pool=training,rack!=r13 or \"rack in (r12,r13)\")"
    )]
    Selector { selector: String, why: String },
}

/// Checks a name part: ≤ 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_NAME {
        return Err(format!("{} characters, at most {MAX_NAME}", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '-', '_', '.')"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err("must begin and end with a letter or digit".into());
    }
    Ok(())
}

/// Checks a label key (`[prefix/]name`).
pub fn check_key(key: &str) -> Result<(), LabelError> {
    let err = |why: String| LabelError::Key {
        key: key.to_string(),
        why,
    };
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > MAX_PREFIX {
                return Err(err(format!(
                    "the prefix before '/' must have 1 to {MAX_PREFIX} characters"
                )));
            }
            for part in prefix.split('.') {
                let ok = !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-');
                if !ok {
                    return Err(err(format!(
                        "the prefix {prefix:?} must be a DNS subdomain (lowercase letters, digits, '-', '.')"
                    )));
                }
            }
            name
        }
        None => key,
    };
    check_name(name).map_err(err)
}

/// Checks a label value (empty, or a name).
pub fn check_value(key: &str, value: &str) -> Result<(), LabelError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value).map_err(|why| LabelError::Value {
        key: key.to_string(),
        value: value.to_string(),
        why,
    })
}

/// Checks a whole label set (keys, values, count).
pub fn check_labels(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany(labels.len()));
    }
    check_label_names(labels)
}

/// Checks every key and value, not how many there are (the collector counts them against its
/// own `limits.max_labels`).
pub fn check_label_names(labels: &Labels) -> Result<(), LabelError> {
    for (k, v) in labels {
        check_key(k)?;
        check_value(k, v)?;
    }
    Ok(())
}

/// Parses `key=value` items (from `--label` flags or a comma-separated `GPUFLEET_LABELS`),
/// checking each.
pub fn parse_labels<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Labels, LabelError> {
    let mut out = Labels::new();
    for item in items
        .into_iter()
        .flat_map(|i| i.split(','))
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| LabelError::Syntax(item.to_string()))?;
        let (k, v) = (k.trim(), v.trim());
        check_key(k)?;
        check_value(k, v)?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(LabelError::Duplicate(k.to_string()));
        }
    }
    check_labels(&out)?;
    Ok(out)
}

/// Labels as `key=value` items joined by commas (`pool=training,rack=r12`): the form
/// `--label`, `GPUFLEET_LABELS` and [`parse_labels`] read, so it round-trips.
pub fn format_labels(labels: &Labels) -> String {
    let items: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    items.join(",")
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the key is absent, as in Kubernetes).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the key is absent).
    NotIn(String, Vec<String>),
    /// `key`: the label exists.
    Exists(String),
    /// `!key`: the label does not exist.
    Absent(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        }
    }
}

/// A label selector: every requirement must hold. The empty selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Selects every node.
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses kubectl's syntax: requirements separated by commas (outside parentheses).
    pub fn parse(text: &str) -> Result<Selector, LabelError> {
        let err = |why: String| LabelError::Selector {
            selector: text.to_string(),
            why,
        };
        let mut requirements = Vec::new();
        for part in split_top_level(text).map_err(err)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(err("an empty requirement between commas".into()));
            }
            requirements.push(parse_requirement(part).map_err(err)?);
        }
        Ok(Selector { requirements })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::Absent(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("a ')' without its '('".into());
                }
            }
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("a '(' without its ')'".into());
    }
    out.push(&text[start..]);
    Ok(out)
}

fn key_of(k: &str) -> Result<String, String> {
    let k = k.trim();
    check_key(k).map_err(|e| e.to_string())?;
    Ok(k.to_string())
}

fn value_of(k: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    check_value(k, v).map_err(|e| e.to_string())?;
    Ok(v.to_string())
}

fn set_of(k: &str, rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("the values of {k:?} go in parentheses: {k} in (a,b)"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| value_of(k, v))
        .collect::<Result<_, _>>()?;
    if values.iter().all(String::is_empty) {
        return Err(format!("{k:?}: the set of values is empty"));
    }
    Ok(values)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some((k, v)) = part.split_once("!=") {
        let k = key_of(k)?;
        return Ok(Requirement::NotEquals(k.clone(), value_of(&k, v)?));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        let k = key_of(k)?;
        return Ok(Requirement::Equals(k.clone(), value_of(&k, v)?));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [k, rest] = words[..] {
        let rest = rest.trim_start();
        if let Some(set) = rest.strip_prefix("notin") {
            let k = key_of(k)?;
            return Ok(Requirement::NotIn(k.clone(), set_of(&k, set)?));
        }
        if let Some(set) = rest.strip_prefix("in") {
            let k = key_of(k)?;
            return Ok(Requirement::In(k.clone(), set_of(&k, set)?));
        }
        return Err(format!(
            "{part:?}: expected key=value, key!=value, key in (..), key notin (..), key or !key"
        ));
    }
    match part.strip_prefix('!') {
        Some(k) => Ok(Requirement::Absent(key_of(k)?)),
        None => Ok(Requirement::Exists(key_of(part)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[(&str, &str)]) -> Labels {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_label_flags_and_env() {
        let l = parse_labels(["pool=training", "rack=r12,zone=eu-1", " gpu-spare= "]).unwrap();
        assert_eq!(
            l,
            labels(&[
                ("gpu-spare", ""),
                ("pool", "training"),
                ("rack", "r12"),
                ("zone", "eu-1")
            ])
        );
        assert_eq!(parse_labels([""]).unwrap(), Labels::new());
        assert!(parse_labels(["example.com/team=ml"]).is_ok());
    }

    #[test]
    fn formatted_labels_parse_back() {
        let l = labels(&[
            ("example.com/team", "ml"),
            ("pool", "training"),
            ("spare", ""),
        ]);
        assert_eq!(
            format_labels(&l),
            "example.com/team=ml,pool=training,spare="
        );
        assert_eq!(parse_labels([format_labels(&l).as_str()]).unwrap(), l);
        assert_eq!(format_labels(&Labels::new()), "");
    }

    #[test]
    fn bad_labels_say_why() {
        let cases: &[(&str, &str)] = &[
            ("pool", "write key=value"),
            ("=x", "must not be empty"),
            ("po ol=x", "' ' is not allowed"),
            ("pool=-x", "begin and end"),
            ("pool=a,pool=b", "given twice"),
            ("Bad_Prefix/x=1", "DNS subdomain"),
            ("k=", ""),
        ];
        for (text, want) in cases {
            let got = parse_labels([*text]);
            if want.is_empty() {
                assert!(got.is_ok(), "{text}: {got:?}");
                continue;
            }
            let e = got.expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let long = format!("k={}", "v".repeat(64));
        assert!(
            parse_labels([long.as_str()])
                .unwrap_err()
                .to_string()
                .contains("at most 63")
        );
        let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            parse_labels(many.iter().map(String::as_str)).unwrap_err(),
            LabelError::TooMany(65)
        );
    }

    #[test]
    fn selectors_match_like_kubectl() {
        let node = labels(&[("pool", "training"), ("rack", "r12")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("pool=training", true),
            ("pool==training", true),
            ("pool=inference", false),
            ("pool!=inference", true),
            ("zone!=eu", true),
            ("pool=training,rack!=r12", false),
            ("rack in (r11, r12)", true),
            ("rack notin (r11,r12)", false),
            ("zone notin (a)", true),
            ("zone in (a)", false),
            ("pool", true),
            ("!pool", false),
            ("!zone", true),
            ("pool=training, rack in (r12,r13), !draining", true),
        ];
        for (text, want) in cases {
            let s = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.matches(&node), *want, "{text}");
            // Display round-trips.
            assert_eq!(Selector::parse(&s.to_string()).unwrap(), s, "{text}");
        }
        assert!(Selector::parse("").unwrap().is_everything());
    }

    #[test]
    fn bad_selectors_say_why() {
        for (text, want) in [
            ("pool=training,", "empty requirement"),
            ("rack in (r1", "without its ')'"),
            ("rack in r1", "in parentheses"),
            ("rack within (r1)", "expected key=value"),
            ("po ol=x", "not allowed"),
            ("rack in ()", "empty"),
            ("a=b)", "without its '('"),
        ] {
            let e = Selector::parse(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("write e.g."), "{text}: {e}");
        }
    }
}
