//! `memory_limiter` processor: refuses data with a retryable error while the
//! process uses more memory than the soft limit (limit − spike), so receivers
//! answer 503 / UNAVAILABLE and well-behaved clients back off and retry.
//!
//! Usage is the process's resident set size, sampled every `check_interval`
//! (the collector samples Go heap; RSS is the honest figure for a Rust process).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_yaml_ng::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use weft_pipeline::{
    parse_config, Batch, Capabilities, ComponentConfig, ComponentError, ConfigFieldError,
    ConsumeError, Consumer, Counter, DynConsumer, Gauge, Lifecycle, Processor, ProcessorFactory,
    Settings, Signal,
};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    /// How often memory usage is sampled; required, greater than zero.
    #[serde(with = "weft_pipeline::config::duration")]
    pub check_interval: Duration,
    /// Hard limit in MiB. One of limit_mib or limit_percentage is required.
    pub limit_mib: u64,
    /// Headroom in MiB below the hard limit where refusing starts (default 20% of the limit).
    pub spike_limit_mib: u64,
    /// Hard limit as a percentage of total memory (cgroup limit when one is set).
    pub limit_percentage: u64,
    /// Spike headroom as a percentage of total memory.
    pub spike_limit_percentage: u64,
    /// weft only: tell refused clients when to try again. HTTP receivers then
    /// answer 429 with `Retry-After` (rounded up to whole seconds) instead of
    /// 503, gRPC receivers UNAVAILABLE with a RetryInfo detail. Unset: 503 /
    /// UNAVAILABLE without a delay, as the collector answers.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub retry_after: Option<Duration>,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: Duration::ZERO,
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
            retry_after: None,
        }
    }
}

impl ComponentConfig for MemoryLimiterConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.check_interval.is_zero() {
            return Err(ConfigFieldError::at(
                &["check_interval"],
                "checkInterval must be greater than zero",
            ));
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return Err(ConfigFieldError::new(
                "memory_limiter needs limit_mib or limit_percentage greater than zero",
            ));
        }
        if self.limit_mib > 0 && self.spike_limit_mib >= self.limit_mib {
            return Err(ConfigFieldError::at(
                &["spike_limit_mib"],
                "spike_limit_mib must be smaller than limit_mib",
            ));
        }
        if self.limit_percentage > 100 || self.spike_limit_percentage > 100 {
            return Err(ConfigFieldError::at(
                &["limit_percentage"],
                "percentages must be between 1 and 100",
            ));
        }
        if self.limit_percentage > 0 && self.spike_limit_percentage >= self.limit_percentage {
            return Err(ConfigFieldError::at(
                &["spike_limit_percentage"],
                "spike_limit_percentage must be smaller than limit_percentage",
            ));
        }
        Ok(())
    }
}

impl MemoryLimiterConfig {
    /// (hard, soft) limits in bytes given the machine's total memory.
    pub fn limits(&self, total_bytes: u64) -> (u64, u64) {
        let (hard, spike) = if self.limit_mib > 0 {
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib
            } else {
                self.limit_mib / 5
            };
            (self.limit_mib * MIB, spike * MIB)
        } else {
            let hard = total_bytes / 100 * self.limit_percentage;
            let spike = if self.spike_limit_percentage > 0 {
                total_bytes / 100 * self.spike_limit_percentage
            } else {
                hard / 5
            };
            (hard, spike)
        };
        (hard, hard.saturating_sub(spike))
    }
}

/// Resident set size of this process, in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

/// Total memory available to this process: the cgroup v2 limit when set, else MemTotal.
pub fn total_memory_bytes() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        if let Ok(v) = s.trim().parse::<u64>() {
            return Some(v);
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub struct MemoryLimiterFactory;

impl ProcessorFactory for MemoryLimiterFactory {
    fn type_name(&self) -> &'static str {
        "memory_limiter"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<MemoryLimiterConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &Value,
        signal: Signal,
        next: DynConsumer,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        let config = parse_config::<MemoryLimiterConfig>(raw)
            .map_err(|e| ComponentError::new(e.to_string()))?;
        let total = total_memory_bytes().unwrap_or(0);
        let (hard, soft) = config.limits(total);
        if hard == 0 {
            return Err(ComponentError::new(
                "memory_limiter: cannot determine total memory for limit_percentage",
            ));
        }
        let id = settings.id.to_string();
        let labels = [("processor", id.as_str())];
        let t = &settings.telemetry;
        Ok(Arc::new(MemoryLimiter {
            id: id.clone(),
            interval: config.check_interval,
            retry_after: config.retry_after,
            hard,
            soft,
            next,
            state: Arc::new(State {
                refusing: AtomicBool::new(false),
                usage: AtomicU64::new(0),
            }),
            refused: t.counter(
                &format!("otelcol_processor_refused_{}", signal.item_name()),
                "Number of items refused by a processor",
                &labels,
            ),
            usage_gauge: t.gauge(
                "weft_memory_limiter_usage_bytes",
                "Process memory usage last sampled by memory_limiter",
                &labels,
            ),
            checker: Mutex::new(None),
        }))
    }
}

