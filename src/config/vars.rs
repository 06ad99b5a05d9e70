//! Reading variables: set or not, required, flags, bounded numbers, checked names. Each error names the variable.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::ConfigError;

pub struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Vars<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Vars { get }
    }

    /// The value as given, whitespace and all; None when unset.
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.get)(name)
    }

    /// The trimmed value; None when unset or blank.
    pub fn set(&self, name: &str) -> Option<String> {
        self.raw(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str, hint: &'static str) -> Result<String, ConfigError> {
        self.raw(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or(ConfigError::Missing { name, hint })
    }

    pub fn invalid(&self, name: &'static str, value: &str, reason: &'static str) -> ConfigError {
        ConfigError::Invalid {
            name,
            value: value.to_owned(),
            reason,
        }
    }

    /// `true`/`1` or `false`/`0` (any case); `default` when unset.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.set(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(self.invalid(name, &v, "expected true or false")),
        }
    }

    /// A whole number from 1 to 40; `default` when unset.
    pub fn bounded(&self, name: &'static str, default: usize) -> Result<usize, ConfigError> {
        match self.set(name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=40).contains(&n) => Ok(n),
                _ => Err(self.invalid(name, &v, "expected a whole number from 1 to 40")),
            },
        }
    }

    /// A whole number in `range`; `default` when unset.
    pub fn count(
        &self,
        name: &'static str,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        match self.set(name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(self.invalid(name, &v, "expected a whole number in the allowed range (see the docs)")),
            },
        }
    }

    /// Whole seconds in `range`; `default` when unset.
    pub fn seconds(
        &self,
        name: &'static str,
        default: Duration,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        match self.set(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(Duration::from_secs(n)),
                _ => Err(self.invalid(name, &v, "expected whole seconds in the allowed range (see the docs)")),
            },
        }
    }

    /// A name that `valid` accepts; None when unset.
    pub fn checked(
        &self,
        name: &'static str,
        valid: fn(&str) -> bool,
        reason: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        match self.set(name) {
            None => Ok(None),
            Some(v) if valid(&v) => Ok(Some(v)),
            Some(v) => Err(self.invalid(name, &v, reason)),
        }
    }
}
