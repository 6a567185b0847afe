//! Compliance policies (TOML, `docs/policy.md`): rules that select nodes by GPU model and
//! labels and constrain inventory fields ([`super::fields`]) to an exact value, a list, or a
//! version range. Parsing is strict: an unknown key, a value of the wrong type or a bad range
//! or selector is an error naming the file, the line and what is allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use gpufleet_model::Selector;
use gpufleet_model::config_file::line_of;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::fields::{self, Field, Kind, Value};
use super::version::{self, Range};

/// A bad policy: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {origin}{}: {message}", .line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct PolicyError {
    pub origin: String,
    pub line: Option<usize>,
    pub message: String,
}

/// What one constraint allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    Exact(Value),
    OneOf(Vec<Value>),
    Range(Range),
}

impl Constraint {
    /// Whether a reading satisfies the constraint; a missing reading satisfies nothing.
    pub fn allows(&self, v: Option<&Value>) -> bool {
        let Some(v) = v else {
            return false;
        };
        match (self, v) {
            (Constraint::Exact(want), v) => same(want, v),
            (Constraint::OneOf(list), v) => list.iter().any(|w| same(w, v)),
            (Constraint::Range(r), Value::Text(s)) => r.contains(s),
            (Constraint::Range(r), Value::Int(n)) => r.contains_number(*n).unwrap_or(false),
            (Constraint::Range(_), Value::Bool(_)) => false,
        }
    }
}

/// Text compares as a version, field by field (`12.4` is `12.04`); numbers and booleans
/// exactly.
fn same(want: &Value, v: &Value) -> bool {
    match (want, v) {
        (Value::Text(a), Value::Text(b)) => version::compare(a, b).is_eq(),
        (a, b) => a == b,
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Exact(v) => write!(f, "{v}"),
            Constraint::OneOf(list) => {
                let items: Vec<String> = list.iter().map(Value::to_string).collect();
                write!(f, "one of {}", items.join(", "))
            }
            Constraint::Range(r) => write!(f, "{r}"),
        }
    }
}

/// One field's constraint in a rule.
#[derive(Debug, Clone)]
pub struct FieldConstraint {
    pub field: &'static Field,
    pub constraint: Constraint,
    pub line: usize,
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct PolicyRule {
    pub name: String,
    pub line: usize,
    /// GPU product-name patterns (`*` matches anything, case-insensitive); empty: any model.
    pub gpu_models: Vec<String>,
    pub selector: Selector,
    pub constraints: Vec<FieldConstraint>,
}

impl PolicyRule {
    /// Whether a GPU of this product name falls under the rule.
    pub fn covers_model(&self, product: &str) -> bool {
        self.gpu_models.is_empty() || self.gpu_models.iter().any(|p| glob(p, product))
    }
}

/// A parsed, checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it came from (its path), for messages.
    pub origin: String,
    pub rules: Vec<PolicyRule>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read it: {e}"),
        })?;
        Policy::parse(&text, &origin)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let err = |line: Option<usize>, message: String| PolicyError {
            origin: origin.to_string(),
            line,
            message,
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            err(line, e.message().trim_end().to_string())
        })?;
        if raw.rule.is_empty() {
            return Err(err(
                None,
                "no [[rule]]: a policy needs at least one (see docs/policy.md)".into(),
            ));
        }
        let mut rules = Vec::with_capacity(raw.rule.len());
        let mut names = BTreeMap::new();
        for (i, r) in raw.rule.into_iter().enumerate() {
            let line = line_of(text, r.start);
            let name = r.name.unwrap_or_else(|| format!("rule {}", i + 1));
            if let Some(first) = names.insert(name.clone(), line) {
                return Err(err(
                    Some(line),
                    format!(
                        "rule name {name:?} is also used on line {first}; names must be unique"
                    ),
                ));
            }
            let selector = match r.selector {
                Some(s) => Selector::parse(s.get_ref())
                    .map_err(|e| err(Some(line_of(text, s.span().start)), e.to_string()))?,
                None => Selector::everything(),
            };
            let gpu_models = r.gpu_model.map(|m| m.into_inner()).unwrap_or_default();
            if gpu_models.iter().any(|m| m.trim().is_empty()) {
                return Err(err(Some(line), "gpu_model must not be empty".into()));
            }
            let mut constraints = Vec::new();
            for (key, value) in r.fields {
                let at = line_of(text, value.span().start);
                let field = fields::FIELDS
                    .iter()
                    .find(|f| f.name == key)
                    .ok_or_else(|| {
                        err(
                            Some(at),
                            format!(
                                "unknown field `{key}`; a rule takes name, gpu_model, selector and the fields {}",
                                fields::field_names()
                            ),
                        )
                    })?;
                let constraint = constraint(field, value.get_ref())
                    .map_err(|m| err(Some(at), format!("{key}: {m}")))?;
                constraints.push(FieldConstraint {
                    field,
                    constraint,
                    line: at,
                });
            }
            if constraints.is_empty() {
                return Err(err(
                    Some(line),
                    format!(
                        "rule {name:?} constrains nothing; give at least one of {}",
                        fields::field_names()
                    ),
                ));
            }
            rules.push(PolicyRule {
                name,
                line,
                gpu_models,
                selector,
                constraints,
            });
        }
        Ok(Policy {
            origin: origin.to_string(),
            rules,
        })
    }

    /// One line for reports: `policy fleet.toml (3 rules)`.
    pub fn describe(&self) -> String {
        format!(
            "policy {} ({} rule{})",
            self.origin,
            self.rules.len(),
            if self.rules.len() == 1 { "" } else { "s" }
        )
    }
}