struct State {
    refusing: AtomicBool,
    usage: AtomicU64,
}

pub struct MemoryLimiter {
    id: String,
    interval: Duration,
    retry_after: Option<Duration>,
    hard: u64,
    soft: u64,
    next: DynConsumer,
    state: Arc<State>,
    refused: Counter,
    usage_gauge: Gauge,
    checker: Mutex<Option<JoinHandle<()>>>,
}

impl MemoryLimiter {
    fn check(state: &State, soft: u64, hard: u64, id: &str, gauge: &Gauge) {
        let Some(usage) = resident_bytes() else {
            return;
        };
        state.usage.store(usage, Ordering::Relaxed);
        gauge.set(usage as i64);
        let over = usage > soft;
        let was = state.refusing.swap(over, Ordering::Relaxed);
        if over && !was {
            warn!(processor = %id, usage_mib = usage / MIB, soft_limit_mib = soft / MIB, hard_limit_mib = hard / MIB,
                "memory usage is above the soft limit; refusing data");
        } else if !over && was {
            info!(processor = %id, usage_mib = usage / MIB, "memory usage is back below the soft limit; accepting data");
        }
    }
}

#[async_trait]
impl Lifecycle for MemoryLimiter {
    async fn start(&self) -> Result<(), ComponentError> {
        let (state, soft, hard, id, gauge, interval) = (
            self.state.clone(),
            self.soft,
            self.hard,
            self.id.clone(),
            self.usage_gauge.clone(),
            self.interval,
        );
        Self::check(&state, soft, hard, &id, &gauge);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                Self::check(&state, soft, hard, &id, &gauge);
            }
        });
        *self.checker.lock().await = Some(task);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        if let Some(t) = self.checker.lock().await.take() {
            t.abort();
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for MemoryLimiter {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        if self.state.refusing.load(Ordering::Relaxed) {
            self.refused.add(batch.item_count() as u64);
            return Err(ConsumeError::Retryable {
                message: "data refused due to high memory usage".into(),
                retry_after: self.retry_after,
            });
        }
        self.next.consume(batch).await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mutates_data: false,
            acks_on_disk: self.next.capabilities().acks_on_disk,
        }
    }
}

impl Processor for MemoryLimiter {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(y: &str) -> Result<MemoryLimiterConfig, ConfigFieldError> {
        parse_config(&serde_yaml_ng::from_str::<Value>(y).unwrap())
    }

    #[test]
    fn validates_like_the_collector() {
        assert_eq!(
            cfg("limit_mib: 100").unwrap_err().path,
            vec!["check_interval"]
        );
        assert!(cfg("check_interval: 1s")
            .unwrap_err()
            .message
            .contains("limit_mib or limit_percentage"));
        assert_eq!(
            cfg("check_interval: 1s\nlimit_mib: 100\nspike_limit_mib: 100")
                .unwrap_err()
                .path,
            vec!["spike_limit_mib"]
        );
        let c = cfg("check_interval: 1s\nlimit_mib: 100").unwrap();
        assert_eq!(c.limits(0), (100 * MIB, 80 * MIB));
        let c =
            cfg("check_interval: 1s\nlimit_percentage: 50\nspike_limit_percentage: 10").unwrap();
        assert_eq!(c.limits(1000 * MIB), (500 * MIB, 400 * MIB));
    }

    #[test]
    fn reads_process_memory() {
        assert!(resident_bytes().unwrap() > 0);
        assert!(total_memory_bytes().unwrap() > 0);
    }
}
