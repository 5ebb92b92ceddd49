//! One retry policy for every wait after a failure: pauses that double from a first
//! one up to a cap. Storing a log line, a result or an acknowledgement, subscribing the
//! runtime's listeners, and registering the resource definitions all wait this way;
//! their policies are named in [`Config`](super::Config).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The pauses between attempts after a failure: [`first`](Self::first), then twice the
/// last one, never more than [`max`](Self::max).
///
/// ```
/// use std::time::Duration;
/// use conveyor_sdk::runtime::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
/// let pauses: Vec<Duration> = backoff.delays().take(5).collect();
/// assert_eq!(pauses, [100, 200, 400, 500, 500].map(Duration::from_millis));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses from `first`, doubled each time, up to `max` (at least `first`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = conveyor_sdk::runtime::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    /// assert_eq!(backoff.max(), Duration::from_secs(30));
    /// ```
    pub const fn new(first: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < first.as_nanos() { first } else { max };
        Self { first, max }
    }

    /// The same pause every time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = conveyor_sdk::runtime::Backoff::constant(Duration::from_secs(2));
    /// assert!(backoff.delays().take(3).all(|d| d == Duration::from_secs(2)));
    /// ```
    pub const fn constant(pause: Duration) -> Self {
        Self { first: pause, max: pause }
    }

    /// The first pause.
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = conveyor_sdk::runtime::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    /// assert_eq!(backoff.first(), Duration::from_millis(50));
    /// ```
    pub const fn first(&self) -> Duration {
        self.first
    }

    /// The longest pause.
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = conveyor_sdk::runtime::Backoff::new(Duration::from_millis(50), Duration::from_millis(10));
    /// assert_eq!(backoff.max(), Duration::from_millis(50), "never below the first pause");
    /// ```
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The pauses, one per failed attempt, without end.
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = conveyor_sdk::runtime::Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
    /// let mut pauses = backoff.delays();
    /// assert_eq!(pauses.next(), Some(Duration::from_secs(1)));
    /// assert_eq!(pauses.next(), Some(Duration::from_secs(2)));
    /// ```
    pub fn delays(&self) -> Delays {
        Delays { next: self.first, max: self.max }
    }

    /// Calls `attempt` until it succeeds, pausing after each failure, for as long as
    /// the next pause ends within `within` of the first call; then returns the last
    /// error. `on_retry` hears each error that is tried again.
    pub(crate) async fn retry_within<T, E, Fut>(
        &self,
        within: Duration,
        mut attempt: impl FnMut() -> Fut,
        mut on_retry: impl FnMut(&E),
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + within;
        let mut pauses = self.delays();
        loop {
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let pause = pauses.next().unwrap_or(self.max);
            if Instant::now() + pause >= deadline {
                return Err(error);
            }
            on_retry(&error);
            tokio::time::sleep(pause).await;
        }
    }

    /// Calls `attempt` until it succeeds, pausing after each failure; `on_retry` hears
    /// each error. For what the runtime cannot do without, such as its listeners'
    /// subscriptions.
    pub(crate) async fn retry<T, E, Fut>(
        &self,
        mut attempt: impl FnMut() -> Fut,
        mut on_retry: impl FnMut(&E),
    ) -> T
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut pauses = self.delays();
        loop {
            match attempt().await {
                Ok(value) => return value,
                Err(error) => on_retry(&error),
            }
            tokio::time::sleep(pauses.next().unwrap_or(self.max)).await;
        }
    }
}

/// The pauses of a [`Backoff`], from [`Backoff::delays`].
///
/// ```
/// use std::time::Duration;
/// let mut delays = conveyor_sdk::runtime::Backoff::constant(Duration::from_secs(1)).delays();
/// assert_eq!(delays.next(), Some(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone)]
pub struct Delays {
    next: Duration,
    max: Duration,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let pause = self.next.min(self.max);
        self.next = pause.saturating_mul(2).min(self.max);
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_stay_there() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let pauses: Vec<u64> = backoff.delays().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn a_huge_cap_does_not_overflow() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::MAX);
        assert!(backoff.delays().take(200).last().is_some_and(|d| d > Duration::from_secs(1 << 40)));
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_stops_at_the_first_success() {
        let calls = Cell::new(0);
        let retried = Cell::new(0);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let start = Instant::now();
        let out: Result<&str, &str> = backoff
            .retry_within(
                Duration::from_secs(60),
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        if n < 4 {
                            Err("not yet")
                        } else {
                            Ok("done")
                        }
                    }
                },
                |_| retried.set(retried.get() + 1),
            )
            .await;
        assert_eq!(out, Ok("done"));
        assert_eq!((calls.get(), retried.get()), (4, 3));
        assert_eq!(start.elapsed(), Duration::from_millis(100 + 200 + 400));
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_without_a_limit_goes_on_through_the_pauses_until_it_succeeds() {
        let calls = Cell::new(0);
        let heard = Cell::new(0);
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let start = Instant::now();
        let out: u32 = backoff
            .retry(
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        if n < 6 {
                            Err(n)
                        } else {
                            Ok(n)
                        }
                    }
                },
                |_: &u32| heard.set(heard.get() + 1),
            )
            .await;
        assert_eq!((out, heard.get()), (6, 5));
        // Pauses 1, 2, 4, 4, 4 s.
        assert_eq!(start.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_gives_up_with_the_last_error_before_a_pause_would_pass_the_limit() {
        let calls = Cell::new(0);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let start = Instant::now();
        let out: Result<(), u32> = backoff
            .retry_within(
                Duration::from_millis(1000),
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move { Err(n) }
                },
                |_| {},
            )
            .await;
        // Pauses 100, 200, 400 end at 700 ms; the next (800) would end past 1 s.
        assert_eq!(out, Err(4));
        assert_eq!(start.elapsed(), Duration::from_millis(700));
    }
}
