//! Fences: what the storage writer uses to drop the late changes of a session that a clean
//! connection took over.
//!
//! The router removes a taken-over session from the store as soon as the new connection
//! registers; the old session actor learns of it only when it handles its `TakeOver`, and may
//! meanwhile store a few more changes (a QoS 2 packet id it received, a message it sent).
//! Committed after the removal, they would stay in the store under the client id, and a later
//! persistent session of that id would find them after a restart: a stale packet id awaiting
//! PUBREL makes the broker drop a new QoS 2 message with that id as a duplicate.
//!
//! So the removal carries the generation of the registration that took over, and until the old
//! session says it has stopped storing (it retires its generation when it stops), the writer
//! drops its changes for that client id. Sessions of that generation or newer are not
//! affected. A fence lives from a takeover to the old session's stop: the map holds one entry
//! per takeover in progress.

use std::collections::HashMap;

use amqtt_protocol::ByteString;

use super::Change;

#[derive(Debug, Default)]
pub(super) struct Fences(HashMap<ByteString, u64>);

impl Fences {
    /// Puts up the fences of the removals among `changes`.
    pub(super) fn put_up(&mut self, changes: &[Change]) {
        for change in changes {
            if let Change::SessionRemoved { client_id, superseded_by: Some(generation) } = change {
                self.0.insert(client_id.clone(), *generation);
            }
        }
    }

    /// Drops from `changes` (a session's of `generation`) what a fence holds back; returns how
    /// many it dropped.
    pub(super) fn hold_back(&self, generation: u64, changes: &mut Vec<Change>) -> usize {
        if self.0.is_empty() {
            return 0;
        }
        let before = changes.len();
        changes.retain(|change| {
            let fence = change.session_client_id().and_then(|client_id| self.0.get(client_id));
            fence.is_none_or(|&fence| generation >= fence)
        });
        before - changes.len()
    }

    /// A session of `generation` stopped: the fence that held it back, if any, comes down.
    pub(super) fn retire(&mut self, client_id: &ByteString, generation: u64) {
        if self.0.get(client_id).is_some_and(|&fence| generation < fence) {
            self.0.remove(client_id);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(client_id: &str, pkid: u16) -> Change {
        Change::IncomingAdded { client_id: client_id.into(), pkid }
    }

    #[test]
    fn a_fence_holds_back_older_sessions_of_its_client_id_until_they_retire() {
        let mut fences = Fences::default();
        fences.put_up(&[
            Change::SessionRemoved { client_id: "expired".into(), superseded_by: None },
            Change::SessionRemoved { client_id: "taken".into(), superseded_by: Some(7) },
        ]);
        assert_eq!(fences.len(), 1, "an expiry puts up no fence");

        let mut late = vec![added("taken", 1), added("other", 2), added("expired", 3)];
        assert_eq!(fences.hold_back(6, &mut late), 1);
        assert_eq!(late, vec![added("other", 2), added("expired", 3)]);
        let mut newer = vec![added("taken", 1)];
        assert_eq!(fences.hold_back(7, &mut newer), 0, "the session that took over writes on");

        fences.retire(&"taken".into(), 7);
        assert_eq!(fences.len(), 1, "only an older session's stop brings the fence down");
        fences.retire(&"taken".into(), 6);
        assert_eq!(fences.len(), 0);
        let mut after = vec![added("taken", 1)];
        assert_eq!(fences.hold_back(6, &mut after), 0);
    }
}
