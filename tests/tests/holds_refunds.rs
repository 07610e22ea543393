//! Holds on the real stack, through the gateway: one captured in part, one
//! voided, one left to expire and swept, then part of the capture
//! refunded; the three databases agree after each step. Then a transfer
//! with a reference and metadata, and the payer's history read back in
//! pages.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wallet_e2e::stack::{Stack, call};

/// POSTs `body` to `path` with `key` as the idempotency key (none when
/// `None`); the status and body.
async fn post(stack: &Stack, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = stack.http.post(format!("{}{path}", stack.base)).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    call(request).await.expect("an answer")
}

async fn hold_status(stack: &Stack, id: &str) -> String {
    let get = stack.http.get(format!("{}/v1/holds/{id}", stack.base));
    let (status, hold) = call(get).await.expect("an answer");
    assert_eq!(status, 200, "{hold}");
    hold["status"].as_str().expect("a status").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn holds_and_refunds_through_the_gateway() {
    let stack = Stack::start(1).await;
    let wallets = stack.funded_wallets(2, "100.00").await;
    let (payer, payee) = (&wallets[0], &wallets[1]);

    let hold = |amount: &str, expires_in_s: u64| {
        json!({"wallet_id": payer, "amount": amount, "expires_in_s": expires_in_s,
               "receiver_wallet_id": payee})
    };
    let (status, captured) = post(&stack, "/v1/holds", Some("hold-1"), hold("30.00", 600)).await;
    assert_eq!(
        (status, captured["status"].as_str()),
        (202, Some("HELD")),
        "{captured}"
    );
    let (_, voided) = post(&stack, "/v1/holds", Some("hold-2"), hold("20.00", 600)).await;
    let (_, expiring) = post(&stack, "/v1/holds", Some("hold-3"), hold("10.00", 2)).await;
    let (status, short) = post(&stack, "/v1/holds", Some("hold-4"), hold("41.00", 600)).await;
    assert_eq!(
        (status, short["error"]["code"].as_str()),
        (422, Some("insufficient_funds"))
    );
    assert_eq!(
        stack.balances(payer).await,
        Some(("40.00".into(), "60.00".into()))
    );

    let id = |v: &Value| v["id"].as_str().expect("an id").to_owned();
    let (captured, voided, expiring) = (id(&captured), id(&voided), id(&expiring));
    let capture_path = format!("/v1/holds/{captured}/capture");
    let (status, capture) = post(
        &stack,
        &capture_path,
        Some("capture-1"),
        json!({"amount": "25.00"}),
    )
    .await;
    assert_eq!(status, 202, "{capture}");
    assert_eq!(capture["hold_id"].as_str(), Some(captured.as_str()));
    let (status, again) = post(
        &stack,
        &capture_path,
        Some("capture-1"),
        json!({"amount": "25.00"}),
    )
    .await;
    assert_eq!(
        (status, again["id"].clone()),
        (202, capture["id"].clone()),
        "a replay"
    );
    let (status, second) = post(&stack, &capture_path, Some("capture-2"), json!({})).await;
    assert_eq!(
        (status, second["error"]["code"].as_str()),
        (409, Some("hold_captured"))
    );

    let void_path = format!("/v1/holds/{voided}/void");
    let (status, void) = post(&stack, &void_path, None, json!({})).await;
    assert_eq!(
        (status, void["status"].as_str()),
        (200, Some("VOIDED")),
        "{void}"
    );
    let (status, late) = post(
        &stack,
        &format!("/v1/holds/{voided}/capture"),
        Some("capture-3"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, late["error"]["code"].as_str()),
        (409, Some("hold_voided"))
    );

    // The sweeper expires the last hold once its two seconds are up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hold_status(&stack, &expiring).await != "EXPIRED" {
        assert!(Instant::now() < deadline, "hold {expiring} never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(hold_status(&stack, &captured).await, "CAPTURED");

    let capture = capture["id"].as_str().unwrap().to_owned();
    let statuses = stack
        .wait_terminal(std::slice::from_ref(&capture), Duration::from_secs(60))
        .await;
    assert_eq!(statuses.get("SUCCEEDED"), Some(&1), "{statuses:?}");
    stack
        .assert_consistent(
            std::slice::from_ref(&capture),
            &wallets,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        stack.balances(payer).await,
        Some(("75.00".into(), "0.00".into()))
    );
    assert_eq!(
        stack.balances(payee).await,
        Some(("125.00".into(), "0.00".into()))
    );

    // Part of the capture goes back, through the gateway; no more than it
    // moved.
    let refunds = format!("/v1/transfers/{capture}/refunds");
    let (status, refund) = post(
        &stack,
        &refunds,
        Some("refund-1"),
        json!({"amount": "10.00"}),
    )
    .await;
    assert_eq!(
        (status, refund["refund_of"].as_str()),
        (202, Some(capture.as_str())),
        "{refund}"
    );
    let (status, over) = post(
        &stack,
        &refunds,
        Some("refund-2"),
        json!({"amount": "15.01"}),
    )
    .await;
    assert_eq!(
        (status, over["error"]["code"].as_str()),
        (422, Some("exceeds_refundable"))
    );
    let refund = refund["id"].as_str().unwrap().to_owned();
    let report = stack
        .assert_consistent(
            &[capture.clone(), refund],
            &wallets,
            Duration::from_secs(60),
        )
        .await;
    let listed = call(stack.http.get(format!("{}{refunds}", stack.base))).await;
    assert_eq!(
        listed.map(|(s, b)| (s, b["refunds"].as_array().map(Vec::len))),
        Some((200, Some(1)))
    );
    assert_eq!(
        stack.balances(payer).await,
        Some(("85.00".into(), "0.00".into()))
    );
    println!("{report}");

    // A reference is taken once in its wallet; metadata comes back.
    let tagged = json!({"sender_wallet_id": payee, "receiver_wallet_id": payer,
        "amount": "1.00", "reference": "invoice-7", "metadata": {"invoice": {"n": 7}}});
    let (status, paid) = post(&stack, "/v1/transfers", Some("ref-1"), tagged.clone()).await;
    assert_eq!(status, 202, "{paid}");
    assert_eq!(
        (&paid["reference"], &paid["metadata"]["invoice"]["n"]),
        (&json!("invoice-7"), &json!(7))
    );
    let (status, taken) = post(&stack, "/v1/transfers", Some("ref-2"), tagged).await;
    assert_eq!(
        (
            status,
            &taken["error"]["code"],
            &taken["error"]["transfer_id"]
        ),
        (409, &json!("reference_taken"), &paid["id"])
    );
    let paid = id(&paid);

    // The payer's history, two at a time, newest first.
    let get = |path: String| call(stack.http.get(format!("{}{path}", stack.base)));
    let mut path = format!("/v1/wallets/{payer}/transfers?limit=2");
    let mut history: Vec<Value> = Vec::new();
    loop {
        let (status, page) = get(path.clone()).await.expect("an answer");
        assert_eq!(status, 200, "{page}");
        history.extend(page["transfers"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/wallets/{payer}/transfers?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let ids: Vec<String> = history.iter().map(id).collect();
    for wanted in [&captured, &voided, &expiring, &capture, &paid] {
        assert!(ids.contains(wanted), "{wanted} not in the history {ids:?}");
    }
    let times: Vec<&str> = history
        .iter()
        .map(|t| t["created_at"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no transfer twice: {ids:?}");
    let expired = format!("/v1/transfers?wallet_id={payer}&kind=hold&status=EXPIRED");
    let (status, page) = get(expired).await.expect("an answer");
    assert_eq!(
        (
            status,
            page["transfers"]
                .as_array()
                .map(|t| t.iter().map(id).collect::<Vec<_>>())
        ),
        (200, Some(vec![expiring.clone()]))
    );
    let (_, page) = get("/v1/transfers?reference=invoice-7".into())
        .await
        .expect("an answer");
    assert_eq!(
        page["transfers"]
            .as_array()
            .map(|t| t.iter().map(id).collect::<Vec<_>>()),
        Some(vec![paid])
    );
    stack.stop();
}
