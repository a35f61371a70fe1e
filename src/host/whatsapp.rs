//! `nanoclaw run` with the WhatsApp channel (feature `whatsapp`). The channel starts when the account
//! has been linked (`nanoclaw whatsapp pair` created the credential store), so an image built with
//! the feature still runs with only the local channel until someone pairs it.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::channel::whatsapp::auth::WaPaths;
use crate::channel::whatsapp::{
    GroupSubjects, LinkState, WhatsAppChannel, WhatsAppError, WhatsAppOptions,
};
use crate::channel::{Channel, Inbound};
use crate::core::time::{now_iso, parse_iso};
use crate::store::StoreHandle;

/// Starts and connects the channel, or `None` when the account was never linked. An unlinked or
/// logged-out store fails here, and the host exits 1 (contract §11.2).
pub async fn start(
    data_dir: &Path,
    store: &StoreHandle,
    inbound: mpsc::Sender<Inbound>,
) -> anyhow::Result<Option<Arc<WhatsAppChannel>>> {
    if !WaPaths::new(data_dir).auth_db.exists() {
        tracing::info!("whatsapp not linked (run `nanoclaw whatsapp pair`); channel off");
        return Ok(None);
    }
    let last_sync = store
        .call(|s| s.group_sync_time())
        .await?
        .as_deref()
        .and_then(parse_iso);
    let mut options = WhatsAppOptions::new(data_dir);
    options.last_group_sync = last_sync;
    let sink_store = store.clone();
    options.group_sink = Some(Arc::new(move |subjects: GroupSubjects| {
        let store = sink_store.clone();
        tokio::spawn(async move {
            let now = now_iso();
            let written = store
                .call(move |s| {
                    for (jid, name) in &subjects.groups {
                        s.rename_chat(jid, name, &now)?;
                    }
                    if subjects.full_sync {
                        s.set_group_sync(&now)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = written {
                tracing::warn!(cause = %e, "group subjects not stored");
            }
        });
    }));
    let channel = Arc::new(WhatsAppChannel::new(options, inbound));
    channel.connect().await.context("whatsapp")?;
    Ok(Some(channel))
}

/// `shutdown`, or the end of the WhatsApp link (logout, pairing needed), whichever comes first.
pub async fn or_link_end(
    shutdown: impl Future<Output = ()>,
    channel: Option<Arc<WhatsAppChannel>>,
) {
    let Some(channel) = channel else {
        return shutdown.await;
    };
    let mut link = channel.link_state();
    tokio::select! {
        () = shutdown => {}
        ended = link.wait_for(|s| s.exit_code().is_some()) => {
            if let Ok(state) = ended {
                tracing::warn!(state = ?*state, "whatsapp link ended; stopping the host");
            }
        }
    }
}

/// After shutdown: the original exited 1 when the server asked for a QR code and 0 after a logout.
pub async fn finish(channel: Option<Arc<WhatsAppChannel>>) -> anyhow::Result<()> {
    let Some(channel) = channel else {
        return Ok(());
    };
    let state = *channel.link_state().borrow();
    let _ = channel.disconnect().await;
    if state == LinkState::NeedsPairing {
        return Err(WhatsAppError::NotPaired.into());
    }
    Ok(())
}
