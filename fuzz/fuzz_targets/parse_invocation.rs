//! Any bytes: if they are JSON, parsing them as an invocation returns a request or a typed error, and never panics.
//! What it returns is checked the way the handler relies on it.
#![no_main]

use spot_cleanup_input as input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match input::parse_invocation(&value) {
        Ok(input::Invocation::Direct(request)) => {
            assert!(input::InstanceId::parse(request.instance_id.as_str()).is_ok());
        }
        Ok(input::Invocation::Batch(records) | input::Invocation::Notifications(records)) => {
            assert!(!records.is_empty());
            for record in records {
                if let Err(error) = record.message {
                    assert!(error.to_string().len() < 1024, "error messages stay short");
                }
            }
        }
        Ok(input::Invocation::Ignored { reason }) => assert!(!reason.is_empty() && reason.len() < 1024),
        Ok(_) => {}
        Err(error) => assert!(error.to_string().len() < 1024, "error messages stay short"),
    }
});
