//! The model side of the server: a bounded job queue and the worker threads that run
//! generation on the shared model.
//!
//! HTTP handlers never block on the model. A handler turns a request into a [`Job`] (prompt
//! ids and a [`GenerateConfig`]) and offers it to the [`Queue`]: a full queue refuses at once,
//! and the handler answers 503. Each worker thread pops jobs and runs them one at a time on the
//! shared `&Model` (with `--parallel N`, N jobs run at once, each with its own KV cache). A job
//! carries its way back: a one-shot channel for a whole answer, an unbounded channel of
//! [`Event`]s for a stream, so a slow reader never stalls the model.
//!
//! Cancellation. When a client goes away, its receiving end is dropped. A job whose client is
//! gone before it starts is skipped. During generation the streaming callback notices the
//! closed channel and unwinds out of [`generate`] with [`std::panic::resume_unwind`] (which
//! runs no panic hook and prints nothing), caught here with `catch_unwind`: `generate` only
//! reads the model and owns its cache, so nothing shared is left half-changed. (A callback that
//! could return `ControlFlow::Break` would be the cleaner way; `laconic-infer` has none yet.)
//! Batched `n > 1` answers ([`generate_samples`]) have no callback and run to the end.
//!
//! Shutdown: [`Queue::close`] refuses new jobs; the workers finish every queued job, then exit.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use laconic_infer::LoadedModel;
use laconic_infer::generate::{FinishReason, GenerateConfig, SamplingConfig, generate};
use laconic_infer::parallel::generate_samples;
use tokio::sync::{mpsc, oneshot};

use crate::openai::ChoiceText;

/// What a streamed job sends back, in order: per choice a `Start`, its `Text` pieces, an
/// `End`; or a `Failed` at any point.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Choice `index` begins.
    Start(usize),
    /// More text of choice `index`.
    Text(usize, String),
    /// Choice `index` ended, with its finish reason and generated token count.
    End(usize, FinishReason, usize),
    /// Generation failed; nothing more follows.
    Failed(String),
}

/// Where a job's result goes.
#[derive(Debug)]
pub enum Reply {
    /// The whole answer at once: every choice, or what went wrong.
    Whole(oneshot::Sender<Result<Vec<ChoiceText>, String>>),
    /// A stream of events.
    Stream(mpsc::UnboundedSender<Event>),
}

impl Reply {
    /// Whether the client has gone away.
    fn is_closed(&self) -> bool {
        match self {
            Reply::Whole(tx) => tx.is_closed(),
            Reply::Stream(tx) => tx.is_closed(),
        }
    }
}

/// One request for the model.
#[derive(Debug)]
pub struct Job {
    /// Prompt token ids (non-empty, shorter than the context).
    pub prompt: Vec<u32>,
    /// Generation settings; choice `i` samples with seed `config.sampling.seed + i`.
    pub config: GenerateConfig,
    /// How many choices.
    pub n: usize,
    /// Where the result goes.
    pub reply: Reply,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds `capacity` waiting jobs.
    Full,
    /// The server is shutting down.
    Closed,
}

/// A bounded multi-consumer FIFO of jobs.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
    running: AtomicUsize,
}

