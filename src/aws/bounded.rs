//! Run many independent AWS calls concurrently, but never more than a limit at once.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::task::JoinSet;

/// A task that died instead of returning (it panicked). Callers report it like any other failed call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("internal error: the task for this call did not finish")]
pub struct TaskFailed;

/// Apply `call` to every item with at most `limit` in flight. Results come back in the order of `items`, one per
/// item, so a caller can always say which item failed.
///
/// Calls are created only as earlier ones finish, so memory stays proportional to `limit`, not to the number of
/// items: an SDK request future is several kilobytes, and a sweep can have a thousand.
pub async fn bounded_all<I, F, Fut>(limit: usize, items: I, call: F) -> Vec<Result<Fut::Output, TaskFailed>>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let mut items = items.into_iter().enumerate();
    let mut tasks = JoinSet::new();
    let mut results: Vec<Result<Fut::Output, TaskFailed>> = Vec::new();
    let store = |results: &mut Vec<Result<Fut::Output, TaskFailed>>, index: usize, result| {
        while results.len() <= index {
            results.push(Err(TaskFailed));
        }
        results[index] = result;
    };
    loop {
        while tasks.len() < limit.max(1) {
            let Some((index, item)) = items.next() else { break };
            // Reserve the slot now, so a task that dies still leaves its place in the results.
            store(&mut results, index, Err(TaskFailed));
            let work = call(item);
            tasks.spawn(async move { (index, work.await) });
        }
        match tasks.join_next().await {
            Some(Ok((index, result))) => store(&mut results, index, Ok(result)),
            Some(Err(_)) => {}
            None => break,
        }
    }
    results
}

/// Run borrowed futures side by side in this task, and return their outputs in order. For the few calls that cannot
/// be spawned because they borrow (a batch's claims, which wait out their settle time together).
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn never_more_than_the_limit_in_flight() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let results = bounded_all(3, 0..20, |n| {
            let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                n * 2
            }
        })
        .await;
        let expected: Vec<Result<i32, TaskFailed>> = (0..20).map(|n| Ok(n * 2)).collect();
        assert_eq!(results, expected, "one result per item, in item order");
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_task_that_panics_is_reported_in_its_place() {
        let results = bounded_all(2, [1, 0, 2], |n| async move {
            assert!(n != 0, "boom");
            n
        })
        .await;
        assert_eq!(results, vec![Ok(1), Err(TaskFailed), Ok(2)]);
    }
}
