//! A shutdown signal the server's tasks share: fired once, seen by all.

use tokio::sync::watch;

/// A cloneable signal that fires once.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`]; dropping it fires the signal too.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A new signal and its trigger.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Fires the signal.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once the signal fired (or its trigger was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}
