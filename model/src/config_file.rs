//! Layered configuration for the gpufleet binaries: built-in default < TOML file < environment
//! variable < flag. Each binary owns its config struct (`serde`, `deny_unknown_fields`,
//! `Default`); this module reads the file, reports a bad key or value with the file, line and
//! key, lays the values the user gave on the command line or in the environment over the
//! file, and prints the commented default file (`--print-default-config`).
//!
//! Callers say which keys the user set (clap's `ArgMatches::value_source`); the help text
//! per key comes from their clap arguments ([`key_docs`]), so `--help` and the file agree.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A config file (or the values layered over it) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "config {origin}{}{}: {message}",
    .line.map(|l| format!(", line {l}")).unwrap_or_default(),
    .key.as_ref().map(|k| format!(", key {k}")).unwrap_or_default()
)]
pub struct ConfigError {
    /// The file (its path), or `flags and environment`.
    pub origin: String,
    pub line: Option<usize>,
    /// The offending key, `section.key` inside a table.
    pub key: Option<String>,
    pub message: String,
}

/// A parsed config file: its text (for line numbers) and its table.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub origin: String,
    text: String,
    table: toml::Table,
}

impl ConfigFile {
    /// No file: every value is the built-in default (or comes from flags and environment).
    pub fn none() -> ConfigFile {
        ConfigFile {
            origin: "built-in defaults".into(),
            ..ConfigFile::default()
        }
    }

    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            key: None,
            message: format!("cannot read it: {e}"),
        })?;
        ConfigFile::parse(&text, &origin)
    }

    /// `path` when given (it must exist); otherwise `default` when it exists; otherwise none.
    pub fn read_given_or_default(
        path: Option<&Path>,
        default: &Path,
    ) -> Result<ConfigFile, ConfigError> {
        match path {
            Some(p) => ConfigFile::read(p),
            None if default.exists() => ConfigFile::read(default),
            None => Ok(ConfigFile::none()),
        }
    }

    /// Parses the TOML syntax; keys and values are checked by [`ConfigFile::layer`].
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| error_at(text, origin, e))?;
        Ok(ConfigFile {
            origin: origin.to_string(),
            text: text.to_string(),
            table,
        })
    }

    /// The file alone as `T`: an unknown key or a bad value is an error naming its line.
    pub fn parse_as<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(
            toml::de::Deserializer::parse(&self.text)
                .map_err(|e| error_at(&self.text, &self.origin, e))?,
        )
        .map_err(|e| error_at(&self.text, &self.origin, e))
    }

    /// The file's values with `overrides` (from the environment and flags) on top, as `T`.
    /// Tables merge key by key (a flag's `labels` adds to the file's).
    pub fn layer<T: DeserializeOwned>(&self, overrides: toml::Table) -> Result<T, ConfigError> {
        // The file is checked alone first, so its errors carry its line numbers.
        self.parse_as::<T>()?;
        let mut merged = self.table.clone();
        merge(&mut merged, overrides);
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError {
                origin: "flags and environment".into(),
                line: None,
                key: None,
                message: e.message().trim_end().to_string(),
            })
    }
}

fn merge(into: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// The values of `flags` (a struct whose field names are the config keys) that the user set,
/// as a table to lay over a file.
pub fn overrides<F: Serialize>(
    flags: &F,
    user_set: impl Fn(&str) -> bool,
) -> Result<toml::Table, ConfigError> {
    let mut table = toml::Table::try_from(flags).map_err(|e| ConfigError {
        origin: "flags and environment".into(),
        line: None,
        key: None,
        message: e.to_string(),
    })?;
    table.retain(|k, _| user_set(k));
    Ok(table)
}

/// One key of the default file: its name, its help text, and for a key without a default
/// value an example line to show commented out.
#[derive(Debug, Clone)]
pub struct KeyDoc {
    pub key: String,
    pub help: String,
    pub example: Option<String>,
}

/// The complete default config file: every key with its help as comments, its default value,
/// or (no default) a commented example. Tables come last, as TOML requires.
pub fn commented_default<T: Serialize>(
    title: &str,
    defaults: &T,
    docs: &[KeyDoc],
) -> Result<String, toml::ser::Error> {
    let values = toml::Table::try_from(defaults)?;
    let mut out = String::new();
    for line in title.lines() {
        let _ = writeln!(out, "# {line}");
    }
    out.push('\n');
    let mut tables = String::new();
    for d in docs {
        let mut section = String::new();
        for line in d.help.lines() {
            for wrapped in wrap(line.trim_end(), 92) {
                let _ = writeln!(section, "# {wrapped}");
            }
        }
        match values.get(&d.key) {
            Some(toml::Value::Table(t)) => {
                let _ = writeln!(section, "[{}]", d.key);
                if t.is_empty() {
                    if let Some(e) = &d.example {
                        let _ = writeln!(section, "# {e}");
                    }
                } else {
                    section.push_str(&toml::to_string(t)?);
                }
                tables.push_str(&section);
                tables.push('\n');
                continue;
            }
            Some(v) => {
                let _ = writeln!(section, "{} = {v}", d.key);
            }
            None => {
                let example = d.example.clone().unwrap_or_else(|| format!("{} = ", d.key));
                let _ = writeln!(section, "# {example}");
            }
        }
        out.push_str(&section);
        out.push('\n');
    }
    // Sections of other components (e.g. `[alerts]`), with their own defaults.
    let rest: toml::Table = values
        .into_iter()
        .filter(|(k, v)| v.is_table() && !docs.iter().any(|d| d.key == *k))
        .collect();
    if !rest.is_empty() {
        tables.push_str(&toml::to_string(&rest)?);
    }
    out.push_str(&tables);
    out.truncate(out.trim_end().len());
    out.push('\n');
    Ok(out)
}

/// An address to listen on, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(std::net::SocketAddr),
}

