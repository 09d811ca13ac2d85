//! `profile create|get|list|update|delete`.

use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

use crate::cli::{FailbackArg, ProfileCommand, ProfileListArgs, ProfileSpecArgs};
use crate::error::CliError;
use crate::retry::CallKind;
use crate::session::{rpc, unary, Session};
use crate::view::{DeletedView, ProfileListView, ProfileView};
use crate::{emit, Context};

/// A file larger than this is not a profile; refuse it before parsing.
const PROFILE_FILE_BYTES_MAX: u64 = 1 << 20;

pub async fn run(
    session: &mut Session,
    context: &Context,
    command: ProfileCommand,
) -> Result<(), CliError> {
    match command {
        ProfileCommand::Create { name, spec } => {
            let profile = match &spec.file {
                Some(path) => read_profile_file(path)?,
                None => profile_from_flags(name.unwrap_or_default(), &spec)?,
            };
            let stored = create(session, profile).await?;
            emit(context, &ProfileView::from(&stored))
        }
        ProfileCommand::Get { name } => {
            let response = get(session, &name, context.consistency).await?;
            let profile = response.profile.unwrap_or_default();
            emit(context, &ProfileView::from(&profile))
        }
        ProfileCommand::List(args) => list(session, context, args).await,
        ProfileCommand::Update {
            name,
            spec,
            expected_revision,
        } => {
            let (profile, expected_revision) = match &spec.file {
                Some(path) => {
                    let profile = read_profile_file(path)?;
                    let expected = expected_revision.unwrap_or(profile.revision);
                    (profile, expected)
                }
                None => {
                    let name = name.unwrap_or_default();
                    let edit = ProfileEdit::from_flags(&spec)?;
                    if edit.is_empty() {
                        return Err(CliError::usage(
                            "nothing to change: give --server, --vnic, --vhba, --preferred-unit, --failback or --file",
                        ));
                    }
                    let current = get(session, &name, pb::ReadConsistency::Linearizable)
                        .await?
                        .profile
                        .unwrap_or_default();
                    let expected = expected_revision.unwrap_or(current.revision);
                    (edit.apply(current), expected)
                }
            };
            let stored = update(session, profile, expected_revision).await?;
            emit(context, &ProfileView::from(&stored))
        }
        ProfileCommand::Delete {
            name,
            expected_revision,
        } => {
            let revision = delete(session, &name, expected_revision).await?;
            emit(
                context,
                &DeletedView {
                    deleted: name,
                    revision,
                },
            )
        }
    }
}

pub async fn create(session: &mut Session, profile: pb::Profile) -> Result<pb::Profile, CliError> {
    let message = pb::CreateProfileRequest {
        profile: Some(profile),
    };
    let response = unary(
        session,
        CallKind::Write,
        message,
        rpc!(ProfileServiceClient::create_profile),
    )
    .await?;
    Ok(response.profile.unwrap_or_default())
}

pub async fn get(
    session: &mut Session,
    name: &str,
    consistency: pb::ReadConsistency,
) -> Result<pb::GetProfileResponse, CliError> {
    let message = pb::GetProfileRequest {
        name: name.to_string(),
        consistency: consistency as i32,
    };
    unary(
        session,
        CallKind::Read,
        message,
        rpc!(ProfileServiceClient::get_profile),
    )
    .await
}

async fn update(
    session: &mut Session,
    profile: pb::Profile,
    expected_revision: u64,
) -> Result<pb::Profile, CliError> {
    let message = pb::UpdateProfileRequest {
        profile: Some(profile),
        expected_revision,
    };
    let response = unary(
        session,
        CallKind::Write,
        message,
        rpc!(ProfileServiceClient::update_profile),
    )
    .await?;
    Ok(response.profile.unwrap_or_default())
}

pub async fn delete(
    session: &mut Session,
    name: &str,
    expected_revision: u64,
) -> Result<u64, CliError> {
    let message = pb::DeleteProfileRequest {
        name: name.to_string(),
        expected_revision,
    };
    let response = unary(
        session,
        CallKind::Write,
        message,
        rpc!(ProfileServiceClient::delete_profile),
    )
    .await?;
    Ok(response.revision)
}

