//! Benchmark results: latency histograms, rates, the printed summary and the `--json` file.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in microseconds, 1 µs to 1 h at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records `d` into a microsecond histogram.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Summarises a microsecond histogram; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            mean: round3(h.mean() / 1000.0),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2}, n={})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.mean, self.count
        )
    }
}

/// Records and bytes moved in some time.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Records acknowledged (produce) or received (consume).
    pub records: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// Wall-clock seconds of the phase.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_s: f64,
    /// `bytes / seconds / 10^6`.
    pub mb_per_s: f64,
}

impl Throughput {
    /// Rates of `records` and `bytes` over `elapsed`.
    pub fn new(records: u64, bytes: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            records,
            bytes,
            seconds: round3(seconds),
            records_per_s: (records as f64 / seconds).round(),
            mb_per_s: round3(bytes as f64 / seconds / 1e6),
        }
    }
}

/// Failures of a phase: counted, never hidden.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    /// Records (or fetches) that failed.
    pub count: u64,
    /// The first failure's message.
    pub first: Option<String>,
}

impl Errors {
    /// Counts one failure, keeping the first message.
    pub fn add(&mut self, n: u64, message: impl FnOnce() -> String) {
        if self.first.is_none() {
            self.first = Some(message());
        }
        self.count += n;
    }

    /// Adds another phase's failures.
    pub fn merge(&mut self, other: Errors) {
        if self.first.is_none() {
            self.first = other.first;
        }
        self.count += other.count;
    }
}

/// The whole result of one `bench` run, as printed and written with `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `produce`, `consume` or `e2e`.
    pub mode: &'static str,
    /// The run's parameters.
    pub params: serde_json::Value,
    /// Producer throughput (acknowledged records only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produce: Option<Throughput>,
    /// Consumer throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<Throughput>,
    /// Stamped records the tailing consumers received (e2e).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// Produce requests sent (produce, e2e) or Fetch requests made (consume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Send → acknowledgement latency, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produce_ack_ms: Option<Percentiles>,
    /// Send (timestamp in the payload) → received by the consumer, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_ms: Option<Percentiles>,
    /// Failed records and fetches.
    pub errors: Errors,
}

impl Report {
    /// Prints the human summary on stdout.
    pub fn print(&self) {
        println!("bench {}: {}", self.mode, self.params);
        let rates = |name: &str, t: &Throughput| {
            println!(
                "{name:<9} {} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.2} MB/s",
                t.records,
                t.bytes as f64 / 1e6,
                t.seconds,
                t.records_per_s,
                t.mb_per_s
            )
        };
        if let Some(t) = &self.produce {
            rates("produced", t);
        }
        if let Some(t) = &self.consume {
            rates("consumed", t);
        }
        if let Some(n) = self.received {
            println!("received  {n} records");
        }
        if let Some(n) = self.requests {
            println!("requests  {n}");
        }
        if let Some(p) = &self.produce_ack_ms {
            println!("produce-ack latency ms: {}", p.line());
        }
        if let Some(p) = &self.end_to_end_ms {
            println!("end-to-end latency ms:  {}", p.line());
        }
        println!("errors: {}", self.errors.count);
        if let Some(first) = &self.errors.first {
            println!("first error: {first}");
        }
    }

    /// Writes the report as JSON to `path`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            record(&mut h, Duration::from_millis(ms));
        }
        let p = Percentiles::of(&h).unwrap();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert!(Percentiles::of(&new_histogram()).is_none());
    }

    #[test]
    fn throughput_uses_decimal_megabytes() {
        let t = Throughput::new(1000, 2_000_000, Duration::from_secs(2));
        assert_eq!((t.records_per_s, t.mb_per_s), (500.0, 1.0));
    }
}
