//! The `bftctl txn` mini-language: compares for `--if`, operations for `--then` / `--else`.
//!
//! ```text
//! compare := FUNC "(" KEY ")" OP OPERAND        several: separate with ";" or repeat --if
//! FUNC    := version | value | exists           (mod is recognised and refused: see below)
//! OP      := "=" | "==" | "!=" | "<" | ">"
//! ops     := op (";" op)*
//! op      := put KEY VALUE | get KEY | del KEY
//! ```
//! Words may be quoted with `'` or `"` to hold spaces or punctuation. `version(k)` takes a
//! number, `value(k)` a string, `exists(k)` `true`/`false` (with `=` or `!=`). `mod(k)` (the
//! height that last wrote a key) is refused with a clear error: the state machine's compares
//! (`api::CompareTarget`) cover value, version and existence only.
//!
//! Invariant: every input gives a `Txn` or a one-line error naming the offending part; nothing
//! here panics on user text.

use crate::api::{Compare, CompareOp, CompareTarget, Txn, TxnOp};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Punct(&'static str),
}

const COMPARE_PUNCT: &[&str] = &["==", "!=", "(", ")", "=", "<", ">", ";"];
const OPS_PUNCT: &[&str] = &[";"];

fn tokenize(text: &str, puncts: &[&'static str]) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut rest = text;
    'outer: while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        for p in puncts {
            if let Some(after) = rest.strip_prefix(p) {
                toks.push(Tok::Punct(p));
                rest = after;
                continue 'outer;
            }
        }
        if c == '\'' || c == '"' {
            let body = &rest[1..];
            let end = body
                .find(c)
                .ok_or_else(|| format!("unclosed quote {c} in '{text}'"))?;
            toks.push(Tok::Word(body[..end].to_string()));
            rest = &body[end + 1..];
            continue;
        }
        // A word runs to whitespace, a quote or a punctuation start; it always takes its
        // first char (e.g. a lone '!'), so the loop advances on every input.
        let end = rest
            .char_indices()
            .skip(1)
            .find(|(_, ch)| {
                ch.is_whitespace()
                    || *ch == '\''
                    || *ch == '"'
                    || puncts.iter().any(|p| p.starts_with(*ch))
            })
            .map_or(rest.len(), |(i, _)| i);
        toks.push(Tok::Word(rest[..end].to_string()));
        rest = &rest[end..];
    }
    Ok(toks)
}

