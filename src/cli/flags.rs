//! Flag values the shell hands over as text, parsed with errors that say
//! what a value must be.

/// A count of at least 1 (`--max-steps`, `--save-every`, `--trials`, ...):
/// 0 is an error, not a silent 1.
pub fn count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number (at least 1)")),
    }
}

/// A count of at least 1 and at most `max`.
pub fn count_to(max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync {
    move |s| {
        let n = count(s)?;
        if n > max {
            Err(format!("must be at most {max}"))
        } else {
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count("3"), Ok(3));
        assert!(count("0").unwrap_err().contains("at least 1"));
        assert!(count("-1").is_err());
        assert!(count("x").is_err());
        assert!(count_to(8)("9").unwrap_err().contains("at most 8"));
    }
}
