//! Maintenance.Status, Cluster.MemberList and the alarm list, as a
//! single-member etcd answers them.

use etcd_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, MemberListRequest, MoveLeaderRequest,
    StatusRequest,
};
use tonic::Code;

use crate::Scenario;

async fn status(s: &Scenario) -> etcd_proto::etcdserverpb::StatusResponse {
    s.maintenance()
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

/// Whether the target is one member; a cluster's members are checked by
/// the `cluster_members` scenarios instead (a request may reach any of
/// them, and only one leads).
fn single_member(s: &Scenario, name: &str) -> bool {
    if s.endpoints().len() <= 1 {
        return true;
    }
    crate::say(&format!(
        "SKIPPED: {name}: the target is a cluster (see the cluster_members tests)"
    ));
    false
}

/// Status reports a 3.5 version, this member as leader, and a full header.
pub async fn status_of_a_single_member(s: &mut Scenario) {
    if !single_member(s, "status_of_a_single_member") {
        return;
    }
    let status = status(s).await;
    assert!(status.version.starts_with("3.5."), "{}", status.version);
    let header = status.header.expect("header");
    assert_eq!(status.leader, header.member_id);
    assert!(header.revision > 0 && header.raft_term > 0 && header.cluster_id != 0);
    assert_eq!(status.raft_term, header.raft_term);
    assert!(status.db_size > 0 && status.db_size_in_use > 0 && status.raft_index > 0);
    assert!(!status.is_learner);
    assert!(status.errors.is_empty(), "{:?}", status.errors);
}

/// MemberList lists one member, with a header that has no revision.
pub async fn member_list(s: &mut Scenario) {
    let list = s
        .cluster
        .member_list(MemberListRequest {
            linearizable: false,
        })
        .await
        .expect("member list")
        .into_inner();
    let header = list.header.expect("header");
    assert_eq!(
        header.revision, 0,
        "etcd's MemberList header has no revision"
    );
    assert!(header.member_id != 0 && header.cluster_id != 0 && header.raft_term != 0);
    let member = list
        .members
        .iter()
        .find(|m| m.id == header.member_id)
        .expect("this member is listed");
    assert!(!member.client_ur_ls.is_empty() && !member.peer_ur_ls.is_empty() && !member.is_learner);
}

/// No alarms are raised on a healthy member (what `endpoint health` checks).
pub async fn no_alarms(s: &mut Scenario) {
    let req = AlarmRequest {
        action: AlarmAction::Get as i32,
        member_id: 0,
        alarm: AlarmType::None as i32,
    };
    let alarms = s
        .maintenance
        .alarm(req)
        .await
        .expect("alarm list")
        .into_inner();
    assert!(alarms.alarms.is_empty());
    assert!(alarms.header.expect("header").revision > 0);
}

/// MoveLeader on a single member: to itself, done at once with an empty
/// answer (no header); to an unknown member or to 0, refused.
pub async fn move_leader_of_a_single_member(s: &mut Scenario) {
    if !single_member(s, "move_leader_of_a_single_member") {
        return;
    }
    let status = status(s).await;
    let moved = s
        .maintenance
        .move_leader(MoveLeaderRequest {
            target_id: status.leader,
        })
        .await
        .expect("move leader to itself")
        .into_inner();
    assert_eq!(moved.header, None, "etcd's MoveLeader answer has no header");
    for target_id in [0, status.leader.wrapping_add(1)] {
        let refused = s
            .maintenance
            .move_leader(MoveLeaderRequest { target_id })
            .await
            .expect_err("no such member");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert_eq!(refused.message(), "etcdserver: bad leader transferee");
    }
}