#[derive(Debug)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    /// A queue that holds at most `capacity` waiting jobs (running ones not counted).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
            running: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A worker that panicked mid-job never holds this lock, but be tolerant anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a job without waiting; a refused job is dropped.
    pub fn try_push(&self, job: Job) -> Result<(), Refused> {
        let mut s = self.lock();
        if s.closed {
            return Err(Refused::Closed);
        }
        if s.jobs.len() >= self.capacity {
            return Err(Refused::Full);
        }
        s.jobs.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, waiting for one, counted as running until [`Queue::done`]; `None` once
    /// the queue is closed and empty.
    fn pop(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if let Some(job) = s.jobs.pop_front() {
                // Under the lock, so that a job is always counted as waiting or running.
                self.running.fetch_add(1, Ordering::Relaxed);
                return Some(job);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A popped job is finished.
    fn done(&self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Refuses new jobs; workers exit once the waiting ones are done.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Jobs waiting.
    pub fn waiting(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Jobs being generated now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

/// Starts `workers` threads that run the queue's jobs on `model`.
pub fn spawn_workers(
    model: Arc<LoadedModel>,
    queue: Arc<Queue>,
    workers: usize,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..workers)
        .map(|i| {
            let model = Arc::clone(&model);
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("laconic-serve-model-{i}"))
                .spawn(move || {
                    while let Some(job) = queue.pop() {
                        run(&model, job);
                        queue.done();
                    }
                })
        })
        .collect()
}

/// Unwinds out of a generation whose client has gone (see the module docs).
struct Cancelled;

fn cancel() -> ! {
    resume_unwind(Box::new(Cancelled))
}

/// A panic's message, for the client's 500.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("generation failed: internal error ({what})")
}

/// Runs one job and sends its result; never panics.
fn run(model: &LoadedModel, job: Job) {
    if job.reply.is_closed() {
        return;
    }
    let Job {
        prompt,
        config,
        n,
        reply,
    } = job;
    match reply {
        Reply::Whole(tx) => {
            let out = catch_unwind(AssertUnwindSafe(|| whole(model, &prompt, &config, n, &tx)));
            let result = match out {
                Ok(r) => r,
                Err(p) if p.is::<Cancelled>() => return,
                Err(p) => Err(panic_message(p.as_ref())),
            };
            let _ = tx.send(result);
        }
        Reply::Stream(tx) => {
            let out = catch_unwind(AssertUnwindSafe(|| stream(model, &prompt, &config, n, &tx)));
            let failure = match out {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(p) if p.is::<Cancelled>() => return,
                Err(p) => panic_message(p.as_ref()),
            };
            let _ = tx.send(Event::Failed(failure));
        }
    }
}

/// The settings of choice `i`: the request's seed plus `i`.
fn choice_config(config: &GenerateConfig, i: usize) -> GenerateConfig {
    GenerateConfig {
        sampling: SamplingConfig {
            seed: config.sampling.seed.wrapping_add(i as u64),
            ..config.sampling.clone()
        },
        ..config.clone()
    }
}

fn whole(
    model: &LoadedModel,
    prompt: &[u32],
    config: &GenerateConfig,
    n: usize,
    tx: &oneshot::Sender<Result<Vec<ChoiceText>, String>>,
) -> Result<Vec<ChoiceText>, String> {
    if n > 1 {
        // One shared prefill, the choices decoded as a batch.
        let vote = generate_samples(&model.model, &model.tokenizer, prompt, config, n)
            .map_err(|e| format!("generation failed: {e}"))?;
        return Ok(vote
            .samples
            .into_iter()
            .map(|s| ChoiceText {
                completion_tokens: s.generation.tokens.len(),
                text: s.generation.text,
                finish_reason: s.generation.finish_reason,
            })
            .collect());
    }
    let mut cache = model.model.new_cache();
    let g = generate(
        &model.model,
        &model.tokenizer,
        prompt,
        config,
        &mut cache,
        |_| {
            if tx.is_closed() {
                cancel();
            }
        },
    )
    .map_err(|e| format!("generation failed: {e}"))?;
    Ok(vec![ChoiceText {
        completion_tokens: g.tokens.len(),
        text: g.text,
        finish_reason: g.finish_reason,
    }])
}

/// Streams the choices one after another.
fn stream(
    model: &LoadedModel,
    prompt: &[u32],
    config: &GenerateConfig,
    n: usize,
    tx: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let send = |e: Event| {
        if tx.send(e).is_err() {
            cancel();
        }
    };
    for i in 0..n {
        send(Event::Start(i));
        let mut cache = model.model.new_cache();
        let g = generate(
            &model.model,
            &model.tokenizer,
            prompt,
            &choice_config(config, i),
            &mut cache,
            |t| send(Event::Text(i, t.to_string())),
        )
        .map_err(|e| format!("generation failed: {e}"))?;
        send(Event::End(i, g.finish_reason, g.tokens.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<Result<Vec<ChoiceText>, String>>) {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            prompt: vec![1],
            config: GenerateConfig::default(),
            n: 1,
            reply: Reply::Whole(tx),
        };
        (job, rx)
    }

    #[test]
    fn the_queue_is_bounded_fifo_and_drains_after_close() {
        let q = Queue::new(2);
        let (a, _ra) = job();
        let (b, _rb) = job();
        let (c, _rc) = job();
        assert!(q.try_push(a).is_ok());
        assert!(q.try_push(b).is_ok());
        assert_eq!(q.try_push(c).err(), Some(Refused::Full));
        assert_eq!(q.waiting(), 2);
        q.close();
        let (d, _rd) = job();
        assert_eq!(q.try_push(d).err(), Some(Refused::Closed));
        assert!(q.pop().is_some() && q.pop().is_some(), "queued jobs drain");
        assert!(q.pop().is_none(), "then the workers stop");
    }

    #[test]
    fn choice_seeds_count_up() {
        let mut c = GenerateConfig::default();
        c.sampling.seed = u64::MAX;
        assert_eq!(choice_config(&c, 0).sampling.seed, u64::MAX);
        assert_eq!(choice_config(&c, 2).sampling.seed, 1);
    }
}
