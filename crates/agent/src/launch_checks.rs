//! What the agent checks before it starts a process: every name, size, address and port
//! a caller sends, against the naming rules and this node's own record. Anyone who gets
//! a request to the agent's routes must not be able to make a root process listen, read
//! or write anywhere else.

use std::net::{IpAddr, SocketAddr};

use crate::naming::{engine_name, replica_volume};
use crate::node::{DiskSpec, NodeFacts};
use crate::protocol::{
    AgentError, CloneLaunch, EngineLaunch, PORT_RANGE, ReplicaLaunch, RestoreLaunch,
};
use crate::validate::{MAX_SIZE, MAX_URL_LENGTH};
use shorthorn_backup::TargetPolicy;

/// Most replicas an engine may be given (the API's limit on a volume's replica count).
const MAX_ENGINE_REPLICAS: usize = 16;

/// A replica launch is for a replica name of its volume, a valid size, this node's
/// address, ports of the daemon range and one of this node's disks (returned).
pub fn check_replica_launch<'a>(
    launch: &ReplicaLaunch,
    node: &'a NodeFacts,
) -> Result<&'a DiskSpec, AgentError> {
    check_replica_of(&launch.name, &launch.volume)?;
    check_size(&launch.name, launch.size)?;
    check_listen(&launch.name, "listen", launch.listen, node, 2)?;
    find_disk(&launch.name, &launch.disk, node)
}

/// An engine launch is named for its volume, listens on this node's address on daemon
/// ports (control and NBD apart), and names replicas on registered nodes' addresses.
pub fn check_engine_launch(
    launch: &EngineLaunch,
    node: &NodeFacts,
    nodes: &[NodeFacts],
) -> Result<(), AgentError> {
    check_volume(&launch.name, &launch.volume)?;
    if launch.name != engine_name(&launch.volume) {
        return Err(AgentError::Invalid(format!(
            "engine {:?}: an engine of volume {} is named {}",
            launch.name,
            launch.volume,
            engine_name(&launch.volume)
        )));
    }
    check_size(&launch.name, launch.size)?;
    launch
        .tuning
        .validate()
        .map_err(|e| AgentError::Invalid(format!("engine {}: tuning.{e}", launch.name)))?;
    check_listen(&launch.name, "listen", launch.listen, node, 1)?;
    check_listen(&launch.name, "nbd", launch.nbd, node, 1)?;
    if launch.listen == launch.nbd {
        return Err(AgentError::Invalid(format!(
            "engine {}: control and NBD share the address {}",
            launch.name, launch.listen
        )));
    }
    if launch.replicas.len() > MAX_ENGINE_REPLICAS {
        return Err(AgentError::Invalid(format!(
            "engine {}: {} replicas, at most {MAX_ENGINE_REPLICAS}",
            launch.name,
            launch.replicas.len()
        )));
    }
    for replica in &launch.replicas {
        check_replica_address(&format!("engine {}", launch.name), replica, nodes)?;
    }
    Ok(())
}

/// A replica's data address, `tcp://IP:PORT`, on one of `nodes` with a port the agents
/// give replicas; `who` says whose it is in the error.
fn check_replica_address(who: &str, replica: &str, nodes: &[NodeFacts]) -> Result<(), AgentError> {
    let address = parse_tcp_address(replica).ok_or_else(|| {
        AgentError::Invalid(format!(
            "{who}: replica address {replica:?} is not tcp://IP:PORT"
        ))
    })?;
    let on_a_node = nodes.iter().any(|n| {
        n.address
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip == address.ip())
    });
    if !on_a_node || !PORT_RANGE.contains(&address.port()) {
        return Err(AgentError::Invalid(format!(
            "{who}: replica address {replica} is not a node's address with a port in {PORT_RANGE:?}"
        )));
    }
    Ok(())
}

