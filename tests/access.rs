//! Who may do what, through the real binary: two tills, a manager and a technician. A
//! till sees and moves only its registers' payments (others' are `404`), its event
//! stream carries only its registers' events, only a manager refunds by transaction id
//! alone, and a technician moves no money.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::{Daemon, Install, MANAGER_TOKEN, TECHNICIAN_TOKEN, TILL_TOKEN};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");
const TILL_2_TOKEN: &str = "test-till-2-token-0123456789abcdef";

struct Shop {
    smartum: SmartumSandbox,
    daemon: Daemon,
}

fn shop() -> Shop {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let smartum = SmartumSandbox::start(listen, SandboxOptions::default()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    let till_2 = format!("[[clients]]\nname = \"till-2\"\ntoken = \"{TILL_2_TOKEN}\"\n\n[[registers]]\nid = \"till-2\"\n");
    install.configure(&format!("{}\n{till_2}", smartum.config_section(install.path(), "").unwrap()));
    let daemon = install.start();
    Shop { smartum, daemon }
}

fn id(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

impl Shop {
    /// A paid 30.00 Smartum payment of the till holding `token`.
    fn paid(&self, token: &str) -> Value {
        let (status, payment) =
            self.daemon.post_as(token, "/v1/payments", &json!({"method": "smartum", "amount": 3000, "currency": "EUR"}));
        assert_eq!(status, 201, "{payment}");
        let receipt = self.smartum.create_receipt(3000);
        let (_, paid) = self.daemon.post_as(token, &format!("/v1/payments/{}/scan", id(&payment)), &json!({"code": receipt.jws}));
        assert_eq!(paid["status"], "succeeded", "{paid}");
        paid
    }

    /// The first `count` events `token` receives from the start of the journal.
    fn events(&self, token: &str, count: usize) -> Vec<(String, Value)> {
        let response =
            reqwest::blocking::Client::new().get(format!("{}/v1/events?after=0", self.daemon.base_url)).bearer_auth(token).send().unwrap();
        let mut lines = BufReader::new(response).lines();
        let mut events = Vec::new();
        let mut kind = String::new();
        while events.len() < count {
            let line = lines.next().expect("the stream goes on").unwrap();
            if let Some(name) = line.strip_prefix("event: ") {
                kind = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                events.push((kind.clone(), serde_json::from_str(data).unwrap()));
            }
        }
        events
    }
}

#[test]
fn a_till_sees_and_moves_only_its_own_registers_payments() {
    let shop = shop();
    let daemon = &shop.daemon;
    let mine = shop.paid(TILL_2_TOKEN);
    let theirs = shop.paid(TILL_TOKEN);
    let (_, their_refund) = daemon.post("/v1/refunds", &json!({"payment": id(&theirs), "amount": 100}));
    assert_eq!(their_refund["status"], "succeeded", "{their_refund}");
    let (_, open) = daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 500, "currency": "EUR"}));

    let other = id(&theirs);
    let not_found = [
        daemon.get_json_as(TILL_2_TOKEN, &format!("/v1/payments/{other}")),
        daemon.get_json_as(TILL_2_TOKEN, &format!("/v1/payments/{other}?wait=1&version=99")),
        daemon.get_json_as(TILL_2_TOKEN, &format!("/v1/refunds/{}", id(&their_refund))),
        daemon.post_as(TILL_2_TOKEN, &format!("/v1/payments/{}/scan", id(&open)), &json!({"code": "x"})),
        daemon.post_as(TILL_2_TOKEN, &format!("/v1/payments/{}/manual", id(&open)), &json!({"amount": 500})),
        daemon.post_as(TILL_2_TOKEN, &format!("/v1/payments/{}/cancel", id(&open)), &json!({})),
        daemon.post_as(TILL_2_TOKEN, "/v1/refunds", &json!({"payment": other})),
        daemon.post_as(TILL_2_TOKEN, "/v1/refunds", &json!({"payment": other, "include_splits": true})),
        daemon.post_as(
            TILL_2_TOKEN,
            "/v1/refunds",
            &json!({"transaction_id": theirs["transaction_id"], "method": "smartum", "amount": 100}),
        ),
    ];
    for (status, answer) in &not_found {
        assert_eq!((*status, answer["error"]["code"].as_str()), (404, Some("not_found")), "{answer}");
        assert!(!answer.to_string().contains("till-1"), "nothing about the other till: {answer}");
    }
    let (status, split) =
        daemon.post_as(TILL_2_TOKEN, "/v1/payments", &json!({"method": "smartum", "amount": 100, "currency": "EUR", "split_of": other}));
    assert_eq!((status, split["error"]["code"].as_str()), (404, Some("split_parent_not_found")), "{split}");
    let (status, foreign) =
        daemon.post_as(TILL_2_TOKEN, "/v1/payments", &json!({"method": "smartum", "amount": 100, "currency": "EUR", "register": "till-1"}));
    assert_eq!(
        (status, foreign["error"]["code"].as_str(), foreign["error"]["field"].as_str()),
        (403, Some("register_not_allowed"), Some("register"))
    );

    let (_, listed) = daemon.get_json_as(TILL_2_TOKEN, "/v1/payments?limit=100");
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, [id(&mine)], "only its own payments");
    assert_eq!(daemon.get_json_as(TILL_2_TOKEN, "/v1/payments?register=till-1").1["data"], json!([]));
    assert_eq!(daemon.get_json_as(TILL_2_TOKEN, "/v1/refunds").1["data"], json!([]));
    let (_, all) = daemon.get_json_as(MANAGER_TOKEN, "/v1/payments?limit=100");
    assert_eq!(all["data"].as_array().unwrap().len(), 3, "a manager sees every register");
    assert_eq!(daemon.get_json_as(MANAGER_TOKEN, "/v1/refunds").1["data"][0]["id"], their_refund["id"]);

    // Events: till-2's stream starts with its own payment; the manager's with till-1's.
    let (_, first) = &shop.events(TILL_2_TOKEN, 1)[0];
    assert_eq!((first["id"].as_str(), first["register"].as_str()), (Some(id(&mine)), Some("till-2")), "{first}");
    let till_2_events = shop.events(TILL_2_TOKEN, 3);
    assert!(till_2_events.iter().all(|(_, data)| data["register"] == "till-2"), "{till_2_events:?}");
    let (kind, first) = &shop.events(MANAGER_TOKEN, 1)[0];
    assert_eq!((kind.as_str(), first["register"].as_str()), ("payment.updated", Some("till-2")));
    let manager_events = shop.events(MANAGER_TOKEN, 8);
    assert!(manager_events.iter().any(|(_, data)| data["register"] == "till-1"), "the manager hears every register");
}

