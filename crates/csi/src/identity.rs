//! The CSI Identity service: the driver's name and version, its plugin capabilities, and
//! a probe that is not ready while the manager does not answer.

use tonic::{Request, Response, Status};

use crate::client::ManagerClient;
use crate::pb;
use crate::pb::identity_server::Identity;
use crate::pb::plugin_capability::service::Type as ServiceType;
use crate::pb::plugin_capability::volume_expansion::Type as ExpansionType;

/// Serves the Identity service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    driver_name: String,
    manager: ManagerClient,
    controller: bool,
}

impl IdentityService {
    /// Identity of driver `driver_name`; `controller`: this instance serves the
    /// Controller service too.
    pub fn new(driver_name: String, manager: ManagerClient, controller: bool) -> Self {
        IdentityService {
            driver_name,
            manager,
            controller,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = vec![
            pb::PluginCapability {
                r#type: Some(pb::plugin_capability::Type::Service(
                    pb::plugin_capability::Service {
                        r#type: ServiceType::VolumeAccessibilityConstraints.into(),
                    },
                )),
            },
            pb::PluginCapability {
                r#type: Some(pb::plugin_capability::Type::VolumeExpansion(
                    pb::plugin_capability::VolumeExpansion {
                        r#type: ExpansionType::Online.into(),
                    },
                )),
            },
        ];
        if self.controller {
            capabilities.push(pb::PluginCapability {
                r#type: Some(pb::plugin_capability::Type::Service(
                    pb::plugin_capability::Service {
                        r#type: ServiceType::ControllerService.into(),
                    },
                )),
            });
        }
        Ok(Response::new(pb::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let ready = match self.manager.get::<serde_json::Value>("/v1/cluster").await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "probe: the manager does not answer");
                false
            }
        };
        Ok(Response::new(pb::ProbeResponse { ready: Some(ready) }))
    }
}