/// A restore is into a replica of its volume on one of this node's disks (returned),
/// from a well-formed backup URL that this node's target policy allows.
pub fn check_restore_launch<'a>(
    launch: &RestoreLaunch,
    node: &'a NodeFacts,
    target_policy: &TargetPolicy,
) -> Result<&'a DiskSpec, AgentError> {
    check_replica_of(&launch.replica, &launch.volume)?;
    launch
        .access
        .validate("access.")
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let bad_url = |why: String| {
        AgentError::Invalid(format!(
            "restore of replica {}: backup URL {:?}: {why}",
            launch.replica, launch.url
        ))
    };
    if launch.url.len() > MAX_URL_LENGTH {
        return Err(bad_url(format!("longer than {MAX_URL_LENGTH} bytes")));
    }
    let parsed = shorthorn_backup::BackupUrl::parse(&launch.url)
        .map_err(|e| bad_url(format!("{:#}", anyhow::Error::from(e))))?;
    target_policy
        .check(&parsed.target)
        .map_err(|e| bad_url(format!("{:#}", anyhow::Error::from(e))))?;
    find_disk(&launch.replica, &launch.disk, node)
}

/// A clone is into a replica of its volume on one of this node's disks (returned), of a
/// valid size, from a replica on one of `nodes` (as an engine's replicas are) and a
/// snapshot by the name rule.
pub fn check_clone_launch<'a>(
    launch: &CloneLaunch,
    node: &'a NodeFacts,
    nodes: &[NodeFacts],
) -> Result<&'a DiskSpec, AgentError> {
    check_replica_of(&launch.replica, &launch.volume)?;
    let invalid = |e: crate::validate::FieldError| AgentError::Invalid(e.to_string());
    crate::validate::size("size", launch.size).map_err(invalid)?;
    crate::validate::name("source_volume", &launch.source_volume).map_err(invalid)?;
    crate::validate::name("snapshot", &launch.snapshot).map_err(invalid)?;
    check_replica_address(
        &format!("clone into replica {}", launch.replica),
        &launch.source,
        nodes,
    )?;
    find_disk(&launch.replica, &launch.disk, node)
}

/// A replica name: `<volume>-r-<8 hex digits>` with the volume by the name rule.
pub fn check_replica_name(name: &str) -> Result<(), AgentError> {
    match replica_volume(name) {
        Some(_) => Ok(()),
        None => Err(AgentError::Invalid(format!(
            "{name:?} is not a replica name (<volume>-r-<8 hex digits>, the volume 1-63 letters, digits, '-', '_', '.')"
        ))),
    }
}

/// The name of a process the agent runs: a replica's, an engine's (`<volume>-e`) or a
/// restore's (`<replica>-restore`).
pub fn check_process_name(name: &str) -> Result<(), AgentError> {
    let known = replica_volume(name).is_some()
        || name
            .strip_suffix("-e")
            .is_some_and(|volume| shorthorn_block::validate_name(volume).is_ok())
        || name
            .strip_suffix(crate::protocol::RESTORE_SUFFIX)
            .is_some_and(|replica| replica_volume(replica).is_some());
    if known {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "{name:?} is not the name of a replica, engine (<volume>-e) or restore (<replica>-restore)"
        )))
    }
}

fn check_replica_of(name: &str, volume: &str) -> Result<(), AgentError> {
    check_replica_name(name)?;
    check_volume(name, volume)?;
    if replica_volume(name) != Some(volume) {
        return Err(AgentError::Invalid(format!(
            "replica {name} is not a replica of volume {volume}"
        )));
    }
    Ok(())
}

fn check_volume(process: &str, volume: &str) -> Result<(), AgentError> {
    shorthorn_block::validate_name(volume)
        .map_err(|e| AgentError::Invalid(format!("{process}: volume: {e}")))
}

fn check_size(process: &str, size: u64) -> Result<(), AgentError> {
    if size == 0 || size % 4096 != 0 || size > MAX_SIZE {
        return Err(AgentError::Invalid(format!(
            "{process}: size {size} must be a positive multiple of 4096, at most {}",
            MAX_SIZE
        )));
    }
    Ok(())
}

/// `address` is this node's, and it and the `ports - 1` ports after it are daemon ports.
fn check_listen(
    process: &str,
    what: &str,
    address: SocketAddr,
    node: &NodeFacts,
    ports: u16,
) -> Result<(), AgentError> {
    let own: Option<IpAddr> = node.address.parse().ok();
    if own != Some(address.ip()) {
        return Err(AgentError::Invalid(format!(
            "{process}: {what} address {address} is not this node's address {}",
            node.address
        )));
    }
    let last = address.port().checked_add(ports - 1);
    if !PORT_RANGE.contains(&address.port()) || !last.is_some_and(|p| PORT_RANGE.contains(&p)) {
        return Err(AgentError::Invalid(format!(
            "{process}: {what} port {} (and the {} after it) must be in {PORT_RANGE:?}",
            address.port(),
            ports - 1
        )));
    }
    Ok(())
}

