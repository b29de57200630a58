//! Per-tenant storage quotas: how many documents, and how many tokens in
//! all, a tenant may keep registered.
//!
//! What counts is what the registry holds for the tenant (a document
//! registered again with the same text counts once; with new text, its new
//! length replaces the old; deleting frees its share). The KV caches are not
//! counted: the tiers' byte budgets bound them, and they are evicted and
//! rebuilt from the text.
//!
//! [`Quotas`] keeps each tenant's usage in memory, read from the registry
//! the first time the tenant registers or deletes (one scan of its rows)
//! and updated on every change after that. Changes and checks happen under
//! one lock, so concurrent registrations cannot together pass a quota; a
//! failed change forgets the tenant's usage, which is read again next time.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::registry::DocumentRecord;
use crate::{Result, StoreError};

/// How much one tenant may keep registered; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantQuota {
    /// Most documents (`store.tenant_max_documents`).
    pub max_documents: u64,
    /// Most tokens over all its documents (`store.tenant_max_tokens`).
    pub max_tokens: u64,
}

/// What a tenant holds in the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUsage {
    /// Documents registered.
    pub documents: u64,
    /// Tokens over all of them.
    pub tokens: u64,
}

/// A change to a tenant's usage: documents and tokens added (negative:
/// freed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) documents: i64,
    pub(crate) tokens: i64,
}

impl TenantUsage {
    /// This usage after `change` (never below zero).
    pub(crate) fn after(self, change: Change) -> Self {
        Self {
            documents: self.documents.saturating_add_signed(change.documents),
            tokens: self.tokens.saturating_add_signed(change.tokens),
        }
    }
}

impl TenantQuota {
    /// Refuses `change` when it adds to a quantity that would then exceed
    /// its limit (a change that frees room is always allowed, even over a
    /// quota lowered since).
    pub(crate) fn check(&self, held: TenantUsage, change: Change) -> Result<()> {
        let after = held.after(change);
        let checks = [
            (
                "store.tenant_max_documents",
                "documents",
                self.max_documents,
                held.documents,
                after.documents,
                change.documents,
            ),
            (
                "store.tenant_max_tokens",
                "tokens",
                self.max_tokens,
                held.tokens,
                after.tokens,
                change.tokens,
            ),
        ];
        for (limit, unit, max, held, after, added) in checks {
            if max > 0 && added > 0 && after > max {
                return Err(StoreError::QuotaExceeded {
                    limit,
                    unit,
                    max,
                    held,
                    adding: added.unsigned_abs(),
                });
            }
        }
        Ok(())
    }
}

/// How registering `planned` (id, text, tokens), in order, changes a
/// tenant's usage, given `stored(id)`, the record the registry holds: a new
/// id adds a document, and each id's tokens become those of its last text
/// (the stored count when that text is the stored one).
pub(crate) fn change_of<'a>(
    planned: impl Iterator<Item = (&'a str, &'a str, usize)>,
    mut stored: impl FnMut(&str) -> Result<Option<DocumentRecord>>,
) -> Result<Change> {
    let mut before: HashMap<&str, Option<DocumentRecord>> = HashMap::new();
    let mut after: HashMap<&str, usize> = HashMap::new();
    for (id, text, tokens) in planned {
        if !before.contains_key(id) {
            before.insert(id, stored(id)?);
        }
        let tokens = match before.get(id).and_then(Option::as_ref) {
            Some(old) if old.text == text => old.tokens,
            _ => tokens,
        };
        after.insert(id, tokens);
    }
    let mut change = Change::default();
    for (id, tokens) in after {
        let old = before.get(id).and_then(Option::as_ref).map(|r| r.tokens);
        change.documents += i64::from(old.is_none());
        change.tokens += tokens as i64 - old.unwrap_or(0) as i64;
    }
    Ok(change)
}

