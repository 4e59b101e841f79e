//! The durable store (sled). Every change is flushed before the POS hears of it.

use std::path::{Path, PathBuf};

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created or the database opened (another posbridge
    /// may hold it).
    #[error("cannot open the store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    /// A write or flush failed; the change is not durable.
    #[error("store write failed: {0}")]
    Write(#[from] sled::Error),
}

/// The open sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (creating if missing) the store at `path`. sled holds a lock on the
    /// directory, so a second daemon on the same store is refused here.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        Ok(Store { db })
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// `true` when the database answers a read.
    pub fn is_healthy(&self) -> bool {
        self.db.get(b"\0health").is_ok()
    }
}
