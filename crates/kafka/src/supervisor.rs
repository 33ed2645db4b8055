//! The agent's background loops, supervised: the flusher, heartbeat, controller, lease renewal,
//! group sweeper and maintenance loops run in one [`JoinSet`]. They end on their own only when
//! the broker is dropped or stopping; one that ends otherwise (a panic, or a return) would leave
//! a zombie agent, still heartbeating and answering but no longer flushing, renewing or
//! reconciling. [`Supervisor::failure`] reports the first such end, and the process running the
//! agent stops it (`streamhouse serve` shuts down and exits with an error), so its partitions
//! move to other agents within a lease TTL instead of stalling.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;

use tokio::task::{AbortHandle, Id, JoinError, JoinSet};

/// A background loop that ended while the agent was running.
#[derive(Debug)]
pub struct TaskFailure {
    /// The loop's name (`flusher`, `heartbeat`, `controller`, ...).
    pub task: &'static str,
    /// Why it ended: its panic message, "aborted", or "returned".
    pub reason: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "background task {} stopped: {}", self.task, self.reason)
    }
}

/// The agent's supervised background tasks (dropping it aborts them).
#[derive(Default)]
pub(crate) struct Supervisor {
    /// Locked only for a spawn or one poll, never across an await.
    tasks: Mutex<JoinSet<()>>,
    /// Name and abort handle of every task, by task id.
    named: Mutex<HashMap<Id, (&'static str, AbortHandle)>>,
}

impl Supervisor {
    /// Runs `task` under supervision as `name`.
    pub(crate) fn spawn(
        &self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let mut named = self.named_tasks();
        let handle = self.tasks.lock().spawn(task);
        named.insert(handle.id(), (name, handle));
    }

    /// Waits for the first task to end and says which and why; never returns while every task
    /// runs. Only one caller should wait at a time.
    pub(crate) async fn failure(&self) -> TaskFailure {
        let ended = std::future::poll_fn(|cx| {
            let mut tasks = self.tasks.lock();
            match tasks.poll_join_next_with_id(cx) {
                // No task at all: nothing can fail (until one is spawned, which is not
                // noticed; the agent spawns all of its tasks before anyone waits).
                std::task::Poll::Ready(None) => std::task::Poll::Pending,
                other => other,
            }
        })
        .await
        .expect("pending until a task ends");
        let (id, reason) = match ended {
            Ok((id, ())) => (id, "returned".to_string()),
            Err(e) => (e.id(), describe(&e)),
        };
        let task = self
            .named_tasks()
            .remove(&id)
            .map_or("unknown", |(name, _)| name);
        TaskFailure { task, reason }
    }

    /// Aborts the task named `name` (operators' and tests' way to see supervision act);
    /// returns whether one was running.
    pub(crate) fn abort(&self, name: &str) -> bool {
        let named = self.named_tasks();
        let found = named.values().filter(|(n, _)| *n == name);
        let mut any = false;
        for (_, handle) in found {
            handle.abort();
            any = true;
        }
        any
    }

    fn named_tasks(&self) -> parking_lot::MutexGuard<'_, HashMap<Id, (&'static str, AbortHandle)>> {
        self.named.lock()
    }
}

fn describe(e: &JoinError) -> String {
    if e.is_cancelled() {
        "aborted".to_string()
    } else {
        // For a panic, JoinError's text carries the panic message.
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_reported_by_name() {
        let s = Supervisor::default();
        s.spawn("forever", std::future::pending());
        s.spawn("short", async {});
        let f = s.failure().await;
        assert_eq!((f.task, f.reason.as_str()), ("short", "returned"));
        assert!(s.abort("forever"));
        let f = s.failure().await;
        assert_eq!((f.task, f.reason.as_str()), ("forever", "aborted"));
    }

    #[tokio::test]
    async fn a_panic_is_reported_with_its_message() {
        let s = Supervisor::default();
        s.spawn("boom", async { panic!("lost my marbles") });
        let f = s.failure().await;
        assert_eq!(f.task, "boom");
        assert!(f.reason.contains("lost my marbles"), "{}", f.reason);
    }
}
