//! Raw module-path globs: `*` is one dotted segment (or any run of characters
//! inside a segment), `**` any number of segments, `{a,b}` either name.

/// Expands `{a,b}` alternatives into plain patterns (cartesian product).
/// Returns `Err` with a message for unbalanced braces.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err("`}` without a matching `{`".into());
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| c + open)
        .ok_or_else(|| "`{` without a matching `}`".to_string())?;
    let inner = &pattern[open + 1..close];
    if inner.contains('{') {
        return Err("nested `{` inside `{...}`".into());
    }
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut out = Vec::new();
    for alt in inner.split(',') {
        let alt = alt.trim();
        if alt.is_empty() {
            return Err("empty alternative in `{...}`".into());
        }
        for rest in expand_braces(tail)? {
            out.push(format!("{head}{alt}{rest}"));
        }
    }
    Ok(out)
}

/// Whether a brace-free `pattern` matches the dotted `path`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = path.split('.').collect();
    match_segments(&p, &s)
}

fn match_segments(p: &[&str], s: &[&str]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((&"**", rest)) => (0..=s.len()).any(|k| match_segments(rest, &s[k..])),
        Some((first, rest)) => match s.split_first() {
            Some((seg, srest)) => match_segment(first, seg) && match_segments(rest, srest),
            None => false,
        },
    }
}

/// `*` inside a segment matches any run of characters (not a dot).
pub fn match_segment(pattern: &str, seg: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == seg;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !seg.starts_with(first) || seg.len() < first.len() + last.len() || !seg.ends_with(last) {
        return false;
    }
    let mut rest = &seg[first.len()..seg.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_to_every_combination() {
        assert_eq!(
            expand_braces("a.{b,c}.{d, e}").unwrap(),
            vec!["a.b.d", "a.b.e", "a.c.d", "a.c.e"]
        );
        assert!(expand_braces("a.{b").is_err());
        assert!(expand_braces("a.{}").is_err());
    }

    #[test]
    fn star_is_one_segment_and_double_star_any() {
        assert!(matches(
            "encoder.layer.*.attention.self.query",
            "encoder.layer.11.attention.self.query"
        ));
        assert!(!matches("encoder.*.query", "encoder.layer.0.query"));
        assert!(matches("**.query", "encoder.layer.0.attention.self.query"));
        assert!(matches("encoder.**", "encoder"));
        assert!(matches(
            "model.layers.*.self_attn.*_proj",
            "model.layers.3.self_attn.q_proj"
        ));
        assert!(!matches(
            "model.layers.*.self_attn.*_proj",
            "model.layers.3.self_attn"
        ));
    }
}
