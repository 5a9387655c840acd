//! An upstream server's load, read from its Prometheus `/metrics` page: vLLM's
//! `vllm:num_requests_running` / `vllm:num_requests_waiting`, SGLang's
//! `sglang:num_running_reqs` / `sglang:num_queue_reqs` (summed over labels, e.g.
//! several models). Servers without such a page report no load.

use crate::EngineLoad;

/// The load in a Prometheus text exposition, if it has the known gauges.
pub(super) fn parse(text: &str) -> Option<EngineLoad> {
    let mut running: Option<f64> = None;
    let mut waiting = 0.0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series).trim();
        match name {
            "vllm:num_requests_running" | "sglang:num_running_reqs" => {
                *running.get_or_insert(0.0) += value
            }
            "vllm:num_requests_waiting" | "sglang:num_queue_reqs" => waiting += value,
            _ => {}
        }
    }
    running.map(|r| EngineLoad {
        running: r.max(0.0) as u32,
        waiting: waiting.max(0.0) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllm_gauges() {
        let text = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 2.0
vllm:gpu_cache_usage_perc{engine="0"} 0.25
"#;
        assert_eq!(
            parse(text),
            Some(EngineLoad {
                running: 3,
                waiting: 2
            })
        );
    }

    #[test]
    fn reads_sglang_gauges_and_ignores_other_pages() {
        let text = "sglang:num_running_reqs{model_name=\"m\"} 5\nsglang:num_queue_reqs{model_name=\"m\"} 1\n";
        assert_eq!(
            parse(text),
            Some(EngineLoad {
                running: 5,
                waiting: 1
            })
        );
        assert_eq!(parse("<html>not found</html>"), None);
        assert_eq!(parse("process_cpu_seconds_total 12.5\n"), None);
    }
}

#[cfg(test)]
mod over_http {
    use crate::{Engine, EngineLoad, OpenAiHttpConfig, OpenAiHttpEngine};
    use std::time::Duration;

    async fn engine_for(router: axum::Router) -> OpenAiHttpEngine {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        OpenAiHttpEngine::new(OpenAiHttpConfig {
            base_url: format!("http://{addr}/v1"),
            model: "m".into(),
            upstream_model: None,
            api_key: None,
            max_concurrent: 4,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            weights_sha256: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn load_comes_from_the_servers_metrics_page() {
        let page = "vllm:num_requests_running{model_name=\"m\"} 7.0\nvllm:num_requests_waiting{model_name=\"m\"} 4.0\n";
        let router =
            axum::Router::new().route("/metrics", axum::routing::get(move || async move { page }));
        let engine = engine_for(router).await;
        assert_eq!(
            engine.load().await,
            Some(EngineLoad {
                running: 7,
                waiting: 4
            })
        );
    }

    #[tokio::test]
    async fn a_server_without_metrics_reports_no_load() {
        let engine = engine_for(axum::Router::new()).await;
        assert_eq!(engine.load().await, None);
    }
}
