//! Splitting an absolute `http(s)://` URL into what `wasi:http` wants: scheme,
//! authority and path-with-query. Credentials in the URL become Basic auth.
//! Deliberately small: no normalisation, no IDNA, no percent-decoding.

/// The parts of a request URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestUrl {
    /// Lower-case scheme, e.g. `https`.
    pub scheme: String,
    /// `host[:port]`, without credentials.
    pub authority: String,
    /// `/path?query`, at least `/`; the fragment dropped.
    pub path_with_query: String,
    /// `user:password` given in the URL.
    pub credentials: Option<(String, String)>,
}

/// Parses `url`; the error says what is wrong with it.
pub(crate) fn parse(url: &str) -> Result<RequestUrl, String> {
    let url = url.trim();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("URL {url:?} has no scheme (expected http:// or https://)"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err(format!("URL {url:?} has an invalid scheme"));
    }
    let rest = rest.split('#').next().unwrap_or("");
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let (credentials, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (Some((user.to_string(), password.to_string())), host)
        }
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(format!("URL {url:?} has no host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("URL {url:?} has an invalid host"));
    }
    let path_with_query = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    if path_with_query
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "URL {url:?} has whitespace in its path (percent-encode it)"
        ));
    }
    Ok(RequestUrl {
        scheme,
        authority: host.to_string(),
        path_with_query,
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_wasi_parts() {
        let u = parse("HTTPS://es.example:9200/vigil/_bulk?refresh=false#frag").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.authority, "es.example:9200");
        assert_eq!(u.path_with_query, "/vigil/_bulk?refresh=false");
        assert_eq!(u.credentials, None);
        let u = parse("http://203.0.113.7:9").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path_with_query.as_str()),
            ("203.0.113.7:9", "/")
        );
        let u = parse("http://h?x=1").unwrap();
        assert_eq!(u.path_with_query, "/?x=1");
        let u = parse("http://elastic:pw@[::1]:9200/").unwrap();
        assert_eq!(u.authority, "[::1]:9200");
        assert_eq!(u.credentials, Some(("elastic".into(), "pw".into())));
    }

    #[test]
    fn broken_urls_are_refused_with_a_reason() {
        assert!(parse("example.com/x").unwrap_err().contains("no scheme"));
        assert!(parse("http:///x").unwrap_err().contains("no host"));
        assert!(parse("ht tp://x/").unwrap_err().contains("scheme"));
        assert!(parse("http://x/a b").unwrap_err().contains("whitespace"));
    }
}
