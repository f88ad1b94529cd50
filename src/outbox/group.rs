//! Group commit of delivery outcomes: many requests answered at about the same time are recorded
//! in one write transaction instead of one each. No task and no linger: a request whose outcome
//! is ready queues it; whoever finds no write running becomes the writer and takes everything
//! queued by then (its own and the others'), while the rest wait for their answers. A batch grows
//! by itself while the previous commit runs, and at low load a lone outcome is written at once.

use std::sync::Mutex;

use tokio::sync::oneshot;

/// A queue of jobs of type `J`, each answered with an `R` by the writer of its batch.
pub struct Group<J, R> {
    queue: Mutex<Vec<(J, oneshot::Sender<R>)>>,
    writer: tokio::sync::Mutex<()>,
}

impl<J, R> Default for Group<J, R> {
    fn default() -> Self {
        Group { queue: Mutex::new(Vec::new()), writer: tokio::sync::Mutex::new(()) }
    }
}

impl<J, R> Group<J, R> {
    /// Queues `job` and returns its answer: written by this caller (with whatever else is
    /// queued) through `write`, which answers each job of a batch in order, or by another
    /// caller's. `None` if the batch's writer gave no answer for it (it was cancelled, or
    /// `write` returned too few).
    pub async fn submit<F, Fut>(&self, job: J, write: F) -> Option<R>
    where
        F: Fn(Vec<J>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let (tx, mut rx) = oneshot::channel();
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push((job, tx));
        loop {
            let guard = tokio::select! {
                biased;
                answer = &mut rx => return answer.ok(),
                guard = self.writer.lock() => guard,
            };
            let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
            if batch.is_empty() {
                // Another writer took this job; its answer is on the way.
                drop(guard);
                return rx.await.ok();
            }
            let (jobs, replies): (Vec<J>, Vec<oneshot::Sender<R>>) = batch.into_iter().unzip();
            let answers = write(jobs).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            drop(guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn concurrent_jobs_are_written_together_and_each_gets_its_own_answer() {
        let group = Arc::new(Group::<u32, u32>::default());
        let writes = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50u32)
            .map(|i| {
                let (group, writes) = (group.clone(), writes.clone());
                tokio::spawn(async move {
                    group
                        .submit(i, |jobs| {
                            let writes = writes.clone();
                            async move {
                                writes.fetch_add(1, Ordering::SeqCst);
                                // A commit takes a while: jobs queue meanwhile.
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                jobs.into_iter().map(|j| j * 10).collect()
                            }
                        })
                        .await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        assert_eq!(answers, (0..50u32).map(|i| Some(i * 10)).collect::<Vec<_>>());
        let writes = writes.load(Ordering::SeqCst);
        assert!((1..50).contains(&writes), "50 jobs in {writes} writes");
    }

    #[tokio::test]
    async fn a_lone_job_is_written_at_once() {
        let group = Group::<u32, u32>::default();
        assert_eq!(group.submit(7, |jobs| async move { jobs }).await, Some(7));
        assert_eq!(group.submit(8, |_| async move { Vec::new() }).await, None, "no answer given");
    }
}
