//! Picks and opens the backend named by the settings.

use std::sync::Arc;

use anyhow::Context as _;

use super::{SledStore, Store};
use crate::config::{Settings, StoreSettings};

pub async fn open(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.store {
        StoreSettings::Sled { data_dir, cache_bytes } => {
            let context = || format!("opening the sled store in {}", data_dir.display());
            // The key file may be generated only into a directory that is ours.
            super::sled::check_data_dir(data_dir).with_context(context)?;
            let key = crate::secrets::load_or_create_key(settings.secret_key.as_ref(), data_dir)?;
            let cipher = crate::secrets::SecretCipher::new(&key);
            let store = SledStore::open(data_dir, *cache_bytes, cipher)
                .await
                .with_context(context)?;
            Ok(Arc::new(store))
        }
        StoreSettings::Postgres { .. } => {
            anyhow::bail!("HOOKRELAY_DATABASE_URL: the PostgreSQL store is not part of this build yet; unset it to use the embedded store")
        }
    }
}
