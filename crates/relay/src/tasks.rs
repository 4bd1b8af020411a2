//! One owner for background tasks: a tracker to await them and a token to
//! cancel them, so a process's shutdown stops and waits for each one.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The background tasks of a process. Cheap to clone; every clone spawns
/// onto the same tracker under the same token.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a loop that runs until the tasks are cancelled. It is dropped
    /// at its next await point, so it must leave nothing half done that a
    /// restart could not finish (every loop here keeps its state in the
    /// ledger, the bus or the boards).
    pub fn spawn_loop<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Spawns a short piece of work that is not cut by cancellation:
    /// shutdown waits for it to finish.
    pub fn spawn_to_end<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// The tracker itself, for a component that spawns its own tasks (the
    /// gateway): whatever it spawns there is awaited by [`Tasks::shutdown`].
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// A token cancelled by [`Tasks::shutdown`] that can also be cancelled
    /// on its own first (the gateway closes its sockets before the relay
    /// drains).
    pub fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Whether shutdown has begun.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// How many tasks have not ended yet.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels every loop and waits until every task has ended.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_loops_and_waits_for_work() {
        let tasks = Tasks::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn_loop(std::future::pending());
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn_to_end(async move {
            let _ = go_rx.await;
            let _ = done_tx.send(());
        });
        let shutdown = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.shutdown().await }
        });
        // The work is still waiting, so shutdown cannot have finished.
        tokio::task::yield_now().await;
        assert!(!shutdown.is_finished());
        assert!(tasks.is_cancelled());
        go_tx.send(()).unwrap();
        shutdown.await.unwrap();
        assert_eq!(tasks.running(), 0);
        done_rx.await.expect("the work ran to its end");
    }
}
