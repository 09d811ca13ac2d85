//! The one rule every name follows, so names are safe in CLI output, file names, metrics labels
//! and DNS, and compare equal exactly when they look equal.

use crate::error::Rejection;
use crate::limits::NAME_LEN_MAX;

/// Checks that `value` is 1..=`NAME_LEN_MAX` characters of `[a-z0-9._-]` starting with a letter or
/// digit. Uppercase is refused rather than folded, so that no two spellings name the same thing.
pub fn validate_name(field: &str, value: &str) -> Result<(), Rejection> {
    let reject = |reason: String| Err(Rejection::invalid(field, value, reason));
    let Some(first) = value.chars().next() else {
        return reject("must not be empty".to_owned());
    };
    let length = value.chars().count();
    if length > NAME_LEN_MAX {
        return reject(format!(
            "is {length} characters long, more than the limit of {NAME_LEN_MAX}"
        ));
    }
    if let Some(bad) = value.chars().find(|c| c.is_ascii_uppercase()) {
        return reject(format!(
            "contains uppercase {bad:?}; names are lowercase ([a-z0-9._-])"
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return reject(format!(
            "contains {bad:?}; names use only a-z, 0-9, '.', '_' and '-'"
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return reject(format!(
            "starts with {first:?}; names start with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_names() {
        let longest = "a".repeat(NAME_LEN_MAX);
        for name in [
            "a",
            "0",
            "web-01",
            "rack3.srv_7",
            "9lives",
            longest.as_str(),
        ] {
            assert_eq!(validate_name("name", name), Ok(()), "{name}");
        }
    }

    #[test]
    fn rejects_with_reason() {
        let too_long = "a".repeat(NAME_LEN_MAX + 1);
        let cases = [
            ("", "must not be empty"),
            (too_long.as_str(), "64 characters long"),
            ("Web", "uppercase 'W'"),
            ("web 1", "contains ' '"),
            ("web/1", "contains '/'"),
            ("wéb", "contains 'é'"),
            ("-web", "starts with '-'"),
            (".web", "starts with '.'"),
            ("_web", "starts with '_'"),
        ];
        for (name, reason) in cases {
            match validate_name("vnics[2].name", name) {
                Err(Rejection::InvalidArgument {
                    field,
                    value: _,
                    reason: actual,
                }) => {
                    assert_eq!(field, "vnics[2].name");
                    assert!(actual.contains(reason), "{name:?}: {actual}");
                }
                other => panic!("{name:?}: expected InvalidArgument, got {other:?}"),
            }
        }
    }
}
