//! The one failure table: what each failure code means to the engine, the API and
//! idempotency. Plugins answer codes; everything else asks this table instead of
//! re-deriving meaning from strings (docs/api.md prints the same table).

/// How the engine and the API treat a failure code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureClass {
    /// The HTTP status when the failure is the answer to a request.
    pub http_status: u16,
    /// The same request may succeed later (provider down, timeout).
    pub retryable: bool,
    /// The provider may have acted: the payment stays `processing` and the engine looks
    /// it up (a refund stays `pending` and is sent again).
    pub outcome_unknown: bool,
    /// An answer carrying this failure is stored for its `Idempotency-Key`. Transient
    /// failures are not: the retry must run again.
    pub replayable: bool,
}

const fn class(http_status: u16, retryable: bool, outcome_unknown: bool, replayable: bool) -> FailureClass {
    FailureClass { http_status, retryable, outcome_unknown, replayable }
}

/// Every code with a meaning of its own; any other plugin code is the provider's
/// refusal of this request (`422`, final, replayable).
pub const TABLE: &[(&str, FailureClass)] = &[
    ("outcome_unknown", class(503, true, true, false)),
    ("plugin_timeout", class(504, true, true, false)),
    ("plugin_error", class(502, true, true, false)),
    ("provider_unavailable", class(503, true, false, false)),
    ("provider_error", class(502, true, false, true)),
    // A panic may come after the plugin's request left: what the provider did is unknown
    // (a redeem is looked up, a refund resent with its id), never assumed undone.
    ("plugin_panicked", class(502, false, true, false)),
    ("unsupported", class(502, false, false, true)),
    ("receipt_already_used", class(409, false, false, true)),
    ("method_not_configured", class(409, true, false, false)),
    ("store_error", class(500, true, false, false)),
    ("rate_limited", class(429, true, false, false)),
    // The provider could not be reached and the receipt is outside the method's offline
    // limits: nothing was taken; the same receipt may pay once the provider answers.
    ("offline_not_verifiable", class(503, true, false, false)),
    ("offline_amount_exceeded", class(503, true, false, false)),
    ("offline_receipt_too_old", class(503, true, false, false)),
    ("offline_limit_reached", class(503, true, false, false)),
    // A refund of a receipt taken offline, before the provider confirmed it.
    ("not_confirmed_yet", class(409, true, false, false)),
];

/// A provider's refusal of this particular request.
const REFUSAL: FailureClass = class(422, false, false, true);

/// The class of `code`.
pub fn class_of(code: &str) -> FailureClass {
    TABLE.iter().find(|(known, _)| *known == code).map(|(_, class)| *class).unwrap_or(REFUSAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_outcomes_keep_the_attempt_open_and_are_never_replayed() {
        for code in ["outcome_unknown", "plugin_timeout", "plugin_error"] {
            let class = class_of(code);
            assert!(class.outcome_unknown && class.retryable && !class.replayable, "{code}");
        }
    }

    #[test]
    fn provider_unavailable_is_retryable_but_took_nothing() {
        let class = class_of("provider_unavailable");
        assert!(class.retryable && !class.outcome_unknown && !class.replayable);
        assert_eq!(class.http_status, 503);
    }

    #[test]
    fn any_other_code_is_a_final_refusal() {
        assert_eq!(class_of("card_declined"), REFUSAL);
        assert_eq!(class_of("refund_window_closed").http_status, 422);
        assert_eq!(class_of("receipt_already_used").http_status, 409);
    }

    /// docs/api.md prints this table for POS developers; a row that drifts is a lie.
    #[test]
    fn the_api_documentation_prints_this_table() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).expect("docs/api.md");
        let yes_no = |flag: bool| if flag { "yes" } else { "no" };
        for (code, class) in TABLE {
            let row = doc
                .lines()
                .find(|line| line.starts_with(&format!("| `{code}` |")))
                .unwrap_or_else(|| panic!("{code} is not in docs/api.md"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let flags: Vec<&str> = cells[3..6].iter().map(|cell| cell.split_whitespace().next().unwrap_or_default()).collect();
            let expected = [yes_no(class.retryable), yes_no(class.outcome_unknown), yes_no(class.replayable)];
            assert_eq!(
                (cells[2], flags.as_slice()),
                (class.http_status.to_string().as_str(), &expected[..]),
                "docs/api.md row of {code}: {row}"
            );
        }
    }

    #[test]
    fn codes_are_listed_once() {
        for (index, (code, _)) in TABLE.iter().enumerate() {
            assert!(TABLE[index + 1..].iter().all(|(other, _)| other != code), "{code} twice");
        }
    }
}
