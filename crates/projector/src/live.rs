//! Keeps the engine caught up: after every ingest batch the new ledger head arrives on a
//! watch channel and the engine applies what is new, publishing a snapshot per chunk.

use std::sync::Arc;

use funnel_engine::Live;
use tokio::sync::watch;

use crate::ProjectorError;

/// Catches `live` up whenever ingest reports a new head, until `shutdown`.
pub async fn run(
    live: Arc<Live>,
    mut head: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectorError> {
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let live = live.clone();
                return tokio::task::spawn_blocking(move || live.checkpoint())
                    .await
                    .map_err(|e| ProjectorError::Nats(format!("projector task: {e}")))?
                    .map_err(Into::into);
            }
            changed = head.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
        let live = live.clone();
        tokio::task::spawn_blocking(move || live.catch_up())
            .await
            .map_err(|e| ProjectorError::Nats(format!("projector task: {e}")))??;
    }
}
