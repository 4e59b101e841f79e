//! Watching many readers for the price of one: while several payments of this method
//! wait for their customers, one `GET /v1/terminal/readers` shows every reader's action,
//! so each look at a reader is served from the newest list instead of its own request.
//! Ten tills waiting cost a list four times a second, not ten reader reads a second,
//! and each till looks more often than it could alone. One waiting payment reads its
//! reader directly. A list only ever confirms that a payment still waits: one fetched
//! just before a payment started shows its reader as it was, so any change it shows is
//! read again from the reader itself (`flows::look`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use posbridge_plugin_api::MethodError;
use serde_json::Value;

use crate::wire::StripeApi;

/// Readers per list page: Stripe's largest.
const PAGE: usize = 100;
/// How often a list may be fetched, at most.
const FASTEST_LIST_MS: u64 = 250;
/// How often a reader alone is read.
const ALONE_MS: u64 = 1_000;

/// The newest list of the account's readers.
#[derive(Debug, Default)]
pub struct ReaderWatch {
    newest: Mutex<Option<Listing>>,
    /// Held while a list is fetched, so waiting payments share one request.
    fetching: Mutex<()>,
    /// Stripe refused to list the readers: each is read alone.
    refused: AtomicBool,
}

#[derive(Debug)]
struct Listing {
    /// When the request for it left: what it shows is at least this recent.
    asked_at_ms: i64,
    readers: HashMap<String, Value>,
}

/// How often a waiting payment looks at its reader while `waiting` payments of the
/// method wait on readers: once a second alone; together, as often as one list a
/// second per payment allows, but no list more than four times a second.
pub fn look_every_ms(waiting: usize) -> u64 {
    if waiting < 2 {
        ALONE_MS
    } else {
        (ALONE_MS / waiting as u64).max(FASTEST_LIST_MS)
    }
}

impl ReaderWatch {
    /// The reader `id` as Stripe shows it now, within `look_every_ms(waiting)`.
    pub fn reader(&self, api: &StripeApi, id: &str, waiting: usize, deadline_ms: i64) -> Result<Value, MethodError> {
        if waiting < 2 || self.refused.load(Ordering::Relaxed) {
            return read_reader(api, id, deadline_ms);
        }
        let fresh_since = api.now_ms() - look_every_ms(waiting) as i64;
        if let Some(found) = self.fresh(id, fresh_since) {
            return Ok(found);
        }
        let listed = {
            let _fetching = self.fetching.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Another payment may have fetched while this one waited for the lock.
            match self.fresh(id, fresh_since) {
                Some(found) => Some(found),
                None => self.fetch(api, id, deadline_ms)?,
            }
        };
        match listed {
            Some(reader) => Ok(reader),
            // Not in the list (beyond its first page, or the list was refused): alone.
            None => read_reader(api, id, deadline_ms),
        }
    }

    /// Fetches the list and answers reader `id` from it, if listed.
    fn fetch(&self, api: &StripeApi, id: &str, deadline_ms: i64) -> Result<Option<Value>, MethodError> {
        let asked_at_ms = api.now_ms();
        let page = match api.get_routine(&format!("/v1/terminal/readers?limit={PAGE}"), deadline_ms)? {
            Ok(page) => page,
            Err(_) => {
                // Refused (a restricted key may read a reader but not list them): from
                // now on every payment reads its reader alone.
                self.refused.store(true, Ordering::Relaxed);
                return Ok(None);
            }
        };
        let readers: HashMap<String, Value> = page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|reader| Some((reader["id"].as_str()?.to_string(), reader.clone())))
            .collect();
        let found = readers.get(id).cloned();
        *self.newest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Listing { asked_at_ms, readers });
        Ok(found)
    }

    fn fresh(&self, id: &str, since_ms: i64) -> Option<Value> {
        let newest = self.newest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        newest.as_ref().filter(|listing| listing.asked_at_ms >= since_ms).and_then(|listing| listing.readers.get(id).cloned())
    }
}

/// The reader `id`, read alone, now.
pub fn read_reader(api: &StripeApi, id: &str, deadline_ms: i64) -> Result<Value, MethodError> {
    api.read_routine(&format!("/v1/terminal/readers/{id}"), deadline_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn together_tills_look_more_often_for_at_most_one_list_a_second_each() {
        assert_eq!(look_every_ms(0), 1_000);
        assert_eq!(look_every_ms(1), 1_000);
        assert_eq!(look_every_ms(2), 500);
        assert_eq!(look_every_ms(3), 333);
        assert_eq!(look_every_ms(10), 250, "never more than four lists a second");
    }
}
