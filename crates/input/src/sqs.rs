//! An SQS batch, opened: each record's body is one message of any other format, returned unparsed with the record's
//! message id. `dispatch` parses each on its own, so that one bad record fails alone and the batch answers with
//! exactly the records that failed.

use aws_lambda_events::sqs::SqsEvent;
use serde::Deserialize;
use serde_json::Value;

use crate::carrier::{Carried, Carrier};
use crate::error::InputError;
use crate::quoted::Quoted;

/// Every record's message id and body; a record without a message id fails the batch, since nothing could name it.
pub(crate) fn records(payload: &Value) -> Result<Vec<Carried>, InputError> {
    let event = SqsEvent::deserialize(payload).map_err(|e| InputError::malformed("SQS event", e))?;
    if event.records.is_empty() {
        return Err(InputError::EmptyBatch);
    }
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let message_id = record.message_id.ok_or(InputError::MissingMessageId { index })?;
            let body = match record.body {
                None => Err(InputError::MissingBody {
                    message_id: Quoted::new(&message_id),
                }),
                Some(body) => {
                    serde_json::from_str::<Value>(&body).map_err(|e| InputError::malformed("SQS message body", e))
                }
            };
            Ok(Carried {
                carrier: Carrier::Sqs(message_id.clone()),
                message_id,
                body,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Invocation, Message, parse_invocation};
    use serde_json::json;

    #[test]
    fn records_come_back_unparsed_with_their_carrier() {
        let payload = json!({"Records": [
            {"messageId": "m1", "body": "{\"anything\": 1}"},
            {"messageId": "m2"},
        ]});
        let carried = records(&payload).unwrap();
        assert_eq!(carried[0].message_id, "m1");
        assert_eq!(
            carried[0].body,
            Ok(json!({"anything": 1})),
            "a transport does not parse what it carries"
        );
        assert_eq!(carried[0].carrier, Carrier::Sqs("m1".into()));
        assert!(matches!(carried[1].body, Err(InputError::MissingBody { .. })));
        let no_id = json!({"Records": [{"body": "{}"}]});
        assert_eq!(records(&no_id).unwrap_err(), InputError::MissingMessageId { index: 0 });
    }

    #[test]
    fn sqs_batch_keeps_each_record_apart() {
        let payload = json!({"Records": [
            {"messageId": "m1", "body": "{\"instance_id\": \"i-0123abcd\"}"},
            {"messageId": "m2", "body": "not json"},
            {"messageId": "m3", "body": "{\"Records\": []}"}
        ]});
        let Invocation::Batch(records) = parse_invocation(&payload).unwrap() else {
            panic!("expected a batch")
        };
        assert_eq!(records.len(), 3);
        let Ok(Message::Requests(first)) = &records[0].message else {
            panic!("{:?}", records[0].message)
        };
        assert_eq!(first[0].trigger.sqs_message_id.as_deref(), Some("m1"));
        assert!(matches!(records[1].message, Err(InputError::Malformed { .. })));
        assert_eq!(records[2].message, Err(InputError::NestedBatch));
    }
}
