//! A publisher that delivers nowhere: it reads every sample (sums values, label
//! counts and name lengths, so the work cannot be optimised away) and accepts the
//! batch. Used to benchmark the host's side of delivery.

use std::hint::black_box;

use vigil_plugin::publisher::{Batch, Config, PublishError, PublishReport, Publisher};

struct NoopPublisher {
    /// Running checksum over everything read; kept so the reads have an effect.
    checksum: f64,
}

impl Publisher for NoopPublisher {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(NoopPublisher { checksum: 0.0 })
    }

    fn publish(&mut self, batch: &Batch) -> Result<PublishReport, PublishError> {
        let mut sum = 0.0;
        for sample in batch.samples() {
            let labels = sample
                .labels()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
            sum += sample.value()
                + (sample.seq() as f64)
                + (sample.timestamp_ms() as f64) * 1e-12
                + (sample.component().len() + sample.name().len() + labels) as f64
                + f64::from(sample.kind().code());
        }
        for event in batch.events() {
            sum += (event.seq as f64) + event.attributes.len() as f64;
        }
        self.checksum = black_box(self.checksum + sum);
        Ok(PublishReport::all_accepted())
    }
}

vigil_plugin::export_publisher!(NoopPublisher);
