//! A hook through which long cache work (walks, eviction, batches) reports
//! how far it got. The cache only calls it; whether and how progress is
//! shown is the caller's business (the CLI draws a bar on a terminal), so
//! this module knows nothing of terminals and the cache never prints.

/// Receives the progress of one phase of work at a time.
pub trait Progress {
    /// A phase begins: `what` names it ("walking", "reading metadata",
    /// "writing"); `total` is the number of items when known.
    fn start(&self, what: &'static str, total: Option<u64>);
    /// `n` more items are done.
    fn advance(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
}
