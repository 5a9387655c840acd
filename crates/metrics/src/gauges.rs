//! Gauges made at scrape time from a role's own state (the proxy's routing
//! table, a worker's engine): a role's [`Collector`](crate::Collector)
//! writes each family with [`encode_gauges`].

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// One sample: its labels (name, value) and its value.
pub type Row = (Vec<(&'static str, String)>, f64);

/// Write the gauge family `name` with one sample per row.
pub fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[Row],
) -> std::fmt::Result {
    let family = Family::<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>>::default();
    for (labels, value) in rows {
        family.get_or_create(labels).set(*value);
    }
    family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Collector, Metrics};

    #[derive(Debug)]
    struct Table;

    impl Collector for Table {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            encode_gauges(
                &mut encoder,
                "queue_depth",
                "Requests waiting",
                &[(vec![("model", "m".to_string())], 3.0)],
            )
        }
    }

    #[test]
    fn collected_gauges_carry_the_prefix_and_the_role() {
        let text = Metrics::new("proxy").with_collector(Table).render();
        assert!(
            text.contains(r#"cocoon_queue_depth{role="proxy",model="m"} 3.0"#),
            "{text}"
        );
    }
}
