//! The async runtime openraft runs on: tokio in production, madsim (seeded time, spawn and RNG)
//! in simulation, so elections replay from the seed (DESIGN.md §7).

#[cfg(not(madsim))]
pub type LoghouseRuntime = openraft::TokioRuntime;

#[cfg(madsim)]
pub use sim::MadsimRuntime as LoghouseRuntime;

#[cfg(madsim)]
mod sim {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use openraft::{OptionalSend, TokioInstant};

    /// openraft's runtime over madsim: its `TokioRuntime` would spawn on real tokio (there is no
    /// reactor in the simulation) and draw election timeouts from an unseeded RNG.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct MadsimRuntime;

    impl openraft::AsyncRuntime for MadsimRuntime {
        type JoinError = madsim::task::JoinError;
        type JoinHandle<T: OptionalSend + 'static> = madsim::task::JoinHandle<T>;
        type Sleep = madsim::time::Sleep;
        type Instant = TokioInstant;
        type TimeoutError = madsim::time::error::Elapsed;
        type Timeout<R, T: Future<Output = R> + OptionalSend> = SimTimeout<T>;
        type ThreadLocalRng = madsim::rand::GlobalRng;
        type OneshotSender<T: OptionalSend> = openraft::async_runtime::TokioOneShotSender<T>;
        type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
        type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

        fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
        where
            T: Future + OptionalSend + 'static,
            T::Output: OptionalSend + 'static,
        {
            madsim::task::spawn(future)
        }

        fn sleep(duration: Duration) -> Self::Sleep {
            madsim::time::sleep(duration)
        }

        fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
            madsim::time::sleep_until(deadline.into_std())
        }

        fn timeout<R, F: Future<Output = R> + OptionalSend>(
            duration: Duration,
            future: F,
        ) -> Self::Timeout<R, F> {
            SimTimeout {
                future,
                sleep: madsim::time::sleep(duration),
            }
        }

        fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
            deadline: Self::Instant,
            future: F,
        ) -> Self::Timeout<R, F> {
            SimTimeout {
                future,
                sleep: madsim::time::sleep_until(deadline.into_std()),
            }
        }

        fn is_panic(join_error: &Self::JoinError) -> bool {
            join_error.is_panic()
        }

        fn thread_rng() -> Self::ThreadLocalRng {
            madsim::rand::thread_rng()
        }

        fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
        where
            T: OptionalSend,
        {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            (
                openraft::async_runtime::TokioOneShotSender(sender),
                receiver,
            )
        }
    }

    pin_project_lite::pin_project! {
        /// A future with a deadline: the future is polled first, so a ready result wins a tie.
        pub struct SimTimeout<F> {
            #[pin]
            future: F,
            #[pin]
            sleep: madsim::time::Sleep,
        }
    }

    impl<F: Future> Future for SimTimeout<F> {
        type Output = Result<F::Output, madsim::time::error::Elapsed>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            if let Poll::Ready(value) = this.future.poll(cx) {
                return Poll::Ready(Ok(value));
            }
            match this.sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(madsim::time::error::Elapsed)),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}
