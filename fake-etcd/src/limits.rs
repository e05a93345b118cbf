//! etcd's request size limits, as numbers and checks: what the services
//! enforce and what the watch hub splits its large responses by.

use prost::Message;

use crate::error::EtcdError;

/// etcd's `--max-request-bytes` default: the largest raft request.
pub(crate) const MAX_REQUEST_BYTES: usize = 1_572_864;

/// What etcd wraps a request in before raft: a header with a request ID
/// (field tag, length and a 64-bit varint), as `InternalRaftRequest` does.
const RAFT_WRAPPER_BYTES: usize = 13;

/// Fails a write request that etcd would refuse as too large for raft.
pub(crate) fn check_raft_size(request: &impl Message) -> Result<(), EtcdError> {
    let len = request.encoded_len();
    // One byte of field tag, the length varint, the request, the header.
    let wrapped = 1 + prost::length_delimiter_len(len) + len + RAFT_WRAPPER_BYTES;
    if wrapped > MAX_REQUEST_BYTES {
        return Err(EtcdError::RequestTooLarge);
    }
    Ok(())
}

/// The gRPC receive limit: etcd's max request bytes plus 512 KiB.
pub(crate) const MAX_RECV_BYTES: usize = MAX_REQUEST_BYTES + 512 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::etcdserverpb::PutRequest;

    fn put_of(value_len: usize) -> PutRequest {
        PutRequest {
            key: "big".into(),
            value: vec![b'x'; value_len].into(),
            ..Default::default()
        }
    }

    /// Measured on etcd 3.5.1: key "big" with a 1,572,834-byte value is
    /// accepted, with a 1,572,844-byte value refused.
    #[test]
    fn raft_size_limit_matches_etcd() {
        assert!(check_raft_size(&put_of(1_572_834)).is_ok());
        assert_eq!(
            check_raft_size(&put_of(1_572_844)),
            Err(EtcdError::RequestTooLarge)
        );
    }
}
