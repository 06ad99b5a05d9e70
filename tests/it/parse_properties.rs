//! Adversarial input for the parser: any byte string, any JSON value, and sample events with any field replaced by
//! anything either parse into a valid invocation or are rejected with a short typed error. Nothing panics. The fuzz
//! target's seed corpus (fuzz/corpus/) is replayed here too, each seed against its recorded outcome
//! (fuzz/corpus/parse_invocation.outcomes), so CI covers it without a nightly toolchain.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use proptest::prelude::*;
use serde_json::Value;
use spot_cleanup::input::{Action, InputError, InstanceId, Invocation, MAX_DEPTH, Message, Request, parse_invocation};

/// What a caller may rely on after parsing.
fn check(value: &Value) {
    match parse_invocation(value) {
        Ok(Invocation::Direct(request)) => {
            assert_eq!(
                InstanceId::parse(request.instance_id.as_str()),
                Ok(request.instance_id.clone())
            );
        }
        Ok(Invocation::Batch(records) | Invocation::Notifications(records)) => {
            assert!(!records.is_empty());
            for record in records {
                match record.message {
                    Err(error) => assert!(error.to_string().len() < 1024),
                    Ok(Message::Requests(requests)) => assert!(!requests.is_empty()),
                    Ok(Message::Skipped(reason)) => assert!(!reason.is_empty()),
                    Ok(Message::Ignored(reason)) => assert!(!reason.is_empty()),
                }
            }
        }
        Ok(Invocation::Ignored { reason }) => assert!(!reason.is_empty()),
        Ok(Invocation::Several(requests)) => {
            assert!(requests.len() > 1, "one instance is a Direct invocation");
            for request in requests {
                assert!(InstanceId::parse(request.instance_id.as_str()).is_ok());
            }
        }
        Ok(Invocation::Skipped { reason }) => assert!(!reason.is_empty()),
        Ok(Invocation::Restore(restore)) => {
            assert!(InstanceId::parse(restore.instance_id.as_str()).is_ok());
        }
        Ok(Invocation::RefreshIndex { .. } | Invocation::IndexUpdate(_)) => {}
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty() && message.len() < 1024, "{message:.200}");
        }
    }
}

