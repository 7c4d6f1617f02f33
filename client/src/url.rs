//! Broker URLs: `[mqtt|ws][s]://[user][:password]@host[:port][/path]`, aMQTT's scheme.

use std::fmt;

use crate::ClientError;

/// The transport a URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// MQTT over TCP, port 1883 by default.
    Mqtt,
    /// MQTT over TLS, port 8883 by default.
    Mqtts,
    /// MQTT over WebSocket, port 80 by default.
    Ws,
    /// MQTT over WebSocket over TLS, port 443 by default.
    Wss,
}

impl Scheme {
    /// The scheme as written in a URL, e.g. `"mqtts"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed broker URL. `host` is bare (an IPv6 address without its brackets); `username` and
/// `password` are percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The path and query of the WebSocket request (`ws://host:8080/mqtt?x=1` gives
    /// `/mqtt?x=1`), `/` when the URL has none. Ignored by `mqtt://` and `mqtts://` (aMQTT's own
    /// examples write `mqtt://host:1883/`). A fragment is dropped.
    pub path: String,
}

impl Scheme {
    /// Whether the scheme runs TLS under MQTT (or under the WebSocket).
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }

    /// Whether the scheme carries MQTT in WebSocket frames.
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// `url` with the password, if it has one, replaced by `***`: the form that logs and error
/// messages show.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, hostport)) = authority.rsplit_once('@') else { return url.to_string() };
    let Some((user, _password)) = userinfo.split_once(':') else { return url.to_string() };
    format!("{scheme}://{user}:***@{hostport}{}", &rest[authority.len()..])
}

/// Parses a broker URL.
pub fn parse_url(url: &str) -> Result<BrokerUrl, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl { url: redact_password(url), reason: reason.to_string() };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("missing scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" => Scheme::Mqtt,
        "mqtts" => Scheme::Mqtts,
        "ws" => Scheme::Ws,
        "wss" => Scheme::Wss,
        _ => return Err(invalid(&format!("unknown scheme {scheme:?}"))),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let path = rest[authority.len()..].split('#').next().unwrap_or_default();
    let path = match path {
        "" => "/".to_string(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_string(),
    };
    // It goes into an HTTP request line as it is.
    if let Some(c) = path.chars().find(|c| c.is_whitespace() || c.is_control()).filter(|_| scheme.is_websocket()) {
        return Err(invalid(&format!("{c:?} in the path: percent-encode it")));
    }
    // The last '@' ends the credentials: a password may contain a raw '@', a host cannot.
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user = percent_decode(user).map_err(|reason| invalid(&format!("user name: {reason}")))?;
            let password =
                password.map(percent_decode).transpose().map_err(|reason| invalid(&format!("password: {reason}")))?;
            // `mqtt://:secret@host` has a password and no user name: keep them as given.
            (if user.is_empty() && password.is_none() { None } else { Some(user) }, password)
        }
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(|| invalid("unclosed '[' in IPv6 address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(&format!("{host:?} is not an IPv6 address")));
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(|| invalid("junk after ']'"))?)),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(invalid("an IPv6 address must be written in brackets, e.g. [::1]"));
            }
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    let port = match port {
        None | Some("") => scheme.default_port(),
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(invalid(&format!("invalid port {port:?}"))),
        },
    };
    Ok(BrokerUrl { scheme, host: host.to_string(), port, username, password, path })
}

/// Decodes `%XX` escapes; the result must be UTF-8 (MQTT user names are UTF-8 strings, and
/// passwords taken from a URL are text too).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(byte.ok_or_else(|| format!("invalid percent escape at byte {i}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once percent-decoded".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_password("mqtt://alice:s3cr@t@host:1883/x"), "mqtt://alice:***@host:1883/x");
        assert_eq!(redact_password("ws://alice@host/"), "ws://alice@host/");
        assert_eq!(redact_password("mqtts://host"), "mqtts://host");
    }

    use super::*;

    fn parsed(url: &str) -> BrokerUrl {
        parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn default_ports_per_scheme() {
        assert_eq!(parsed("mqtt://localhost").port, 1883);
        assert_eq!(parsed("mqtts://localhost").port, 8883);
        assert_eq!(parsed("ws://localhost").port, 80);
        assert_eq!(parsed("wss://localhost").port, 443);
        assert_eq!(parsed("MQTT://localhost").scheme, Scheme::Mqtt);
    }

    #[test]
    fn full_url() {
        let url = parsed("mqtt://alice:s3cret@broker.example.com:1884/");
        assert_eq!(
            url,
            BrokerUrl {
                scheme: Scheme::Mqtt,
                host: "broker.example.com".into(),
                port: 1884,
                username: Some("alice".into()),
                password: Some("s3cret".into()),
                path: "/".into(),
            }
        );
    }

    #[test]
    fn websocket_paths_are_kept() {
        assert_eq!(parsed("ws://host:8080/mqtt").path, "/mqtt");
        assert_eq!(parsed("wss://u:p@host/a/b?token=x#frag").path, "/a/b?token=x");
        assert_eq!(parsed("ws://host?x=1").path, "/?x=1");
        assert_eq!(parsed("ws://host").path, "/");
        assert_eq!(parsed("ws://[::1]:9001/mqtt").path, "/mqtt");
        assert!(matches!(parse_url("ws://host/a b"), Err(ClientError::InvalidUrl { .. })));
        let error = parse_url("mqtt://u:s3cret@host:99999").unwrap_err().to_string();
        assert!(!error.contains("s3cret") && error.contains("u:***@host"), "{error}");
    }

    #[test]
    fn percent_decoded_credentials() {
        let url = parsed("mqtt://us%40er:p%3Aa%2Fss%25@host");
        assert_eq!(url.username.as_deref(), Some("us@er"));
        assert_eq!(url.password.as_deref(), Some("p:a/ss%"));
        let url = parsed("mqtt://j%C3%BCrgen@host");
        assert_eq!(url.username.as_deref(), Some("jürgen"));
        assert_eq!(url.password, None);
        assert!(matches!(parse_url("mqtt://a%zz@host"), Err(ClientError::InvalidUrl { .. })));
        assert!(matches!(parse_url("mqtt://a%ff@host"), Err(ClientError::InvalidUrl { .. })));
    }

    #[test]
    fn password_without_user_and_empty_password() {
        let url = parsed("mqtt://:pw@host");
        assert_eq!((url.username.as_deref(), url.password.as_deref()), (Some(""), Some("pw")));
        let url = parsed("mqtt://user:@host");
        assert_eq!((url.username.as_deref(), url.password.as_deref()), (Some("user"), Some("")));
    }

    #[test]
    fn ipv6_hosts() {
        let url = parsed("mqtt://[::1]:1884");
        assert_eq!((url.host.as_str(), url.port), ("::1", 1884));
        let url = parsed("ws://u:p@[fe80::1]/mqtt");
        assert_eq!((url.host.as_str(), url.port, url.username.as_deref()), ("fe80::1", 80, Some("u")));
        assert!(matches!(parse_url("mqtt://::1:1883"), Err(ClientError::InvalidUrl { .. })));
        assert!(matches!(parse_url("mqtt://[::1"), Err(ClientError::InvalidUrl { .. })));
        assert!(matches!(parse_url("mqtt://[nope]:1"), Err(ClientError::InvalidUrl { .. })));
    }

    #[test]
    fn invalid_urls() {
        for url in ["localhost:1883", "http://host", "mqtt://", "mqtt://host:0", "mqtt://host:99999", "mqtt://host:x"] {
            assert!(matches!(parse_url(url), Err(ClientError::InvalidUrl { .. })), "{url} must be invalid");
        }
    }
}
