//! NVIDIA's dotted versions compared field by field (`550.54.15` < `550.127.05` < `560.28`),
//! and ranges over them (`>=550.54.15, <560`). Fields split on `.` and `-`; two decimal fields
//! compare as numbers, two hexadecimal ones (VBIOS `96.00.A5.00.01`) as hex numbers, anything
//! else as text; a version that is a prefix of another is smaller (`560` < `560.28`).

use std::cmp::Ordering;
use std::fmt;

/// Compares two versions field by field.
pub fn compare(a: &str, b: &str) -> Ordering {
    let fields = |s: &str| {
        s.trim()
            .split(['.', '-'])
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (fa, fb) = (fields(a), fields(b));
    for (x, y) in fa.iter().zip(&fb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(p), Ok(q)) => p.cmp(&q),
            _ => match (u64::from_str_radix(x, 16), u64::from_str_radix(y, 16)) {
                (Ok(p), Ok(q)) => p.cmp(&q),
                _ => x.cmp(y),
            },
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    fa.len().cmp(&fb.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "=",
            Op::Ne => "!=",
        }
    }
}

/// `>=550.54.15, <560`: every clause must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub clauses: Vec<(Op, String)>,
}

impl Range {
    /// Whether `text` is written as a range (starts with a comparison operator).
    pub fn looks_like(text: &str) -> bool {
        // `~` and `^` are not ranges here, but someone who writes them means one: say so.
        text.trim_start()
            .starts_with(['<', '>', '=', '!', '~', '^'])
    }

    /// Parses `op version` clauses separated by commas.
    pub fn parse(text: &str) -> Result<Range, String> {
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let c = clause.trim();
            let (op, rest) = [
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("!=", Op::Ne),
                ("==", Op::Eq),
                ("<", Op::Lt),
                (">", Op::Gt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(s, op)| c.strip_prefix(s).map(|r| (*op, r.trim())))
            .ok_or_else(|| {
                format!(
                    "range clause {c:?} does not start with <, <=, >, >=, = or != (write e.g. \">=550.54.15, <560\")"
                )
            })?;
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(format!(
                    "range clause {c:?} needs one version after its operator (write e.g. \">=550.54.15, <560\")"
                ));
            }
            clauses.push((op, rest.to_string()));
        }
        Ok(Range { clauses })
    }

    /// Whether `version` satisfies every clause.
    pub fn contains(&self, version: &str) -> bool {
        self.clauses
            .iter()
            .all(|(op, v)| op.holds(compare(version, v)))
    }

    /// Whether a whole number satisfies every clause (for numeric fields).
    pub fn contains_number(&self, n: u64) -> Result<bool, String> {
        for (op, v) in &self.clauses {
            let bound: u64 = v
                .parse()
                .map_err(|_| format!("{v:?} is not a whole number"))?;
            if !op.holds(n.cmp(&bound)) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .clauses
            .iter()
            .map(|(op, v)| format!("{}{v}", op.as_str()))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_field_by_field_not_as_strings() {
        use Ordering::*;
        for (a, b, want) in [
            ("550.54.15", "550.54.15", Equal),
            ("550.54.15", "550.127.05", Less),
            ("550.127.05", "560", Less),
            ("560", "560.28", Less),
            ("535.161.08", "550.54.15", Less),
            ("96.00.89.00.01", "96.00.A5.00.01", Less),
            ("5.15.0-105-generic", "5.15.0-113-generic", Less),
            ("6.8.0-31-generic", "5.15.0-113-generic", Greater),
            ("12.4", "12.10", Less),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn ranges() {
        let r = Range::parse(">=550.54.15, <560").unwrap();
        for (v, want) in [
            ("550.54.15", true),
            ("550.127.05", true),
            ("550.54.14", false),
            ("560", false),
            ("560.28.03", false),
            ("535.161.08", false),
        ] {
            assert_eq!(r.contains(v), want, "{v}");
        }
        assert_eq!(r.to_string(), ">=550.54.15, <560");
        assert!(Range::parse("!=550.90.07").unwrap().contains("550.54.15"));
        assert!(Range::parse(">= 8").unwrap().contains_number(8).unwrap());
        assert!(!Range::parse("<8").unwrap().contains_number(8).unwrap());
        assert!(Range::parse(">=eight").unwrap().contains_number(8).is_err());
        for bad in ["~550", ">=", ">= 550 560", "550, <560"] {
            assert!(Range::parse(bad).is_err(), "{bad}");
        }
        assert!(Range::looks_like(" >=1") && !Range::looks_like("550.54.15"));
    }
}
