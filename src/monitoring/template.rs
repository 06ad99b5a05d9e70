//! The webhook's JSON body template: `{{name}}` placeholders filled with the notice's fields, each value escaped for
//! a JSON string, so a template is valid JSON before and after rendering.

use std::collections::BTreeMap;

/// The placeholders a template may use.
pub const FIELDS: [&str; 8] = [
    "instance_id",
    "action",
    "trigger",
    "event_id",
    "region",
    "account",
    "terminates_at",
    "notified_at",
];

#[derive(Clone, Debug, PartialEq)]
pub struct Template(String);

#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("unknown placeholder {{{{{0}}}}}; known are {list}", list = FIELDS.join(", "))]
    UnknownField(String),
    #[error("a {{{{ is never closed")]
    Unclosed,
    #[error("the rendered body is not JSON: {0}")]
    NotJson(String),
}

impl Template {
    /// Accept only templates whose placeholders are known and whose rendering is JSON.
    pub fn parse(raw: &str) -> Result<Self, TemplateError> {
        let template = Self(raw.to_owned());
        let sample: BTreeMap<&str, String> = FIELDS.iter().map(|f| (*f, format!("sample \"{f}\""))).collect();
        let rendered = template.render(&sample)?;
        serde_json::from_str::<serde_json::Value>(&rendered).map_err(|e| TemplateError::NotJson(e.to_string()))?;
        Ok(template)
    }

    /// Fill every placeholder; a field without a value becomes an empty string.
    pub fn render(&self, fields: &BTreeMap<&str, String>) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let name = after[..end].trim();
            if !FIELDS.contains(&name) {
                return Err(TemplateError::UnknownField(name.to_owned()));
            }
            let value = fields.get(name).map(String::as_str).unwrap_or("");
            let quoted = serde_json::to_string(value).expect("a string serializes");
            out.push_str(&quoted[1..quoted.len() - 1]);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_escaped_for_json() {
        let t = Template::parse(r#"{"text": "{{instance_id}} is going ({{ action }}), event {{event_id}}"}"#).unwrap();
        let fields = BTreeMap::from([
            ("instance_id", "i-0123abcd".to_owned()),
            ("action", "say \"hi\"\n".to_owned()),
        ]);
        let body = t.render(&fields).unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["text"], "i-0123abcd is going (say \"hi\"\n), event ");
    }

    #[test]
    fn unknown_fields_unclosed_braces_and_non_json_are_refused() {
        assert_eq!(
            Template::parse(r#"{"a": "{{password}}"}"#),
            Err(TemplateError::UnknownField("password".into()))
        );
        assert_eq!(Template::parse(r#"{"a": "{{action"}"#), Err(TemplateError::Unclosed));
        assert!(matches!(Template::parse("{{action}}"), Err(TemplateError::NotJson(_))));
    }
}
