//! Samples the host's CPU usage, memory usage and own resident set size.

use std::time::Duration;

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::Mutex;

/// One reading of the host's resources.
#[derive(Clone, Copy, Debug)]
pub struct SystemSample {
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub rss_bytes: f64,
}

/// Keeps a `System` between readings so CPU usage is measured over an interval.
pub struct SystemSampler {
    state: Mutex<(System, bool)>,
}

impl Default for SystemSampler {
    fn default() -> Self {
        SystemSampler {
            state: Mutex::new((System::new(), false)),
        }
    }
}

impl SystemSampler {
    /// Takes a reading; the first one waits one CPU measurement interval.
    pub async fn sample(&self) -> SystemSample {
        let mut guard = self.state.lock().await;
        let (sys, primed) = &mut *guard;
        if !*primed {
            sys.refresh_cpu_usage();
            tokio::time::sleep(
                sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(100)),
            )
            .await;
            *primed = true;
        }
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        let pid = sysinfo::get_current_pid().ok();
        let mut rss = 0.0;
        if let Some(pid) = pid {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory(),
            );
            if let Some(p) = sys.process(pid) {
                rss = p.memory() as f64;
            }
        }
        let total = sys.total_memory() as f64;
        let memory_percent = if total > 0.0 {
            sys.used_memory() as f64 / total * 100.0
        } else {
            0.0
        };
        SystemSample {
            cpu_percent: f64::from(sys.global_cpu_usage()).clamp(0.0, 100.0),
            memory_percent,
            rss_bytes: rss,
        }
    }
}
