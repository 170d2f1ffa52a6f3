//! Requests the resolver holds (wake on traffic): this VM's waiting room.
//!
//! Owns which held requests wait, and which WaitMany call carries each; the root context owns
//! the calls, never a request's own context: the request may be gone (its client left) before
//! the answer, and one call carries every request held when it is sent (a gRPC call per held
//! request would cost the resolver several KB each). Plain Rust, tested natively; lib.rs makes
//! the host calls.

use std::collections::HashMap;

use prost::Message;
use sandgate_proto::resolver::v1::{
    HeldAnswer, HeldRequest, ResolveReply, ResolveRequest, WaitManyRequest,
};

use crate::cache::Key;
use crate::host::Header;

/// A held request: what re-applying its answer needs, and what the resolver is asked.
#[derive(Debug)]
pub struct Held {
    /// The client's headers as they came: the answer is applied to them, read again.
    pub headers: Vec<Header>,
    /// Where the answer goes in the cache, when the cache is on.
    pub key: Option<Key>,
    pub request: ResolveRequest,
    /// Unix ms, as the Hold answer gave it.
    pub until: u64,
    /// The WaitMany call that carries it now.
    call: Option<u32>,
}

impl Held {
    pub fn new(
        headers: Vec<Header>,
        key: Option<Key>,
        request: ResolveRequest,
        until: u64,
    ) -> Held {
        Held {
            headers,
            key,
            request,
            until,
            call: None,
        }
    }
}

/// Held requests by their HTTP context id.
#[derive(Debug, Default)]
pub struct Holding {
    held: HashMap<u32, Held>,
}

impl Holding {
    pub fn hold(&mut self, context: u32, held: Held) {
        self.held.insert(context, held);
    }

    /// The request's context is gone: its answer, whenever it comes, is dropped.
    pub fn forget(&mut self, context: u32) {
        self.held.remove(&context);
    }

    /// The requests no call carries yet, as one WaitMany message (ids: their contexts).
    pub fn unsent(&self, max_wait_ms: u32) -> Option<(Vec<u32>, Vec<u8>)> {
        let (ids, held): (Vec<u32>, Vec<HeldRequest>) = self
            .held
            .iter()
            .filter(|(_, h)| h.call.is_none())
            .map(|(id, h)| {
                let request = HeldRequest {
                    id: u64::from(*id),
                    request: Some(h.request.clone()),
                    until_unix_ms: h.until,
                };
                (*id, request)
            })
            .unzip();
        if ids.is_empty() {
            return None;
        }
        let message = WaitManyRequest { held, max_wait_ms }.encode_to_vec();
        Some((ids, message))
    }

    /// `ids` went out in call `token`.
    pub fn sent(&mut self, ids: &[u32], token: u32) {
        for id in ids {
            if let Some(h) = self.held.get_mut(id) {
                h.call = Some(token);
            }
        }
    }

    pub fn carries(&self, token: u32) -> bool {
        self.held.values().any(|h| h.call == Some(token))
    }

    /// Takes `context`'s request out (its call could not be sent).
    pub fn take(&mut self, context: u32) -> Option<Held> {
        self.held.remove(&context)
    }

    /// Call `token` answered: the requests it decided (taken out, with their replies); its
    /// others wait for the next call. An answer for a request this call did not carry (a
    /// context since gone, or one a newer call carries) is ignored.
    pub fn answered(
        &mut self,
        token: u32,
        answers: Vec<HeldAnswer>,
    ) -> Vec<(u32, Held, ResolveReply)> {
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            let Ok(id) = u32::try_from(answer.id) else {
                continue;
            };
            if self.held.get(&id).is_some_and(|h| h.call == Some(token))
                && let (Some(held), Some(reply)) = (self.held.remove(&id), answer.reply)
            {
                out.push((id, held, reply));
            }
        }
        self.release(token);
        out
    }

    /// Call `token` failed: every request it carried, taken out (each gets the failure).
    pub fn failed(&mut self, token: u32) -> Vec<(u32, Held)> {
        let ids: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.call == Some(token))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| Some((id, self.held.remove(&id)?)))
            .collect()
    }

    fn release(&mut self, token: u32) {
        for h in self.held.values_mut().filter(|h| h.call == Some(token)) {
            h.call = None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use sandgate_proto::resolver::v1::{Route, resolve_reply};

    fn held(id: &str) -> Held {
        let request = ResolveRequest {
            sandbox_id: id.into(),
            port: 80,
            ..Default::default()
        };
        Held::new(Vec::new(), None, request, 1_000)
    }

    fn routed(id: u64) -> HeldAnswer {
        HeldAnswer {
            id,
            reply: Some(ResolveReply {
                outcome: Some(resolve_reply::Outcome::Route(Route {
                    destination: "10.0.0.1:80".into(),
                    strip_credentials: 0,
                })),
                cacheable: None,
            }),
        }
    }

    #[test]
    fn one_call_carries_every_unsent_request_and_its_answers_go_to_them() {
        let mut h = Holding::default();
        h.hold(7, held("a"));
        h.hold(8, held("b"));
        let (mut ids, message) = h.unsent(750).unwrap();
        ids.sort_unstable();
        assert_eq!(ids, [7, 8]);
        let m = WaitManyRequest::decode(message.as_slice()).unwrap();
        assert_eq!((m.held.len(), m.max_wait_ms), (2, 750));
        h.sent(&ids, 1);
        assert!(h.unsent(750).is_none(), "all carried");
        // A request held while the call is out waits for the next one.
        h.hold(9, held("c"));
        assert_eq!(h.unsent(750).unwrap().0, [9]);
        h.sent(&[9], 2);
        // Call 1 decides 7 (and names 9, which it did not carry: ignored); 8 goes out again.
        let done = h.answered(1, vec![routed(7), routed(9)]);
        assert_eq!(done.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(), [7]);
        assert_eq!(h.unsent(750).unwrap().0, [8]);
        assert!(h.carries(2) && !h.carries(1));
        // Call 2 fails: 9 gets the failure; a forgotten context gets nothing.
        h.forget(8);
        let failed = h.failed(2);
        assert_eq!(failed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [9]);
        assert!(h.held.is_empty());
    }
}