fn find_disk<'a>(
    process: &str,
    disk: &str,
    node: &'a NodeFacts,
) -> Result<&'a DiskSpec, AgentError> {
    node.disks.iter().find(|d| d.name == disk).ok_or_else(|| {
        AgentError::Invalid(format!(
            "{process}: node {} has no disk {disk:?}",
            node.name
        ))
    })
}

/// `tcp://IP:PORT` (an IPv6 IP bare, as the reconciler writes it).
fn parse_tcp_address(address: &str) -> Option<SocketAddr> {
    let rest = address.strip_prefix("tcp://")?;
    let (ip, port) = rest.rsplit_once(':')?;
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            address: "10.0.0.1".into(),
            disks: vec![DiskSpec {
                name: "default".into(),
                path: "/var/lib/shorthorn/disks/default".into(),
                tags: Vec::new(),
                reserved: 0,
                allow_scheduling: true,
                evict: false,
            }],
        }
    }

    fn replica_launch() -> ReplicaLaunch {
        ReplicaLaunch {
            name: "vol-r-0123abcd".into(),
            volume: "vol".into(),
            size: 1 << 30,
            disk: "default".into(),
            listen: "10.0.0.1:20000".parse().unwrap(),
        }
    }

    fn invalid(result: Result<impl std::fmt::Debug, AgentError>) -> String {
        match result {
            Err(AgentError::Invalid(message)) => message,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_replica_launch_is_checked_field_by_field() {
        let node = node();
        assert_eq!(
            check_replica_launch(&replica_launch(), &node).unwrap().name,
            "default"
        );
        for (change, expected) in [
            (
                Box::new(|l: &mut ReplicaLaunch| l.name = "../../etc".into())
                    as Box<dyn Fn(&mut ReplicaLaunch)>,
                "not a replica name",
            ),
            (
                Box::new(|l| l.name = "other-r-0123abcd".into()),
                "not a replica of volume",
            ),
            (Box::new(|l| l.size = 4095), "size"),
            (
                Box::new(|l| l.listen = "10.0.0.2:20000".parse().unwrap()),
                "not this node's address",
            ),
            (
                Box::new(|l| l.listen = "10.0.0.1:22".parse().unwrap()),
                "must be in",
            ),
            (
                Box::new(|l| l.listen = "10.0.0.1:29999".parse().unwrap()),
                "must be in",
            ),
            (Box::new(|l| l.disk = "elsewhere".into()), "no disk"),
        ] {
            let mut launch = replica_launch();
            change(&mut launch);
            let message = invalid(check_replica_launch(&launch, &node));
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn an_engine_launch_takes_only_node_addresses() {
        let node = node();
        let launch = EngineLaunch {
            name: "vol-e".into(),
            volume: "vol".into(),
            size: 1 << 30,
            listen: "10.0.0.1:20010".parse().unwrap(),
            nbd: "10.0.0.1:20011".parse().unwrap(),
            replicas: vec!["tcp://10.0.0.1:20000".into()],
            salvage: false,
            tuning: crate::node::EngineTuning::default(),
            frontend: true,
        };
        check_engine_launch(&launch, &node, std::slice::from_ref(&node)).unwrap();
        for replica in [
            "tcp://10.9.9.9:20000",
            "tcp://10.0.0.1:80",
            "unix:///tmp/x",
            "--help",
        ] {
            let mut bad = launch.clone();
            bad.replicas = vec![replica.into()];
            invalid(check_engine_launch(
                &bad,
                &node,
                std::slice::from_ref(&node),
            ));
        }
        let mut bad = launch.clone();
        bad.name = "other-e".into();
        invalid(check_engine_launch(
            &bad,
            &node,
            std::slice::from_ref(&node),
        ));
        for tuning in [
            (0, 8, 5),
            (301, 8, 5),
            (8, 1001, 5),
            (8, 8, 0),
            (8, 8, 3601),
        ] {
            let mut bad = launch.clone();
            (
                bad.tuning.engine_replica_timeout,
                bad.tuning.slow_replica_ratio,
                bad.tuning.slow_replica_window,
            ) = tuning;
            invalid(check_engine_launch(
                &bad,
                &node,
                std::slice::from_ref(&node),
            ));
        }
        let mut bad = launch;
        bad.nbd = bad.listen;
        invalid(check_engine_launch(
            &bad,
            &node,
            std::slice::from_ref(&node),
        ));
    }

    #[test]
    fn a_clone_reads_a_replica_on_a_node_and_writes_one_of_its_own_volume() {
        let node = node();
        let launch = CloneLaunch {
            replica: "vol-r-0123abcd".into(),
            disk: "default".into(),
            volume: "vol".into(),
            size: 1 << 30,
            source: "tcp://10.0.0.1:20000".into(),
            source_volume: "src".into(),
            snapshot: "s1".into(),
        };
        let nodes = std::slice::from_ref(&node);
        assert_eq!(
            check_clone_launch(&launch, &node, nodes).unwrap().name,
            "default"
        );
        for (change, expected) in [
            (
                Box::new(|l: &mut CloneLaunch| l.source = "tcp://10.9.9.9:20000".into())
                    as Box<dyn Fn(&mut CloneLaunch)>,
                "not a node's address",
            ),
            (
                Box::new(|l| l.source = "unix:///tmp/x".into()),
                "not tcp://IP:PORT",
            ),
            (Box::new(|l| l.snapshot = "../s1".into()), "snapshot"),
            (Box::new(|l| l.size = 4095), "size"),
            (
                Box::new(|l| l.volume = "other".into()),
                "not a replica of volume",
            ),
        ] {
            let mut bad = launch.clone();
            change(&mut bad);
            let message = invalid(check_clone_launch(&bad, &node, nodes));
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }

    #[test]
    fn a_restore_needs_a_backup_url_the_policy_allows() {
        let node = node();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("backups");
        let policy =
            TargetPolicy::new(std::slice::from_ref(&root), &["nfs.example".into()]).unwrap();
        let root = root.display();
        let launch = RestoreLaunch {
            replica: "vol-r-0123abcd".into(),
            volume: "vol".into(),
            disk: "default".into(),
            url: format!("file://{root}?backup=b1&volume=old"),
            access: Default::default(),
            since_last_restore: false,
        };
        check_restore_launch(&launch, &node, &policy).unwrap();
        let mut bad_secret = launch.clone();
        bad_secret.access.secret_access_key = Some("a\nb".into());
        let refused = check_restore_launch(&bad_secret, &node, &policy).unwrap_err();
        assert!(
            refused.to_string().contains("access.secret_access_key"),
            "{refused}"
        );
        assert!(
            !format!("{bad_secret:?}").contains("a\nb"),
            "{bad_secret:?}"
        );
        let mut nfs = launch.clone();
        nfs.url = "nfs://nfs.example/export?backup=b1&volume=old".into();
        check_restore_launch(&nfs, &node, &policy).unwrap();
        for url in [
            "--help".to_string(),
            format!("file://{root}"),
            "ftp://x?backup=b1&volume=v".into(),
            format!("file://{root}?backup=../x&volume=v"),
            "file:///etc?backup=b1&volume=v".into(),
            format!("file://{root}/../elsewhere?backup=b1&volume=v"),
            "nfs://other.example/export?backup=b1&volume=v".into(),
        ] {
            let mut bad = launch.clone();
            bad.url = url;
            invalid(check_restore_launch(&bad, &node, &policy));
        }
    }

    #[test]
    fn process_names_follow_the_naming_rules() {
        for name in [
            "vol-e",
            "vol-r-0123abcd",
            "vol-r-0123abcd-restore",
            "a.b_c-r-ffffffff",
        ] {
            check_process_name(name).unwrap();
        }
        for name in [
            "",
            "-e",
            "../x-e",
            "vol-r-0123ABCD",
            "vol-r-123",
            "vol",
            "vol-r-0123abcd-x",
        ] {
            invalid(check_process_name(name));
        }
        invalid(check_replica_name("vol-e"));
    }
}
