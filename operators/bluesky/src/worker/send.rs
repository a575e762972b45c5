//! The outbound half of the task: a send request becomes records (the
//! reply refs read from the parent, facets, threads of parts, a record
//! key of our own so a retry cannot create twice).

use serde_json::Value;

use super::{Worker, HANDLE_CACHE};
use crate::api::ApiError;
use crate::lexicon::{
    collection, nsid, reply_of, CreateRecordInput, CreateRecordOutput, GetPostsOutput,
    ResolveHandleOutput, StrongRef,
};
use crate::outbound::{self, is_post_uri, Kind, Request};
use crate::richtext;
use crate::xrpc::XrpcError;

/// Why a send request was not carried out. Its `Display` is the sentence
/// the sender gets back (`{"ok": false, "error": …}`).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The login has not succeeded (yet).
    #[error("not logged in to Bluesky yet (the login is being retried)")]
    NotLoggedIn,
    /// The session holds no tokens at the moment of the write.
    #[error("not logged in")]
    NoSession,
    /// Neither the body, the `in-reply-to` event nor the room names a post.
    #[error(
        "room `{room}` is not a post thread: send to a room that is a thread's root post URI \
         (as events arrive), or name the post in the body"
    )]
    NotAThread {
        /// The room of the request.
        room: String,
    },
    /// `getPosts` did not return the post.
    #[error("post {uri} not found (deleted, or not visible to the account)")]
    PostNotFound {
        /// The post asked for.
        uri: String,
    },
    /// The text does not fit one post and no split was asked for.
    #[error(
        "the text is {graphemes} graphemes ({bytes} bytes); a post holds {} graphemes and {} \
         bytes: shorten it, or send {{\"split\": true}} to post it as a thread",
        richtext::MAX_GRAPHEMES,
        richtext::MAX_BYTES
    )]
    TooLong {
        /// The text's length in graphemes.
        graphemes: usize,
        /// The text's length in bytes.
        bytes: usize,
    },
    /// The record does not encode as JSON.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The call to the server failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A part of a thread failed after earlier parts were posted: those
    /// stay, and the sender is told where the thread begins.
    #[error("{source} (after {posted} of the thread's parts were posted, the first at {first})")]
    Partial {
        /// Why the part failed.
        source: Box<SendError>,
        /// How many parts were posted.
        posted: usize,
        /// The first part's URI.
        first: String,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`SendError`].
    SendError => SendErrorKind { NotLoggedIn, NoSession, NotAThread, PostNotFound, TooLong, Encode, Api, Partial }
}

impl Worker {
    /// Carries out `request`; the records created, first first.
    pub(super) async fn execute(&mut self, request: &Request) -> Result<Vec<StrongRef>, SendError> {
        if !self.logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        match request.kind {
            Kind::Message => {
                let target = self.target(request)?;
                let parent = self.post(&target).await?;
                let root = reply_of(&parent.1).map_or_else(|| parent.0.clone(), |r| r.root);
                self.thread(request, Some((root, parent.0))).await
            }
            Kind::Post => self.thread(request, None).await,
            Kind::Like | Kind::Repost => {
                let target = self.target(request)?;
                let (subject, _) = self.post(&target).await?;
                let collection = if request.kind == Kind::Like {
                    collection::LIKE
                } else {
                    collection::REPOST
                };
                let record = outbound::subject_record(collection, &subject);
                self.create(collection, &record).await.map(|r| vec![r])
            }
        }
    }

    /// The post a request is about: the body's, the `in-reply-to` event's,
    /// or the room's root.
    fn target(&self, request: &Request) -> Result<String, SendError> {
        if let Some(t) = &request.target {
            return Ok(t.clone());
        }
        if let Some(post) = request
            .in_reply_to
            .as_deref()
            .and_then(|id| self.api.publisher().post_for(id))
        {
            if is_post_uri(&post.uri) {
                return Ok(post.uri);
            }
        }
        if is_post_uri(&request.room) {
            return Ok(request.room.clone());
        }
        Err(SendError::NotAThread {
            room: request.room.clone(),
        })
    }

    /// A post's strong ref and record (`getPosts`).
    async fn post(&mut self, uri: &str) -> Result<(StrongRef, Value), SendError> {
        let out: GetPostsOutput = self
            .api
            .query(nsid::GET_POSTS, &[("uris", uri)])
            .await
            .map_err(|e| self.failed(e))?;
        let found = out
            .posts
            .into_iter()
            .find(|p| p.uri == uri)
            .ok_or_else(|| SendError::PostNotFound {
                uri: uri.to_string(),
            })?;
        Ok((
            StrongRef {
                uri: found.uri,
                cid: found.cid,
            },
            found.record,
        ))
    }

    /// The error for the answer; a refused login is noted, so the task
    /// stops once the request is answered (see `fatal_if_refused`).
    fn failed(&mut self, e: ApiError) -> SendError {
        if e.is_refused_login() {
            self.refused = Some(e.to_string());
        }
        SendError::Api(e)
    }

