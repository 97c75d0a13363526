//! Node-wide admission: how many `log.v1` calls the node handles at once
//! (`limits.calls_in_flight_max`) and how many value bytes of produce requests it holds, all
//! calls and streams together (`limits.requests_in_flight_bytes_max`).
//!
//! Besides each stream's own window these bound what the node holds whatever its callers do:
//! a caller over a bound waits (a ProduceStream is not read meanwhile, so HTTP/2 flow control
//! holds its client), or, for a call that would otherwise queue, waits at most
//! `limits.admission_wait_ms` and gets RESOURCE_EXHAUSTED naming the limit. No queue grows
//! without bound: at most `calls_in_flight_max` calls wait for a slot.
//!
//! The call cap is a tower service around `LogServer` ([`CallLimit`]), node-wide rather than
//! tonic's `concurrency_limit_per_connection` (a client with many connections, or many
//! clients, would pass a per-connection cap, and it would also throttle the members' Raft calls
//! and health probes). It admits a call before tonic decodes its request, and a unary call keeps
//! its slot until its response has been sent, so `calls_in_flight_max` also bounds the
//! decoded requests and the unsent responses a node holds (a client that never reads its
//! answers cannot pile them up). A streaming call holds a slot only while it is being set up:
//! open streams are bounded by `limits.streams_max`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::config::Limits;

/// A place under one of the bounds; released when dropped.
pub type Admitted = OwnedSemaphorePermit;

#[derive(Debug)]
pub struct Admission {
    calls: Arc<Semaphore>,
    /// Calls waiting for a slot: at most `calls_max` of them.
    waiting: Semaphore,
    calls_max: usize,
    bytes: Arc<Semaphore>,
    bytes_max: u64,
    wait: Duration,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        let bytes_max = limits.requests_in_flight_bytes_max;
        Admission {
            calls: Arc::new(Semaphore::new(limits.calls_in_flight_max)),
            waiting: Semaphore::new(limits.calls_in_flight_max),
            calls_max: limits.calls_in_flight_max,
            bytes: Arc::new(Semaphore::new(
                usize::try_from(bytes_max)
                    .map_or(Semaphore::MAX_PERMITS, |b| b.min(Semaphore::MAX_PERMITS)),
            )),
            bytes_max,
            wait: Duration::from_millis(limits.admission_wait_ms),
        }
    }

    /// A slot for one call: at once, or after waiting up to `admission_wait_ms` (with at most
    /// `calls_in_flight_max` other callers waiting); else RESOURCE_EXHAUSTED.
    pub async fn call(&self) -> Result<Admitted, Status> {
        if let Ok(slot) = self.calls.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let refused = || {
            Status::resource_exhausted(format!(
                "the node is handling as many calls as it takes at once \
                 (limits.calls_in_flight_max = {}) and none finished within \
                 limits.admission_wait_ms = {} ms; retry later",
                self.calls_max,
                self.wait.as_millis()
            ))
        };
        if self.wait.is_zero() {
            return Err(refused());
        }
        let Ok(_waiting) = self.waiting.try_acquire() else {
            return Err(refused());
        };
        match tokio::time::timeout(self.wait, self.calls.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(refused()),
        }
    }

    /// Room for the `bytes` of values a unary produce (Produce, ProduceBatch) holds until it is
    /// acknowledged: at once, or after waiting up to `admission_wait_ms`; RESOURCE_EXHAUSTED at
    /// once when the request is larger than the whole bound (it could never fit).
    pub async fn request_bytes(&self, bytes: u64) -> Result<Admitted, Status> {
        let whole = self.bytes_max;
        let too_large = || {
            Status::resource_exhausted(format!(
                "the request holds {bytes} value bytes, more than this node holds for all \
                 requests together (limits.requests_in_flight_bytes_max = {whole}); send it \
                 in smaller batches"
            ))
        };
        if bytes > whole {
            return Err(too_large());
        }
        let permits = u32::try_from(bytes).map_err(|_| too_large())?;
        if let Ok(held) = self.bytes.clone().try_acquire_many_owned(permits) {
            return Ok(held);
        }
        let acquire = self.bytes.clone().acquire_many_owned(permits);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(held)) => Ok(held),
            _ => Err(Status::resource_exhausted(format!(
                "no room for {bytes} value bytes within limits.admission_wait_ms = {} ms: the \
                 node already holds its limit of requests not yet acknowledged \
                 (limits.requests_in_flight_bytes_max = {whole}); retry later",
                self.wait.as_millis()
            ))),
        }
    }

    /// Room for a ProduceStream batch of `bytes`, as long as it takes (the stream is not read
    /// meanwhile). A batch larger than the whole bound waits for it to empty and takes all of
    /// it, like a stream's own window.
    pub async fn stream_bytes(&self, bytes: u64) -> Admitted {
        let permits = bytes.min(self.bytes_max).min(u64::from(u32::MAX)) as u32;
        self.bytes
            .clone()
            .acquire_many_owned(permits)
            .await
            .expect("the request bytes semaphore is never closed")
    }
}