async fn list(
    session: &mut Session,
    context: &Context,
    args: ProfileListArgs,
) -> Result<(), CliError> {
    if args.page_size == 0 {
        return Err(CliError::usage("--page-size: must be at least 1"));
    }
    let mut result = ProfileListView {
        profiles: Vec::new(),
        revision: 0,
        truncated: false,
    };
    let mut page_token = String::new();
    loop {
        let message = pb::ListProfilesRequest {
            page_size: args.page_size,
            page_token: page_token.clone(),
            server: args.server.clone(),
            unit: args.unit.clone(),
            consistency: context.consistency as i32,
        };
        let page = unary(
            session,
            CallKind::Read,
            message,
            rpc!(ProfileServiceClient::list_profiles),
        )
        .await?;
        result.revision = page.revision;
        let room = args.limit - result.profiles.len();
        if page.profiles.len() > room {
            result.truncated = true;
        }
        result
            .profiles
            .extend(page.profiles.iter().take(room).map(ProfileView::from));
        if page.next_page_token.is_empty() {
            break;
        }
        if result.profiles.len() >= args.limit {
            result.truncated = true;
            break;
        }
        // A server that hands back the token it was given, or an empty page that promises more,
        // would keep this loop going for ever.
        if page.next_page_token == page_token || page.profiles.is_empty() {
            return Err(CliError::Local(anyhow::anyhow!(
                "the server's paging did not advance (page token {:?}); stopping",
                page.next_page_token
            )));
        }
        page_token = page.next_page_token;
    }
    emit(context, &result)
}

fn profile_from_flags(name: String, spec: &ProfileSpecArgs) -> Result<pb::Profile, CliError> {
    let server = spec
        .server
        .clone()
        .ok_or_else(|| CliError::usage("--server is required (or give --file)"))?;
    Ok(pb::Profile {
        name,
        server,
        vnics: spec.vnics.clone(),
        vhbas: spec.vhbas.clone(),
        preferred_unit: spec.preferred_unit.clone().filter(|unit| !unit.is_empty()),
        failback: failback_wire(spec.failback.unwrap_or(FailbackArg::Auto)) as i32,
        revision: 0,
        created_revision: 0,
    })
}

fn failback_wire(failback: FailbackArg) -> pb::FailbackPolicy {
    match failback {
        FailbackArg::Auto => pb::FailbackPolicy::Auto,
        FailbackArg::Manual => pb::FailbackPolicy::Manual,
    }
}

/// Reads a profile in the `profile get -o json` shape; `-` reads stdin.
fn read_profile_file(path: &str) -> Result<pb::Profile, CliError> {
    use std::io::Read;
    let mut text = String::new();
    let read = if path == "-" {
        std::io::stdin()
            .take(PROFILE_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|file| {
            file.take(PROFILE_FILE_BYTES_MAX + 1)
                .read_to_string(&mut text)
        })
    };
    read.map_err(|e| CliError::usage(format!("--file {path}: {e}")))?;
    if text.len() as u64 > PROFILE_FILE_BYTES_MAX {
        return Err(CliError::usage(format!(
            "--file {path}: larger than {PROFILE_FILE_BYTES_MAX} bytes"
        )));
    }
    parse_profile_json(&text).map_err(|e| CliError::usage(format!("--file {path}: {e}")))
}

fn parse_profile_json(text: &str) -> Result<pb::Profile, String> {
    let view: ProfileView = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(pb::Profile::from(&view))
}

/// What the flags of `profile update` change; `None` leaves the current value.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProfileEdit {
    pub server: Option<String>,
    pub vnics: Option<Vec<pb::Vnic>>,
    pub vhbas: Option<Vec<pb::Vhba>>,
    /// `Some(None)` clears the preferred unit.
    pub preferred_unit: Option<Option<String>>,
    pub failback: Option<pb::FailbackPolicy>,
}

impl ProfileEdit {
    fn from_flags(spec: &ProfileSpecArgs) -> Result<Self, CliError> {
        Ok(ProfileEdit {
            server: spec.server.clone(),
            vnics: (!spec.vnics.is_empty()).then(|| spec.vnics.clone()),
            vhbas: (!spec.vhbas.is_empty()).then(|| spec.vhbas.clone()),
            preferred_unit: spec
                .preferred_unit
                .clone()
                .map(|unit| (!unit.is_empty()).then_some(unit)),
            failback: spec.failback.map(failback_wire),
        })
    }

    fn is_empty(&self) -> bool {
        *self == ProfileEdit::default()
    }

