//! A connection's outgoing queue: the rooms push, the connection's writer task pops.
//!
//! A channel would do, but at 64 busy players the server pushes some 20,000 messages a
//! second, and a general channel's listener bookkeeping (an event per receiver, a
//! listener made and dropped per wait) was 8 % of the server's samples. This queue is a
//! list under a lock and one waker: a push that finds the writer waiting wakes it, and
//! one that finds it busy costs the lock. How much a queue may hold is budgeted in
//! bytes by its owner (`Outbox`), not here.

use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

/// An unbounded queue with one consumer, closed by either side.
pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    /// The consumer, while it waits for an item.
    waker: AtomicWaker,
}

struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
            }),
            waker: AtomicWaker::new(),
        }
    }
}

impl<T> Queue<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Nothing panics while holding it; a poisoned list is still a list.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `item` at the end, or gives it back when the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Err(item);
            }
            inner.items.push_back(item);
        }
        self.waker.wake();
        Ok(())
    }

    /// Closes the queue: no more pushes; the consumer still gets what is in it, then
    /// `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }

    /// The first item, if there is one now.
    pub fn try_pop(&self) -> Option<T> {
        self.lock().items.pop_front()
    }

    /// The first item; `None` once the queue is closed and empty.
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.try_pop() {
            return Poll::Ready(Some(item));
        }
        self.waker.register(cx.waker());
        // Looked at again after registering: a push in between would otherwise wake
        // nobody.
        let mut inner = self.lock();
        match inner.items.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if inner.closed => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// Waits for the first item; `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_pop(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn items_come_out_in_order_and_close_ends_after_them() {
        let q = Queue::default();
        q.push(1).unwrap();
        q.push(2).unwrap();
        q.close();
        assert_eq!(q.push(3), Err(3), "closed: given back");
        smol::block_on(async {
            assert_eq!(q.pop().await, Some(1));
            assert_eq!(q.pop().await, Some(2));
            assert_eq!(q.pop().await, None);
        });
    }

    #[test]
    fn a_waiting_consumer_is_woken_by_a_push_from_another_thread() {
        let q = Arc::new(Queue::default());
        let pusher = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    q.push(i).unwrap();
                    if i % 100 == 0 {
                        std::thread::yield_now();
                    }
                }
                q.close();
            })
        };
        let got: Vec<i32> = smol::block_on(async {
            let mut got = Vec::new();
            while let Some(i) = q.pop().await {
                got.push(i);
            }
            got
        });
        pusher.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn close_wakes_a_waiting_consumer() {
        let q = Arc::new(Queue::<u8>::default());
        let closer = {
            let q = q.clone();
            std::thread::spawn(move || q.close())
        };
        assert_eq!(smol::block_on(q.pop()), None);
        closer.join().unwrap();
    }
}
