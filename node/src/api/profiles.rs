//! `vnet.v1.ProfileService`.

use tonic::{Request, Response, Status};
use vnet_model::{Command, Outcome};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::profile_service_server::ProfileService;

use super::{consistency, name, optional_name, Api, Caller};
use crate::convert::profile::{spec_from_wire, to_wire};
use crate::error::ApiError;

/// Profiles per page when the client does not say.
pub const LIST_PAGE_SIZE_DEFAULT: u32 = 100;
/// Most profiles one page may hold.
pub const LIST_PAGE_SIZE_MAX: u32 = 1_000;
/// Page tokens are the name of the last profile returned, behind this prefix.
const PAGE_TOKEN_PREFIX: &str = "after:";

fn outcome_profile(outcome: Outcome) -> Result<pb::Profile, ApiError> {
    match outcome {
        Outcome::Profile(profile) => Ok(to_wire(&profile)),
        other => Err(ApiError::Internal {
            reason: format!("a profile change produced {other:?}"),
        }),
    }
}

fn required_profile(profile: Option<pb::Profile>) -> Result<pb::Profile, ApiError> {
    profile.ok_or_else(|| ApiError::invalid("profile", "<absent>", "is required"))
}

fn expected(revision: u64) -> Option<u64> {
    (revision != 0).then_some(revision)
}

impl Api {
    async fn create_profile_as(
        &self,
        caller: Caller,
        request: Request<pb::CreateProfileRequest>,
    ) -> Result<Response<pb::CreateProfileResponse>, Status> {
        let spec = spec_from_wire(required_profile(request.into_inner().profile)?)?;
        let (outcome, _) = self
            .node
            .write_by(caller.by(), Command::CreateProfile(spec))
            .await?;
        Ok(Response::new(pb::CreateProfileResponse {
            profile: Some(outcome_profile(outcome)?),
        }))
    }

    async fn get_profile_as(
        &self,
        _caller: Caller,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let request = request.into_inner();
        name("name", &request.name)?;
        let consistency = consistency("consistency", request.consistency)?;
        self.node.read_barrier(consistency).await?;
        let (profile, revision) = self.node.view().read(|applied| {
            (
                applied.state.profile(&request.name).map(to_wire),
                applied.state.revision(),
            )
        });
        let profile = profile.ok_or_else(|| {
            ApiError::Rejected(vnet_model::Rejection::NotFound {
                kind: "profile".to_string(),
                name: request.name.clone(),
            })
        })?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(profile),
            revision,
        }))
    }

    async fn list_profiles_as(
        &self,
        _caller: Caller,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        let request = request.into_inner();
        optional_name("server", &request.server)?;
        optional_name("unit", &request.unit)?;
        let consistency = consistency("consistency", request.consistency)?;
        // profile.proto: 0 means the default, and a size above the maximum is lowered to it.
        let page_size = match request.page_size {
            0 => LIST_PAGE_SIZE_DEFAULT,
            n => n.min(LIST_PAGE_SIZE_MAX),
        } as usize;
        let after = match request.page_token.as_str() {
            "" => None,
            token => {
                let not_issued =
                    || ApiError::invalid("page_token", token, "not a token this server issued");
                let after = token
                    .strip_prefix(PAGE_TOKEN_PREFIX)
                    .ok_or_else(not_issued)?;
                // Tokens carry a profile name, so anything else was not issued here.
                name("page_token", after).map_err(|_| not_issued())?;
                Some(after.to_string())
            }
        };
        self.node.read_barrier(consistency).await?;
        let (profiles, more, revision) = self.node.view().read(|applied| {
            let mut matching = applied
                .state
                .profiles()
                .filter(|p| after.as_deref().is_none_or(|after| p.name.as_str() > after))
                .filter(|p| request.server.is_empty() || p.server == request.server)
                .filter(|p| {
                    request.unit.is_empty()
                        || applied
                            .state
                            .placement(&p.name)
                            .and_then(|placement| placement.unit.as_deref())
                            == Some(request.unit.as_str())
                });
            let page: Vec<pb::Profile> = matching.by_ref().take(page_size).map(to_wire).collect();
            let more = matching.next().is_some();
            (page, more, applied.state.revision())
        });
        let next_page_token = match profiles.last() {
            Some(last) if more => format!("{PAGE_TOKEN_PREFIX}{}", last.name),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListProfilesResponse {
            profiles,
            next_page_token,
            revision,
        }))
    }

    async fn update_profile_as(
        &self,
        caller: Caller,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let request = request.into_inner();
        let spec = spec_from_wire(required_profile(request.profile)?)?;
        let command = Command::UpdateProfile {
            spec,
            expected_revision: expected(request.expected_revision),
        };
        let (outcome, _) = self.node.write_by(caller.by(), command).await?;
        Ok(Response::new(pb::UpdateProfileResponse {
            profile: Some(outcome_profile(outcome)?),
        }))
    }

    async fn delete_profile_as(
        &self,
        caller: Caller,
        request: Request<pb::DeleteProfileRequest>,
    ) -> Result<Response<pb::DeleteProfileResponse>, Status> {
        let request = request.into_inner();
        name("name", &request.name)?;
        let command = Command::DeleteProfile {
            name: request.name,
            expected_revision: expected(request.expected_revision),
        };
        let (_, revision) = self.node.write_by(caller.by(), command).await?;
        Ok(Response::new(pb::DeleteProfileResponse { revision }))
    }
}

