//! `processing.threads` pipelines in one process, one per thread.
//!
//! Each worker is a whole [`Pipeline`]: its own consumer (a member of the group), its
//! own producer (its own transactional id in exactly-once mode), engine and
//! checkpoints. The group's assignor spreads partitions over the workers of every
//! process alike, so a rebalance moves partitions between workers exactly as between
//! processes, and everything the single pipeline guarantees — order within a
//! partition, checkpoints, replay, deterministic ids, fencing — holds per worker
//! unchanged. This is Kafka Streams' model too (each stream thread has its own
//! consumer and producer). The engine state is per partition, so which worker holds a
//! partition never changes its outputs.
//!
//! A worker that fails stops the others (they drain and commit), and [`Pool::run`]
//! returns its error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

use super::{Pipeline, Settings, Stats};
use crate::admin::Admin;
use crate::window::GateConfig;

/// What the main thread and a worker exchange between the worker's batches.
#[derive(Debug, Default)]
struct Mailbox {
    /// Settings to apply live (a reload), taken by the worker.
    live: Mutex<Option<GateConfig>>,
    has_live: AtomicBool,
    /// The worker's totals, refreshed every loop turn.
    stats: Mutex<Stats>,
}

#[derive(Debug)]
struct Worker {
    handle: JoinHandle<anyhow::Result<()>>,
    mailbox: Arc<Mailbox>,
}

/// The running workers.
#[derive(Debug)]
pub struct Pool {
    workers: Vec<Worker>,
    /// Set to stop every worker (a stop signal, or one worker's failure).
    stop: Arc<AtomicBool>,
}

impl Pool {
    /// Starts one pipeline per entry of `workers` (worker `i` with `workers[i]`),
    /// each connected to the broker before this returns (the first failure to connect
    /// is the error).
    pub fn start(
        workers: Vec<Settings>,
        hard_stop: &Arc<AtomicBool>,
        admin: &Arc<Admin>,
    ) -> anyhow::Result<Self> {
        let n = workers.len();
        admin.health.set_workers(n);
        admin.health.beat_all();
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let settings = workers;
        let mut workers = Vec::with_capacity(n);
        for (worker, settings) in settings.into_iter().enumerate() {
            let mailbox = Arc::new(Mailbox::default());
            let (stop, hard_stop, admin, started) = (
                Arc::clone(&stop),
                Arc::clone(hard_stop),
                Arc::clone(admin),
                started_tx.clone(),
            );
            let inbox = Arc::clone(&mailbox);
            let handle = std::thread::Builder::new()
                .name(format!("pipeline-{worker}"))
                .spawn(move || {
                    let mut pipeline = match Pipeline::new(settings, hard_stop, admin) {
                        Ok(p) => {
                            let _ = started.send((worker, Ok(())));
                            p
                        }
                        Err(e) => {
                            let _ = started.send((worker, Err(format!("{e:#}"))));
                            return Err(e);
                        }
                    };
                    drop(started);
                    let result = pipeline.run(&stop, &mut |p| inbox.turn(p));
                    inbox.publish(pipeline.stats().clone());
                    if let Err(e) = &result {
                        tracing::error!(worker, "pipeline worker failed: {e:#}");
                        // The others drain and commit; the process then exits with it.
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
                .context("starting a pipeline thread")?;
            workers.push(Worker { handle, mailbox });
        }
        drop(started_tx);
        let mut pool = Self { workers, stop };
        for _ in 0..n {
            match started_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((worker, Err(e))) => {
                    pool.stop.store(true, Ordering::Relaxed);
                    let _ = pool.join();
                    anyhow::bail!("pipeline worker {worker}: {e}");
                }
                Err(_) => {
                    pool.stop.store(true, Ordering::Relaxed);
                    let _ = pool.join();
                    anyhow::bail!("a pipeline worker ended while starting");
                }
            }
        }
        if n > 1 {
            tracing::info!(workers = n, "pipeline workers started");
        }
        Ok(pool)
    }

    /// Runs until `stop` is set or a worker ends, then stops every worker (each
    /// drains: everything read is delivered and committed) and returns the first
    /// worker's error, if any. `on_turn` runs every 50 ms on this thread (reloads,
    /// status reports).
    pub fn run(
        mut self,
        stop: &AtomicBool,
        on_turn: &mut dyn FnMut(&mut Pool),
    ) -> anyhow::Result<Stats> {
        while !stop.load(Ordering::Relaxed)
            && !self.stop.load(Ordering::Relaxed)
            && !self.workers.iter().any(|w| w.handle.is_finished())
        {
            on_turn(&mut self);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop.store(true, Ordering::Relaxed);
        let totals = self.stats();
        self.join().map(|()| totals)
    }

    fn join(&mut self) -> anyhow::Result<()> {
        let mut first = None;
        for (i, w) in self.workers.drain(..).enumerate() {
            let result = match w.handle.join() {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("pipeline worker {i} panicked")),
            };
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The totals of every worker (as of their last loop turn).
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for w in &self.workers {
            if let Ok(s) = w.mailbox.stats.lock() {
                total.add(&s);
            }
        }
        total
    }

    /// Hands the settings that can change while running (the full-fidelity rules)
    /// to every worker; each applies them before its next batch
    /// ([`Pipeline::apply_live`]).
    pub fn apply_live(&mut self, gate: &GateConfig) {
        for w in &self.workers {
            if let Ok(mut live) = w.mailbox.live.lock() {
                *live = Some(gate.clone());
                w.mailbox.has_live.store(true, Ordering::Release);
            }
        }
    }
}

impl Mailbox {
    /// Between a worker's batches: applies a reload, publishes the totals.
    fn turn(&self, p: &mut Pipeline) {
        if self.has_live.swap(false, Ordering::Acquire) {
            let live = self.live.lock().ok().and_then(|mut l| l.take());
            if let Some(gate) = live
                && let Err(e) = p.apply_live(&gate)
            {
                tracing::error!("reload: {e:#}");
            }
        }
        self.publish(p.stats().clone());
    }

    fn publish(&self, stats: Stats) {
        if let Ok(mut s) = self.stats.lock() {
            *s = stats;
        }
    }
}
