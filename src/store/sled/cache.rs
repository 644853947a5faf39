//! Merchants and their endpoint lists as last read, so an ingest does not go to sled
//! (and decrypt the secrets in each record) for settings that change a few times a day.
//!
//! Every write to a merchant or an endpoint forgets that merchant's entries after the
//! write. A read that missed fills the cache only if nothing was forgotten while it
//! read: `epoch` counts the forgets, so a reader that raced a write never puts back
//! what the write replaced.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::{Endpoint, Merchant, MerchantId};

#[derive(Default)]
pub struct SettingsCache {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    epoch: u64,
    merchants: HashMap<MerchantId, Arc<Merchant>>,
    endpoints: HashMap<MerchantId, Arc<[Endpoint]>>,
}

impl SettingsCache {
    /// Take before reading the store; pass to `keep_*` with what was read.
    pub fn epoch(&self) -> u64 {
        self.read().epoch
    }

    pub fn merchant(&self, id: &MerchantId) -> Option<Arc<Merchant>> {
        self.read().merchants.get(id).cloned()
    }

    pub fn endpoints(&self, merchant: &MerchantId) -> Option<Arc<[Endpoint]>> {
        self.read().endpoints.get(merchant).cloned()
    }

    pub fn keep_merchant(&self, read_at: u64, merchant: &Merchant) {
        let mut state = self.write();
        if state.epoch == read_at {
            state.merchants.insert(merchant.id.clone(), Arc::new(merchant.clone()));
        }
    }

    pub fn keep_endpoints(&self, read_at: u64, merchant: &MerchantId, endpoints: &[Endpoint]) {
        let mut state = self.write();
        if state.epoch == read_at {
            state.endpoints.insert(merchant.clone(), endpoints.into());
        }
    }

    /// Call after every write to the merchant or one of its endpoints.
    pub fn forget(&self, merchant: &MerchantId) {
        let mut state = self.write();
        state.epoch += 1;
        state.merchants.remove(merchant);
        state.endpoints.remove(merchant);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("settings cache poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().expect("settings cache poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IngestToken, MerchantId};

    fn merchant(name: &str) -> Merchant {
        Merchant {
            id: MerchantId::parse("m1").unwrap(),
            name: Some(name.to_owned()),
            ingest_token: IngestToken::generate(),
            verification: None,
            created_at: 0,
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = SettingsCache::default();
        let before = cache.epoch();
        cache.forget(&MerchantId::parse("m1").unwrap()); // a write lands while we read
        cache.keep_merchant(before, &merchant("old"));
        assert!(cache.merchant(&MerchantId::parse("m1").unwrap()).is_none());

        let now = cache.epoch();
        cache.keep_merchant(now, &merchant("new"));
        assert_eq!(
            cache
                .merchant(&MerchantId::parse("m1").unwrap())
                .unwrap()
                .name
                .as_deref(),
            Some("new")
        );
        cache.forget(&MerchantId::parse("m1").unwrap());
        assert!(cache.merchant(&MerchantId::parse("m1").unwrap()).is_none());
    }
}