fn check_bytes(bytes: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        check(&value);
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        // Values this parser looks for, so the search reaches past the first check.
        prop_oneof![
            Just("i-0123456789abcdef0"),
            Just("aws.ec2"),
            Just("EC2 Spot Instance Interruption Warning"),
            Just("EC2 Instance State-change Notification"),
            Just("restore"),
            Just("running"),
            Just("terminate"),
            Just("2026-11-21T10:00:00Z"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    let keys = prop_oneof![
        Just("instance_id".to_owned()),
        Just("instance-id".to_owned()),
        Just("action".to_owned()),
        Just("source".to_owned()),
        Just("detail-type".to_owned()),
        Just("detail".to_owned()),
        Just("Records".to_owned()),
        Just("body".to_owned()),
        Just("messageId".to_owned()),
        Just("state".to_owned()),
        Just("time".to_owned()),
        Just("identity_document".to_owned()),
        Just("identity_signature".to_owned()),
        "[a-z_-]{1,12}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn samples() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
    let mut samples: Vec<Value> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect();
    samples.sort_by_key(|v| v.to_string());
    samples
}

/// Replace the value at the `pick`-th position of a depth-first walk with `with`.
fn replace_nth(value: &mut Value, pick: &mut usize, with: &Value) -> bool {
    if *pick == 0 {
        *value = with.clone();
        return true;
    }
    *pick -= 1;
    match value {
        Value::Object(map) => map.values_mut().any(|v| replace_nth(v, pick, with)),
        Value::Array(items) => items.iter_mut().any(|v| replace_nth(v, pick, with)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_parse_or_are_rejected(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_bytes(&bytes);
    }

    #[test]
    fn any_json_value_parses_or_is_rejected(value in any_json()) {
        check(&value);
    }

    #[test]
    fn a_sample_with_any_field_replaced_parses_or_is_rejected(
        which in any::<prop::sample::Index>(),
        mut pick in 0usize..40,
        with in any_json(),
    ) {
        let samples = samples();
        let mut sample = samples[which.index(samples.len())].clone();
        replace_nth(&mut sample, &mut pick, &with);
        check(&sample);
    }
}

/// A time anywhere in chrono's range, its extremes and the instants around now most often.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    let now = Utc::now().timestamp();
    let (first, last) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        Just(DateTime::<Utc>::UNIX_EPOCH),
        (now - 86_400..now + 86_400).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        (first..=last).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        (-1_000_000_000_000i64..1_000_000_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
    ]
}

/// The ways a time is written: RFC 3339 (with years past 9999 signed, as chrono writes them), whole seconds, and for
/// AWS Health the RFC 2822 form where a four-digit year allows it.
fn written(time: DateTime<Utc>, form: usize) -> String {
    match form % 3 {
        0 => time.to_rfc3339(),
        1 => time.to_rfc3339_opts(SecondsFormat::Secs, true),
        _ if (0..=9999).contains(&time.year()) => time.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        _ => time.to_rfc3339(),
    }
}

/// Every sample that carries a time, with the paths of its time fields.
const TIMED: [(&str, &[&[&str]]); 14] = [
    ("node-agent.json", &[&["time"]]),
    ("spot-interruption-terminate.json", &[&["time"]]),
    ("spot-interruption-stop.json", &[&["time"]]),
    ("spot-interruption-hibernate.json", &[&["time"]]),
    ("rebalance-recommendation.json", &[&["time"]]),
    ("state-change-stopping.json", &[&["time"]]),
    ("state-change-terminated.json", &[&["time"]]),
    ("ec2-state-change-running.json", &[&["time"]]),
    ("health-scheduled-change.json", &[&["time"], &["detail", "startTime"]]),
    ("asg-terminate-lifecycle.json", &[&["time"]]),
    ("asg-terminate-lifecycle-direct.json", &[&["Time"]]),
    (
        "cloudtrail-register-targets.json",
        &[&["time"], &["detail", "eventTime"]],
    ),
    (
        "cloudtrail-deregister-targets.json",
        &[&["time"], &["detail", "eventTime"]],
    ),
    ("scheduled-refresh.json", &[&["time"]]),
];

fn sample(file: &str) -> Value {
    let path = format!("{}/events/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The shape a message travels in: as itself, in an SQS record, in an SNS delivery, or in an SNS envelope inside an
/// SQS record.
fn carried(message: Value, carrier: usize) -> Value {
    let sns_record = |message: &Value| {
        serde_json::json!({"EventSource": "aws:sns", "Sns": {
            "Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
            "Message": message.to_string(), "Timestamp": "2026-11-21T10:00:00Z"}})
    };
    match carrier % 4 {
        0 => message,
        1 => serde_json::json!({"Records": [{"messageId": "m-1", "body": message.to_string()}]}),
        2 => serde_json::json!({"Records": [sns_record(&message)]}),
        _ => {
            let envelope = serde_json::json!({"Type": "Notification", "MessageId": "e-1",
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:t", "Message": message.to_string(),
                "Timestamp": "2026-11-21T10:00:00Z"});
            serde_json::json!({"Records": [{"messageId": "m-1", "body": envelope.to_string()}]})
        }
    }
}

/// Every request an accepted payload asks for: its times lie where a real notice's can, and what is computed from
/// them (when the instance goes, how old the notice is) is computed without a panic.
fn check_times(value: &Value) {
    check(value);
    let now = Utc::now();
    let requests: Vec<Request> = match parse_invocation(value) {
        Ok(Invocation::Direct(request)) => vec![request],
        Ok(Invocation::Several(requests)) => requests,
        Ok(Invocation::Batch(records) | Invocation::Notifications(records)) => records
            .into_iter()
            .filter_map(|r| match r.message {
                Ok(Message::Requests(requests)) => Some(requests),
                _ => None,
            })
            .flatten()
            .collect(),
        Ok(_) => Vec::new(),
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    // A little slack for the clock between parsing and here.
    let ahead = now + chrono::Duration::minutes(6);
    for request in requests {
        let trigger = &request.trigger;
        if let Some(at) = trigger.event_time {
            assert!(at <= ahead, "an event time {at} ahead of {now} was accepted");
            let _ = (now - at).num_seconds();
        }
        if let Some(at) = trigger.action_time {
            let bound = if trigger.action == Some(Action::ScheduledChange) {
                now + chrono::Duration::days(367)
            } else {
                ahead
            };
            assert!(at <= bound, "an action time {at} ahead of {now} was accepted");
            let _ = (now - at).num_seconds();
        }
        let _ = trigger.terminates_at(now);
        let _ = trigger.terminates_at(DateTime::<Utc>::MAX_UTC);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// chrono's extremes, and any time between, in every time field of every shape, carried every way: accepted
    /// within bounds, or rejected with a typed error. Nothing panics.
    #[test]
    fn any_time_in_any_shape_parses_within_bounds_or_is_rejected(
        which in 0usize..TIMED.len(),
        time in any_time(),
        form in 0usize..3,
        field in 0usize..2,
        carrier in 0usize..4,
    ) {
        let (file, fields) = TIMED[which];
        let mut message = sample(file);
        let path = fields[field % fields.len()];
        let slot = path.iter().fold(&mut message, |v, key| &mut v[*key]);
        *slot = Value::String(written(time, form));
        check_times(&carried(message, carrier));
    }
}

#[test]
fn the_extremes_are_rejected_in_every_shape() {
    for time in [
        "+262142-12-31T23:59:00Z",
        "9999-12-31T23:59:59Z",
        &DateTime::<Utc>::MAX_UTC.to_rfc3339(),
    ] {
        for (file, fields) in TIMED {
            for path in fields {
                let mut message = sample(file);
                let slot = path.iter().fold(&mut message, |v, key| &mut v[*key]);
                *slot = Value::String(time.to_owned());
                let Err(error) = parse_invocation(&message) else {
                    panic!("{file} {path:?} = {time}: accepted")
                };
                assert!(error.to_string().len() < 1024);
                for carrier in 1..4 {
                    check_times(&carried(message.clone(), carrier));
                }
            }
        }
    }
}

/// What parsing `bytes` gave, in one line: the kind of invocation and what it carries, or the error refusing it.
fn outcome(bytes: &[u8]) -> String {
    let value = match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => value,
        Err(error) => return format!("not JSON ({:?})", error.classify()),
    };
    let instances = |requests: &[Request]| {
        let ids: Vec<&str> = requests.iter().map(|r| r.instance_id.as_str()).collect();
        ids.join(",")
    };
    match parse_invocation(&value) {
        Ok(Invocation::Direct(request)) => format!(
            "direct {} from {} ({:?})",
            request.instance_id,
            request.trigger.label(),
            request.trigger.action
        ),
        Ok(Invocation::Several(requests)) => format!("several {}", instances(&requests)),
        Ok(Invocation::Batch(records) | Invocation::Notifications(records)) => {
            let each: Vec<String> = records
                .iter()
                .map(|record| match &record.message {
                    Ok(Message::Requests(requests)) => {
                        format!("{}: requests {}", record.message_id, instances(requests))
                    }
                    Ok(Message::Skipped(reason)) => format!("{}: skipped ({reason})", record.message_id),
                    Ok(Message::Ignored(reason)) => format!("{}: ignored ({reason})", record.message_id),
                    Err(error) => format!("{}: rejected {error:?}", record.message_id),
                })
                .collect();
            let kind = if matches!(parse_invocation(&value), Ok(Invocation::Batch(_))) {
                "batch"
            } else {
                "notifications"
            };
            format!("{kind} [{}]", each.join("; "))
        }
        Ok(Invocation::Ignored { reason }) => format!("ignored ({reason})"),
        Ok(Invocation::Skipped { reason }) => format!("skipped ({reason})"),
        Ok(Invocation::Restore(restore)) => format!("restore {}", restore.instance_id),
        Ok(Invocation::RefreshIndex { event_id }) => format!("refresh index ({event_id:?})"),
        Ok(Invocation::IndexUpdate(update)) => format!("index update {update:?}"),
        Err(error) => format!("rejected {error:?}"),
    }
}

/// Every seed of the fuzz target's corpus parses to what `fuzz/corpus/parse_invocation.outcomes` says, one line per
/// seed (`name<TAB>outcome`), and nothing panics. A new or changed seed fails here until its line is written (the
/// failure prints the whole file as it now is, to review and commit).
#[test]
fn the_fuzz_corpus_parses_to_its_recorded_outcomes() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");
    let mut seeds: Vec<_> = std::fs::read_dir(format!("{root}/parse_invocation"))
        .expect("the seed corpus is committed")
        .map(|entry| entry.unwrap().path())
        .collect();
    seeds.sort();
    let mut actual = String::new();
    for seed in &seeds {
        let bytes = std::fs::read(seed).unwrap();
        check_bytes(&bytes);
        let name = seed.file_name().unwrap().to_string_lossy();
        actual.push_str(&format!("{name}\t{}\n", outcome(&bytes)));
    }
    let expected = std::fs::read_to_string(format!("{root}/parse_invocation.outcomes")).unwrap_or_default();
    assert!(seeds.len() >= 20, "{} seeds", seeds.len());
    for (line, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
        assert_eq!(
            want,
            got,
            "line {} of parse_invocation.outcomes; all of it now:\n{actual}",
            line + 1
        );
    }
    assert_eq!(
        expected.lines().count(),
        actual.lines().count(),
        "all of it now:\n{actual}"
    );
}

/// A value `depth` levels deep, built in memory: serde_json's reader stops at 128 levels, so only this way does such
/// a payload reach the parser whole.
fn deep(depth: usize, level: impl Fn(Value) -> Value) -> Value {
    (0..depth).fold(Value::Null, |inner, _| level(inner))
}

/// Taken apart one level at a time: a `Value`'s own drop recurses once per level, which 100k levels overflow.
fn dismantle(value: Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// 100,000 levels reach the parser and are refused, typed, with no stack overflow: built in memory (as the whole
/// payload, or where the parser looks first: the instance id, the SQS records, an EventBridge event's detail), and as
/// an SQS message's body, which the parser reads itself. As deep as serde_json's reader allows is still parsed.
#[test]
fn deeply_nested_and_huge_payloads_are_rejected() {
    const DEPTH: usize = 100_000;
    // `json!` would serialize an interpolated value, recursively: the deep ones are put in place by hand.
    let with = |mut payload: Value, key: &str, value: Value| {
        payload[key] = value;
        payload
    };
    let array = |inner| Value::Array(vec![inner]);
    let object = |inner| with(serde_json::json!({}), "detail", inner);
    let payloads = [
        deep(DEPTH, array),
        with(serde_json::json!({}), "instance_id", deep(DEPTH, array)),
        with(serde_json::json!({}), "Records", deep(DEPTH, array)),
        with(
            sample("spot-interruption-terminate.json"),
            "detail",
            deep(DEPTH, object),
        ),
    ];
    for payload in payloads {
        assert_eq!(parse_invocation(&payload).err(), Some(InputError::TooDeep(MAX_DEPTH)));
        dismantle(payload);
    }

    let text = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let queued = serde_json::json!({"Records": [{"messageId": "m-1", "body": text}]});
    let Ok(Invocation::Batch(records)) = parse_invocation(&queued) else {
        panic!("an SQS event whose one body is too deep is a batch of one failed record")
    };
    match &records[0].message {
        Err(InputError::Malformed { reason, .. }) => assert!(reason.contains("recursion limit"), "{reason}"),
        other => panic!("a 100k-deep body: {other:?}"),
    }

    // The deepest a payload Lambda delivers can be: read, and parsed past the depth check (an agent payload with a
    // field it does not know).
    let deepest = format!(
        "{{\"instance_id\": \"i-0123456789abcdef0\", \"x\": {}{}}}",
        "[".repeat(MAX_DEPTH - 1),
        "]".repeat(MAX_DEPTH - 1)
    );
    let read: Value = serde_json::from_str(&deepest).expect("serde_json reads 127 levels");
    assert!(matches!(parse_invocation(&read), Err(InputError::Malformed { .. })));
    let deeper = format!("[{deepest}]");
    assert!(
        serde_json::from_str::<Value>(&deeper).is_err(),
        "serde_json reads no more than 127 levels"
    );
    assert_eq!(
        parse_invocation(&deep(MAX_DEPTH + 1, array)).err(),
        Some(InputError::TooDeep(MAX_DEPTH))
    );

    let mut nested = serde_json::json!({"instance_id": "i-0123abcd"});
    // Each level escapes the one inside again, so a few levels are already large.
    for _ in 0..8 {
        nested = serde_json::json!({"Records": [{"messageId": "m", "body": nested.to_string()}]});
    }
    check(&nested);
    let wide: serde_json::Map<String, Value> = (0..10_000).map(|i| (format!("k{i}"), Value::Null)).collect();
    check(&Value::Object(wide));
}