    /// Posts `request.text` (split when asked), the first part answering
    /// `reply` (root, parent) if given, each further part the one before.
    async fn thread(
        &mut self,
        request: &Request,
        mut reply: Option<(StrongRef, StrongRef)>,
    ) -> Result<Vec<StrongRef>, SendError> {
        let parts = if richtext::fits(&request.text) {
            vec![request.text.clone()]
        } else if request.split {
            richtext::split(&request.text)
        } else {
            return Err(SendError::TooLong {
                graphemes: richtext::graphemes(&request.text),
                bytes: request.text.len(),
            });
        };
        let langs = request
            .langs
            .clone()
            .unwrap_or_else(|| self.config.langs.clone());
        let mut created: Vec<StrongRef> = Vec::new();
        for part in parts {
            let facets = self.facets(&part).await;
            let refs = reply.as_ref().map(|(root, parent)| (root, parent));
            let record = outbound::post_record(&part, &langs, refs, facets);
            let made = match self.create(collection::POST, &record).await {
                Ok(made) => made,
                Err(e) if !created.is_empty() => {
                    return Err(SendError::Partial {
                        source: Box::new(e),
                        posted: created.len(),
                        first: created[0].uri.clone(),
                    })
                }
                Err(e) => return Err(e),
            };
            let root = reply.map_or_else(|| made.clone(), |(root, _)| root);
            reply = Some((root, made.clone()));
            created.push(made);
        }
        Ok(created)
    }

    /// Facets for the mentions (resolved to DIDs) and links in `text`.
    async fn facets(&mut self, text: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for span in richtext::spans(text) {
            let did = match &span {
                richtext::Span::Mention { handle, .. } => self.resolve(handle).await,
                richtext::Span::Link { .. } => None,
            };
            if let Some(f) = richtext::facet(&span, did.as_deref()) {
                out.push(f);
            }
        }
        out
    }

    async fn resolve(&mut self, handle: &str) -> Option<String> {
        if let Some(did) = self.handles.get(handle) {
            return Some(did.clone());
        }
        match self
            .api
            .query::<ResolveHandleOutput>(nsid::RESOLVE_HANDLE, &[("handle", handle)])
            .await
        {
            Ok(out) => {
                if self.handles.len() >= HANDLE_CACHE {
                    self.handles.clear();
                }
                self.handles.insert(handle.to_string(), out.did.clone());
                Some(out.did)
            }
            Err(e) => {
                tracing::info!(%handle, error = %e, "handle not resolved; the mention stays plain text");
                None
            }
        }
    }

    /// `createRecord` with a record key made here, so a retry after a lost
    /// answer names the same record: if the server says it exists, the
    /// first try worked, and it is looked up instead of created twice.
    async fn create(&mut self, collection: &str, record: &Value) -> Result<StrongRef, SendError> {
        let Some(did) = self.api.tokens().map(|t| t.did.clone()) else {
            return Err(SendError::NoSession);
        };
        let rkey = outbound::tid();
        let input = serde_json::to_value(CreateRecordInput {
            repo: &did,
            collection,
            rkey: &rkey,
            record,
        })?;
        let retries_before = self.api.counters.retries.get();
        match self
            .api
            .procedure::<CreateRecordOutput>(nsid::CREATE_RECORD, input)
            .await
        {
            Ok(out) => {
                self.api.counters.posts_sent.inc();
                Ok(StrongRef {
                    uri: out.uri,
                    cid: out.cid,
                })
            }
            Err(ApiError::Call {
                source: e @ XrpcError::Refused { .. },
            }) if collection == collection::POST
                && self.api.counters.retries.get() > retries_before =>
            {
                let uri = format!("at://{did}/{collection}/{rkey}");
                match self.post(&uri).await {
                    Ok((made, _)) => {
                        self.api.counters.posts_sent.inc();
                        Ok(made)
                    }
                    Err(_) => Err(SendError::Api(e.into())),
                }
            }
            Err(e) => Err(self.failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sender reads these sentences: they keep their wording.
    #[test]
    fn refusals_read_as_sentences_for_the_sender() {
        let long = SendError::TooLong {
            graphemes: 400,
            bytes: 410,
        };
        assert_eq!(
            long.to_string(),
            format!(
                "the text is 400 graphemes (410 bytes); a post holds {} graphemes and {} bytes: \
                 shorten it, or send {{\"split\": true}} to post it as a thread",
                richtext::MAX_GRAPHEMES,
                richtext::MAX_BYTES
            )
        );
        let partial = SendError::Partial {
            source: Box::new(SendError::NoSession),
            posted: 2,
            first: "at://did:plc:x/app.bsky.feed.post/1".into(),
        };
        assert_eq!(partial.kind(), SendErrorKind::Partial);
        assert_eq!(
            partial.to_string(),
            "not logged in (after 2 of the thread's parts were posted, \
             the first at at://did:plc:x/app.bsky.feed.post/1)"
        );
    }
}
