//! An async-friendly handle to the synchronous [`Store`].
//!
//! rusqlite calls block, and a blocked runtime worker stalls every actor scheduled on it. Each call
//! therefore runs on tokio's blocking pool (`spawn_blocking`) while holding a `std::sync::Mutex` around the
//! one connection.
//!
//! Why `spawn_blocking` and not a dedicated database thread fed by a channel: both keep SQLite off the
//! workers, but tokio knows about its own blocking pool. Under a paused test clock it does not
//! auto-advance time while a `spawn_blocking` call is in flight, whereas a reply from a foreign thread looks
//! like "nothing to do" and lets the clock jump ahead mid-query. The queue and scheduler tests rely on
//! that determinism. Why a std mutex and not tokio's: the lock is only ever held inside the blocking
//! closure, never across an `.await`, and some calls need `&mut Store` (transactions).
//!
//! Calls are admitted one at a time by a one-permit async semaphore before they reach the blocking pool.
//! There is one connection, so more would only queue on the mutex, each parked on its own pool thread: a
//! burst of a thousand actors (startup recovery) would spawn hundreds of threads. Waiting on the
//! semaphore costs no thread, and its FIFO order makes call order follow arrival order.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::store::{Store, StoreError};

/// Why a call through [`StoreHandle`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreHandleError {
    /// The query itself failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task was cancelled or panicked, so no result exists.
    #[error("database call did not complete: {0}")]
    Join(String),
}

/// A cloneable, `Send + Sync` handle that runs store calls off the async workers.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Mutex<Store>>,
    admit: Arc<Semaphore>,
}

impl StoreHandle {
    /// Wraps an open store.
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Mutex::new(store)),
            admit: Arc::new(Semaphore::new(1)),
        }
    }

    /// Runs `f` with exclusive access to the store on the blocking pool. Several statements in one
    /// closure are atomic with respect to other callers of this handle.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreHandleError>
    where
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let permit = Arc::clone(&self.admit)
            .acquire_owned()
            .await
            .map_err(|e| StoreHandleError::Join(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            // Held until the call is done, even if the caller stops waiting.
            let _permit = permit;
            // A panic inside an earlier closure poisons the lock, but the connection itself is still
            // consistent (SQLite rolls back an unfinished transaction), so keep going.
            let mut store = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut store)
        })
        .await
        .map_err(|e| StoreHandleError::Join(e.to_string()))?
        .map_err(StoreHandleError::from)
    }

    /// Runs `f` synchronously on the calling thread. For setup code and benchmarks outside a runtime;
    /// never call it from an async task.
    pub fn blocking<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut store)
    }

    /// Statements issued through the typed store API so far: the hook that lets tests prove an idle host
    /// stays silent. Reading it does not count as a query.
    pub fn query_count(&self) -> u64 {
        self.blocking(|s| s.query_count())
    }
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_run_and_are_counted() {
        let handle = StoreHandle::new(Store::open_in_memory().unwrap());
        let before = handle.query_count();
        let next = handle.call(|s| s.next_due_time()).await.unwrap();
        assert_eq!(next, None);
        assert_eq!(handle.query_count(), before + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_reported() {
        let handle = StoreHandle::new(Store::open_in_memory().unwrap());
        let err = handle
            .call(|s| {
                s.raw()
                    .execute_batch("SELECT * FROM no_such_table")
                    .map_err(StoreError::from)
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no_such_table"), "{err}");
    }
}
