//! Names the registry's history once (see `Command::NameHistory`): whichever member leads while
//! it is unnamed proposes a random id. Every member then stamps it on watch messages, so a
//! watcher resumes from its revision on any member of the cluster.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    consensus::{Consensus, ProposeError},
    ids::RandomIds,
    state::ReadModel,
};

pub(crate) async fn name_history(
    consensus: Arc<Consensus>,
    read_model: Arc<ReadModel>,
    ids: RandomIds,
    shutdown: CancellationToken,
) {
    let mut leading = consensus.leadership();
    while read_model.history() == 0 {
        if *leading.borrow_and_update() {
            match consensus.propose(waggle_core::Command::NameHistory { id: ids.next_id() }).await {
                // Named, by this proposal or an earlier one.
                Ok(_) | Err(ProposeError::Refused(_)) => continue,
                Err(e) => tracing::debug!("naming the history: {e}"),
            }
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
