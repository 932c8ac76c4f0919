//! "Did you mean" suggestions by edit distance.

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions),
/// case-insensitive.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// The candidate closest to `name`, if it is close enough to be a likely typo:
/// within a third of the name's length (at least 1, at most 3 edits), or one
/// that contains / is contained in `name`.
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let lower = name.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let d = edit_distance(name, c);
        let c_lower = c.to_lowercase();
        let contained = lower.len() >= 3
            && c_lower.len() >= 3
            && (c_lower.contains(&lower) || lower.contains(&c_lower));
        if d <= limit || contained {
            let score = if d <= limit { d } else { limit + 1 };
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, c));
            }
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("lora", "lora"), 0);
        assert_eq!(edit_distance("lorra", "lora"), 1);
        assert_eq!(edit_distance("lroa", "lora"), 1);
        assert_eq!(edit_distance("query", "qeury"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggests_close_names_only() {
        let methods = [
            "lora", "dora", "ia3", "prefix", "prompt", "adapter", "bitfit",
        ];
        assert_eq!(did_you_mean("lorra", methods), Some("lora"));
        assert_eq!(did_you_mean("prefx", methods), Some("prefix"));
        assert_eq!(did_you_mean("adapters", methods), Some("adapter"));
        assert_eq!(did_you_mean("zzzzzz", methods), None);
    }
}
