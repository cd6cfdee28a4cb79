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
    /// Memory in use on the machine.
    pub memory_used_bytes: f64,
    /// CPU use of the host process since the previous reading (100 = one core).
    pub process_cpu_percent: f64,
    /// When the host process started, unix seconds.
    pub process_start_time_seconds: f64,
    /// Seconds since the host process started.
    pub uptime_seconds: f64,
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
        let mut process_cpu = 0.0;
        let mut started = 0.0;
        let mut uptime = 0.0;
        if let Some(pid) = pid {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
            if let Some(p) = sys.process(pid) {
                rss = p.memory() as f64;
                process_cpu = f64::from(p.cpu_usage()).max(0.0);
                started = p.start_time() as f64;
                uptime = p.run_time() as f64;
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
            memory_used_bytes: sys.used_memory() as f64,
            process_cpu_percent: process_cpu,
            process_start_time_seconds: started,
            uptime_seconds: uptime,
        }
    }
}
