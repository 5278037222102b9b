//! Names that Kubernetes accepts: DNS-1123 label checks for pool and session names.

/// Checks `s` is a DNS-1123 label: 1–63 lower-case letters, digits and '-', starting and ending
/// with a letter or digit. Returns why not, in words.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("'{s}' must be 1 to 63 characters long"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !s.chars().all(ok_char) {
        return Err(format!("'{s}' may hold only lower-case letters, digits and '-'"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!("'{s}' must start and end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn typical_pool_names_are_labels() {
        assert!(check_dns_label("drafting-2d").is_ok());
        assert!(check_dns_label("Drafting").is_err());
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
    }

    proptest! {
        #[test]
        fn accepted_names_match_the_kubernetes_pattern(s in "\\PC{0,70}") {
            if check_dns_label(&s).is_ok() {
                let re_ok = s.len() <= 63
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !s.starts_with('-') && !s.ends_with('-') && !s.is_empty();
                prop_assert!(re_ok);
            }
        }
    }
}