/// Takes the outcome of removing a document of `tenant` off its known
/// usage; after a failed removal the usage is read again next time.
pub(crate) fn forget_removed(
    ledger: &mut Ledger<'_>,
    tenant: &str,
    removed: &Result<Option<DocumentRecord>>,
) {
    match (removed, ledger.get_mut(tenant)) {
        (Ok(Some(record)), Some(usage)) => {
            *usage = usage.after(Change {
                documents: -1,
                tokens: -(record.tokens as i64),
            });
        }
        (Err(_), _) => {
            ledger.remove(tenant);
        }
        _ => {}
    }
}

/// The quota and the known usage of each tenant, behind the lock that
/// every registration and deletion holds.
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    pub(crate) quota: TenantQuota,
    usage: Mutex<HashMap<String, TenantUsage>>,
}

/// The usage map, locked: hold it across a check and the change it allows.
pub(crate) type Ledger<'a> = MutexGuard<'a, HashMap<String, TenantUsage>>;

impl Quotas {
    /// Quotas of `quota`, no usage known yet.
    pub(crate) fn new(quota: TenantQuota) -> Self {
        Self {
            quota,
            usage: Mutex::default(),
        }
    }

    /// The lock every change of a tenant's documents holds.
    pub(crate) fn lock(&self) -> Ledger<'_> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: TenantQuota = TenantQuota {
        max_documents: 3,
        max_tokens: 100,
    };

    fn usage(documents: u64, tokens: u64) -> TenantUsage {
        TenantUsage { documents, tokens }
    }

    fn change(documents: i64, tokens: i64) -> Change {
        Change { documents, tokens }
    }

    #[test]
    fn up_to_the_quota_is_allowed_and_one_more_is_refused_naming_the_limit() {
        assert!(QUOTA.check(usage(2, 50), change(1, 50)).is_ok());
        let e = QUOTA.check(usage(3, 50), change(1, 10)).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("store.tenant_max_documents is 3")
                && message.contains("holds 3")
                && message.contains("add 1"),
            "{message}"
        );
        let e = QUOTA.check(usage(1, 90), change(1, 11)).unwrap_err();
        assert!(
            e.to_string().contains("store.tenant_max_tokens is 100"),
            "{e}"
        );
    }

    #[test]
    fn freeing_room_is_allowed_even_over_a_lowered_quota() {
        assert!(QUOTA.check(usage(5, 500), change(-1, -40)).is_ok());
        assert!(QUOTA.check(usage(5, 500), change(0, -10)).is_ok());
        assert!(QUOTA.check(usage(5, 500), change(0, 1)).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let none = TenantQuota::default();
        assert!(none
            .check(usage(u64::MAX - 1, 0), change(1, 1 << 40))
            .is_ok());
    }

    fn record(id: &str, text: &str, tokens: usize) -> DocumentRecord {
        serde_json::from_value(serde_json::json!({
            "tenant": "t", "id": id, "name": id, "text": text, "metadata": null,
            "tokens": tokens, "created": 1, "ready": false, "key": ""
        }))
        .unwrap()
    }

    #[test]
    fn a_change_counts_new_ids_once_and_replaced_texts_by_their_difference() {
        let stored = |id: &str| Ok((id == "old").then(|| record("old", "kept", 7)));
        // New, new again (same id: one document, its last length), the
        // stored text again (nothing), the stored id with new text (+3).
        let planned = [
            ("a", "x", 5),
            ("a", "y", 6),
            ("old", "kept", 9),
            ("b", "z", 2),
        ];
        let change = change_of(planned.into_iter(), stored).unwrap();
        assert_eq!(
            change,
            Change {
                documents: 2,
                tokens: 8
            }
        );
        let replaced = change_of([("old", "new", 10)].into_iter(), stored).unwrap();
        assert_eq!(
            replaced,
            Change {
                documents: 0,
                tokens: 3
            }
        );
    }

    #[test]
    fn usage_never_goes_below_zero() {
        assert_eq!(usage(1, 5).after(change(-2, -9)), usage(0, 0));
    }
}
