//! Query text as exported: SQL with its literals replaced by `?` and its comments
//! removed, the operation name, and a `traceparent` that sqlcommenter put in a comment.

/// SQL dialect details that change what a literal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `"..."` is an identifier; `$tag$...$tag$` is a string.
    Postgres,
    /// `"..."` is a string; `#` starts a comment; backslash escapes in strings.
    Mysql,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn cap(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The text of a SQL statement as exported: comments removed, whitespace runs made one
/// space, and, with `sanitize`, string and numeric literals replaced by `?`.
pub fn sql(text: &[u8], dialect: Dialect, sanitize: bool, max: usize) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(text.len().min(max + 8));
    let n = text.len();
    let mut i = 0;
    let push_space = |out: &mut Vec<u8>| {
        if !out.is_empty() && out.last() != Some(&b' ') {
            out.push(b' ');
        }
    };
    while i < n && out.len() <= max {
        let b = text[i];
        // Comments.
        if b == b'-' && text.get(i + 1) == Some(&b'-') || (dialect == Dialect::Mysql && b == b'#') {
            while i < n && text[i] != b'\n' {
                i += 1;
            }
            push_space(&mut out);
            continue;
        }
        if b == b'/' && text.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < n && !(text[i] == b'*' && text.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(n);
            push_space(&mut out);
            continue;
        }
        if b.is_ascii_whitespace() {
            push_space(&mut out);
            i += 1;
            continue;
        }
        let prev_ident = i > 0 && is_ident(text[i - 1]);
        if sanitize {
            // String literals, with an optional one-letter prefix (E'', N'', X'', B'').
            let quote = b == b'\'' || (dialect == Dialect::Mysql && b == b'"');
            if quote {
                // PostgreSQL's E'' strings take backslash escapes, like MySQL's.
                let mut escapes = dialect == Dialect::Mysql;
                if let Some(&last) = out.last() {
                    let before = out.len().checked_sub(2).map(|k| out[k]);
                    if matches!(last.to_ascii_lowercase(), b'e' | b'n' | b'x' | b'b')
                        && !before.is_some_and(is_ident)
                        && i > 0
                        && text[i - 1] == last
                    {
                        escapes |= last.eq_ignore_ascii_case(&b'e');
                        out.pop();
                    }
                }
                let q = b;
                i += 1;
                while i < n {
                    if text[i] == b'\\' && escapes {
                        i += 2;
                        continue;
                    }
                    if text[i] == q {
                        if text.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i = (i + 1).min(n);
                out.push(b'?');
                continue;
            }
            // Dollar-quoted strings.
            if dialect == Dialect::Postgres && b == b'$' && !prev_ident {
                let tag_end = text[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                if let Some(te) = tag_end {
                    if text[te] == b'$' && !text[i + 1..te].first().is_some_and(u8::is_ascii_digit)
                    {
                        let tag = &text[i..=te];
                        let body = te + 1;
                        let close = text[body..]
                            .windows(tag.len())
                            .position(|w| w == tag)
                            .map(|p| body + p + tag.len())
                            .unwrap_or(n);
                        out.push(b'?');
                        i = close;
                        continue;
                    }
                }
            }
            // Numbers (not inside identifiers, not `$1` placeholders).
            if (b.is_ascii_digit()
                || (b == b'.' && text.get(i + 1).is_some_and(u8::is_ascii_digit)))
                && !prev_ident
            {
                i += 1;
                let hex = b == b'0' && matches!(text.get(i), Some(b'x' | b'X'));
                if hex {
                    i += 1;
                }
                while i < n {
                    let c = text[i];
                    let more = if hex {
                        c.is_ascii_hexdigit()
                    } else {
                        c.is_ascii_digit()
                            || c == b'.'
                            || ((c == b'e' || c == b'E')
                                && text.get(i + 1).is_some_and(|d| {
                                    d.is_ascii_digit() || *d == b'-' || *d == b'+'
                                }))
                            || ((c == b'-' || c == b'+') && matches!(text[i - 1], b'e' | b'E'))
                    };
                    if !more {
                        break;
                    }
                    i += 1;
                }
                out.push(b'?');
                continue;
            }
        }
        // Quoted identifiers are copied whole (a literal inside them is not one).
        if b == b'"' || b == b'`' {
            let q = b;
            let start = i;
            i += 1;
            while i < n && text[i] != q {
                i += 1;
            }
            i = (i + 1).min(n);
            out.extend_from_slice(&text[start..i]);
            continue;
        }
        out.push(b);
        i += 1;
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    cap(String::from_utf8_lossy(&out).into_owned(), max)
}

/// The operation of a SQL statement: its first keyword, upper case (`SELECT`).
pub fn sql_operation(text: &[u8]) -> Option<String> {
    let mut i = 0;
    let n = text.len();
    loop {
        while i < n && (text[i].is_ascii_whitespace() || text[i] == b'(' || text[i] == b';') {
            i += 1;
        }
        if text[i..].starts_with(b"/*") {
            match text[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i += 2 + p + 2,
                None => return None,
            }
            continue;
        }
        if text[i..].starts_with(b"--") {
            while i < n && text[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        break;
    }
    let start = i;
    while i < n && text[i].is_ascii_alphabetic() {
        i += 1;
    }
    let word = &text[start..i];
    if word.is_empty() || word.len() > 32 {
        return None;
    }
    Some(String::from_utf8_lossy(word).to_ascii_uppercase())
}

fn hex_ok(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn percent_decode(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The W3C `traceparent` a sqlcommenter comment carries (`/*traceparent='00-…-…-01'*/`),
/// validated; values may be URL-encoded.
pub fn sqlcommenter_traceparent(text: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(p) = text[from..].windows(2).position(|w| w == b"/*") {
        let start = from + p + 2;
        let end = text[start..]
            .windows(2)
            .position(|w| w == b"*/")
            .map(|e| start + e)?;
        let comment = &text[start..end];
        for pair in comment.split(|b| *b == b',') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            let key = percent_decode(pair[..eq].trim_ascii());
            if !key.is_some_and(|k| k.eq_ignore_ascii_case("traceparent")) {
                continue;
            }
            let v = pair[eq + 1..].trim_ascii();
            let v = v
                .strip_prefix(b"'")
                .and_then(|v| v.strip_suffix(b"'"))
                .unwrap_or(v);
            let value = percent_decode(v)?.to_ascii_lowercase();
            let parts: Vec<&str> = value.split('-').collect();
            if parts.len() >= 4
                && hex_ok(parts[0], 2)
                && parts[0] != "ff"
                && hex_ok(parts[1], 32)
                && hex_ok(parts[2], 16)
                && hex_ok(parts[3], 2)
            {
                return Some(value);
            }
        }
        from = end + 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(s: &str) -> String {
        sql(s.as_bytes(), Dialect::Postgres, true, 2048)
    }
    fn my(s: &str) -> String {
        sql(s.as_bytes(), Dialect::Mysql, true, 2048)
    }

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(
            pg("SELECT * FROM t WHERE a = 'x''y' AND b = 42 AND c = 1.5e-3"),
            "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"
        );
        assert_eq!(pg("select $1, col2 from t2"), "select $1, col2 from t2");
        assert_eq!(pg("SELECT E'a' , 0xFF"), "SELECT ? , ?");
        assert_eq!(
            pg("SELECT \"Weird 1\" FROM t WHERE x = $$a'b$$ OR y = $q$z$q$"),
            "SELECT \"Weird 1\" FROM t WHERE x = ? OR y = ?"
        );
        assert_eq!(
            my("INSERT INTO `t1` VALUES (\"a\\\"b\", 'c', -7) # note"),
            "INSERT INTO `t1` VALUES (?, ?, -?)"
        );
        assert_eq!(
            pg("SELECT a\n\t FROM  t -- c\n WHERE id IN (1,2)"),
            "SELECT a FROM t WHERE id IN (?,?)"
        );
        assert_eq!(
            sql(b"SELECT 'secret' /* c */", Dialect::Postgres, false, 2048),
            "SELECT 'secret'"
        );
        assert_eq!(
            sql(b"SELECT 123456789", Dialect::Postgres, true, 8),
            "SELECT ?"
        );
        assert_eq!(
            sql(b"SELECT abcdefgh", Dialect::Postgres, true, 8),
            "SELECT a"
        );
        // Unterminated strings end the text without panicking.
        assert_eq!(pg("SELECT 'abc"), "SELECT ?");
        assert_eq!(pg("SELECT $tag$abc"), "SELECT ?");
    }

    #[test]
    fn operation_is_the_first_keyword() {
        assert_eq!(sql_operation(b"  select 1").as_deref(), Some("SELECT"));
        assert_eq!(
            sql_operation(b"/* x */ (SELECT 1) UNION (SELECT 2)").as_deref(),
            Some("SELECT")
        );
        assert_eq!(
            sql_operation(b"-- hi\nINSERT INTO t").as_deref(),
            Some("INSERT")
        );
        assert_eq!(sql_operation(b"123"), None);
        assert_eq!(sql_operation(b""), None);
        assert_eq!(sql_operation(b"/* open"), None);
    }

    #[test]
    fn postgres_escape_strings_hide_their_whole_literal() {
        assert_eq!(
            sql(
                br"SELECT E'it\'s secret', e'a\\' FROM t",
                Dialect::Postgres,
                true,
                2048
            ),
            "SELECT ?, ? FROM t"
        );
        // A plain string has no backslash escapes in PostgreSQL.
        assert_eq!(
            sql(br"SELECT 'a\' || x", Dialect::Postgres, true, 2048),
            "SELECT ? || x"
        );
    }

    #[test]
    fn traceparent_from_sqlcommenter() {
        let q = b"SELECT 1 /*db_driver='psycopg',traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/";
        assert_eq!(
            sqlcommenter_traceparent(q).as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let enc = b"SELECT 1 /*traceparent='00%2D0af7651916cd43dd8448eb211c80319c%2Db7ad6b7169203331%2D01'*/";
        assert!(sqlcommenter_traceparent(enc).is_some());
        assert_eq!(
            sqlcommenter_traceparent(b"SELECT '/*traceparent=1*/'"),
            None
        );
        assert_eq!(
            sqlcommenter_traceparent(b"SELECT 1 /* traceparent='00-zz' */"),
            None
        );
        assert_eq!(sqlcommenter_traceparent(b"SELECT 1 /* unterminated"), None);
    }
}
