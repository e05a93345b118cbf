//! `etcd:///<service>` targets, parsed as Go's resolver parses them.

/// The service (key prefix without its trailing `/`) a gRPC target names,
/// as Go's `etcd:///` resolver reads it: the URL's path (or opaque part)
/// with one leading `/` removed; the authority is ignored.
///
/// Returns `None` for a target whose scheme is not `etcd`.
///
/// # Example
///
/// ```
/// use etcd_grpc_discovery::service_of_target;
///
/// assert_eq!(service_of_target("etcd:///svc/echo").as_deref(), Some("svc/echo"));
/// assert_eq!(service_of_target("etcd:////svc/echo").as_deref(), Some("/svc/echo"));
/// assert_eq!(service_of_target("etcd://auth/foo").as_deref(), Some("foo"));
/// assert_eq!(service_of_target("etcd:foo").as_deref(), Some("foo"));
/// assert_eq!(service_of_target("dns:///foo"), None);
/// ```
pub fn service_of_target(target: &str) -> Option<String> {
    let rest = target.strip_prefix("etcd:")?;
    let path = match rest.strip_prefix("//") {
        // Authority, then path.
        Some(after) => match after.find('/') {
            Some(slash) => &after[slash..],
            None => "",
        },
        // Opaque form: `etcd:foo`.
        None => rest,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    Some(path.strip_prefix('/').unwrap_or(path).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases discovery.md lists, checked with Go's net/url.
    #[test]
    fn parses_as_go_does() {
        let cases = [
            ("etcd:///foo", "foo"),
            ("etcd:///svc/echo", "svc/echo"),
            ("etcd:////svc/echo", "/svc/echo"),
            ("etcd://auth/foo", "foo"),
            ("etcd:foo", "foo"),
            ("etcd:///foo/", "foo/"),
        ];
        for (target, service) in cases {
            assert_eq!(
                service_of_target(target).as_deref(),
                Some(service),
                "{target}"
            );
        }
    }
}
