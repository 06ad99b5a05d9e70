//! Reading variables by their declarations (`settings`): set or not, required, flags, bounded numbers, choices,
//! checked names. Each error names the variable, and what it allows.

use super::ConfigError;
use super::settings::{Choice, Number, Setting, Text};

pub struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Vars<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Vars { get }
    }

    /// The value as given, whitespace and all; None when unset.
    pub fn raw<K>(&self, setting: &Setting<K>) -> Option<String> {
        (self.get)(setting.name)
    }

    /// The trimmed value; None when unset or blank.
    pub fn set<K>(&self, setting: &Setting<K>) -> Option<String> {
        self.raw(setting).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The trimmed value, or the declared default.
    pub fn text(&self, setting: &Setting<Text>) -> Option<String> {
        let default = match setting.kind {
            Text::Or(default) => Some(default.to_owned()),
            _ => None,
        };
        self.set(setting).or(default)
    }

    /// The value as given, or the declared default, through `parse`; `T`'s default when unset or blank and without
    /// a declared default.
    pub fn parsed<T: Default>(
        &self,
        setting: &Setting<Text>,
        parse: impl Fn(&str) -> Result<T, &'static str>,
    ) -> Result<T, ConfigError> {
        let value = self.raw(setting).filter(|v| !v.trim().is_empty());
        match value.or_else(|| self.text(setting)) {
            None => Ok(T::default()),
            Some(v) => parse(&v).map_err(|reason| self.invalid(setting, &v, reason)),
        }
    }

    /// The value as given; the declaration's doc says what to give.
    pub fn required(&self, setting: &Setting<Text>) -> Result<String, ConfigError> {
        let (name, hint) = (setting.name, setting.doc);
        self.raw(setting)
            .filter(|v| !v.trim().is_empty())
            .ok_or(ConfigError::Missing { name, hint })
    }

    /// A long value (a PEM) is quoted back cut short.
    pub fn invalid<K>(&self, setting: &Setting<K>, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            name: setting.name,
            value: value.chars().take(80).collect(),
            reason: reason.into(),
        }
    }

    /// `true`/`1` or `false`/`0` (any case); the declared default when unset.
    pub fn flag(&self, setting: &Setting<bool>) -> Result<bool, ConfigError> {
        self.flag_or(setting, setting.kind)
    }

    /// A flag whose default other settings decide.
    pub fn flag_or<K>(&self, setting: &Setting<K>, default: bool) -> Result<bool, ConfigError> {
        match self.set(setting) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(self.invalid(setting, &v, "expected true or false")),
        }
    }

    /// A whole number within the declared bounds; the declared default when unset.
    pub fn number(&self, setting: &Setting<Number>) -> Result<u64, ConfigError> {
        let Number(default, min, max) = setting.kind;
        match self.set(setting) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(self.invalid(setting, &v, format!("expected a whole number from {min} to {max}"))),
            },
        }
    }

    /// One of the declared words, in any case; the first when unset.
    pub fn choice<T: Copy>(&self, setting: &Setting<Choice<T>>) -> Result<T, ConfigError> {
        let Choice(options) = setting.kind;
        let Some(v) = self.set(setting) else {
            return Ok(options[0].1);
        };
        match options.iter().find(|(word, _)| v.eq_ignore_ascii_case(word)) {
            Some((_, value)) => Ok(*value),
            None => {
                let words: Vec<&str> = options.iter().map(|(word, _)| *word).collect();
                let (last, rest) = words.split_last().unwrap_or((&"", &[]));
                Err(self.invalid(setting, &v, format!("expected {} or {last}", rest.join(", "))))
            }
        }
    }

    /// A name that `valid` accepts; None when unset.
    pub fn checked(
        &self,
        setting: &Setting<Text>,
        valid: fn(&str) -> bool,
        reason: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        match self.set(setting) {
            None => Ok(None),
            Some(v) if valid(&v) => Ok(Some(v)),
            Some(v) => Err(self.invalid(setting, &v, reason)),
        }
    }
}
