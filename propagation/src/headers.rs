//! A case-insensitive header multimap: what a request carried, in order, with
//! repeated names kept apart so that parsers can tell "sent twice" from "sent
//! once".

/// Values longer than this are treated as malformed by every single-valued
/// lookup: no context header is legitimately this long, and it bounds the work
/// a hostile request can cause.
pub const MAX_VALUE_LEN: usize = 8192;

/// Header names are stored lowercased; values as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

/// The result of looking up a header that must appear at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum One<'a> {
    Absent,
    Value(&'a str),
    /// Sent more than once, or longer than [`MAX_VALUE_LEN`]: ambiguous or
    /// hostile, so parsers treat it like a malformed value.
    Invalid,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value, keeping earlier values of the same name.
    pub fn append(&mut self, name: impl AsRef<str>, value: impl Into<String>) {
        self.entries
            .push((name.as_ref().to_ascii_lowercase(), value.into()));
    }

    /// Replaces every value of `name` with one value.
    pub fn set(&mut self, name: impl AsRef<str>, value: impl Into<String>) {
        let name = name.as_ref().to_ascii_lowercase();
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, value.into()));
    }

    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.entries.retain(|(n, _)| *n != name);
    }

    /// Every value of `name`, in the order received.
    pub fn get_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        let lower = needs_lowering(name);
        self.entries
            .iter()
            .filter(move |(n, _)| {
                if lower {
                    n.eq_ignore_ascii_case(name)
                } else {
                    n == name
                }
            })
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// A header that must appear at most once.
    pub fn one(&self, name: &str) -> One<'_> {
        let mut it = self.get_all(name);
        match (it.next(), it.next()) {
            (None, _) => One::Absent,
            (Some(v), None) if v.len() <= MAX_VALUE_LEN => One::Value(v),
            _ => One::Invalid,
        }
    }

    /// Every (lowercased name, value) pair.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn needs_lowering(name: &str) -> bool {
    name.bytes().any(|b| b.is_ascii_uppercase())
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.append(k, v);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_and_repeated() {
        let h: Headers = [
            ("TraceParent", "a"),
            ("X-B3-Sampled", "1"),
            ("x-b3-sampled", "0"),
        ]
        .into_iter()
        .collect();
        assert_eq!(h.one("traceparent"), One::Value("a"));
        assert_eq!(h.one("TRACEPARENT"), One::Value("a"));
        assert_eq!(h.one("x-b3-sampled"), One::Invalid);
        assert_eq!(h.get_all("x-b3-sampled").collect::<Vec<_>>(), ["1", "0"]);
        assert_eq!(h.one("b3"), One::Absent);
        let mut h = h;
        h.set("X-B3-SAMPLED", "d");
        assert_eq!(h.one("x-b3-sampled"), One::Value("d"));
    }

    #[test]
    fn oversized_value_is_invalid() {
        let h: Headers = [("b3", "1".repeat(MAX_VALUE_LEN + 1))]
            .into_iter()
            .collect();
        assert_eq!(h.one("b3"), One::Invalid);
    }
}