#[tonic::async_trait]
impl ProfileService for Api {
    async fn create_profile(
        &self,
        request: Request<pb::CreateProfileRequest>,
    ) -> Result<Response<pb::CreateProfileResponse>, Status> {
        self.guarded(
            request,
            |r| {
                r.profile
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default()
            },
            |caller, request| self.create_profile_as(caller, request),
        )
        .await
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        self.guarded(
            request,
            |r| r.name.clone(),
            |caller, request| self.get_profile_as(caller, request),
        )
        .await
    }

    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        self.guarded(
            request,
            |_| String::new(),
            |caller, request| self.list_profiles_as(caller, request),
        )
        .await
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        self.guarded(
            request,
            |r| {
                r.profile
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default()
            },
            |caller, request| self.update_profile_as(caller, request),
        )
        .await
    }

    async fn delete_profile(
        &self,
        request: Request<pb::DeleteProfileRequest>,
    ) -> Result<Response<pb::DeleteProfileResponse>, Status> {
        self.guarded(
            request,
            |r| r.name.clone(),
            |caller, request| self.delete_profile_as(caller, request),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use vnet_model::limits::{NAME_LEN_MAX, VHBAS_PER_PROFILE_MAX, VNICS_PER_PROFILE_MAX};

    use super::*;
    use crate::api::PUBLIC_RESPONSE_BYTES_MAX;

    /// The largest page the server can send fits the public port's response bound.
    #[test]
    fn a_full_page_of_the_largest_profiles_fits_a_response() {
        let name = || "n".repeat(NAME_LEN_MAX);
        let profile = pb::Profile {
            name: name(),
            server: name(),
            vnics: (0..VNICS_PER_PROFILE_MAX)
                .map(|_| pb::Vnic {
                    name: name(),
                    mac: "02:00:00:00:00:01".into(),
                    network: name(),
                    vlan: 4094,
                    pool: Some(name()),
                })
                .collect(),
            vhbas: (0..VHBAS_PER_PROFILE_MAX)
                .map(|_| pb::Vhba {
                    name: name(),
                    wwpn: "20:00:00:00:00:00:00:01".into(),
                    wwnn: "20:00:00:00:00:00:00:02".into(),
                    fabric: name(),
                    pool: Some(name()),
                })
                .collect(),
            preferred_unit: Some(name()),
            failback: pb::FailbackPolicy::Manual as i32,
            revision: u64::MAX,
            created_revision: u64::MAX,
        };
        let page = pb::ListProfilesResponse {
            profiles: vec![profile; LIST_PAGE_SIZE_MAX as usize],
            next_page_token: format!("{PAGE_TOKEN_PREFIX}{}", name()),
            revision: u64::MAX,
        };
        let size = page.encoded_len();
        println!("largest page: {size} bytes (limit {PUBLIC_RESPONSE_BYTES_MAX})");
        assert!(size <= PUBLIC_RESPONSE_BYTES_MAX);
    }
}
