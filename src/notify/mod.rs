//! Everything the function sends to SNS goes through one `Publisher`: cleanup summaries (`summary`), refusals and
//! restores (`alert`), each rendered as `NOTIFY_FORMAT` asks (`render`).

mod alert;
pub mod render;
mod summary;

use aws_sdk_sns::types::MessageAttributeValue;

use crate::aws::CallError;
pub use render::NotifyFormat;
pub use summary::subject;

/// SNS refuses longer subjects.
const SUBJECT_MAX: usize = 100;

/// The topic every message goes to, and the form summaries take there. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Publisher {
    sns: aws_sdk_sns::Client,
    topic_arn: String,
    format: NotifyFormat,
}

impl Publisher {
    pub fn new(sns: aws_sdk_sns::Client, topic_arn: String, format: NotifyFormat) -> Self {
        Publisher { sns, topic_arn, format }
    }

    /// One SNS message: the subject made safe for SNS (`clip_subject`), and each attribute as a `String` attribute that a
    /// subscription filter policy can match. Returns the message id.
    pub async fn send(&self, subject: &str, message: String, attributes: &[(&str, &str)]) -> Result<String, CallError> {
        let mut request = self
            .sns
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(clip_subject(subject))
            .message(message);
        for (name, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*value)
                .build()
                .expect("data type is set");
            request = request.message_attributes(*name, value);
        }
        let output = request.send().await.map_err(|e| CallError::new("Publish", &e))?;
        Ok(output.message_id().unwrap_or_default().to_owned())
    }
}

/// SNS takes subjects of at most 100 printable ASCII characters: anything else becomes `?`, and the rest is cut.
fn clip_subject(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' })
        .take(SUBJECT_MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_printable_ascii_and_at_most_100_characters() {
        assert_eq!(clip_subject("node ünter\tlast"), "node ?nter?last");
        let long = format!("spot-cleanup: {}", "x".repeat(200));
        let clipped = clip_subject(&long);
        assert_eq!(clipped.len(), SUBJECT_MAX);
        assert!(long.starts_with(&clipped));
    }
}
