//! The root contract is what the network trusts: a devnet whose engine
//! hashes its weights (SmolLM2) publishes its image and model on chain, and
//! every node checks peers against what the chain publishes, read again
//! every `registry_every`. The operator withdrawing the worker's image or
//! model on chain, or publishing configuration rules its configuration
//! breaks (only `openai-http` engines, where it runs the embedded one),
//! stops it being routed to (and the worker pauses itself, saying why);
//! publishing it again, or clearing the rules, brings it back. The proxy's
//! own policy allows any engine: the chain's rules are added to it.

use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::ConfigurationRules;
use cocoon_chain::root::ImageRole;
use cocoon_devnet::kit::{eventually, post, wait};
use cocoon_inference::store::SMOLLM2_SHA256;
use serde_json::json;

use crate::real_model::MODEL;

#[tokio::test]
async fn a_worker_withdrawn_on_chain_is_no_longer_served_and_comes_back_when_published_again() {
    let net = crate::real_model::network(1).await;
    let url = format!("{}/chat/completions", net.api_url);
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 2,
        "temperature": 0
    });
    let (status, answer) = post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    let image = SimulatedTee::measurements().image_hash();
    let workers = || net.proxy().registry.worker_count();

    let only_forwarding = ConfigurationRules {
        worker_engines: ["openai-http".to_string()].into(),
        ..Default::default()
    };
    for withdrawn in ["image", "model", "configuration"] {
        match withdrawn {
            "image" => net.ton.publish_image(ImageRole::Worker, &image, false),
            "model" => net.ton.publish_model(SMOLLM2_SHA256, None),
            _ => net.ton.set_rules(Some(&only_forwarding)),
        }
        .unwrap();
        eventually(
            &format!("the worker dropped once its {withdrawn} is withdrawn"),
            || workers() == 0,
        )
        .await;
        let (status, answer) = post(&url, &body).await;
        assert_eq!(status, 503, "{withdrawn}: {answer}");
        // The worker itself sees it, stops taking requests and says why.
        let controls = net.workers[0].worker.controls().clone();
        eventually(
            &format!("the worker pauses itself once its {withdrawn} is withdrawn"),
            || {
                controls.withdrawn().is_some_and(|why| match withdrawn {
                    "image" => why.starts_with("its image"),
                    "configuration" => {
                        why.starts_with("its configuration") && why.contains("root contract")
                    }
                    _ => true,
                })
            },
        )
        .await;
        assert!(controls.draining());
        // It keeps dialling and is refused while withdrawn.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(workers(), 0, "a withdrawn worker was admitted again");

        match withdrawn {
            "image" => net.ton.publish_image(ImageRole::Worker, &image, true),
            "model" => net.ton.publish_model(SMOLLM2_SHA256, Some(MODEL)),
            _ => net.ton.set_rules(None),
        }
        .unwrap();
        wait(
            &format!("the worker back once its {withdrawn} is published"),
            || workers() == 1 && controls.withdrawn().is_none(),
        )
        .await;
        let (status, answer) = post(&url, &body).await;
        assert_eq!(status, 200, "{withdrawn}, published again: {answer}");
    }
    net.shutdown().await;
}