fn split_on_semicolons(toks: Vec<Tok>) -> Vec<Vec<Tok>> {
    let mut parts = vec![Vec::new()];
    for t in toks {
        match t {
            Tok::Punct(";") => parts.push(Vec::new()),
            t => parts.last_mut().map_or((), |p| p.push(t)),
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// Parses one `--if` argument (one or more `;`-separated compares).
pub fn parse_compares(text: &str) -> Result<Vec<Compare>, String> {
    let parts = split_on_semicolons(tokenize(text, COMPARE_PUNCT)?);
    if parts.is_empty() {
        return Err("--if: empty condition".into());
    }
    parts.iter().map(|p| parse_compare(p, text)).collect()
}

fn parse_compare(toks: &[Tok], text: &str) -> Result<Compare, String> {
    let bad = || {
        format!(
            "--if '{text}': expected e.g. \"version(k) = 3\", \"value(k) != 'x'\", \
             \"exists(k) = true\""
        )
    };
    let [
        Tok::Word(func),
        Tok::Punct("("),
        Tok::Word(key),
        Tok::Punct(")"),
        Tok::Punct(op),
        Tok::Word(operand),
    ] = toks
    else {
        return Err(bad());
    };
    let op = match *op {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        _ => return Err(bad()),
    };
    let target = match func.as_str() {
        "version" => CompareTarget::Version(operand.parse().map_err(|_| {
            format!("--if '{text}': version(...) compares with a number, not '{operand}'")
        })?),
        "value" => CompareTarget::Value(operand.as_bytes().to_vec()),
        "exists" => {
            if !matches!(op, CompareOp::Equal | CompareOp::NotEqual) {
                return Err(format!("--if '{text}': exists(...) takes only = or !="));
            }
            match operand.as_str() {
                "true" => CompareTarget::Exists(true),
                "false" => CompareTarget::Exists(false),
                _ => return Err(format!("--if '{text}': exists(...) is true or false")),
            }
        }
        "mod" => {
            return Err(format!(
                "--if '{text}': mod(...) compares are not supported: the state machine compares \
                 value, version and existence only"
            ));
        }
        other => {
            return Err(format!(
                "--if '{text}': unknown '{other}(...)'; use version, value or exists"
            ));
        }
    };
    Ok(Compare {
        key: key.as_bytes().to_vec(),
        op,
        target,
    })
}

/// Parses a `--then` / `--else` branch: `;`-separated `put K V`, `get K`, `del K`.
pub fn parse_ops(flag: &str, text: &str) -> Result<Vec<TxnOp>, String> {
    split_on_semicolons(tokenize(text, OPS_PUNCT)?)
        .iter()
        .map(|part| {
            let words: Vec<&str> = part
                .iter()
                .filter_map(|t| match t {
                    Tok::Word(w) => Some(w.as_str()),
                    Tok::Punct(_) => None,
                })
                .collect();
            match words.as_slice() {
                ["put", k, v] => Ok(TxnOp::Put {
                    key: k.as_bytes().to_vec(),
                    value: v.as_bytes().to_vec(),
                }),
                ["get", k] => Ok(TxnOp::Get {
                    key: k.as_bytes().to_vec(),
                }),
                ["del" | "delete", k] => Ok(TxnOp::Delete {
                    key: k.as_bytes().to_vec(),
                }),
                _ => Err(format!(
                    "{flag} '{text}': each operation is 'put KEY VALUE', 'get KEY' or 'del KEY' \
                     (separate several with ';')"
                )),
            }
        })
        .collect()
}

/// Builds the transaction from every `--if`, `--then` and `--else`.
pub fn build(ifs: &[String], then: Option<&str>, els: Option<&str>) -> Result<Txn, String> {
    let mut compare = Vec::new();
    for text in ifs {
        compare.extend(parse_compares(text)?);
    }
    let success = then.map_or(Ok(Vec::new()), |t| parse_ops("--then", t))?;
    let failure = els.map_or(Ok(Vec::new()), |t| parse_ops("--else", t))?;
    if success.is_empty() && failure.is_empty() {
        return Err("txn: give --then and/or --else operations".into());
    }
    Ok(Txn {
        compare,
        success,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_parses() {
        let txn = build(&["version(k) = 3".into()], Some("put k v"), Some("get k")).unwrap();
        assert_eq!(
            txn.compare,
            vec![Compare {
                key: b"k".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(3)
            }]
        );
        assert_eq!(
            txn.success,
            vec![TxnOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec()
            }]
        );
        assert_eq!(txn.failure, vec![TxnOp::Get { key: b"k".to_vec() }]);
    }

    #[test]
    fn quotes_several_compares_and_ops() {
        let c =
            parse_compares("value('my key')!=\"a b\"; version(x)<10;exists(y) = false").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].key, b"my key");
        assert_eq!(c[0].op, CompareOp::NotEqual);
        assert_eq!(c[0].target, CompareTarget::Value(b"a b".to_vec()));
        assert_eq!(c[1].op, CompareOp::Less);
        assert_eq!(c[2].target, CompareTarget::Exists(false));
        let ops = parse_ops("--then", "put a 'x=1; y'; del b;get c").unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            ops[0],
            TxnOp::Put {
                key: b"a".to_vec(),
                value: b"x=1; y".to_vec()
            }
        );
    }

    #[test]
    fn mistakes_are_one_line_errors() {
        for bad in [
            "version(k) = x",
            "version k = 3",
            "mod(k) = 3",
            "size(k) > 1",
            "exists(k) < true",
            "value('k) = 1",
            "",
        ] {
            let err = parse_compares(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(parse_ops("--then", "put k").is_err());
        assert!(parse_ops("--then", "frob k").is_err());
        assert!(build(&[], None, None).is_err());
    }
}
