//! Reading variables: `Env` looks a variable up and turns its value into a
//! typed setting, or a [`ConfigError`] naming the variable; the `parse_*`
//! functions are the value syntaxes settings share.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::{ConfigError, CorsOrigins};

/// Origins are checked with the `http` crate's URI parser (the one hyper uses),
/// so the config knows nothing of the web framework.
use http::Uri;

/// Looks variables up and turns their values into typed settings.
pub(super) struct Env<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The variable's value, with an empty value counting as unset.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// Whether the variable is set at all, even to an empty value.
    pub(super) fn is_set(&self, name: &str) -> bool {
        (self.0)(name).is_some()
    }

    pub(super) fn parse_with<T>(
        &self,
        variable: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.get(variable).unwrap_or_else(|| default.to_owned());
        parse(&value).map_err(|reason| ConfigError {
            variable,
            value,
            reason,
        })
    }

    pub(super) fn parse<T: std::str::FromStr>(
        &self,
        variable: &'static str,
        default: &str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        self.parse_with(variable, default, |v| {
            v.parse().map_err(|_| format!("expected {expected}"))
        })
    }

    pub(super) fn positive<T: std::str::FromStr + Default + PartialEq>(
        &self,
        variable: &'static str,
        default: &str,
    ) -> Result<T, ConfigError> {
        self.parse_with(variable, default, |v| match v.parse::<T>() {
            Ok(n) if n != T::default() => Ok(n),
            _ => Err("expected a whole number above 0".into()),
        })
    }

    pub(super) fn millis(
        &self,
        variable: &'static str,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        self.positive::<u64>(variable, default)
            .map(Duration::from_millis)
    }
}

pub(super) fn parse_host(value: &str) -> Result<IpAddr, String> {
    if value.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    value
        .parse()
        .map_err(|_| "expected an IP address such as 127.0.0.1, 0.0.0.0 or ::1".into())
}

pub(super) fn parse_days(value: &str) -> Result<Option<Duration>, String> {
    let days: f64 = value
        .parse()
        .map_err(|_| "expected a number of days, such as 30 or 0.5".to_string())?;
    if !days.is_finite() || !(0.0..=36_500.0).contains(&days) {
        return Err("expected a number of days from 0 to 36500".into());
    }
    Ok((days > 0.0).then(|| Duration::from_secs_f64(days * 86_400.0)))
}

pub(super) fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

pub(super) fn parse_path(value: &str) -> Result<String, String> {
    let valid = value.starts_with('/')
        && value.len() > 1
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c));
    if valid {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err("expected a URL path such as /ws".into())
    }
}

/// Parses `*`, one origin, or a comma-separated list of origins.
pub fn parse_origins(value: &str) -> Result<CorsOrigins, String> {
    if value == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        origins.push(parse_origin(origin)?);
    }
    if origins.is_empty() {
        return Err("expected *, an origin, or a comma-separated list of origins".into());
    }
    Ok(CorsOrigins::List(origins))
}

pub(super) fn parse_origin(origin: &str) -> Result<String, String> {
    let bad = || format!("{origin:?} is not an origin like https://app.example.com");
    let uri: Uri = origin.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/") && !origin.ends_with('/');
    if !scheme_ok || uri.host().is_none() || !bare {
        return Err(bad());
    }
    Ok(origin.to_owned())
}