    /// The profile after the edit. A vNIC or vHBA given without an identity keeps the identity
    /// of the current one with the same name: the operator changing a VLAN must not silently
    /// get a new MAC (which would break DHCP reservations and SAN zoning keyed to it).
    pub fn apply(self, current: pb::Profile) -> pb::Profile {
        let mut profile = current.clone();
        if let Some(server) = self.server {
            profile.server = server;
        }
        if let Some(mut vnics) = self.vnics {
            for vnic in &mut vnics {
                if vnic.mac.is_empty() {
                    if let Some(old) = current.vnics.iter().find(|old| old.name == vnic.name) {
                        vnic.mac = old.mac.clone();
                        if vnic.pool.is_none() {
                            vnic.pool = old.pool.clone();
                        }
                    }
                }
            }
            profile.vnics = vnics;
        }
        if let Some(mut vhbas) = self.vhbas {
            for vhba in &mut vhbas {
                if let Some(old) = current.vhbas.iter().find(|old| old.name == vhba.name) {
                    if vhba.wwpn.is_empty() && vhba.wwnn.is_empty() {
                        vhba.wwpn = old.wwpn.clone();
                        vhba.wwnn = old.wwnn.clone();
                        if vhba.pool.is_none() {
                            vhba.pool = old.pool.clone();
                        }
                    }
                }
            }
            profile.vhbas = vhbas;
        }
        if let Some(unit) = self.preferred_unit {
            profile.preferred_unit = unit;
        }
        if let Some(failback) = self.failback {
            profile.failback = failback as i32;
        }
        profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    fn current() -> pb::Profile {
        pb::Profile {
            name: "web-01".into(),
            server: "rack1-srv01".into(),
            vnics: vec![
                spec::parse_vnic("eth0:net=prod:vlan=100:mac=02:00:00:00:00:01:pool=macs").unwrap(),
                spec::parse_vnic("eth1:net=backup:mac=02:00:00:00:00:02").unwrap(),
            ],
            vhbas: vec![spec::parse_vhba(
                "fc0:fabric=a:wwpn=20:00:00:00:00:00:00:01:wwnn=20:00:00:00:00:00:01:01",
            )
            .unwrap()],
            preferred_unit: Some("unit-a".into()),
            failback: pb::FailbackPolicy::Auto as i32,
            revision: 17,
            created_revision: 3,
        }
    }

    #[test]
    fn an_edit_of_the_vlan_keeps_the_mac() {
        let edit = ProfileEdit {
            vnics: Some(vec![spec::parse_vnic("eth0:net=prod:vlan=200").unwrap()]),
            ..ProfileEdit::default()
        };
        let updated = edit.apply(current());
        assert_eq!(updated.vnics.len(), 1, "--vnic replaces the whole list");
        assert_eq!(updated.vnics[0].vlan, 200);
        assert_eq!(updated.vnics[0].mac, "02:00:00:00:00:01");
        assert_eq!(updated.vnics[0].pool.as_deref(), Some("macs"));
        assert_eq!(updated.vhbas, current().vhbas, "vhbas untouched");
    }

    #[test]
    fn a_new_function_without_identity_is_sent_empty_for_the_server_to_allocate() {
        let edit = ProfileEdit {
            vnics: Some(vec![spec::parse_vnic("eth9:net=prod").unwrap()]),
            ..ProfileEdit::default()
        };
        let edited = edit.apply(current());
        let eth9 = edited
            .vnics
            .iter()
            .find(|v| v.name == "eth9")
            .expect("eth9");
        assert!(eth9.mac.is_empty() && eth9.pool.is_none(), "{eth9:?}");
    }

    #[test]
    fn an_explicit_identity_in_an_edit_wins() {
        let edit = ProfileEdit {
            vhbas: Some(vec![spec::parse_vhba(
                "fc0:fabric=b:wwpn=20:00:00:00:00:00:00:09:wwnn=20:00:00:00:00:00:01:09",
            )
            .unwrap()]),
            ..ProfileEdit::default()
        };
        let updated = edit.apply(current());
        assert_eq!(updated.vhbas[0].wwpn, "20:00:00:00:00:00:00:09");
        assert_eq!(updated.vhbas[0].fabric, "b");
    }

    #[test]
    fn scalar_edits_and_clearing_the_preferred_unit() {
        let edit = ProfileEdit {
            server: Some("rack2-srv07".into()),
            preferred_unit: Some(None),
            failback: Some(pb::FailbackPolicy::Manual),
            ..ProfileEdit::default()
        };
        let updated = edit.apply(current());
        assert_eq!(updated.server, "rack2-srv07");
        assert_eq!(updated.preferred_unit, None);
        assert_eq!(updated.failback, pb::FailbackPolicy::Manual as i32);
        assert_eq!(updated.vnics, current().vnics);
        assert!(!ProfileEdit::default().apply(current()).vnics.is_empty());
        assert!(ProfileEdit::default().is_empty());
    }

    #[test]
    fn profile_json_errors_say_where() {
        let error = parse_profile_json("{\"name\": \"x\", \"server\": 5}").unwrap_err();
        assert!(error.contains("line 1 column"), "{error}");
        let error = parse_profile_json("not json").unwrap_err();
        assert!(error.contains("expected"), "{error}");
    }

    #[test]
    fn a_missing_file_is_a_usage_error_naming_it() {
        let error = read_profile_file("/nonexistent/profile.json").unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_USAGE);
        assert!(
            error
                .to_string()
                .starts_with("--file /nonexistent/profile.json:"),
            "{error}"
        );
    }
}