#[test]
fn refunds_by_transaction_alone_are_for_managers_and_fields_must_agree() {
    let shop = shop();
    let daemon = &shop.daemon;
    let elsewhere = shop.smartum.create_receipt(2000); // paid in the app, never scanned here
    let bare = json!({"method": "smartum", "transaction_id": elsewhere.transaction_id, "amount": 2000});
    let (status, refused) = daemon.post("/v1/refunds", &bare);
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden_role")), "{refused}");
    let (status, refund) = daemon.post_as(MANAGER_TOKEN, "/v1/refunds", &bare);
    assert_eq!((status, refund["status"].as_str()), (201, Some("succeeded")), "{refund}");

    let paid = shop.paid(TILL_TOKEN);
    let (status, wrong_tx) = daemon.post("/v1/refunds", &json!({"payment": id(&paid), "transaction_id": elsewhere.transaction_id}));
    assert_eq!((status, wrong_tx["error"]["field"].as_str()), (422, Some("transaction_id")), "{wrong_tx}");
    let (status, wrong_method) = daemon.post("/v1/refunds", &json!({"payment": id(&paid), "method": "card"}));
    assert_eq!((status, wrong_method["error"]["field"].as_str()), (422, Some("method")), "{wrong_method}");
    let (status, agreeing) = daemon
        .post("/v1/refunds", &json!({"payment": id(&paid), "method": "smartum", "transaction_id": paid["transaction_id"], "amount": 100}));
    assert_eq!((status, agreeing["status"].as_str()), (201, Some("succeeded")), "{agreeing}");
    assert_eq!(shop.smartum.transaction(elsewhere.transaction_id.as_str()).unwrap().refunded_amount, 2000, "refunded once, by the manager");
}

#[test]
fn a_technician_reads_the_shop_but_moves_no_money() {
    let shop = shop();
    let daemon = &shop.daemon;
    let paid = shop.paid(TILL_TOKEN);
    for path in ["/v1/status", "/v1/methods", "/v1/scanners", "/v1/payments", "/v1/refunds"] {
        assert_eq!(daemon.get_json_as(TECHNICIAN_TOKEN, path).0, 200, "{path}");
    }
    assert_eq!(daemon.get_json_as(TECHNICIAN_TOKEN, &format!("/v1/payments/{}", id(&paid))).0, 200);
    let moves = [
        daemon.post_as(
            TECHNICIAN_TOKEN,
            "/v1/payments",
            &json!({"method": "smartum", "amount": 100, "currency": "EUR", "register": "till-1"}),
        ),
        daemon.post_as(TECHNICIAN_TOKEN, "/v1/refunds", &json!({"payment": id(&paid)})),
        daemon.post_as(TECHNICIAN_TOKEN, &format!("/v1/payments/{}/cancel", id(&paid)), &json!({})),
    ];
    for (status, answer) in moves {
        assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("forbidden_role")), "{answer}");
    }
    assert_eq!(daemon.get_json_as(TECHNICIAN_TOKEN, "/readyz").1["checks"]["store"], true, "the details are the technician's");
}
