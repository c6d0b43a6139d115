//! `${env:VAR}`, `${env:VAR:-default}`, `${VAR}` and `$$` in string values, as
//! the collector expands them. Keys are never expanded.
//!
//! Two deliberate differences from the collector, both documented:
//! `${VAR:-default}` (without `env:`) is accepted; an unset variable without a
//! default expands to the empty string with a warning, as the collector does.

use serde_yaml_ng::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExpandError {
    #[error("unterminated \"${{\" in {0:?}")]
    Unterminated(String),
    #[error("unsupported config source {scheme:?} in {text:?}: only env is supported")]
    UnsupportedScheme { scheme: String, text: String },
    #[error("invalid environment variable name {0:?}")]
    BadName(String),
}

/// Expands one string. `lookup` returns the variable's value, `unset` is told
/// about variables that had neither a value nor a default.
pub fn expand_str(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut dyn FnMut(&str),
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| ExpandError::Unterminated(s.to_string()))?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let name = match name.split_once(':') {
                Some(("env", n)) => n,
                Some((scheme, _)) => {
                    return Err(ExpandError::UnsupportedScheme {
                        scheme: scheme.to_string(),
                        text: s.to_string(),
                    })
                }
                None => name,
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(ExpandError::BadName(name.to_string()));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => unset(name),
            }
        } else {
            // A lone `$` (e.g. a regex anchor) stays as written.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands every string scalar in place. A value that is exactly one `${...}`
/// is re-read as a YAML scalar, so `port: ${env:PORT}` yields a number.
pub fn expand_value(
    v: &mut Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut dyn FnMut(&[String], &str),
) -> Result<(), (Vec<String>, ExpandError)> {
    match v {
        Value::String(s) => {
            if !s.contains('$') {
                return Ok(());
            }
            let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            let expanded = expand_str(s, lookup, &mut |name| unset(path, name))
                .map_err(|e| (path.clone(), e))?;
            *v = if whole {
                match serde_yaml_ng::from_str::<Value>(&expanded) {
                    Ok(parsed @ (Value::Bool(_) | Value::Number(_) | Value::Null))
                        if !expanded.trim().is_empty() =>
                    {
                        parsed
                    }
                    _ => Value::String(expanded),
                }
            } else {
                Value::String(expanded)
            };
            Ok(())
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                let r = expand_value(item, path, lookup, unset);
                path.pop();
                r?;
            }
            Ok(())
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                path.push(super::key_string(k));
                let r = expand_value(item, path, lookup, unset);
                path.pop();
                r?;
            }
            Ok(())
        }
        Value::Tagged(t) => expand_value(&mut t.value, path, lookup, unset),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example".into()),
            "PORT" => Some("4317".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<String, ExpandError> {
        expand_str(s, &env, &mut |_| {})
    }

    #[test]
    fn expands_collector_forms() {
        assert_eq!(run("${env:HOST}:${env:PORT}").unwrap(), "example:4317");
        assert_eq!(run("${HOST}").unwrap(), "example");
        assert_eq!(run("${env:NOPE:-fallback}").unwrap(), "fallback");
        assert_eq!(run("${NOPE:-x}").unwrap(), "x");
        assert_eq!(run("$${env:HOST}").unwrap(), "${env:HOST}");
        assert_eq!(run("cost: $$5").unwrap(), "cost: $5");
        assert_eq!(run("^a$").unwrap(), "^a$");
        assert!(matches!(
            run("${env:HOST"),
            Err(ExpandError::Unterminated(_))
        ));
        assert!(matches!(
            run("${file:/x}"),
            Err(ExpandError::UnsupportedScheme { .. })
        ));
        let mut missing = Vec::new();
        assert_eq!(
            expand_str("a${env:NOPE}b", &env, &mut |n| missing.push(n.to_string())).unwrap(),
            "ab"
        );
        assert_eq!(missing, vec!["NOPE".to_string()]);
    }

    #[test]
    fn whole_value_becomes_typed() {
        let mut v: Value =
            serde_yaml_ng::from_str("{port: '${env:PORT}', host: 'h-${env:PORT}'}").unwrap();
        expand_value(&mut v, &mut Vec::new(), &env, &mut |_, _| {}).unwrap();
        assert_eq!(v["port"], Value::Number(4317.into()));
        assert_eq!(v["host"], Value::String("h-4317".into()));
    }
}
