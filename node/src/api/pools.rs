//! `vnet.v1.PoolService`.

use tonic::{Request, Response, Status};
use vnet_model::{Command, Outcome, Rejection};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::pool_service_server::PoolService;

use super::{consistency, name, optional_name, Api, Caller};
use crate::convert::pool::{spec_from_wire, to_wire, usage_to_wire};
use crate::error::ApiError;

impl Api {
    async fn create_pool_as(
        &self,
        caller: Caller,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::CreatePoolResponse>, Status> {
        let pool = request
            .into_inner()
            .pool
            .ok_or_else(|| ApiError::invalid("pool", "<absent>", "is required"))?;
        let spec = spec_from_wire(pool)?;
        let (outcome, _) = self
            .node
            .write_by(caller.by(), Command::CreatePool(spec))
            .await?;
        let Outcome::Pool(pool) = outcome else {
            return Err(ApiError::Internal {
                reason: format!("creating a pool produced {outcome:?}"),
            }
            .into());
        };
        Ok(Response::new(pb::CreatePoolResponse {
            pool: Some(to_wire(&pool)),
        }))
    }

    async fn list_pools_as(
        &self,
        _caller: Caller,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let consistency = consistency("consistency", request.get_ref().consistency)?;
        self.node.read_barrier(consistency).await?;
        let (pools, revision) = self.node.view().read(|applied| {
            (
                applied.state.pools().map(to_wire).collect(),
                applied.state.revision(),
            )
        });
        Ok(Response::new(pb::ListPoolsResponse { pools, revision }))
    }

    async fn get_pool_usage_as(
        &self,
        _caller: Caller,
        request: Request<pb::GetPoolUsageRequest>,
    ) -> Result<Response<pb::GetPoolUsageResponse>, Status> {
        let request = request.into_inner();
        optional_name("name", &request.name)?;
        let consistency = consistency("consistency", request.consistency)?;
        self.node.read_barrier(consistency).await?;
        let (usages, revision) = self.node.view().read(|applied| {
            let usages = if request.name.is_empty() {
                Some(applied.state.pools_usage())
            } else {
                applied.state.pool_usage(&request.name).map(|u| vec![u])
            };
            (usages, applied.state.revision())
        });
        let usages = usages.ok_or_else(|| {
            ApiError::Rejected(Rejection::NotFound {
                kind: "pool".to_string(),
                name: request.name.clone(),
            })
        })?;
        Ok(Response::new(pb::GetPoolUsageResponse {
            usages: usages.iter().map(usage_to_wire).collect(),
            revision,
        }))
    }

    async fn delete_pool_as(
        &self,
        caller: Caller,
        request: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::DeletePoolResponse>, Status> {
        let request = request.into_inner();
        name("name", &request.name)?;
        if request.expected_revision != 0 {
            let actual = self
                .node
                .view()
                .read(|a| a.state.pool(&request.name).map(|p| p.revision));
            // A cheap early answer; the model has no pool revision check, so a race with a
            // concurrent change to the same pool is still possible (pools are only created and
            // deleted, never updated, so the only race is delete-recreate).
            if let Some(actual) = actual.filter(|a| *a != request.expected_revision) {
                return Err(ApiError::Rejected(Rejection::RevisionMismatch {
                    name: request.name,
                    expected: request.expected_revision,
                    actual,
                })
                .into());
            }
        }
        let (_, revision) = self
            .node
            .write_by(caller.by(), Command::DeletePool { name: request.name })
            .await?;
        Ok(Response::new(pb::DeletePoolResponse { revision }))
    }
}

#[tonic::async_trait]
impl PoolService for Api {
    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::CreatePoolResponse>, Status> {
        self.guarded(
            request,
            |r| r.pool.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            |caller, request| self.create_pool_as(caller, request),
        )
        .await
    }

    async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        self.guarded(
            request,
            |_| String::new(),
            |caller, request| self.list_pools_as(caller, request),
        )
        .await
    }

    async fn get_pool_usage(
        &self,
        request: Request<pb::GetPoolUsageRequest>,
    ) -> Result<Response<pb::GetPoolUsageResponse>, Status> {
        self.guarded(
            request,
            |r| r.name.clone(),
            |caller, request| self.get_pool_usage_as(caller, request),
        )
        .await
    }

    async fn delete_pool(
        &self,
        request: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::DeletePoolResponse>, Status> {
        self.guarded(
            request,
            |r| r.name.clone(),
            |caller, request| self.delete_pool_as(caller, request),
        )
        .await
    }
}
