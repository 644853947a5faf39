//! Picks and opens the backend named by the settings.

use std::sync::Arc;

use anyhow::Context as _;

use super::{SledStore, Store};
use crate::config::{Settings, StoreSettings};

pub async fn open(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.store {
        StoreSettings::Sled { data_dir, cache_bytes } => {
            let store = SledStore::open(data_dir, *cache_bytes)
                .await
                .with_context(|| format!("opening the sled store in {}", data_dir.display()))?;
            Ok(Arc::new(store))
        }
        StoreSettings::Postgres { .. } => {
            anyhow::bail!("HOOKRELAY_DATABASE_URL: the PostgreSQL store is not part of this build yet; unset it to use the embedded store")
        }
    }
}
