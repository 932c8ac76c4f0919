//! The engine's and the server's counters, in Prometheus' text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub requests: Counter,
    pub request_errors: Counter,
    pub prompt_tokens: Counter,
    pub generated_tokens: Counter,
    pub decode_steps: Counter,
    /// Sequences per decoding step.
    pub batch_size: Histogram,
    /// Requests waiting for a slot or for their adapter.
    pub queue_depth: Gauge,
    /// Sequences being decoded.
    pub active: Gauge,
    pub adapters_resident: Gauge,
    /// Host bytes of the resident adapters' tensors.
    pub adapter_bytes: Gauge,
    pub adapter_loads: Counter,
    pub adapter_evictions: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("peftc");
        let m = Metrics {
            requests: Counter::default(),
            request_errors: Counter::default(),
            prompt_tokens: Counter::default(),
            generated_tokens: Counter::default(),
            decode_steps: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            queue_depth: Gauge::default(),
            active: Gauge::default(),
            adapters_resident: Gauge::default(),
            adapter_bytes: Gauge::default(),
            adapter_loads: Counter::default(),
            adapter_evictions: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("requests", "HTTP requests answered", m.requests.clone());
        r.register(
            "request_errors",
            "HTTP requests answered with an error status",
            m.request_errors.clone(),
        );
        r.register(
            "prompt_tokens",
            "Prompt tokens prefilled",
            m.prompt_tokens.clone(),
        );
        r.register(
            "generated_tokens",
            "Tokens generated",
            m.generated_tokens.clone(),
        );
        r.register(
            "decode_steps",
            "Batched decoding steps",
            m.decode_steps.clone(),
        );
        r.register(
            "batch_size",
            "Sequences per decoding step",
            m.batch_size.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting to be admitted",
            m.queue_depth.clone(),
        );
        r.register(
            "active_sequences",
            "Sequences being decoded",
            m.active.clone(),
        );
        r.register(
            "adapters_resident",
            "Adapters held in memory",
            m.adapters_resident.clone(),
        );
        r.register(
            "adapter_bytes",
            "Bytes of the resident adapters' tensors",
            m.adapter_bytes.clone(),
        );
        r.register(
            "adapter_loads",
            "Adapters read from disk",
            m.adapter_loads.clone(),
        );
        r.register(
            "adapter_evictions",
            "Resident adapters evicted to make room (least recently used)",
            m.adapter_evictions.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