impl Listen {
    pub fn addr(self) -> Option<std::net::SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::At(a) => Some(a),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::At)
            .map_err(|_| format!("{s:?} is neither an address (127.0.0.1:9400) nor \"off\""))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::At(a) => write!(f, "{a}"),
        }
    }
}

impl Serialize for Listen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How the binaries write their logs: for people, or one JSON object a line for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format: use human or json")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// Help text per key from clap's arguments (`--help` and the default file say the same).
pub fn key_docs(cmd: &clap::Command, examples: &[(&str, &str)]) -> Vec<KeyDoc> {
    cmd.get_arguments()
        .filter(|a| {
            !matches!(
                a.get_id().as_str(),
                "help" | "version" | "config" | "print_default_config"
            )
        })
        .map(|a| {
            let key = a.get_id().to_string();
            let help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let env = a
                .get_env()
                .map(|e| format!("\nEnvironment: {}.", e.to_string_lossy()))
                .unwrap_or_default();
            KeyDoc {
                example: examples
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, e)| e.to_string()),
                help: format!("{help}{env}"),
                key,
            }
        })
        .collect()
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let last = lines.last_mut().expect("never empty");
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// 1-based line of a byte offset.
/// A commented example config file with every commented-out key (`#key = value`, no space
/// after the `#`) switched on, so a test can check the examples parse too.
pub fn with_commented_keys_on(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn error_at(text: &str, origin: &str, e: toml::de::Error) -> ConfigError {
    let message = e.message().trim_end().to_string();
    let (line, key) = match e.span() {
        Some(span) => (
            Some(line_of(text, span.start)),
            key_at(text, span.start).or_else(|| unknown_field(&message)),
        ),
        None => (None, unknown_field(&message)),
    };
    ConfigError {
        origin: origin.to_string(),
        line,
        key,
        message,
    }
}

/// `unknown field `x`, expected …` → `x`.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// The key written on the line holding `offset` (`section.key` under a `[section]`).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let section = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        listen: String,
        retries: u32,
        name: Option<String>,
        labels: std::collections::BTreeMap<String, String>,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo {
                listen: "0.0.0.0:1".into(),
                retries: 3,
                name: None,
                labels: Default::default(),
            }
        }
    }

    fn docs() -> Vec<KeyDoc> {
        let doc = |k: &str, e: Option<&str>| KeyDoc {
            key: k.into(),
            help: format!("The {k}.\nSecond line."),
            example: e.map(str::to_string),
        };
        vec![
            doc("listen", None),
            doc("retries", None),
            doc("name", Some("name = \"n1\"")),
            doc("labels", Some("pool = \"training\"")),
        ]
    }

    #[test]
    fn bad_keys_and_values_name_the_file_line_and_key() {
        let cases = [
            ("listen = \"a\"\nretries = \"three\"\n", 2, "retries"),
            ("# c\nlisten = \"a\"\nrettries = 3\n", 3, "rettries"),
            ("[labels]\npool = 1\n", 2, "labels.pool"),
        ];
        for (text, line, key) in cases {
            let f = ConfigFile::parse(text, "demo.toml").unwrap();
            let e = f.parse_as::<Demo>().unwrap_err();
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("config demo.toml, line {line}, key {key}: ")),
                "{e}"
            );
        }
        let e = ConfigFile::parse("listen = \n", "demo.toml").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn flags_win_over_the_file_and_tables_merge() {
        let f = ConfigFile::parse(
            "retries = 5\nname = \"file\"\n[labels]\npool = \"a\"\nrack = \"r1\"\n",
            "demo.toml",
        )
        .unwrap();
        let flags = Demo {
            listen: "flag".into(),
            retries: 3,
            name: Some("flag".into()),
            labels: [("pool".to_string(), "b".to_string())].into(),
        };
        let over = overrides(&flags, |k| k != "retries").unwrap();
        let d: Demo = f.layer(over).unwrap();
        assert_eq!(d.listen, "flag");
        assert_eq!(d.retries, 5, "not set by the user: the file's value");
        assert_eq!(d.name.as_deref(), Some("flag"));
        assert_eq!(d.labels["pool"], "b");
        assert_eq!(d.labels["rack"], "r1");
        let none: Demo = ConfigFile::none().layer(toml::Table::new()).unwrap();
        assert_eq!(none, Demo::default());
    }

    #[test]
    fn the_commented_default_parses_back_to_the_defaults() {
        let text = commented_default("Demo config.", &Demo::default(), &docs()).unwrap();
        assert!(
            text.contains("# The retries.\n# Second line.\nretries = 3\n"),
            "{text}"
        );
        assert!(text.contains("# name = \"n1\""), "{text}");
        assert!(text.contains("[labels]\n# pool = \"training\""), "{text}");
        let back: Demo = ConfigFile::parse(&text, "default")
            .unwrap()
            .parse_as()
            .unwrap();
        assert_eq!(back, Demo::default());
    }
}