/// The `log.v1` calls whose response is a stream: they keep their call slot only while they
/// are set up.
fn is_streaming(path: &str) -> bool {
    const STREAMING: [&str; 3] = ["/ConsumeStream", "/ConsumeBatchStream", "/ProduceStream"];
    STREAMING.iter().any(|method| path.ends_with(method))
}

/// Caps the calls of the service it wraps (`LogServer`) at `limits.calls_in_flight_max`, node
/// wide (see the module docs).
#[derive(Clone)]
pub struct CallLimit<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S> CallLimit<S> {
    pub fn new(inner: S, admission: Arc<Admission>) -> Self {
        CallLimit { inner, admission }
    }
}

#[cfg(not(madsim))]
impl<S: tonic::server::NamedService> tonic::server::NamedService for CallLimit<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(madsim)]
impl<S: tonic::transport::NamedService> tonic::transport::NamedService for CallLimit<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(not(madsim))]
mod production {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body_util::BodyExt;
    use tonic::body::Body;
    use tonic::codegen::{http, Service};

    use super::{is_streaming, CallLimit};

    type Call = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    impl<S, B> Service<http::Request<B>> for CallLimit<S>
    where
        S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Call;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            // Admission happens in the call (it may wait); the inner service is polled ready
            // there, on the clone that serves the call.
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Call {
            let mut inner = self.inner.clone();
            let admission = self.admission.clone();
            let streaming = is_streaming(request.uri().path());
            Box::pin(async move {
                let slot = match admission.call().await {
                    Ok(slot) => slot,
                    Err(status) => return Ok(status.into_http()),
                };
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                let response = inner.call(request).await?;
                if streaming {
                    return Ok(response);
                }
                // A unary call keeps its slot until its response has been sent (or dropped).
                Ok(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _slot = &slot;
                        frame
                    }))
                }))
            })
        }
    }
}

#[cfg(madsim)]
mod simulated {
    use std::task::{Context, Poll};

    use futures::StreamExt;
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::codegen::{BoxFuture, BoxMessageStream, Service};
    use tonic::{Request, Response, Status};

    use super::{is_streaming, CallLimit};

    type Call = (PathAndQuery, Request<BoxMessageStream>);

    impl<S> Service<Call> for CallLimit<S>
    where
        S: Service<
                Call,
                Response = Response<BoxMessageStream>,
                Error = Status,
                Future = BoxFuture<Response<BoxMessageStream>, Status>,
            > + Clone
            + Send
            + 'static,
    {
        type Response = Response<BoxMessageStream>;
        type Error = Status;
        type Future = BoxFuture<Response<BoxMessageStream>, Status>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (path, request): Call) -> Self::Future {
            let mut inner = self.inner.clone();
            let admission = self.admission.clone();
            let streaming = is_streaming(path.path());
            Box::pin(async move {
                let slot = admission.call().await?;
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                let response = inner.call((path, request)).await?;
                if streaming {
                    return Ok(response);
                }
                Ok(response.map(|messages| {
                    let messages: BoxMessageStream = Box::pin(messages.map(move |message| {
                        let _slot = &slot;
                        message
                    }));
                    messages
                }))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(calls: usize, bytes: u64, wait_ms: u64) -> Admission {
        Admission::new(&Limits {
            calls_in_flight_max: calls,
            requests_in_flight_bytes_max: bytes,
            admission_wait_ms: wait_ms,
            ..Limits::default()
        })
    }

    #[tokio::test]
    async fn a_call_over_the_cap_waits_for_a_slot_then_is_refused_naming_the_limit() {
        let gate = admission(2, 1 << 20, 50);
        let first = gate.call().await.unwrap();
        let _second = gate.call().await.unwrap();
        let refused = gate.call().await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("limits.calls_in_flight_max = 2"),
            "{refused:?}"
        );
        // A slot freed while a call waits goes to it.
        let waiting = gate.call();
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(first);
        drop(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn at_most_calls_max_callers_wait_for_a_slot() {
        let gate = Arc::new(admission(1, 1 << 20, 60_000));
        let _held = gate.call().await.unwrap();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.call().await.map(drop) })
        };
        // Let the waiter take the one waiting place.
        while gate.waiting.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = gate.call().await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        waiter.abort();
    }

    #[tokio::test]
    async fn request_bytes_wait_for_room_and_a_request_larger_than_the_bound_is_refused() {
        let gate = admission(8, 1000, 50);
        let too_large = gate.request_bytes(1001).await.unwrap_err();
        assert_eq!(too_large.code(), tonic::Code::ResourceExhausted);
        assert!(
            too_large
                .message()
                .contains("limits.requests_in_flight_bytes_max = 1000"),
            "{too_large:?}"
        );
        let held = gate.request_bytes(600).await.unwrap();
        let no_room = gate.request_bytes(600).await.unwrap_err();
        assert!(
            no_room.message().contains("admission_wait_ms"),
            "{no_room:?}"
        );
        let waiting = gate.request_bytes(600);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(held);
        drop(waiting.await.unwrap());
        // A stream batch larger than the whole bound takes all of it.
        let all = gate.stream_bytes(5000).await;
        assert_eq!(gate.bytes.available_permits(), 0);
        drop(all);
        assert_eq!(gate.bytes.available_permits(), 1000);
    }
}