/// Builds a field's constraint from its TOML value.
fn constraint(field: &Field, v: &toml::Value) -> Result<Constraint, String> {
    let kind_name = match field.kind {
        Kind::Version => {
            "a version (\"550.54.15\"), a list of them or a range (\">=550.54.15, <560\")"
        }
        Kind::Text => "a string or a list of strings",
        Kind::Bool => "true or false",
        Kind::Int => "a whole number, a list of them or a range (\">= 8\")",
    };
    let wrong = || format!("expected {kind_name}");
    let one = |v: &toml::Value| -> Result<Value, String> {
        match (field.kind, v) {
            (Kind::Version | Kind::Text, toml::Value::String(s)) if !s.trim().is_empty() => {
                Ok(Value::Text(s.trim().to_string()))
            }
            (Kind::Bool, toml::Value::Boolean(b)) => Ok(Value::Bool(*b)),
            (Kind::Int, toml::Value::Integer(i)) if *i >= 0 => Ok(Value::Int(*i as u64)),
            _ => Err(wrong()),
        }
    };
    match v {
        toml::Value::String(s)
            if Range::looks_like(s) && matches!(field.kind, Kind::Version | Kind::Int) =>
        {
            let r = Range::parse(s)?;
            if field.kind == Kind::Int {
                r.contains_number(0)?;
            }
            Ok(Constraint::Range(r))
        }
        toml::Value::Array(items) => {
            if items.is_empty() {
                return Err("an empty list allows nothing".into());
            }
            Ok(Constraint::OneOf(
                items.iter().map(one).collect::<Result<_, _>>()?,
            ))
        }
        v => Ok(Constraint::Exact(one(v)?)),
    }
}

/// `*` matches any run of characters; comparison ignores case.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_lowercase(), text.to_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// One or several strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A `[[rule]]` table: its own keys, and the field constraints with their spans.
struct RawRule {
    start: usize,
    name: Option<String>,
    gpu_model: Option<Spanned<Vec<String>>>,
    selector: Option<Spanned<String>>,
    fields: Vec<(String, Spanned<toml::Value>)>,
}

