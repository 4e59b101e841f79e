//! One lock per purchase (a payment and the legs paid against it), instead of one for
//! the whole shop: a change reads the payment, decides and commits under its purchase's
//! lock, so changes of different registers' purchases commit side by side and share
//! their flushes (group commit in the store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

/// Locks that exist while someone holds or waits for them.
#[derive(Default)]
pub struct PurchaseLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

/// Entries kept before unused ones are dropped.
const TIDY_ABOVE: usize = 1024;

impl PurchaseLocks {
    /// Waits for the lock of the purchase whose first payment is `root`.
    pub async fn lock(&self, root: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match locks.get(root).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    if locks.len() >= TIDY_ABOVE {
                        locks.retain(|_, lock| lock.strong_count() > 0);
                    }
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(root.to_string(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_purchase_waits_another_does_not() {
        let locks = PurchaseLocks::default();
        let held = locks.lock("pay_a").await;
        assert!(tokio::time::timeout(std::time::Duration::ZERO, locks.lock("pay_b")).await.is_ok(), "another purchase is free");
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("pay_a")).await.is_err(), "the same purchase waits");
        drop(held);
        assert!(tokio::time::timeout(std::time::Duration::ZERO, locks.lock("pay_a")).await.is_ok(), "free again once released");
    }
}
