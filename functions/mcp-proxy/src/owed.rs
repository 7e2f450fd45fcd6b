//! What the upstream owes the client for the message it was sent, and the judgment of each
//! upstream message against it: an answer that is not JSON-RPC, or responds to another id
//! (in a bridged session: anything but the gateway's own id for this request), is a
//! [`BadAnswer`].

use mcpgw::mcp::jsonrpc::{self, Ending, Message, UpstreamMessage};
use serde_json::Value;

use crate::answers::BadAnswer;

/// What the upstream owes the client for the message it was sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Expect {
    /// One response with this id: the id the upstream was sent (the gateway's own in a
    /// bridged session, else the client's).
    Response(Value),
    /// A batch: one response per request id.
    Batch(Vec<Value>),
    /// Nothing in particular (notifications, responses, a GET stream): what comes back is
    /// passed on, but only as JSON or an event stream.
    #[default]
    Nothing,
}

impl Expect {
    /// Whether `id` is owed, and still pending.
    pub fn owed(&self, id: &Value, answered: &[Value]) -> bool {
        let listed = match self {
            Self::Response(expected) => expected == id,
            Self::Batch(ids) => ids.contains(id),
            Self::Nothing => false,
        };
        listed && !answered.contains(id)
    }

    /// How many responses are owed.
    pub fn count(&self) -> usize {
        match self {
            Self::Response(_) => 1,
            Self::Batch(ids) => ids.len(),
            Self::Nothing => 0,
        }
    }
}

/// What the upstream owes for a client's message sent as it is (same id).
pub fn expect_for(msg: &Message, id: Option<&Value>) -> Expect {
    match (msg.kind, id) {
        (jsonrpc::Kind::Request, Some(id)) => Expect::Response(id.clone()),
        _ => Expect::Nothing,
    }
}

/// How one upstream message relates to what is owed.
pub enum Verdict {
    /// Passed on (server-to-client requests and notifications; anything when nothing is
    /// owed).
    Pass,
    /// A response owed; `null_id`: an error the upstream could not tie to the request, given
    /// the client's id. `endings`: how each of `ids` ended (for the audit record).
    Answer {
        ids: Vec<Value>,
        endings: Vec<Ending>,
        null_id: bool,
    },
    Bad(BadAnswer),
}

/// Judges one upstream message (JSON text) against what is owed and already answered.
pub fn judge(data: &[u8], expect: &Expect, answered: &[Value]) -> Verdict {
    if *expect == Expect::Nothing {
        return Verdict::Pass;
    }
    let batch = matches!(expect, Expect::Batch(_));
    let messages = if batch {
        jsonrpc::read_upstream_messages(data)
    } else {
        jsonrpc::read_upstream_message(data).map(|m| vec![m])
    };
    let Some(messages) = messages else {
        return Verdict::Bad(BadAnswer::NotJsonRpc);
    };
    let mut ids = Vec::new();
    let mut endings = Vec::new();
    let mut null_id = false;
    for m in messages {
        match m {
            UpstreamMessage::RequestOrNotification => {}
            UpstreamMessage::Response { id, ending } => {
                let is_error = ending.is_error();
                // An error the upstream could not tie to the request (it could not read it)
                // still answers it; the client gets its own id in it.
                if is_error && id.is_null() && !batch {
                    null_id = true;
                } else if !expect.owed(&id, answered) || ids.contains(&id) {
                    return Verdict::Bad(BadAnswer::WrongId);
                }
                ids.push(id);
                endings.push(ending);
            }
        }
    }
    if ids.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Answer {
            ids,
            endings,
            null_id,
        }
    }
}