impl<'de> Deserialize<'de> for RawRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [[rule]] table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRule, A::Error> {
                let mut r = RawRule {
                    start: usize::MAX,
                    name: None,
                    gpu_model: None,
                    selector: None,
                    fields: Vec::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => {
                            let v: Spanned<String> = map.next_value()?;
                            r.start = r.start.min(v.span().start);
                            r.name = Some(v.into_inner());
                        }
                        "gpu_model" => {
                            let v: Spanned<OneOrMany> = map.next_value()?;
                            let span = v.span();
                            let list = match v.into_inner() {
                                OneOrMany::One(s) => vec![s],
                                OneOrMany::Many(l) => l,
                            };
                            r.start = r.start.min(span.start);
                            r.gpu_model = Some(Spanned::new(span, list));
                        }
                        "selector" => {
                            let v: Spanned<String> = map.next_value()?;
                            r.start = r.start.min(v.span().start);
                            r.selector = Some(v);
                        }
                        _ => {
                            if r.fields.iter().any(|(k, _)| *k == key) {
                                return Err(de::Error::custom(format!("duplicate key `{key}`")));
                            }
                            let v: Spanned<toml::Value> = map.next_value()?;
                            r.start = r.start.min(v.span().start);
                            r.fields.push((key, v));
                        }
                    }
                }
                if r.start == usize::MAX {
                    r.start = 0;
                }
                Ok(r)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = include_str!("../../../docs/policy.example.toml");

    #[test]
    fn the_shipped_example_parses() {
        let p = Policy::parse(EXAMPLE, "docs/policy.example.toml").unwrap();
        assert!(p.rules.len() >= 2, "{p:?}");
        assert!(
            p.describe()
                .starts_with("policy docs/policy.example.toml (")
        );
    }

    #[test]
    fn constraints_of_every_shape() {
        let p = Policy::parse(
            r#"
[[rule]]
name = "h100"
gpu_model = "NVIDIA H100*"
selector = "pool=training"
driver_version = ">=550.54.15, <560"
vbios_version = ["96.00.89.00.01", "96.00.99.00.01"]
ecc_enabled = true
gpu_count = 8
power_limit_watts = ">= 600"
os_name = "Ubuntu 22.04.4 LTS"
"#,
            "p.toml",
        )
        .unwrap();
        let r = &p.rules[0];
        // A rule's line is the line of its first key.
        assert_eq!(r.line, 3);
        assert!(
            r.covers_model("NVIDIA H100 80GB HBM3") && !r.covers_model("NVIDIA A100-SXM4-80GB")
        );
        let c = |name: &str| {
            r.constraints
                .iter()
                .find(|c| c.field.name == name)
                .unwrap()
                .constraint
                .clone()
        };
        let text = |s: &str| Value::Text(s.into());
        assert!(c("driver_version").allows(Some(&text("550.127.05"))));
        assert!(!c("driver_version").allows(Some(&text("535.161.08"))));
        assert!(!c("driver_version").allows(None));
        assert!(c("vbios_version").allows(Some(&text("96.00.99.00.01"))));
        assert!(!c("vbios_version").allows(Some(&text("96.00.A5.00.01"))));
        assert!(c("ecc_enabled").allows(Some(&Value::Bool(true))));
        assert!(!c("gpu_count").allows(Some(&Value::Int(7))));
        assert!(c("power_limit_watts").allows(Some(&Value::Int(700))));
        assert_eq!(
            c("vbios_version").to_string(),
            "one of 96.00.89.00.01, 96.00.99.00.01"
        );
        assert_eq!(c("driver_version").to_string(), ">=550.54.15, <560");
    }

    #[test]
    fn bad_policies_name_the_line_and_what_is_allowed() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "[[rule]]\ndriver = \"550\"\n",
                2,
                "unknown field `driver`; a rule takes name, gpu_model, selector and the fields driver_version",
            ),
            (
                "[[rule]]\nname = \"a\"\ndriver_version = \"~550\"\n",
                3,
                "does not start with <",
            ),
            (
                "[[rule]]\necc_enabled = \"yes\"\n",
                2,
                "ecc_enabled: expected true or false",
            ),
            (
                "[[rule]]\ngpu_count = \"eight\"\n",
                2,
                "gpu_count: expected a whole number",
            ),
            (
                "[[rule]]\ngpu_count = \">= eight\"\n",
                2,
                "not a whole number",
            ),
            ("[[rule]]\ndriver_version = 550\n", 2, "expected a version"),
            (
                "[[rule]]\nselector = \"pool in (a\"\ndriver_version = \"550.54.15\"\n",
                2,
                "selector \"pool in (a\"",
            ),
            ("[[rule]]\nname = \"x\"\n", 2, "constrains nothing"),
            (
                "[[rule]]\nname = \"x\"\ndriver_version = \"1\"\n[[rule]]\nname = \"x\"\ndriver_version = \"2\"\n",
                5,
                "also used on line",
            ),
            ("[[rule]\n", 1, ""),
            ("[policy]\n", 1, "unknown field `policy`"),
            ("[[rule]]\nvbios_version = []\n", 2, "empty list"),
        ];
        for (text, line, want) in cases {
            let e = Policy::parse(text, "bad.toml").expect_err(text);
            assert_eq!(e.line, Some(*line), "{text}: {e}");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("policy bad.toml, line {line}: ")),
                "{msg}"
            );
            assert!(msg.contains(want), "{text}: {msg}");
        }
        let e = Policy::parse("", "empty.toml").unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
        let e = Policy::load(Path::new("/nonexistent/p.toml")).unwrap_err();
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("NVIDIA H100 80GB HBM3", "nvidia h100 80gb hbm3", true),
            ("*H100*", "NVIDIA H100 80GB HBM3", true),
            ("*A100*", "NVIDIA H100 80GB HBM3", false),
            ("NVIDIA L40S", "NVIDIA L40S", true),
            ("NVIDIA L40", "NVIDIA L40S", false),
            ("NVIDIA*HBM3", "NVIDIA H100 80GB HBM3", true),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
    }
}
