//! `sandgate-resolver ctl`: a ControlPlaneService client for operators and scripts.

use sandgate_proto::ctrlplane::v1::control_plane_service_client::ControlPlaneServiceClient;
use sandgate_proto::ctrlplane::v1::{
    EvictRouteRequest, GetLastActiveRequest, MintAccessTokenRequest, PushClusterConfigRequest,
    PushRouteRequest,
};
use tonic::Request;

use crate::config::{CtlArgs, CtlOp};

fn authorized<T>(msg: T, admin_key: &str) -> anyhow::Result<Request<T>> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {admin_key}").parse()?);
    Ok(req)
}

/// Runs one operation and returns what to print.
pub async fn run(args: CtlArgs) -> anyhow::Result<String> {
    let mut client = ControlPlaneServiceClient::connect(args.addr.clone()).await?;
    let key = &args.admin_key;
    Ok(match args.op {
        CtlOp::Push {
            sandbox_id,
            namespace,
            pod_name,
        } => {
            client
                .push_route(authorized(
                    PushRouteRequest {
                        sandbox_id,
                        namespace,
                        pod_name,
                    },
                    key,
                )?)
                .await?;
            "pushed".into()
        }
        CtlOp::Evict { sandbox_id } => {
            let r = client
                .evict_route(authorized(EvictRouteRequest { sandbox_id }, key)?)
                .await?;
            if r.get_ref().evicted {
                "evicted"
            } else {
                "no route"
            }
            .into()
        }
        CtlOp::LastActive => {
            let r = client
                .get_last_active(authorized(GetLastActiveRequest {}, key)?)
                .await?;
            let sorted: std::collections::BTreeMap<_, _> =
                r.into_inner().last_active.into_iter().collect();
            serde_json::to_string_pretty(&sorted)?
        }
        CtlOp::Clusters { file } => {
            let config_yaml = crate::reload::read(&file)?;
            let r = client
                .push_cluster_config(authorized(PushClusterConfigRequest { config_yaml }, key)?)
                .await?;
            format!("{} peer cluster(s)", r.get_ref().clusters)
        }
        CtlOp::Token {
            sandbox_id,
            namespace,
            ports,
            ttl,
        } => {
            let request = MintAccessTokenRequest {
                sandbox_id,
                namespace,
                ports,
                ttl_seconds: ttl.map_or(0, |t| t.as_secs()),
            };
            let r = client
                .mint_access_token(authorized(request, key)?)
                .await?
                .into_inner();
            // The token alone on stdout, so `$(sandgate-resolver ctl token …)` is the token.
            eprintln!("expires {} (signing key {})", r.expires_at, r.key_id);
            r.token
        }
    })
}
