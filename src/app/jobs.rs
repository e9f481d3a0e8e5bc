//! Background work. Parsing, hashing, decoding, analysis and benchmarks run
//! on worker threads; what they send comes back through one channel, as
//! envelopes that `App` opens on its thread: the section hashes go to the
//! shared state, anything else to the panel that started the job.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use crate::format::digests::SectionCheck;
use crate::format::ExpertReader;

/// One result of background work.
pub enum Envelope {
    /// Every section hashed (the verification everyone shows).
    Verified {
        checks: Vec<SectionCheck>,
        tail_clean: bool,
    },
    /// Progress of the remote fetch the viewer started with.
    Fetching { done: u64, total: u64 },
    /// The remote expert, every byte fetched (or why not).
    Fetched(Result<Box<crate::format::inspect::Inspected>, String>),
    /// A message for the panel at `slot` in tab order; its type is that
    /// panel's `Panel::Message`.
    ForPanel {
        slot: usize,
        message: Box<dyn Any + Send>,
    },
}

/// Starts jobs on behalf of one panel (or of the app, for verification).
#[derive(Clone)]
pub struct Jobs {
    tx: Sender<Envelope>,
    slot: usize,
}

impl Jobs {
    /// Jobs whose messages go to the panel at `slot`.
    pub fn new(tx: Sender<Envelope>, slot: usize) -> Self {
        Self { tx, slot }
    }

    /// Runs `job` on a worker thread; what it sends through its `Reply`
    /// reaches the panel's `on_message`, in order.
    pub fn spawn<M: Send + 'static>(&self, job: impl FnOnce(Reply<M>) + Send + 'static) {
        let reply = Reply {
            tx: self.tx.clone(),
            slot: self.slot,
            _message: PhantomData,
        };
        std::thread::spawn(move || job(reply));
    }

    /// Fetches every byte of the remote expert at `url` on a worker thread
    /// (sections in the cache are not fetched again), with progress.
    pub fn fetch_remote(&self, url: url::Url) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            use crate::format::remote::{fetch, Plan};
            let progress = tx.clone();
            let fetched = fetch(&url, &Plan::All, &mut |done, total| {
                let _ = progress.send(Envelope::Fetching { done, total });
            });
            let doc = fetched
                .map(|f| {
                    Box::new(crate::format::inspect::Inspected::from_bytes(
                        f.cost.url, f.bytes,
                    ))
                })
                .map_err(|e| e.to_string());
            let _ = tx.send(Envelope::Fetched(doc));
        });
    }

    /// Hashes every section of `reader` on a worker thread.
    pub fn verify(&self, reader: Arc<ExpertReader>) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let checks = reader.verify();
            let tail_clean = reader.tail_padding_clean();
            let _ = tx.send(Envelope::Verified { checks, tail_clean });
        });
    }
}

/// A worker's way back to the panel that started it.
pub struct Reply<M> {
    tx: Sender<Envelope>,
    slot: usize,
    _message: PhantomData<fn(M)>,
}

impl<M: Send + 'static> Reply<M> {
    /// Sends `message`; nothing happens once the app has gone.
    pub fn send(&self, message: M) {
        let _ = self.tx.send(Envelope::ForPanel {
            slot: self.slot,
            message: Box::new(message),
        });
    }
}

impl<M> Clone for Reply<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            slot: self.slot,
            _message: PhantomData,
        }
    }
}
