//! Which cart lines Smartum may pay: only products carrying the configured label.

use posbridge_plugin_api::{CartLine, MethodError};

/// The sum of the lines labelled `label`.
pub fn eligible_amount(lines: &[CartLine], label: &str) -> Result<u64, MethodError> {
    lines
        .iter()
        .filter(|line| line.labels.iter().any(|candidate| candidate.as_str() == label))
        .try_fold(0u64, |sum, line| sum.checked_add(line.amount))
        .ok_or_else(|| MethodError::new("invalid_request", "the eligible lines' amounts overflow").with_field("lines"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use posbridge_plugin_api::{RString, RVec};

    fn line(amount: u64, labels: &[&str]) -> CartLine {
        CartLine {
            sku: RString::from("SKU"),
            name: RString::from("item"),
            amount,
            labels: labels.iter().map(|label| RString::from(*label)).collect::<RVec<_>>(),
            ..Default::default()
        }
    }

    #[test]
    fn only_labelled_lines_count() {
        let lines = [line(3000, &["smartum"]), line(1500, &[]), line(200, &["other", "smartum"])];
        assert_eq!(eligible_amount(&lines, "smartum").unwrap(), 3200);
        assert_eq!(eligible_amount(&lines, "lunch").unwrap(), 0);
    }
}
