//! Label and field selectors as the apiserver parses them from `labelSelector` / `fieldSelector`.
//!
//! Grammar follows `k8s.io/apimachinery/pkg/labels.Parse`: comma-separated requirements, each
//! `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`. Field selectors
//! support `=`, `==`, `!=` on any dotted JSON path (the real apiserver only allows a per-type set
//! of fields; accepting every path keeps the emulator permissive rather than surprising).

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Req {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Req>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
}

fn lex(input: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                chars.next();
            }
            ',' => {
                chars.next();
                out.push(Tok::Comma);
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '>' => {
                chars.next();
                out.push(Tok::Gt);
            }
            '<' => {
                chars.next();
                out.push(Tok::Lt);
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Tok::DoubleEq);
                } else {
                    out.push(Tok::Eq);
                }
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Tok::NotEq);
                } else {
                    out.push(Tok::Not);
                }
            }
            _ => {
                let mut ident = String::new();
                while let Some(&c) = chars.peek() {
                    if " \t\n\r,()<>=!".contains(c) {
                        break;
                    }
                    ident.push(c);
                    chars.next();
                }
                out.push(Tok::Ident(ident));
            }
        }
    }
    Ok(out)
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl LabelSelector {
    /// Parses a `labelSelector` query value.
    pub fn parse(input: &str) -> Result<Self, String> {
        let toks = lex(input)?;
        let mut reqs = Vec::new();
        let mut i = 0;
        let err = |what: &str| Err(format!("unable to parse requirement: {what} in {input:?}"));
        while i < toks.len() {
            let req = match &toks[i] {
                Tok::Not => {
                    let Some(Tok::Ident(key)) = toks.get(i + 1) else {
                        return err("expected key after '!'");
                    };
                    i += 2;
                    Req::NotExists(key.clone())
                }
                Tok::Ident(key) => {
                    let key = key.clone();
                    i += 1;
                    match toks.get(i) {
                        None | Some(Tok::Comma) => Req::Exists(key),
                        Some(op @ (Tok::Eq | Tok::DoubleEq | Tok::NotEq)) => {
                            let negate = *op == Tok::NotEq;
                            i += 1;
                            // `k=` (empty value) is legal and means "label present with empty value".
                            let value = match toks.get(i) {
                                Some(Tok::Ident(v)) => {
                                    i += 1;
                                    v.clone()
                                }
                                None | Some(Tok::Comma) => String::new(),
                                _ => return err("expected value"),
                            };
                            if !valid_value(&value) {
                                return err("invalid label value");
                            }
                            if negate {
                                Req::NotEq(key, value)
                            } else {
                                Req::Eq(key, value)
                            }
                        }
                        Some(op @ (Tok::Gt | Tok::Lt)) => {
                            let gt = *op == Tok::Gt;
                            let Some(Tok::Ident(v)) = toks.get(i + 1) else {
                                return err("expected integer value");
                            };
                            let Ok(n) = v.parse::<i64>() else {
                                return err("expected integer value");
                            };
                            i += 2;
                            if gt { Req::Gt(key, n) } else { Req::Lt(key, n) }
                        }
                        Some(Tok::Ident(op)) if op == "in" || op == "notin" => {
                            let is_in = op == "in";
                            i += 1;
                            if toks.get(i) != Some(&Tok::Open) {
                                return err("expected '('");
                            }
                            i += 1;
                            let mut values = Vec::new();
                            loop {
                                match toks.get(i) {
                                    Some(Tok::Ident(v)) => {
                                        if !valid_value(v) {
                                            return err("invalid label value");
                                        }
                                        values.push(v.clone());
                                        i += 1;
                                    }
                                    // Empty set members such as `(a,,b)` or `()` are legal upstream.
                                    Some(Tok::Comma) | Some(Tok::Close) => {
                                        values.push(String::new())
                                    }
                                    _ => return err("unterminated set"),
                                }
                                match toks.get(i) {
                                    Some(Tok::Comma) => i += 1,
                                    Some(Tok::Close) => {
                                        i += 1;
                                        break;
                                    }
                                    _ => return err("expected ',' or ')'"),
                                }
                            }
                            if is_in {
                                Req::In(key, values)
                            } else {
                                Req::NotIn(key, values)
                            }
                        }
                        _ => return err("expected operator"),
                    }
                }
                _ => return err("expected key"),
            };
            let key = match &req {
                Req::Exists(k)
                | Req::NotExists(k)
                | Req::Eq(k, _)
                | Req::NotEq(k, _)
                | Req::In(k, _)
                | Req::NotIn(k, _)
                | Req::Gt(k, _)
                | Req::Lt(k, _) => k,
            };
            if !valid_key(key) {
                return err("invalid label key");
            }
            reqs.push(req);
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => {
                    i += 1;
                    if i == toks.len() {
                        return err("trailing ','");
                    }
                }
                _ => return err("expected ','"),
            }
        }
        Ok(Self { reqs })
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Evaluates the selector against an object's `metadata.labels`.
    pub fn matches(&self, obj: &Value) -> bool {
        if self.reqs.is_empty() {
            return true;
        }
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Req::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Req::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// A parsed field selector (`metadata.name=foo,status.phase!=Running`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses a `fieldSelector` query value; `\,` `\=` `\\` escapes are honoured as upstream.
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_unescaped(input, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (path, negate, value) = if let Some((p, v)) = split_once_unescaped(term, "!=") {
                (p, true, v)
            } else if let Some((p, v)) = split_once_unescaped(term, "==") {
                (p, false, v)
            } else if let Some((p, v)) = split_once_unescaped(term, "=") {
                (p, false, v)
            } else {
                return Err(format!("invalid field selector: {input:?}"));
            };
            let path = path.trim();
            if path.is_empty() {
                return Err(format!("invalid field selector: {input:?}"));
            }
            reqs.push((path.to_string(), negate, unescape(value.trim())));
        }
        Ok(Self { reqs })
    }

    /// Evaluates against the object; a missing field compares as the empty string, which is
    /// what makes upstream selectors like `spec.nodeName=` work.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, negate, want)| {
            let mut cur = Some(obj);
            for seg in path.split('.') {
                cur = cur.and_then(|v| v.get(seg));
            }
            let got = match cur {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (got == *want) != *negate
        })
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

fn split_once_unescaped<'a>(s: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if s[i..].starts_with(op) {
            return Some((&s[..i], &s[i + op.len()..]));
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_equality_and_existence() {
        let o = obj(json!({"app": "web", "tier": "fe"}));
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=fe", true),
            ("app=web, tier=be", false),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("missing in (db)", false),
            ("tier in (fe), app", true),
            ("app=", false),
        ] {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&o), want, "{sel}");
        }
    }

    #[test]
    fn label_numeric_and_errors() {
        let o = obj(json!({"n": "5"}));
        assert!(LabelSelector::parse("n>4").unwrap().matches(&o));
        assert!(!LabelSelector::parse("n<4").unwrap().matches(&o));
        for bad in [
            "=x", "a=b,", "a in (b", "a in b", "a b", "!", "a>x", "a=b=c", "a=b c",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn field_selector() {
        let o = obj(json!({}));
        for (sel, want) in [
            ("metadata.name=a", true),
            ("metadata.name==a", true),
            ("metadata.name!=a", false),
            ("metadata.namespace=ns,spec.nodeName=n1", true),
            ("status.phase=", true),
            ("status.phase!=Running", true),
            ("spec.nodeName=n2", false),
        ] {
            assert_eq!(
                FieldSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
