//! The few Python literals barman writes into `backup.info` (it dumps with `repr` and loads
//! with `ast.literal_eval`): strings, and the tablespace list `[('name', oid, '/path'), …]`.

use std::fmt::Write as _;

/// Python's `repr()` of a `str`: single quotes unless the text holds a single quote and no
/// double quote; backslash escapes for quotes, backslashes and control characters.
pub fn repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A parse failure, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Python literal at byte {at}: expected {expected}")]
pub struct LiteralError {
    pub at: usize,
    pub expected: &'static str,
}

/// A cursor over a literal's text.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, at: 0 }
    }

    fn error(&self, expected: &'static str) -> LiteralError {
        LiteralError {
            at: self.at,
            expected,
        }
    }

    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char, expected: &'static str) -> Result<(), LiteralError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn string(&mut self) -> Result<String, LiteralError> {
        self.skip_space();
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.error("a quoted string")),
        };
        self.at += 1;
        let mut out = String::new();
        let mut chars = self.text[self.at..].char_indices();
        while let Some((offset, c)) = chars.next() {
            if c == quote {
                self.at += offset + 1;
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((_, escaped)) = chars.next() else {
                break;
            };
            match escaped {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '\\' | '\'' | '"' => out.push(escaped),
                'x' => {
                    let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                    let value = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| self.error("two hex digits after \\x"))?;
                    out.push(value);
                }
                _ => return Err(self.error("a known escape (\\n \\r \\t \\\\ \\' \\\" \\x)")),
            }
        }
        Err(self.error("a closing quote"))
    }

    fn integer(&mut self) -> Result<u64, LiteralError> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let value = rest[..digits]
            .parse()
            .map_err(|_| self.error("an integer"))?;
        self.at += digits;
        Ok(value)
    }

    fn end(&mut self) -> Result<(), LiteralError> {
        self.skip_space();
        if self.at == self.text.len() {
            Ok(())
        } else {
            Err(self.error("end of value"))
        }
    }
}

/// Parse one Python string literal (the whole text).
pub fn parse_str(text: &str) -> Result<String, LiteralError> {
    let mut cursor = Cursor::new(text);
    let value = cursor.string()?;
    cursor.end()?;
    Ok(value)
}

/// One `(name, oid, location)` tuple of barman's tablespace list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceTuple {
    pub name: String,
    pub oid: u64,
    pub location: String,
}

/// Parse `[('name', oid, '/path'), …]` (an empty list allowed).
pub fn parse_tablespaces(text: &str) -> Result<Vec<TablespaceTuple>, LiteralError> {
    let mut cursor = Cursor::new(text);
    cursor.expect('[', "'['")?;
    let mut out = Vec::new();
    loop {
        if cursor.eat(']') {
            break;
        }
        cursor.expect('(', "'(' opening a tablespace tuple")?;
        let name = cursor.string()?;
        cursor.expect(',', "','")?;
        let oid = cursor.integer()?;
        cursor.expect(',', "','")?;
        let location = cursor.string()?;
        cursor.eat(',');
        cursor.expect(')', "')'")?;
        out.push(TablespaceTuple {
            name,
            oid,
            location,
        });
        if !cursor.eat(',') {
            cursor.expect(']', "']' or ','")?;
            break;
        }
    }
    cursor.end()?;
    Ok(out)
}

/// Render a tablespace list the way barman does (`repr` of a list of tuples).
pub fn repr_tablespaces(tablespaces: &[TablespaceTuple]) -> String {
    let items: Vec<String> = tablespaces
        .iter()
        .map(|t| {
            format!(
                "({}, {}, {})",
                repr_str(&t.name),
                t.oid,
                repr_str(&t.location)
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_like_python() {
        assert_eq!(repr_str("a\nb"), "'a\\nb'");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("both ' and \""), "'both \\' and \"'");
        for text in [
            "",
            "START WAL LOCATION: 0/2000028 (file x)\n",
            "q'\"\\\t\u{1}é",
        ] {
            assert_eq!(parse_str(&repr_str(text)).unwrap(), text);
        }
    }

    #[test]
    fn tablespaces_round_trip() {
        let list = vec![
            TablespaceTuple {
                name: "tbs1".into(),
                oid: 16387,
                location: "/srv/tbs1".into(),
            },
            TablespaceTuple {
                name: "it's".into(),
                oid: 16388,
                location: "/srv/t2".into(),
            },
        ];
        let text = repr_tablespaces(&list);
        assert_eq!(
            text,
            "[('tbs1', 16387, '/srv/tbs1'), (\"it's\", 16388, '/srv/t2')]"
        );
        assert_eq!(parse_tablespaces(&text).unwrap(), list);
        assert_eq!(parse_tablespaces("[]").unwrap(), vec![]);
    }

    #[test]
    fn bad_literals_are_errors() {
        for bad in [
            "'open",
            "[('a', x, '/p')]",
            "[('a', 1, '/p')",
            "'a' trailing",
            "'\\q'",
        ] {
            assert!(
                parse_str(bad).is_err() && parse_tablespaces(bad).is_err(),
                "{bad} parsed"
            );
        }
    }
}
