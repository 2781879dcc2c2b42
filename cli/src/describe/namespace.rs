//! `punnet describe namespace`, as kubectl lays it out (Punnet has no ResourceQuota or
//! LimitRange, so it says so as kubectl does for a namespace without them).

use punnet_api::Namespace;

use super::Doc;

pub fn describe_namespace(n: &Namespace) -> String {
    let mut d = Doc::default();
    d.field(0, "Name", &n.metadata.name);
    d.map(0, "Labels", &n.metadata.labels);
    d.map(0, "Annotations", &n.metadata.annotations);
    d.field(0, "Status", n.status.phase.as_deref().unwrap_or("Active"));
    let mut out = d.finish();
    out.push_str("\nNo resource quota.\n\nNo LimitRange resource.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_name_labels_and_status() {
        let mut n = Namespace::new("team");
        n.metadata.labels.insert("env".into(), "lab".into());
        n.status.phase = Some("Terminating".into());
        let text = describe_namespace(&n);
        assert!(text.starts_with("Name:         team\n"), "{text}");
        assert!(text.contains("Labels:       env=lab\n"), "{text}");
        assert!(text.contains("Status:       Terminating\n"), "{text}");
    }
}
