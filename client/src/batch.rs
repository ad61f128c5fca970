//! [`Batch`]: several events sent as one `INCR`.

use std::sync::Arc;

use crate::client::Client;
use crate::connection::OwnedEvent;
use crate::error::Result;
use crate::IncrResult;

/// Events sent together as one `INCR` with this client's producer id and the next
/// sequence: the server validates every event before applying any (all or nothing) and
/// applies the batch exactly once, however often the client resends it after a lost
/// connection.
///
/// Built with [`Client::batch`]; a batch larger than the server's `max_batch_events` or
/// `max_frame` is refused with [`Error::BatchTooLarge`](crate::Error::BatchTooLarge).
///
/// ```no_run
/// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
/// let mut batch = client.batch();
/// for ad in ["ad001", "ad002", "ad003"] {
///     batch.add(&format!("ad_clicks{{ad={ad}}}"), 1);
/// }
/// let result = batch.send().await?;
/// assert_eq!(result.applied, 3);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Batch {
    client: Client,
    events: Vec<OwnedEvent>,
}

impl Batch {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            events: Vec::new(),
        }
    }

    fn push(&mut self, key: &str, delta: i64, ts_ms: Option<i64>, id: Option<&[u8]>) -> &mut Self {
        self.events.push(OwnedEvent {
            key: Arc::from(key),
            delta,
            ts_ms,
            event_id: id.map(Box::from),
        });
        self
    }

    /// Adds `delta` to `key` at the server's receive time.
    pub fn add(&mut self, key: &str, delta: i64) -> &mut Self {
        self.push(key, delta, None, None)
    }

    /// Adds `delta` to `key` at `ts_ms` (unix ms).
    pub fn add_at(&mut self, key: &str, delta: i64, ts_ms: i64) -> &mut Self {
        self.push(key, delta, Some(ts_ms), None)
    }

    /// Adds `delta` to `key` with an event id (at most 64 bytes): the server skips an
    /// id it has seen within its dedup window (default one hour).
    pub fn add_with_id(&mut self, key: &str, delta: i64, event_id: &[u8]) -> &mut Self {
        self.push(key, delta, None, Some(event_id))
    }

    /// Adds an event with every field: optional timestamp and optional event id.
    pub fn add_event(
        &mut self,
        key: &str,
        delta: i64,
        ts_ms: Option<i64>,
        event_id: Option<&[u8]>,
    ) -> &mut Self {
        self.push(key, delta, ts_ms, event_id)
    }

    /// Events added so far.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event was added.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Sends the batch and empties it. An empty batch is answered locally.
    pub async fn send(&mut self) -> Result<IncrResult> {
        let events = std::mem::take(&mut self.events);
        if events.is_empty() {
            return Ok(IncrResult {
                applied: 0,
                duplicates: 0,
                duplicate_batch: false,
                refused_count: 0,
                refused: Vec::new(),
            });
        }
        self.client.send_events(events).await
    }
}
