//! Admin tokens and the audit log in sled (trees documented in `keys.rs`). Only a
//! token's SHA-256 is ever written; the token itself never reaches the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sled::Transactional as _;

use super::{abort, decode, encode, sled_err, tx_decode, tx_err};
use crate::domain::{AdminToken, AuditEntry, TokenHash, TokenName};
use crate::store::{Page, PageRequest, StoreError};

pub(super) struct AccessTrees {
    /// name → AdminToken (JSON, with the hash in hex).
    tokens: sled::Tree,
    /// SHA-256 of the token (32 bytes) → name.
    token_hashes: sled::Tree,
    /// seq (u64 BE) → AuditEntry (JSON): changes, kept.
    audit: sled::Tree,
    /// seq (u64 BE) → AuditEntry (JSON): refusals, only the newest few kept.
    audit_refusals: sled::Tree,
    /// The next audit sequence number, shared by both audit trees so that one
    /// merged scan lists them newest first; one past the largest found at open.
    next_seq: AtomicU64,
    /// Entries in `audit_refusals`; the lock also serialises its trimming.
    refusals: Mutex<usize>,
}

impl AccessTrees {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(|e| StoreError::backend("opening a tree", e));
        let audit = tree("audit")?;
        let audit_refusals = tree("audit_refusals")?;
        let last = |tree: &sled::Tree| -> Result<u64, StoreError> {
            Ok(tree
                .last()
                .map_err(sled_err("reading the audit log"))?
                .and_then(|(key, _)| key.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0))
        };
        let next_seq = last(&audit)?.max(last(&audit_refusals)?) + 1;
        let refusals = audit_refusals.len();
        Ok(Self {
            tokens: tree("admin_tokens")?,
            token_hashes: tree("admin_token_hashes")?,
            audit,
            audit_refusals,
            next_seq: AtomicU64::new(next_seq),
            refusals: Mutex::new(refusals),
        })
    }

    pub(super) fn create_token(&self, token: &AdminToken) -> Result<(), StoreError> {
        let name = token.name.as_str().as_bytes();
        let hash = token.hash.as_bytes();
        let record = encode(token);
        (&self.tokens, &self.token_hashes)
            .transaction(|(tokens, hashes)| {
                if tokens.get(name)?.is_some() || hashes.get(hash)?.is_some() {
                    return Err(abort(StoreError::AlreadyExists));
                }
                tokens.insert(name, record.as_slice())?;
                hashes.insert(&hash[..], name)?;
                Ok(())
            })
            .map_err(tx_err::<StoreError>("creating an admin token"))
    }

    pub(super) fn find_token(&self, hash: &TokenHash) -> Result<Option<AdminToken>, StoreError> {
        let read = sled_err("reading an admin token");
        let Some(name) = self.token_hashes.get(hash.as_bytes()).map_err(&read)? else {
            return Ok(None);
        };
        let Some(raw) = self.tokens.get(name).map_err(&read)? else {
            return Ok(None);
        };
        let token: AdminToken = decode(&raw)?;
        // The hash was the key; compare again in constant time so that a stale
        // index entry can never stand for another token.
        Ok(token.hash.matches(hash).then_some(token))
    }

    pub(super) fn list_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        self.tokens
            .iter()
            .values()
            .map(|raw| decode(&raw.map_err(sled_err("listing admin tokens"))?))
            .collect()
    }

    pub(super) fn delete_token(&self, name: &TokenName) -> Result<bool, StoreError> {
        let name = name.as_str().as_bytes();
        (&self.tokens, &self.token_hashes)
            .transaction(|(tokens, hashes)| {
                let Some(raw) = tokens.remove(name)? else {
                    return Ok(false);
                };
                let token: AdminToken = tx_decode(&raw)?;
                hashes.remove(&token.hash.as_bytes()[..])?;
                Ok(true)
            })
            .map_err(tx_err::<StoreError>("deleting an admin token"))
    }

    /// Appends a change. The caller makes it durable.
    pub(super) fn append_change(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.audit
            .insert(seq.to_be_bytes(), encode(entry))
            .map_err(sled_err("appending to the audit log"))?;
        Ok(())
    }

    /// Appends a refusal, then drops the oldest refusals beyond `keep`.
    pub(super) fn append_refusal(&self, entry: &AuditEntry, keep: usize) -> Result<(), StoreError> {
        let mut count = self.refusals.lock().expect("refusal count poisoned");
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let replaced = self
            .audit_refusals
            .insert(seq.to_be_bytes(), encode(entry))
            .map_err(sled_err("appending to the audit log"))?;
        if replaced.is_none() {
            *count += 1;
        }
        while *count > keep {
            match self
                .audit_refusals
                .pop_min()
                .map_err(sled_err("trimming the audit log"))?
            {
                Some(_) => *count -= 1,
                None => {
                    *count = 0;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Both audit trees merged, newest first; the cursor is the last seq shown.
    pub(super) fn list_audit(&self, page: PageRequest) -> Result<Page<AuditEntry>, StoreError> {
        let before = match &page.after {
            Some(after) => after
                .parse::<u64>()
                .map_err(|e| StoreError::backend("paging the audit log", e))?,
            None => u64::MAX,
        };
        let newest = |tree: &sled::Tree| -> Result<Vec<(u64, AuditEntry)>, StoreError> {
            tree.range(..before.to_be_bytes())
                .rev()
                .take(page.limit + 1)
                .map(|entry| {
                    let (key, value) = entry.map_err(sled_err("scanning the audit log"))?;
                    let seq = key
                        .as_ref()
                        .try_into()
                        .map(u64::from_be_bytes)
                        .map_err(|e| StoreError::backend("reading an audit key", e))?;
                    Ok((seq, decode(&value)?))
                })
                .collect()
        };
        let mut entries = newest(&self.audit)?;
        entries.extend(newest(&self.audit_refusals)?);
        entries.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
        let next = (entries.len() > page.limit).then(|| entries[page.limit - 1].0.to_string());
        entries.truncate(page.limit);
        Ok(Page {
            items: entries.into_iter().map(|(_, entry)| entry).collect(),
            next,
        })
    }
}
