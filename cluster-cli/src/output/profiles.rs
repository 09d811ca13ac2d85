//! `profile get` and `profile list`.

use super::{or_dash, word, Render, Table};
use crate::view::*;

fn vlan_text(vlan: u32) -> String {
    if vlan == 0 {
        "untagged".into()
    } else {
        vlan.to_string()
    }
}

impl Render for ProfileView {
    fn text(&self) -> String {
        let mut out = format!(
            "profile:         {}\nserver:          {}\npreferred unit:  {}\nfailback:        {}\nrevision:        {} (created at {})\n",
            self.name,
            self.server,
            or_dash(self.preferred_unit.as_ref()),
            word(&self.failback),
            self.revision,
            self.created_revision,
        );
        if !self.vnics.is_empty() {
            let mut table = Table::new(vec!["VNIC", "MAC", "NETWORK", "VLAN", "POOL"]);
            for vnic in &self.vnics {
                table.row(vec![
                    vnic.name.clone(),
                    vnic.mac.clone(),
                    vnic.network.clone(),
                    vlan_text(vnic.vlan),
                    or_dash(vnic.pool.as_ref()),
                ]);
            }
            out.push('\n');
            out.push_str(&table.render());
        }
        if !self.vhbas.is_empty() {
            let mut table = Table::new(vec!["VHBA", "WWPN", "WWNN", "FABRIC", "POOL"]);
            for vhba in &self.vhbas {
                table.row(vec![
                    vhba.name.clone(),
                    vhba.wwpn.clone(),
                    vhba.wwnn.clone(),
                    vhba.fabric.clone(),
                    or_dash(vhba.pool.as_ref()),
                ]);
            }
            out.push('\n');
            out.push_str(&table.render());
        }
        out
    }
}

impl Render for ProfileListView {
    fn text(&self) -> String {
        let mut table = Table::new(vec![
            "NAME",
            "SERVER",
            "VNICS",
            "VHBAS",
            "PREFERRED",
            "FAILBACK",
            "REVISION",
        ]);
        for profile in &self.profiles {
            table.row(vec![
                profile.name.clone(),
                profile.server.clone(),
                profile.vnics.len().to_string(),
                profile.vhbas.len().to_string(),
                or_dash(profile.preferred_unit.as_ref()),
                word(&profile.failback),
                profile.revision.to_string(),
            ]);
        }
        let mut out = table.render();
        out.push_str(&format!(
            "{} profile(s) at revision {}{}\n",
            self.profiles.len(),
            self.revision,
            if self.truncated {
                " (stopped at --limit; more exist)"
            } else {
                ""
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_profile;
    use crate::output::{render, Format};
    use vnet_proto::vnet::v1 as pb;

    /// Scripts depend on this exact shape: a change here must be a deliberate one.
    #[test]
    fn profile_json_shape_is_stable() {
        let view = ProfileView::from(&sample_profile());
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json, &view)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "web-01",
                "server": "rack1-srv01",
                "vnics": [{
                    "name": "eth0",
                    "mac": "02:00:00:00:00:01",
                    "network": "prod",
                    "vlan": 100,
                    "pool": "macs",
                }],
                "vhbas": [{
                    "name": "fc0",
                    "wwpn": "20:00:00:25:b5:00:00:01",
                    "wwnn": "20:00:00:25:b5:00:01:01",
                    "fabric": "a",
                    "pool": null,
                }],
                "preferred_unit": null,
                "failback": "manual",
                "revision": 12,
                "created_revision": 7,
            })
        );
    }

    #[test]
    fn profile_get_output_reads_back_as_a_file_unchanged() {
        let wire = sample_profile();
        let printed = render(Format::Json, &ProfileView::from(&wire));
        let read: ProfileView = serde_json::from_str(&printed).unwrap();
        assert_eq!(pb::Profile::from(&read), wire);
    }

    #[test]
    fn profile_file_may_leave_out_defaults_but_not_add_unknown_keys() {
        let minimal: ProfileView = serde_json::from_str(
            r#"{"name":"db-01","server":"s1","vnics":[{"name":"eth0","network":"prod","pool":"macs"}]}"#,
        )
        .unwrap();
        assert_eq!(minimal.failback, FailbackView::Auto);
        assert_eq!(minimal.vnics[0].vlan, 0);
        assert_eq!(minimal.vnics[0].mac, "");
        assert_eq!(minimal.revision, 0);
        let typo =
            serde_json::from_str::<ProfileView>(r#"{"name":"db-01","server":"s1","vnic":[]}"#)
                .unwrap_err();
        assert!(typo.to_string().contains("unknown field `vnic`"), "{typo}");
    }
}
