//! A [`MetadataStore`] wrapper that calls a [`CallHook`] around every call of the store it
//! wraps, for every wrapper that only needs to observe, bound or disturb calls (counting them
//! in benchmarks, injecting faults in tests, the agents' call deadline) rather than change
//! what they do. It is a [`Layer`] whose [`Layer::around`] runs the hook, so every method is
//! hooked by the generated forwarding; only `commit_segments` is written out (for
//! [`CallHook::row_held`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::{
    AclStoreLayer, CatalogLayer, CommitOutcome, CredentialsLayer, GroupStoreLayer, Layer,
    LeasesLayer, MetadataError, MetadataStore, Result, SegmentCommit, SegmentLogLayer,
    TxnStoreLayer,
};

/// Called around each call a [`HookedMetadataStore`] forwards; `method` is the trait method's
/// name.
#[async_trait]
pub trait CallHook: Send + Sync + 'static {
    /// Before the call. An error is returned instead, without making the call (a request
    /// that never reached the store).
    async fn before(&self, method: &'static str) -> Result<()> {
        let _ = method;
        Ok(())
    }

    /// After the call, whatever its result. An error replaces the result (a request the store
    /// carried out whose answer was lost).
    async fn after(&self, method: &'static str) -> Result<()> {
        let _ = method;
        Ok(())
    }

    /// Whether a [`crate::SegmentLog::commit_segments`] call finds `commit`'s partition row held by
    /// another transaction: such commits are not forwarded and are answered
    /// [`CommitOutcome::RowLocked`], as a database answers them (tests). Asked before `before`.
    fn row_held(&self, commit: &SegmentCommit) -> bool {
        let _ = commit;
        false
    }

    /// How long the call may take; past it, it is abandoned with [`MetadataError::Timeout`]
    /// (its outcome unknown, like any error of a write). `None`: unbounded.
    fn deadline(&self, method: &'static str) -> Option<Duration> {
        let _ = method;
        None
    }
}

/// A [`CallHook`] that bounds every call by one deadline, so a stalled database (a held row
/// lock, a paused server, a half-open connection) cannot keep a caller waiting without bound,
/// whatever limits the database itself enforces.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadline(pub Duration);

impl CallHook for CallDeadline {
    fn deadline(&self, _method: &'static str) -> Option<Duration> {
        Some(self.0)
    }
}

/// Forwards every call to `inner`, running `hook` around it.
pub struct HookedMetadataStore<H> {
    inner: Arc<dyn MetadataStore>,
    hook: H,
}

impl<H> HookedMetadataStore<H> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn MetadataStore>, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

impl<H: CallHook> Layer for HookedMetadataStore<H> {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.inner
    }

    /// The hook's `before`, the call (abandoned past the hook's deadline), the hook's `after`.
    fn around<'a, T: Send + 'a>(
        &'a self,
        method: &'static str,
        call: BoxFuture<'a, Result<T>>,
    ) -> BoxFuture<'a, Result<T>> {
        Box::pin(async move {
            self.hook.before(method).await?;
            let result = match self.hook.deadline(method) {
                Some(after) => tokio::time::timeout(after, call)
                    .await
                    .unwrap_or(Err(MetadataError::Timeout { method, after })),
                None => call.await,
            };
            self.hook.after(method).await?;
            result
        })
    }
}

impl<H: CallHook> CatalogLayer for HookedMetadataStore<H> {}
impl<H: CallHook> LeasesLayer for HookedMetadataStore<H> {}
impl<H: CallHook> GroupStoreLayer for HookedMetadataStore<H> {}
impl<H: CallHook> CredentialsLayer for HookedMetadataStore<H> {}
impl<H: CallHook> AclStoreLayer for HookedMetadataStore<H> {}
impl<H: CallHook> TxnStoreLayer for HookedMetadataStore<H> {}

#[async_trait]
impl<H: CallHook> SegmentLogLayer for HookedMetadataStore<H> {
    /// Commits whose row the hook holds are answered [`CommitOutcome::RowLocked`] without
    /// being forwarded; the others are forwarded (hooked) as one call.
    async fn commit_segments(&self, commits: &[SegmentCommit]) -> Result<Vec<CommitOutcome>> {
        let held: Vec<bool> = commits.iter().map(|c| self.hook.row_held(c)).collect();
        if !held.contains(&true) {
            let call = self.inner.commit_segments(commits);
            return self.around("commit_segments", call).await;
        }
        let free: Vec<SegmentCommit> = commits
            .iter()
            .zip(&held)
            .filter(|(_, held)| !**held)
            .map(|(c, _)| c.clone())
            .collect();
        let call = self.inner.commit_segments(&free);
        let mut answered = self.around("commit_segments", call).await?.into_iter();
        held.into_iter()
            .map(|held| match held {
                true => Ok(CommitOutcome::RowLocked),
                false => answered.next().ok_or_else(|| {
                    MetadataError::Corrupt("fewer commit outcomes than commits".into())
                }),
            })
            .collect()
    }
}
