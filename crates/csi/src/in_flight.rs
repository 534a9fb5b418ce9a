//! One operation per volume at a time. The kubelet and the sidecars call again when a
//! call takes longer than their timeout, while the first still runs (a NodeStage
//! formatting a large volume, a CreateVolume waiting for its replicas). The CSI spec's
//! answer to such a second call is ABORTED ("an operation is pending for the volume"):
//! the caller retries later and then finds the first one's result, so two NodeStage
//! calls never both connect the export or format it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::Status;

/// The volumes (or snapshot names) with an operation under way in this service.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

/// Held while an operation on one volume runs; dropping it ends the operation.
#[derive(Debug)]
pub struct Busy {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    /// Starts an operation on `key`, or ABORTED if one is under way.
    pub fn start(&self, key: &str) -> Result<Busy, Status> {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !set.insert(key.to_string()) {
            return Err(Status::aborted(format!(
                "an operation on {key} is already under way; try again when it ends"
            )));
        }
        Ok(Busy {
            set: self.0.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_operation_on_the_same_volume_is_aborted_until_the_first_ends() {
        let in_flight = InFlight::default();
        let first = in_flight.start("vol1").unwrap();
        let second = in_flight.start("vol1").unwrap_err();
        assert_eq!(second.code(), tonic::Code::Aborted);
        assert!(second.message().contains("vol1"), "{second:?}");
        // Another volume is not held up.
        let other = in_flight.start("vol2").unwrap();
        drop(first);
        let again = in_flight.start("vol1").unwrap();
        drop((other, again));
        assert!(in_flight.0.lock().unwrap().is_empty());
    }
}
